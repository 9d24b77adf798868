"""`live divergence`: the backtest of the bars the runner stored against what the venue did.

A paper replay matches its backtest exactly. Through alpaca-py against the fake venue, whose
matching engine fills each market order at the open of the bar after its decision (plus the
slippage the test asks for), the differences the venue was told to make (more slippage on one
fill, a rejected order, a partial fill, an order never filled) are each found on the trade they
touched and attributed to that cause, and the causes add up to the P&L difference.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from live.cli import app
from live.config import parse_config
from live.divergence import divergence
from live.drift import DriftExport
from live.metrics import LiveMetrics
from live.runner import Runner
from live.store import Store
from quantshift.data import load_bars
from quantshift.errors import QuantShiftError
from tests.fakes.alpaca_server import FakeAlpaca
from tests.test_broker_alpaca import KEY_ENV, SECRET_ENV

SOURCE, START, END = "builtin:sp500", "2014-01-01", "2015-06-01"
ASSUMED_BPS = 5.0


def raw_config(tmp_path, broker: dict | None = None) -> dict:
    return {
        "runner": {"name": "divergence-test", "market": "equities", "mode": "paper"},
        "sleeves": [{"name": "trend", "strategy": "ma_crossover", "symbols": ["SP500"],
                     "params": {"fast": 5, "slow": 20}, "allocation": 1.0}],
        "risk": {"max_position_pct": 50.0, "daily_loss_limit_pct": 100.0,
                 "max_drawdown_pct": 100.0},
        "costs": {"cash": 100_000.0, "slippage_bps": ASSUMED_BPS},
        "feed": {"source": SOURCE, "start": START, "end": END},
        "broker": broker or {"kind": "paper"},
        "store": {"url": f"sqlite:///{tmp_path}/divergence.db"},
        "guards": {"price_collar_pct": 100.0},
        "metrics": {"enabled": False},
    }  # fmt: skip


def live(*args: str) -> tuple[int, str]:
    # live.cli.main maps QuantShiftError to one line and exit 2; mirror it in process.
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, QuantShiftError):
        return 2, f"error: {result.exception}"
    return result.exit_code, result.output


def exported(metrics: LiveMetrics) -> dict[tuple[str, frozenset], float]:
    """A runner's metric samples by (name without prefix, labels), as a scrape reads them."""
    return {
        (s.name.removeprefix("quantshift_live_"), frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render())
        for s in family.samples
    }


POSITION = frozenset({("sleeve", "trend"), ("symbol", "SP500")})


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """A paper replay with the exporter on (a free port): its raw config, config and runner."""
    tmp_path = tmp_path_factory.mktemp("paper")
    raw = raw_config(tmp_path)
    raw["metrics"] = {"port": 0}
    config = parse_config(raw, source="divergence-test.toml")
    runner = Runner(config)
    assert runner.run().trades >= 4
    return tmp_path, raw, config, runner


def test_a_paper_replay_matches_its_backtest_exactly(paper_run):
    tmp_path, raw, config, _ = paper_run
    with Store.open(config.store_url, create=False) as store:
        report = divergence(config, store)
    assert report.counts()["missing"] == 0 and report.counts()["extra"] == 0
    assert report.counts()["matched"] >= 4
    assert report.pnl_difference == pytest.approx(0.0, abs=1e-6)
    assert report.by_cause == {}
    path = tmp_path / "paper.toml"
    path.write_text(_toml(raw))
    code, out = live("divergence", "--config", str(path), "--plot", str(tmp_path / "d.png"))
    assert code == 0, out
    assert "every trade matches the backtest" in out and (tmp_path / "d.png").stat().st_size > 0


def test_a_paper_replay_exports_no_drift_and_the_assumed_slippage(paper_run):
    _, _, config, runner = paper_run
    samples = exported(runner.metrics)
    with Store.open(config.store_url, create=False) as store:
        fills = len(store.fills())
    assert fills >= 8
    # Every fill slipped exactly the assumed 5 bps from the open after its decision. (A
    # histogram with negative buckets has no _sum in prometheus_client: the buckets say it.)
    assert samples[("fill_slippage_bps_count", POSITION)] == fills
    assert samples[("fill_slippage_bps_bucket", POSITION | {("le", "5.0")})] == fills
    assert samples[("fill_slippage_bps_bucket", POSITION | {("le", "3.0")})] == 0
    assert samples[("assumed_slippage_bps", frozenset())] == ASSUMED_BPS
    assert samples[("drift_pnl", POSITION)] == pytest.approx(0.0, abs=1e-6)
    assert samples[("drift_pct", POSITION)] == pytest.approx(0.0, abs=1e-9)
    assert samples[("drift_equity_pct", frozenset())] == pytest.approx(0.0, abs=1e-9)
    # Computed at the first bar and, as the replay ended, at its last one.
    assert runner.drift.computations == 2
    assert samples[("drift_bar_timestamp_seconds", frozenset())] == runner.last_ts_ns / 1e9


def test_the_drift_is_computed_at_most_every_interval(paper_run):
    _, _, config, runner = paper_run
    now = [0.0]
    with Store.open(config.store_url, create=False) as store:
        metrics = LiveMetrics(sleeves=config.portfolio.sleeve_names)
        drift = DriftExport(config, store, metrics, interval_s=60.0, clock=lambda: now[0])
        done = []
        for now[0] in (0.0, 30.0, 59.9, 61.0, 100.0, 121.5):
            done.append(drift.after_cycle(runner.last_ts_ns) is not None)
        assert done == [True, False, False, True, False, True]
        assert drift.finish(runner.last_ts_ns) is None  # nothing new since the last one
        drift.after_cycle(runner.last_ts_ns)
        assert drift.finish(runner.last_ts_ns) is not None and drift.computations == 4
        every = DriftExport(config, store, metrics, interval_s=0.0, clock=lambda: now[0])
        assert all(every.after_cycle(runner.last_ts_ns) is not None for _ in range(3))
    # The same figures the runner exported at its last bar.
    assert (
        exported(metrics)[("drift_pnl", POSITION)]
        == exported(runner.metrics)[("drift_pnl", POSITION)]
    )


def test_a_divergence_before_any_trade_is_zero_not_an_error(tmp_path):
    config = parse_config(raw_config(tmp_path), source="divergence-test.toml")
    Runner(config, max_bars=1).run()
    with Store.open(config.store_url, create=False) as store:
        report = divergence(config, store)
    assert report.counts() == {"matched": 0, "missing": 0, "extra": 0}
    assert report.pnl_difference == 0.0 and report.equity_drift_pct == 0.0


class ReplayVenue(FakeAlpaca):
    """The fake venue with a matching engine that replays the same bars: a market order decided
    on bar t (read from the runner's store by its client order id) fills at bar t+1's open,
    moved by the assumed slippage (or ``slip_bps``), unless the test said to reject it, fill
    part of it (the rest expires, as a day order does at the close) or let it expire unfilled
    (keyed by the decision bar's time)."""

    def __init__(self, bars, store_url: str) -> None:
        super().__init__()
        self.store_url = store_url
        self.next_open = {int(bars.ts_ns[t]): float(bars.open[t + 1, 0])
                          for t in range(bars.n_bars - 1)}  # fmt: skip
        self.slip_bps: dict[int, float] = {}
        self.reject: set[int] = set()
        self.never_fill: set[int] = set()
        self.partly: dict[int, float] = {}

    def decision_bar(self, cid: str) -> int | None:
        with Store.open(self.store_url, create=False) as store:
            found = [i.bar_ts_ns for i in store.intents() if i.client_order_id == cid]
        return found[0] if found else None

    def handle(self, method, path, query, headers, body):
        if (method, path) == ("POST", "/v2/orders"):
            if self.decision_bar(body.get("client_order_id", "")) in self.reject:
                return 422, {}, {"code": 40310000, "message": "insufficient buying power"}
        return super().handle(method, path, query, headers, body)

    def _try_fill(self, order: dict) -> None:
        bar = self.decision_bar(order["client_order_id"])
        if bar in self.never_fill:
            order["status"] = "expired"
            return
        if bar in self.next_open:
            sign = 1.0 if order["side"] == "buy" else -1.0
            slip = self.slip_bps.get(bar, ASSUMED_BPS)
            self.prices[order["symbol"]] = self.next_open[bar] * (1 + sign * slip / 1e4)
        partly = bar in self.partly
        if partly:
            self.partial_qty = order["qty"] * self.partly.pop(bar)
        super()._try_fill(order)
        if partly:
            order["status"] = "expired"


@pytest.fixture
def replay_venue(tmp_path, monkeypatch):
    """The replay venue over this module's bars, alpaca-py's keys pointed at it: (bars, venue)."""
    bars = load_bars(SOURCE, symbols=["SP500"], start=START, end=END)
    venue = ReplayVenue(bars, f"sqlite:///{tmp_path}/divergence.db").start()
    monkeypatch.setenv(KEY_ENV, venue.key_id)
    monkeypatch.setenv(SECRET_ENV, venue.secret_key)
    venue.set_price("SP500", float(bars.close[0, 0]))
    try:
        yield bars, venue
    finally:
        venue.stop()


def _alpaca(venue: ReplayVenue) -> dict:
    """The [broker] table of alpaca-py against ``venue``."""
    return {"kind": "alpaca", "mode": "paper", "key_id_env": KEY_ENV,
            "secret_key_env": SECRET_ENV, "trading_url": venue.url, "data_url": venue.url,
            "stream_url": venue.stream_url, "timeout_s": 2.0, "retry_base_s": 0.001,
            "max_backoff_s": 0.01}  # fmt: skip


def _toml(raw: dict) -> str:
    """This module's configs as TOML (tables of scalars, lists and inline tables)."""

    def value(v) -> str:
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    out = []
    for name, table in raw.items():
        for item in table if isinstance(table, list) else [table]:
            out.append(f"[[{name}]]" if isinstance(table, list) else f"[{name}]")
            out += [f"{k} = {value(v)}" for k, v in item.items()]
    return "\n".join(out) + "\n"


def _entries(config) -> list[int]:
    """The decision bars (UTC ns) of the backtest's entries."""
    from quantshift.portfolio import portfolio_backtest

    bars = load_bars(SOURCE, symbols=["SP500"], start=START, end=END)
    trades = portfolio_backtest(config.portfolio, bars).trades
    return [int(bars.ts_ns[np.searchsorted(bars.ts_ns, r.entry_time.value) - 1])
            for r in trades.itertuples()]  # fmt: skip


def test_each_injected_difference_is_found_on_its_trade_and_attributed(tmp_path, replay_venue):
    bars, venue = replay_venue
    raw = raw_config(tmp_path, _alpaca(venue))
    config = parse_config(raw, source="divergence-test.toml")
    entries = _entries(config)
    assert len(entries) >= 5
    slipped, rejected, partial, unfilled = (entries[i] for i in (1, 2, 3, 4))
    venue.slip_bps[slipped] = ASSUMED_BPS + 20.0
    venue.reject.add(rejected)
    venue.partly[partial] = 0.5
    venue.never_fill.add(unfilled)
    Runner(config).run()
    with Store.open(config.store_url, create=False) as store:
        report = divergence(config, store)
    by_entry = {r["entry_ns"]: r for r in report.rows}

    def row_of(decided_ns):
        return by_entry[int(bars.ts_ns[np.searchsorted(bars.ts_ns, decided_ns) + 1])]

    for row in report.rows:  # the causes add up to each trade's P&L difference
        assert sum(row["causes"].values()) == pytest.approx(row["pnl_difference"], abs=1e-6)
        assert row["causes"].get("unexplained", 0.0) == 0.0
    assert sum(report.by_cause.values()) == pytest.approx(report.pnl_difference, abs=1e-6)
    slip = row_of(slipped)
    assert slip["kind"] == "matched" and slip["entry_slippage_bps"] == pytest.approx(20.0, rel=1e-3)
    assert slip["causes"]["entry price"] < 0
    assert row_of(rejected)["kind"] == "missing"
    assert row_of(rejected)["reason"] == "rejected by the venue"
    assert "partial fill" in row_of(partial)["causes"]
    # Half of what the decision asked (both sides size at the decision).
    assert row_of(partial)["live_qty"] == pytest.approx(row_of(partial)["backtest_qty"] * 0.5,
                                                        rel=0.01)  # fmt: skip
    assert row_of(unfilled)["kind"] == "missing"
    assert row_of(unfilled)["reason"] in ("sent, never filled", "cancelled before it filled")
    untouched = [
        r
        for r in report.rows
        if r["kind"] == "matched"
        and r["entry_ns"] not in {row_of(c)["entry_ns"] for c in (slipped, partial)}
    ]
    assert untouched and all(abs(r["entry_slippage_bps"]) < 1e-6 for r in untouched)
    path = tmp_path / "venue.toml"
    path.write_text(_toml(raw))
    code, out = live("divergence", "--config", str(path), "--json", "--max-drift-pct", "0")
    assert code == 1
    data = json.loads(out)
    assert data["trades"]["missing"] >= 2 and "missing trade" in data["by_cause"]


def test_a_slipped_fill_is_exported_as_slippage_and_as_negative_drift(tmp_path, replay_venue):
    _, venue = replay_venue
    raw = raw_config(tmp_path, _alpaca(venue))
    raw["metrics"] = {"port": 0}
    config = parse_config(raw, source="divergence-test.toml")
    slip_bps = 25.0
    venue.slip_bps[_entries(config)[1]] = slip_bps
    runner = Runner(config, max_bars=100)  # to May 2014: the slipped trade and two more closed
    runner.run()
    with Store.open(config.store_url, create=False) as store:
        report = divergence(config, store)
        fills = len(store.fills())
    samples = exported(runner.metrics)
    assert report.counts()["matched"] >= 3
    # One fill slipped 25 bps, every other one the assumed 5.
    assert samples[("fill_slippage_bps_count", POSITION)] == fills
    assert samples[("fill_slippage_bps_bucket", POSITION | {("le", "3.0")})] == 0
    assert samples[("fill_slippage_bps_bucket", POSITION | {("le", "5.0")})] == fills - 1
    assert samples[("fill_slippage_bps_bucket", POSITION | {("le", "20.0")})] == fills - 1
    assert samples[("fill_slippage_bps_bucket", POSITION | {("le", "30.0")})] == fills
    # The slipped entry cost money: live is behind the backtest by exactly the report's amount.
    # (Later entries are sized on that smaller equity: small size differences follow.)
    assert report.by_cause["entry price"] < -10 * abs(report.by_cause.get("size", 0.0))
    assert report.pnl_difference < 0
    assert samples[("drift_pnl", POSITION)] == pytest.approx(report.pnl_difference)
    assert samples[("drift_pct", POSITION)] == pytest.approx(report.drift_pct)
    assert samples[("drift_pct", POSITION)] < -1e-4
    assert samples[("drift_equity_pct", frozenset())] < 0


def test_a_store_without_decided_bars_is_one_clear_error(tmp_path):
    raw = raw_config(tmp_path)
    config = parse_config(raw, source="divergence-test.toml")
    Store.open(config.store_url).close()
    path = tmp_path / "empty.toml"
    path.write_text(_toml(raw))
    code, out = live("divergence", "--config", str(path))
    assert code == 2 and "has no decided bars of runner 'divergence-test'" in out
    code, out = live("divergence", "--config", str(path), "--since", "yesterday-ish")
    assert code == 2 and out == "error: --since 'yesterday-ish' is not a date (use YYYY-MM-DD)"
