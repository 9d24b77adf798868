"""The live runner on the paper broker: the trades of the portfolio backtest, exactly; idempotent
resumption; guards and halts that bound the damage."""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from test_live_logs import json_log_buffer

import live.runner as runner_module
from live.config import parse_config
from live.paper import PaperVenue
from live.reconcile import reconcile
from live.runner import Runner
from live.store import Store
from live.store.errors import RunnerLockedError, StoreMissingError
from quantshift.data import load_bars
from quantshift.portfolio import portfolio_backtest

EXAMPLE = Path(__file__).resolve().parents[1] / "live" / "examples" / "paper_sp500.toml"
RAW = tomllib.loads(EXAMPLE.read_text())


def _config(tmp_path, **changes):
    raw = copy.deepcopy(RAW)
    raw["store"]["url"] = f"sqlite:///{tmp_path}/state.db"
    raw["metrics"]["enabled"] = False
    raw["feed"].update(start="2015-01-01", end="2017-01-01")
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    return parse_config(raw, source="test.toml")


def _store_trades(config):
    with Store.open(config.store_url) as store:
        return sorted(
            (t.sleeve, t.symbol, t.direction, t.entry_ts_ns, t.exit_ts_ns, t.entry_price,
             t.exit_price, t.qty, t.pnl, t.exit_reason)
            for t in store.trades()
        )  # fmt: skip


def _backtest_trades(config):
    bars = load_bars(
        config.feed.source,
        symbols=list(config.portfolio.symbols),
        start=config.feed.start,
        end=config.feed.end,
    )
    result = portfolio_backtest(config.portfolio, bars)
    closed = result.trades[result.trades["exit_reason"] != "open"]
    return sorted(
        (r.sleeve, r.symbol, r.direction, r.entry_time.value, r.exit_time.value, r.entry_price,
         r.exit_price, r.units, r.pnl, r.exit_reason)
        for r in closed.itertuples()
    )  # fmt: skip


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("parity"), costs={"size": 0.5})
    summary = Runner(config).run()
    return config, summary


def assert_same_trades(live, backtest):
    """The same closed trades: sleeve, symbol, direction, entry and exit times and reasons
    exactly; prices, units and P&L to 1e-9 (relative).

    Both sides size at the decision. The configs here commit half of a sleeve's equity per
    entry (``size = 0.5``): with the whole of it, a gap up makes the sleeve's cash short at
    the open and the backtest cuts the decided units there (units x open x (1 + fees) <=
    max_leverage x equity), while a venue fills the units it was sent (on this replay 15 of
    34 entries differ that way; tests/test_engine_sizing.py pins the cut itself)."""
    assert len(live) == len(backtest)
    for ours, theirs in zip(live, backtest, strict=True):
        assert ours[:5] == theirs[:5] and ours[-1] == theirs[-1], (ours, theirs)
        assert ours[5:9] == pytest.approx(theirs[5:9], rel=1e-9, abs=1e-9), (ours, theirs)


def test_parity_replay_equals_the_portfolio_backtest_trade_for_trade(replayed):
    config, summary = replayed
    assert summary.ended == "replay finished" and summary.bars > 400
    live_trades = _store_trades(config)
    assert len(live_trades) >= 10
    assert any(t[-1] == "stop_loss" for t in live_trades)  # resting stops filled at the venue
    # exact floats: the same fill model
    assert_same_trades(live_trades, _backtest_trades(config))


def test_every_order_reached_the_venue_once_and_the_books_agree(replayed):
    config, summary = replayed
    venue = PaperVenue(config.store_url)
    orders = venue.orders()
    venue.close()
    assert len(orders) == summary.orders and all(o.submits == 1 for o in orders)
    with Store.open(config.store_url) as store:
        assert reconcile(config, store).ok
        intents = store.intents()
        assert all(i.state == "FILLED" for i in intents if i.order_type == "market")
        # a protective leg fills or is cancelled (its OCO sibling filled, or a strategy exit)
        assert {i.state for i in intents if i.order_type != "market"} <= {
            "FILLED",
            "CANCELLED",
            "ACKED",
        }
        assert store.status().leader.epoch == 0


def test_a_second_run_resumes_and_redoes_nothing(tmp_path):
    config = _config(tmp_path, costs={"size": 0.5})
    first = Runner(config, max_bars=200).run()
    assert first.ended == "max_bars" and first.bars == 200
    second = Runner(config).run()
    assert second.ended == "replay finished" and second.bars > 200
    assert_same_trades(_store_trades(config), _backtest_trades(config))
    venue = PaperVenue(config.store_url)
    assert all(o.submits == 1 for o in venue.orders())
    venue.close()


def test_a_second_runner_on_the_same_store_is_refused(tmp_path):
    config = _config(tmp_path)
    with Store.open(config.store_url) as store, store.single_runner_lock():
        with pytest.raises(RunnerLockedError):
            Runner(config, max_bars=1).run()


def test_a_strategy_repeating_an_order_500_times_ends_with_one_order_and_a_halt(
    tmp_path, monkeypatch
):
    real_decide = runner_module.decide

    def buggy(state, signals, config):
        decision = real_decide(state, signals, config)
        entries = [o for o in decision.orders if o.action == "entry"]
        if not entries:
            return decision
        import dataclasses

        return dataclasses.replace(decision, orders=tuple(entries[:1] * 500))

    monkeypatch.setattr(runner_module, "decide", buggy)
    config = _config(tmp_path)
    summary = Runner(config, max_bars=300).run()
    venue = PaperVenue(config.store_url)
    orders = venue.orders()
    venue.close()
    assert all(o.submits == 1 for o in orders)
    with Store.open(config.store_url) as store:
        halt = store.active_halt()
        assert halt is not None and halt.reason.startswith("guard orders_per_decision")
        intents = store.intents()
    # One entry went out; the only other orders are that position's protective legs, resting
    # at the venue, which keep working during a HALT (at most one of them fills).
    sent = [(i.details["action"], i.details.get("reason")) for i in intents]
    assert sent[0] == ("entry", "entry")
    assert all(action == "protect" for action, _ in sent[1:])
    assert {(i.sleeve, i.symbol) for i in intents} == {(intents[0].sleeve, intents[0].symbol)}
    assert len(orders) <= 2
    assert summary.bars == 300


def _run_until_positions_are_open(config) -> None:
    Runner(config, max_bars=200).run()
    for _ in range(30):
        with Store.open(config.store_url) as store:
            if len([p for p in store.positions() if p.qty != 0]) >= 2:
                return
        Runner(config, max_bars=5).run()


def test_halt_stops_new_orders_and_flatten_closes_positions(tmp_path):
    config = _config(tmp_path)
    _run_until_positions_are_open(config)

    def entries(store):
        return [i for i in store.intents() if i.details["action"] == "entry"]

    with Store.open(config.store_url) as store:
        assert [p for p in store.positions() if p.qty != 0], "the scenario needs positions"
        n_entries = len(entries(store))
        store.halt("test", by="pytest")
    Runner(config, max_bars=50).run()
    with Store.open(config.store_url) as store:
        assert len(entries(store)) == n_entries  # no new entry while halted
        store.resume(by="pytest")
        store.halt("test (flatten)", by="pytest")
    Runner(config, max_bars=3).run()
    with Store.open(config.store_url) as store:
        assert not [p for p in store.positions() if p.qty != 0]
        assert any(i.details["reason"] == "flatten" for i in store.intents())
        assert reconcile(config, store).ok


def test_replay_speed_paces_the_cycles(tmp_path):
    config = _config(tmp_path, feed={"speed": 20.0})
    import time

    started = time.perf_counter()
    Runner(config, max_bars=10).run()
    assert time.perf_counter() - started >= 9 / 20.0
    assert not math.isnan(np.float64(1.0))


def test_sigterm_finishes_the_cycle_and_a_restart_completes_the_replay(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    config = _config(tmp_path, feed={"speed": 50.0})
    text = EXAMPLE.read_text()
    for old, new in (
        ('url = "sqlite:///../../data/live/paper-sp500.db"', f'url = "{config.store_url}"'),
        ("enabled = true", "enabled = false"),
        ('start = "2015-01-01"', 'start = "2015-01-01"\nend = "2017-01-01"'),
        ("speed = 0 ", "speed = 50 "),
        ("slippage_bps = 2.0\n", "slippage_bps = 2.0\nsize = 0.5\n"),  # see assert_same_trades
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "live.toml"
    path.write_text(text)
    command = [sys.executable, "-c", "from live.cli import main; main()", "run", "-c", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Signal once the runner has saved a cycle: a fixed sleep raced the imports on a busy machine,
    # and a SIGTERM before the handler is installed kills the process instead of stopping it.
    deadline = time.monotonic() + 120.0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with Store.open(config.store_url, create=False) as store:
                if store.load_runner_state(config.name) is not None:
                    break
        except StoreMissingError:
            pass  # the runner has not created its store yet
        time.sleep(0.2)
    assert process.poll() is None, "the replay ended before it could be stopped"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    assert "stopped" in out
    with Store.open(config.store_url) as store:
        saved = store.load_runner_state(config.name)
        assert saved is not None and reconcile(config, store).ok
    fast = _config(tmp_path, costs={"size": 0.5})
    assert Runner(fast).run().ended == "replay finished"
    assert_same_trades(_store_trades(fast), _backtest_trades(fast))


def test_a_replay_older_than_twenty_years_runs_on_the_exchange_calendar(tmp_path):
    config = _config(tmp_path, feed={"start": "2000-01-01", "end": "2000-12-31"},
                     costs={"size": 0.5})  # fmt: skip
    summary = Runner(config).run()
    assert summary.ended == "replay finished" and summary.bars > 200
    assert_same_trades(_store_trades(config), _backtest_trades(config))


@pytest.fixture
def hooks():
    from live import failpoints

    yield failpoints.set_hook
    for name in failpoints.NAMES:
        failpoints.set_hook(name, None)


def test_a_halt_landing_mid_cycle_holds_the_runner_and_live_resume_trades_again(tmp_path, hooks):
    config = _config(tmp_path)

    halted_at: list[int] = []  # passes through after_state when the HALT was written
    cycles = [0]

    def halt_at_first_submit(n):
        # After this cycle read the HALT table, before its first order moves to SUBMITTING.
        if n == 1:
            with Store.open(config.store_url) as store:
                store.halt("operator, mid-cycle", by="pytest")
            halted_at.append(cycles[0])

    def resume_later(n):
        cycles[0] = n
        if halted_at and n == halted_at[0] + 20:  # a person resumes twenty bars later
            with Store.open(config.store_url) as store:
                store.resume(by="pytest")

    hooks("after_intent", halt_at_first_submit)
    hooks("after_state", resume_later)
    summary = Runner(config, max_bars=400).run()
    assert summary.bars == 400 and summary.ended == "max_bars"  # it held, it did not exit
    with Store.open(config.store_url) as store:
        intents = store.intents()
        halts = store.halts()
    first = intents[0]
    assert first.state == "CANCELLED", first  # never sent, and not left NEW
    assert not [i for i in intents if i.state == "NEW"]
    (halt,) = halts
    resumed_ns = halt.ts_cleared_ns
    assert resumed_ns is not None
    sent = [i for i in intents if i.state == "FILLED"]
    assert sent and all(i.ts_decided_ns > resumed_ns for i in sent)  # nothing before the resume
    assert any(i.details["action"] == "entry" for i in sent)  # trading again after it
    venue = PaperVenue(config.store_url)
    assert {o.client_order_id for o in venue.orders()} == {i.client_order_id for i in sent}
    venue.close()


def test_a_flatten_halt_landing_mid_cycle_still_sends_the_flatten_orders(tmp_path, hooks):
    config = _config(tmp_path)
    _run_until_positions_are_open(config)

    def halt_at_first_submit(n):
        if n == 1:
            with Store.open(config.store_url) as store:
                store.halt("operator, mid-cycle (flatten)", by="pytest")

    hooks("after_intent", halt_at_first_submit)
    summary = Runner(config, max_bars=150).run()
    assert summary.bars == 150
    with Store.open(config.store_url) as store:
        assert store.active_halt() is not None
        assert not [p for p in store.positions() if p.qty != 0]
        flattened = [i for i in store.intents() if i.details["reason"] == "flatten"]
        assert flattened and all(i.state == "FILLED" for i in flattened)
        assert not [i for i in store.intents() if i.state == "NEW"]
        assert reconcile(config, store).ok


def _run_in_thread(runner: Runner, seconds: float):
    """Run ``runner`` for at most ``seconds``; return (still running then, its exception)."""
    import threading

    failed: list[BaseException] = []

    def target():
        try:
            runner.run()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    hung = thread.is_alive()
    runner.stop_event.set()
    thread.join(30)
    return hung, failed[0] if failed else None


def test_with_redis_unreachable_the_standby_logs_json_lines_with_backoff(tmp_path, capsys):
    import json
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    config = _config(tmp_path, lease={"redis_url": f"redis://:pw-s3cret@127.0.0.1:{port}/0"})
    with json_log_buffer() as json_logs:
        hung, error = _run_in_thread(Runner(config), 4.0)
    assert hung and error is None  # a standby waits for Redis; it does not give up
    lines = json_logs.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON
    waiting = [r for r in records if "cannot reach the lease" in r["message"]]
    # Polls back off: 0.5, 1, 2 s... instead of ~8 lines a second.
    assert 2 <= len(waiting) <= 6, lines
    assert f"127.0.0.1:{port}" in waiting[0]["message"] and "next in" in waiting[-1]["message"]
    assert len(records) <= len(waiting) + 2
    assert "pw-s3cret" not in json_logs.getvalue()
    assert capsys.readouterr().err == ""  # nothing in plain text beside the JSON


def test_a_store_fenced_by_leased_runners_is_refused_without_redis_not_looped(tmp_path):
    from quantshift.errors import ConfigError

    config = _config(tmp_path)
    with Store.open(config.store_url) as store:
        store.claim_epoch(5)  # runners with a Redis lease wrote here
    hung, error = _run_in_thread(Runner(config, max_bars=5), 20.0)
    assert not hung
    assert isinstance(error, ConfigError) and "fenced at epoch 5" in str(error)
    assert "[lease] redis_url" in str(error)
    with Store.open(config.store_url) as store:
        assert store.intents() == []
