"""Runner metrics scraped over HTTP and read by prometheus_client's own parser.

Checks values after runner calls, the localhost binding, separate registries and bounded labels.
"""

from __future__ import annotations

import socket
import time
import urllib.request

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from live.metrics import HALT_REASONS, ORDER_OUTCOMES, LiveMetrics
from quantshift.errors import ConfigError

NS = "quantshift_live"


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


def _value(samples, name: str, **labels) -> float | None:
    return samples.get((f"{NS}_{name}", frozenset(labels.items())))


def test_values_after_runner_calls_scraped_over_http():
    metrics = LiveMetrics(sleeves=["ma", "rsi"])
    metrics.heartbeat(1_700_000_000.5)
    with metrics.cycle():
        time.sleep(0.03)
    metrics.cycle_started()
    metrics.cycle_finished()
    metrics.record_signal("ma")
    metrics.record_signal("ma", count=2)
    metrics.record_order("ma", "submitted", count=2)
    metrics.record_order("ma", "filled")
    metrics.record_order("rsi", "blocked_by_guard")
    metrics.set_leader(True, 7)
    metrics.set_portfolio(101_250.5, -312.25, 3)
    metrics.set_halt(True, "orders_per_minute")
    metrics.set_halt(True, "orders_per_minute")  # still the same HALT: counted once
    metrics.set_promoted("ma", "rec-2024-001")
    with metrics.serve(port=0) as server:
        text = _scrape(server.url)
    samples = _samples(text)
    assert _value(samples, "heartbeat_timestamp_seconds") == 1_700_000_000.5
    assert _value(samples, "cycle_duration_seconds_count") == 2
    assert _value(samples, "cycle_duration_seconds_sum") >= 0.03
    assert _value(samples, "cycle_duration_seconds_bucket", le="0.02") == 1  # the empty cycle
    assert _value(samples, "cycle_duration_seconds_bucket", le="0.05") == 2
    assert _value(samples, "signals_total", sleeve="ma") == 3
    assert _value(samples, "signals_total", sleeve="rsi") == 0  # series exist from the start
    assert _value(samples, "orders_total", sleeve="ma", outcome="submitted") == 2
    assert _value(samples, "orders_total", sleeve="ma", outcome="filled") == 1
    assert _value(samples, "orders_total", sleeve="rsi", outcome="blocked_by_guard") == 1
    assert _value(samples, "orders_total", sleeve="rsi", outcome="rejected") == 0
    assert _value(samples, "leader") == 1 and _value(samples, "epoch") == 7
    assert _value(samples, "portfolio_value") == 101_250.5
    assert _value(samples, "daily_pnl") == -312.25
    assert _value(samples, "open_positions") == 3
    assert _value(samples, "halt_active") == 1
    assert _value(samples, "halts_total", reason="orders_per_minute") == 1
    assert _value(samples, "halts_total", reason="manual") == 0
    assert _value(samples, "promoted_record_info", sleeve="ma", record_id="rec-2024-001") == 1
    # render() gives what a scrape gets (apart from the clock-driven _created values).
    rendered = {k: v for k, v in _samples(metrics.render()).items() if "_created" not in k[0]}
    assert rendered == {k: v for k, v in samples.items() if "_created" not in k[0]}


def test_state_changes_replace_earlier_values():
    metrics = LiveMetrics()
    metrics.set_leader(True, 3)
    metrics.set_leader(False, None)  # lost: the epoch of the last term stays visible
    metrics.set_halt(True, "manual")
    metrics.set_halt(False)
    metrics.set_halt(True, "daily_loss_limit")
    metrics.set_promoted("ma", "rec-1")
    metrics.set_promoted("ma", "rec-2")
    metrics.set_promoted("rsi", "rec-9")
    metrics.set_promoted("rsi", None)
    samples = _samples(metrics.render())
    assert _value(samples, "leader") == 0 and _value(samples, "epoch") == 3
    assert _value(samples, "halt_active") == 1
    assert _value(samples, "halts_total", reason="manual") == 1
    assert _value(samples, "halts_total", reason="daily_loss_limit") == 1
    promoted = {k for k in samples if k[0] == f"{NS}_promoted_record_info"}
    assert promoted == {
        (f"{NS}_promoted_record_info", frozenset({"sleeve": "ma", "record_id": "rec-2"}.items()))
    }


def test_cycle_is_timed_when_it_raises():
    metrics = LiveMetrics()
    with pytest.raises(RuntimeError), metrics.cycle():
        raise RuntimeError("broker down")
    assert _value(_samples(metrics.render()), "cycle_duration_seconds_count") == 1
    with pytest.raises(ConfigError, match="without cycle_started"):
        metrics.cycle_finished()


def test_bound_to_localhost_by_default():
    metrics = LiveMetrics()
    with metrics.serve(port=0) as server:
        assert server.host == "127.0.0.1"
        port_hex = f"{server.port:04X}"
        with open("/proc/net/tcp") as f:  # the kernel's table of listening sockets
            listening = [line.split()[1] for line in f if line.split()[1].endswith(f":{port_hex}")]
        assert listening == [f"0100007F:{port_hex}"]  # 127.0.0.1, not 0.0.0.0
        other_ip = _non_loopback_ip()
        if other_ip is not None:
            with pytest.raises(OSError):
                socket.create_connection((other_ip, server.port), timeout=1).close()
        assert _scrape(server.url)
    with pytest.raises(OSError):  # closed: the port is free again
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def _non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it picks the route's address
        except OSError:
            return None
        ip = s.getsockname()[0]
    return None if ip.startswith("127.") else ip


def test_two_runners_in_one_process_do_not_share_values():
    first, second = LiveMetrics(), LiveMetrics()
    first.record_signal("ma", count=5)
    first.set_leader(True, 4)
    second.record_signal("ma")
    with first.serve(port=0) as one, second.serve(port=0) as two:
        a, b = _samples(_scrape(one.url)), _samples(_scrape(two.url))
    assert _value(a, "signals_total", sleeve="ma") == 5
    assert _value(b, "signals_total", sleeve="ma") == 1
    assert _value(a, "epoch") == 4 and _value(b, "epoch") == 0
    assert prometheus_client.REGISTRY.get_sample_value(f"{NS}_epoch") is None  # not global


def test_label_values_are_bounded():
    metrics = LiveMetrics(sleeves=["ma"])
    with pytest.raises(ConfigError, match=r"unknown order outcome 'partial'.*blocked_by_guard"):
        metrics.record_order("ma", "partial")
    with pytest.raises(ConfigError, match="unknown sleeve 'rsi'"):
        metrics.record_signal("rsi")
    with pytest.raises(ConfigError, match="unknown HALT reason"):
        metrics.set_halt(True, "guard orders_per_minute: 31 orders in the last minute")
    with pytest.raises(ConfigError, match="unknown HALT reason None"):
        metrics.set_halt(True)
    with pytest.raises(ConfigError, match="unknown sleeve"):
        metrics.set_promoted("rsi", "rec-1")
    samples = _samples(metrics.render())
    orders = {k for k in samples if k[0] == f"{NS}_orders_total"}
    halts = {k for k in samples if k[0] == f"{NS}_halts_total"}
    assert len(orders) == len(ORDER_OUTCOMES) and len(halts) == len(HALT_REASONS)
    assert all(v == 0 for k, v in samples.items() if k in orders | halts)


def test_port_errors_name_the_address():
    metrics = LiveMetrics()
    with metrics.serve(port=0) as server:
        with pytest.raises(ConfigError, match=f"127.0.0.1:{server.port}"):
            metrics.serve(port=server.port)
    for bad in (-1, 70000, "9200", True):
        with pytest.raises(ConfigError, match="metrics port"):
            metrics.serve(port=bad)


def _example_config(tmp_path, **metrics):
    import copy
    import tomllib
    from pathlib import Path

    from live.config import parse_config

    example = Path(__file__).resolve().parents[1] / "live" / "examples" / "paper_sp500.toml"
    raw = copy.deepcopy(tomllib.loads(example.read_text()))
    raw["store"]["url"] = f"sqlite:///{tmp_path}/state.db"
    raw["metrics"].update(metrics)
    raw["feed"].update(start="2015-01-01", end="2017-01-01")
    return parse_config(raw, source="test.toml")


def test_drawdown_and_daily_loss_against_the_breakers_from_a_state(tmp_path):
    from live.clock import MarketClock
    from quantshift.portfolio import PortfolioState

    config = _example_config(tmp_path)
    saved = PortfolioState.initial(config.portfolio).to_dict()  # 100,000 in cash
    saved.update(peak_equity=125_000.0, day_start_equity=104_000.0)
    state = PortfolioState.from_dict(saved, config.portfolio)
    metrics = LiveMetrics(sleeves=config.portfolio.sleeve_names)
    metrics.started(MarketClock("crypto", 60), config.portfolio.limits)
    now_s = time.time()
    metrics.set_state(state, int((now_s - 150) * 1e9))
    samples = _samples(metrics.render())
    assert _value(samples, "drawdown_pct") == pytest.approx(20.0)
    assert _value(samples, "daily_loss_pct") == pytest.approx(100 * 4_000 / 104_000)
    assert _value(samples, "breaker_limit_pct", breaker="max_drawdown") == 15.0
    assert _value(samples, "breaker_limit_pct", breaker="daily_loss_limit") == 5.0
    assert _value(samples, "bar_interval_seconds") == 60
    assert _value(samples, "data_age_intervals") == pytest.approx(2.5, abs=0.05)
    assert _value(samples, "last_bar_timestamp_seconds") == pytest.approx(now_s - 150)
    assert _value(samples, "sleeve_equity", sleeve="trend") == pytest.approx(33_000.0)
    # Every sleeve and symbol has a position series from the first state on: 0 while flat.
    for sleeve in config.portfolio.sleeve_names:
        for symbol in ("SP500", "NASDAQ"):
            assert _value(samples, "position_units", sleeve=sleeve, symbol=symbol) == 0.0
    # A gain: no drawdown below zero, no negative loss.
    saved.update(peak_equity=90_000.0, day_start_equity=90_000.0)
    metrics.set_state(PortfolioState.from_dict(saved, config.portfolio), time.time_ns())
    samples = _samples(metrics.render())
    assert _value(samples, "drawdown_pct") == 0.0 and _value(samples, "daily_loss_pct") == 0.0


def test_leader_terms_count_each_term_won_once():
    metrics = LiveMetrics()
    metrics.set_leader(False, 0)
    metrics.set_leader(True, 1)
    metrics.set_leader(True, 1)  # the same term, exported again
    metrics.set_leader(False, 0)
    metrics.set_leader(True, 2)
    assert _value(_samples(metrics.render()), "leader_terms_total") == 2


def test_runner_exports_the_positions_and_sleeve_equity_the_store_records(tmp_path):
    from live.runner import Runner
    from live.store import Store

    config = _example_config(tmp_path, port=0)
    runner = Runner(config, max_bars=300)
    runner.run()
    samples = _samples(runner.metrics.render())
    with Store.open(config.store_url) as store:
        held = {(p.sleeve, p.symbol): p.qty for p in store.positions()}
        sleeves = {s: store.equity_curve(s)[-1] for s in config.portfolio.sleeve_names}
    assert held, "the replay should leave some position open"
    for sleeve in config.portfolio.sleeve_names:
        assert _value(samples, "sleeve_equity", sleeve=sleeve) == sleeves[sleeve].equity
        for symbol in ("SP500", "NASDAQ"):
            exported = _value(samples, "position_units", sleeve=sleeve, symbol=symbol)
            assert exported == held.get((sleeve, symbol), 0.0)
    last_bar_s = _value(samples, "last_bar_timestamp_seconds")
    assert last_bar_s == sleeves["trend"].ts_ns / 1e9
    assert _value(samples, "ready") == 1 and _value(samples, "leader_terms_total") == 1


def test_slippage_and_drift_from_the_backtest_per_sleeve_and_symbol():
    metrics = LiveMetrics(sleeves=["trend", "reversion"])
    samples = _samples(metrics.render())
    assert _value(samples, "assumed_slippage_bps") is None  # no sample before it is known
    assert _value(samples, "drift_equity_pct") is None
    metrics.set_execution_model(5.0, ["SP500", "NASDAQ"])
    samples = _samples(metrics.render())
    assert _value(samples, "assumed_slippage_bps") == 5.0
    for sleeve in ("trend", "reversion"):  # every series exists, empty, from the start
        for symbol in ("SP500", "NASDAQ"):
            assert _value(samples, "fill_slippage_bps_count", sleeve=sleeve, symbol=symbol) == 0
    # A fill at exactly the assumed slippage lands in the bucket it bounds, float noise or not.
    metrics.observe_slippage("trend", "SP500", 5.000000000001)
    metrics.observe_slippage("trend", "SP500", 4.999999999999)
    metrics.observe_slippage("trend", "SP500", 25.0)
    metrics.observe_slippage("trend", "SP500", -3.0)  # better than the open
    samples = _samples(metrics.render())
    at = {"sleeve": "trend", "symbol": "SP500"}
    assert _value(samples, "fill_slippage_bps_bucket", **at, le="-2.0") == 1
    assert _value(samples, "fill_slippage_bps_bucket", **at, le="3.0") == 1
    assert _value(samples, "fill_slippage_bps_bucket", **at, le="5.0") == 3
    assert _value(samples, "fill_slippage_bps_bucket", **at, le="20.0") == 3
    assert _value(samples, "fill_slippage_bps_bucket", **at, le="30.0") == 4
    pnl = {("trend", "SP500"): -250.0, ("trend", "NASDAQ"): 0.0, ("reversion", "SP500"): 50.0}
    metrics.set_drift(pnl, 100_000.0, -0.2, 1_700_000_000 * 10**9, 0.025)
    metrics.set_drift(pnl, 100_000.0, float("nan"), 1_700_000_060 * 10**9, 0.030)
    samples = _samples(metrics.render())
    assert _value(samples, "drift_pnl", **at) == -250.0
    assert _value(samples, "drift_pct", **at) == pytest.approx(-0.25)
    assert _value(samples, "drift_pct", sleeve="reversion", symbol="SP500") == pytest.approx(0.05)
    assert _value(samples, "drift_equity_pct") == -0.2  # NaN (no live snapshot) keeps the last
    assert _value(samples, "drift_bar_timestamp_seconds") == 1_700_000_060
    assert _value(samples, "drift_computation_seconds") == 0.030
    with pytest.raises(ConfigError, match="'rsi'"):
        metrics.observe_slippage("rsi", "SP500", 1.0)
    with pytest.raises(ConfigError, match="'rsi'"):
        metrics.set_drift({("rsi", "SP500"): 1.0}, 100_000.0, 0.0, 0, 0.0)
