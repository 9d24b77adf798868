"""The live runner trading through the real SDKs against local fake venues: every decision is
an intent before it is an order, fills are applied as the venue reports them, a crash or an
ambiguous answer never duplicates an order, and the venue and the store always agree."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_broker_alpaca import KEY_ENV, SECRET_ENV
from test_broker_coinbase import KEY_ENV as CB_KEY_ENV
from test_broker_coinbase import KEY_NAME, new_key
from test_broker_coinbase import SECRET_ENV as CB_SECRET_ENV

import live.runner as runner_module
from live.broker import BrokerAuthError, OrderRequest, leg_id, leg_of
from live.config import load_config, parse_config
from live.reconcile import reconcile
from live.runner import Runner
from live.store import Store
from live.venues import build_broker
from quantshift.data import write_parquet
from quantshift.data.synthetic import synthetic_bars
from quantshift.errors import ConfigError
from tests.fakes.alpaca_server import FakeAlpaca
from tests.fakes.coinbase_server import FakeCoinbase

PRICES = {"SP500": 2000.0, "NASDAQ": 4500.0}


@pytest.fixture
def alpaca(monkeypatch):
    venue = FakeAlpaca().start()
    for symbol, price in PRICES.items():
        venue.set_price(symbol, price)
    monkeypatch.setenv(KEY_ENV, venue.key_id)
    monkeypatch.setenv(SECRET_ENV, venue.secret_key)
    yield venue
    venue.stop()


def alpaca_raw(venue: FakeAlpaca, tmp_path, **broker) -> dict:
    return {
        "runner": {"name": "venue-test", "market": "equities", "mode": "paper"},
        "sleeves": [
            {"name": "trend", "strategy": "ma_crossover", "params": {"fast": 5, "slow": 20},
             "symbols": ["SP500", "NASDAQ"], "allocation": 0.5},
            {"name": "reversion", "strategy": "rsi_reversion", "symbols": ["SP500"],
             "allocation": 0.5, "stop_atr": 2.0},
        ],
        "risk": {"max_position_pct": 60.0, "max_heat_pct": 50.0},
        "costs": {"cash": 100_000.0, "whole_units": True},  # Alpaca rests whole shares only
        "feed": {"source": "builtin:sp500,nasdaq", "start": "2015-01-01", "end": "2015-09-01"},
        "broker": {
            "kind": "alpaca", "mode": "paper", "key_id_env": KEY_ENV, "secret_key_env": SECRET_ENV,
            "trading_url": venue.url, "data_url": venue.url, "stream_url": venue.stream_url,
            "timeout_s": 2.0, "retry_base_s": 0.001, "max_backoff_s": 0.01, **broker,
        },
        "store": {"url": f"sqlite:///{tmp_path}/venue.db"},
        "guards": {"max_orders_per_decision": 5, "price_collar_pct": 100.0},
        "metrics": {"enabled": False},
    }  # fmt: skip


def alpaca_config(venue: FakeAlpaca, tmp_path, **broker):
    return parse_config(alpaca_raw(venue, tmp_path, **broker), source="venue-test.toml")


def venue_orders(venue: FakeAlpaca) -> dict[str, dict]:
    """The venue's orders by our client order ids: the order carrying a position's protection
    (its group's id, ``leg_id(group, "group")``) and its OCO leg named as our legs."""
    with venue.lock:
        orders = {o["id"]: dict(o) for o in venue.orders.values()}
    out = {}
    for order in orders.values():
        parent = orders.get(order["parent"]) if order["parent"] else None
        carrier = leg_of((parent or order)["client_order_id"])
        if carrier is not None and carrier[1] == "group":
            out[leg_id(carrier[0], order["type"])] = order
        elif parent is None:
            out[order["client_order_id"]] = order
    return out


def assert_store_matches_venue(config, venue: FakeAlpaca) -> None:
    with Store.open(config.store_url) as store:
        intents = {i.client_order_id: i for i in store.intents()}
        state = store.load_runner_state(config.name)
        assert store.active_halt() is None, store.active_halt()
    at_venue = venue_orders(venue)
    # Every venue order is one of our intents, once; every filled intent is at the venue.
    assert set(at_venue) <= set(intents)
    assert {c for c, i in intents.items() if i.state == "FILLED"} <= set(at_venue)
    for cid, order in at_venue.items():
        assert intents[cid].filled_qty == pytest.approx(float(order["filled_qty"]))
    assert state is not None
    with venue.lock:
        venue_positions = {s: q for s, q in venue.positions.items() if abs(q) > 1e-6}
    ours: dict[str, float] = {}
    with Store.open(config.store_url) as store:
        for p in store.positions():
            ours[p.symbol] = ours.get(p.symbol, 0.0) + p.qty
    ours = {s: q for s, q in ours.items() if abs(q) > 1e-6}
    assert venue_positions == pytest.approx(ours)


def test_the_runner_trades_through_alpaca_and_the_venue_agrees_with_the_store(alpaca, tmp_path):
    config = alpaca_config(alpaca, tmp_path)
    summary = Runner(config).run()
    assert summary.ended == "replay finished" and summary.trades >= 5
    assert_store_matches_venue(config, alpaca)
    with Store.open(config.store_url) as store:
        trades = store.trades()
        fills = store.fills()
    # Closed trades carry the venue's execution prices (the fake fills at its set price).
    exits = [t.exit_price for t in trades if t.symbol == "SP500"]
    assert exits and exits == pytest.approx([PRICES["SP500"]] * len(exits), rel=1e-12)
    assert all(f.venue == "alpaca" for f in fills)
    with alpaca.lock:  # one POST per order sent (an OCO carries two legs)
        sent = [o for o in alpaca.orders.values() if o["parent"] is None]
    assert alpaca.calls("POST", "/v2/orders") == len(sent)
    with Store.open(config.store_url) as store:
        assert reconcile(config, store).ok
    # Someone trades the account by hand: `live reconcile` names the order and the position.
    outsider = build_broker(config)
    outsider.submit(OrderRequest(client_order_id="manual-1", symbol="NASDAQ", side="buy", qty=2))
    outsider.close()
    with Store.open(config.store_url) as store:
        report = reconcile(config, store)
    assert not report.ok and report.orders_missing_in_store == ["manual-1"]
    (symbol,) = report.position_mismatches
    assert symbol == "NASDAQ" and "MISMATCH NASDAQ" in "\n".join(report.lines())


CHILD = """
import json, sys
from live.config import load_config, parse_config
from live.reconcile import reconcile
from live.runner import Runner
Runner(parse_config(json.loads(sys.argv[1]), source="child.toml")).run()
"""


def test_a_crash_after_the_submit_never_duplicates_an_order(alpaca, tmp_path):
    raw = alpaca_raw(alpaca, tmp_path)
    env = {**os.environ, "QUANTSHIFT_FAILPOINTS": "after_submit=3"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(raw)], env=env, capture_output=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    with Store.open(raw["store"]["url"]) as store:
        unfinished = [i for i in store.intents() if i.state == "SUBMITTING"]
    assert len(unfinished) == 1  # died between the venue's answer and our record of it
    posts = alpaca.calls("POST", "/v2/orders")
    config = parse_config(raw, source="venue-test.toml")
    Runner(config).run()
    assert_store_matches_venue(config, alpaca)
    cids = [o["client_order_id"] for o in venue_orders(alpaca).values()]
    assert len(cids) == len(set(cids)) and unfinished[0].client_order_id in cids
    assert alpaca.calls("POST", "/v2/orders") > posts


def test_an_ambiguous_504_is_resolved_by_lookup_at_the_next_bar(alpaca, tmp_path):
    config = alpaca_config(alpaca, tmp_path)
    alpaca.fail("POST", "/v2/orders", 504, land=True)
    Runner(config).run()
    assert_store_matches_venue(config, alpaca)
    with Store.open(config.store_url) as store:
        events = [e for i in store.intents() for e in store.order_events(i.client_order_id)]
    assert any(e.to_state == "UNKNOWN" for e in events)
    assert all(i.state != "UNKNOWN" for i in Store.open(config.store_url).intents())


def test_a_position_the_store_does_not_know_halts_at_start(alpaca, tmp_path):
    with alpaca.lock:
        alpaca.positions["SP500"] = 7.0
    config = alpaca_config(alpaca, tmp_path)
    runner = Runner(config, max_bars=3)
    runner.run()
    # Counted as a reconciliation mismatch, the reason the alert rule watches.
    assert 'quantshift_live_halts_total{reason="reconcile_mismatch"} 1.0' in runner.metrics.render()
    with Store.open(config.store_url) as store:
        halt = store.active_halt()
        assert halt is not None and "reconcile: SP500 venue 7 vs ours 0" in halt.reason
        assert store.intents() == []  # nothing was sent while the books disagree


def test_wrong_keys_stop_the_runner_before_anything_happens(alpaca, tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    config = alpaca_config(alpaca, tmp_path)
    with pytest.raises(BrokerAuthError) as caught:
        Runner(config).run()
    assert "not-the-secret" not in str(caught.value) and SECRET_ENV in str(caught.value)
    assert alpaca.calls("POST", "/v2/orders") == 0


def test_a_replay_is_never_sent_to_a_real_venue(alpaca, tmp_path):
    config = alpaca_config(alpaca, tmp_path)
    real = dataclasses.replace(
        config,
        broker=dataclasses.replace(
            config.broker,
            options={k: v for k, v in config.broker.options.items() if not k.endswith("_url")},
        ),
    )
    with pytest.raises(ConfigError, match="replayed feed would send orders for past bars"):
        Runner(real).run()


def test_the_runner_trades_crypto_through_coinbase(tmp_path, monkeypatch):
    bars = synthetic_bars(n_symbols=1, n_bars=400, seed=4, freq="1h")
    bars = dataclasses.replace(bars, symbols=("BTC-USD",))
    path = write_parquet(bars, tmp_path / "btc.parquet")
    venue = FakeCoinbase().start()
    try:
        venue.set_price("BTC-USD", float(bars.close[-1, 0]))
        pem, public = new_key()
        venue.add_key(KEY_NAME, public)
        monkeypatch.setenv(CB_KEY_ENV, KEY_NAME)
        monkeypatch.setenv(CB_SECRET_ENV, pem)
        raw = {
            "runner": {"name": "crypto", "market": "crypto", "mode": "paper",
                       "bar_interval": "1h"},
            "sleeves": [{"name": "trend", "strategy": "ma_crossover",
                         "params": {"fast": 5, "slow": 20}, "symbols": ["BTC-USD"],
                         "allocation": 1.0}],
            # The fake fills at one fixed price while the replay marks at its closes: the
            # loss limits would read that gap as losses.
            "risk": {"max_position_pct": 50.0, "max_heat_pct": 50.0,
                     "daily_loss_limit_pct": 100.0, "max_drawdown_pct": 100.0},
            "costs": {"cash": 100_000.0},
            "feed": {"source": str(path)},
            "broker": {"kind": "coinbase", "mode": "paper", "api_key_env": CB_KEY_ENV,
                       "api_secret_env": CB_SECRET_ENV, "base_url": venue.base_url,
                       "ws_url": venue.ws_url, "ca_file": venue.ca_file, "timeout_s": 2.0,
                       "retry_base_s": 0.001, "max_backoff_s": 0.05},
            "store": {"url": f"sqlite:///{tmp_path}/crypto.db"},
            "guards": {"price_collar_pct": 100.0, "stale_after_intervals": 1e9},
            "metrics": {"enabled": False},
        }  # fmt: skip
        config = parse_config(raw, source="crypto-test.toml")
        summary = Runner(config).run()
        assert summary.ended == "replay finished" and summary.trades >= 3
        with Store.open(config.store_url) as store:
            assert store.active_halt() is None
            intents = store.intents()
            ours = sum(p.qty for p in store.positions() if p.symbol == "BTC-USD")
        assert intents and all(i.state in ("FILLED", "CANCELLED", "REJECTED") for i in intents)
        # Sizes go out on the product's base increment (0.00000001 BTC).
        entries = [i.qty for i in intents if i.details["action"] == "entry"]
        assert entries and all(abs(q * 1e8 - round(q * 1e8)) < 1e-4 for q in entries)
        with venue._lock:
            held = float(venue.balances.get("BTC", 0))
        assert held == pytest.approx(ours)
    finally:
        venue.stop()


class SimulatedMarket:
    """A wall clock the test moves, and a venue that publishes each minute bar as it forms
    (the newest bar is still forming: the feed must not trade on it)."""

    def __init__(self, venue: FakeAlpaca, bars, symbol: str, published: int) -> None:
        self.venue, self.bars, self.symbol = venue, bars, symbol
        self.interval_ns = 60 * 10**9
        self.now = int(bars.ts_ns[published - 1]) + self.interval_ns // 2  # inside a bar
        self.decided: list[tuple[int, int]] = []
        self.publish()

    def now_ns(self) -> int:
        return self.now

    def wait(self, stop, seconds: float) -> bool:
        self.now += int(seconds * 1e9)
        self.publish()
        return stop.is_set()

    def publish(self) -> None:
        started = self.bars.ts_ns <= self.now
        rows = []
        for i in np.flatnonzero(started):
            t = pd.Timestamp(int(self.bars.ts_ns[i]), tz="UTC")
            o, h, low, c, v = (float(getattr(self.bars, f)[i, 0]) for f in
                               ("open", "high", "low", "close", "volume"))  # fmt: skip
            rows.append({"t": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "o": o, "h": h, "l": low,
                         "c": c, "v": v, "n": 1, "vw": c})  # fmt: skip
        with self.venue.lock:
            self.venue.bars[self.symbol] = rows
        self.venue.set_price(self.symbol, rows[-1]["c"])  # trades happen at the latest price


def test_a_venue_feed_trades_each_minute_bar_once_it_has_closed(alpaca, tmp_path, monkeypatch):
    bars = synthetic_bars(n_symbols=1, n_bars=240, seed=9, freq="1min", start="2024-01-02 14:30")
    market = SimulatedMarket(alpaca, bars, "AAPL", published=120)
    raw = alpaca_raw(alpaca, tmp_path)
    raw["runner"]["bar_interval"] = "1m"
    raw["sleeves"] = [{"name": "trend", "strategy": "ma_crossover", "symbols": ["AAPL"],
                       "params": {"fast": 3, "slow": 8}, "allocation": 1.0}]  # fmt: skip
    raw["feed"] = {"kind": "venue", "history_bars": 100, "poll_s": 20.0, "settle_s": 2.0}
    raw["risk"].update(daily_loss_limit_pct=100.0, max_drawdown_pct=100.0)
    config = parse_config(raw, source="venue-feed-test.toml")
    decided: list[tuple[int, int]] = []
    decide = runner_module.decide

    def recording_decide(state, signals, portfolio):
        decided.append((signals.ts_ns, market.now))
        return decide(state, signals, portfolio)

    monkeypatch.setattr(runner_module, "decide", recording_decide)
    summary = Runner(config, max_bars=60, now_ns=market.now_ns, wait=market.wait).run()
    assert summary.bars == 60
    times = [t for t, _ in decided]
    # One decision per bar, in order, without gaps: bar 118 (at start 119 is still forming, so
    # 118 is the newest closed one) and then each following minute.
    assert times == [int(bars.ts_ns[i]) for i in range(118, 178)]
    # Never on a bar that had not closed (and settled) when the runner decided on it.
    assert all(now >= t + 62 * 10**9 for t, now in decided)
    assert summary.orders > 0
    assert_store_matches_venue(config, alpaca)


@pytest.mark.parametrize("name", ["alpaca_paper_equities", "coinbase_crypto"])
def test_the_example_venue_configs_are_valid_and_take_keys_from_the_environment(
    name, monkeypatch, tmp_path
):
    pem, _ = new_key()
    for variable, value in {
        "APCA_API_KEY_ID": "PKEXAMPLE", "APCA_API_SECRET_KEY": "example-secret-0123",
        "COINBASE_API_KEY": KEY_NAME, "COINBASE_API_SECRET": pem,
    }.items():  # fmt: skip
        monkeypatch.setenv(variable, value)
    path = Path(__file__).resolve().parents[1] / "live" / "examples" / f"{name}.toml"
    config = load_config(path)
    assert config.feed.kind == "venue" and config.broker.kind in ("alpaca", "coinbase")
    assert config.broker.mode == config.mode
    broker = build_broker(config)  # validates the venue options and reads the keys
    try:
        assert "example-secret-0123" not in repr(broker.config)
        assert pem.splitlines()[1] not in repr(broker.config)
    finally:
        broker.close()
    monkeypatch.delenv("APCA_API_SECRET_KEY")
    monkeypatch.delenv("COINBASE_API_SECRET")
    # Alpaca reads its keys when built, Coinbase when it connects: before any request either way.
    with pytest.raises(ConfigError, match="not found; tried environment variable"):
        build_broker(config).connect()


def test_no_secret_reaches_the_logs_or_the_store(alpaca, tmp_path, caplog):
    config = alpaca_config(alpaca, tmp_path)
    with caplog.at_level(logging.DEBUG):
        Runner(config, max_bars=40).run()
    database = Path(config.store_url.removeprefix("sqlite:///")).read_bytes()
    for secret in (alpaca.secret_key, alpaca.key_id):
        assert secret not in caplog.text
        assert secret.encode() not in database


def test_entries_are_rounded_down_to_what_the_venue_trades(alpaca, tmp_path):
    alpaca.whole_shares_only.add("SP500")  # NASDAQ stays fractionable (9 decimals)
    raw = alpaca_raw(alpaca, tmp_path)
    raw["sleeves"], raw["costs"]["whole_units"] = raw["sleeves"][:1], False  # no levels to rest
    config = parse_config(raw, source="venue-test.toml")
    Runner(config).run()
    with Store.open(config.store_url) as store:
        entries = [i for i in store.intents() if i.details["action"] == "entry"]
    whole = [i.qty for i in entries if i.symbol == "SP500"]
    fractional = [i.qty for i in entries if i.symbol == "NASDAQ"]
    assert whole and all(q == int(q) for q in whole)
    assert fractional and any(q != int(q) for q in fractional)
    assert all(abs(q * 1e9 - round(q * 1e9)) < 1e-3 for q in fractional)
    assert_store_matches_venue(config, alpaca)


def test_a_malformed_venue_answer_is_a_one_line_error_from_run_and_reconcile(alpaca, tmp_path):
    from live.broker import BrokerUnavailableError

    config = alpaca_config(alpaca, tmp_path)
    wrong_shape = [{"symbol": "SP500", "qty": "many"}]  # 200, but not a position
    alpaca.fail("GET", "/v2/positions", 200, body=wrong_shape, count=100)
    with pytest.raises(BrokerUnavailableError) as from_run:
        Runner(config, max_bars=3).run()
    with Store.open(config.store_url) as store, pytest.raises(BrokerUnavailableError) as from_rec:
        reconcile(config, store)
    for caught in (from_run, from_rec):
        message = str(caught.value)
        assert "positions: the venue's answer was not understood" in message
        assert "\n" not in message


def test_a_halt_landing_mid_cycle_holds_the_venue_runner_and_resume_trades_again(alpaca, tmp_path):
    from live import failpoints

    config = alpaca_config(alpaca, tmp_path)

    halted_at: list[int] = []  # passes through after_state when the HALT was written
    cycles = [0]

    def halt_at_first_submit(n):
        if n == 1:  # after the cycle read the HALT table, before the order moved to SUBMITTING
            with Store.open(config.store_url) as store:
                store.halt("operator, mid-cycle", by="pytest")
            halted_at.append(cycles[0])

    def resume_later(n):
        cycles[0] = n
        if halted_at and n == halted_at[0] + 10:  # a person resumes ten bars later
            with Store.open(config.store_url) as store:
                store.resume(by="pytest")

    failpoints.set_hook("after_intent", halt_at_first_submit)
    failpoints.set_hook("after_state", resume_later)
    try:
        summary = Runner(config).run()
    finally:
        failpoints.set_hook("after_intent", None)
        failpoints.set_hook("after_state", None)
    assert summary.ended == "replay finished"
    with Store.open(config.store_url) as store:
        intents = store.intents()
    assert intents[0].state == "CANCELLED" and not [i for i in intents if i.state == "NEW"]
    sent = {o["client_order_id"] for o in venue_orders(alpaca).values()}
    assert intents[0].client_order_id not in sent and sent  # trading went on after the resume
    assert_store_matches_venue(config, alpaca)
