"""What a person reads of a live runner: its HALT and resume in the log, no portfolio value
before its first cycle, a finished replay that says so, heartbeat ages and a stale leader."""

from __future__ import annotations

import logging

from typer.testing import CliRunner

from live.cli import app as live_app
from live.config import parse_config
from live.metrics import LiveMetrics
from live.runner import Runner
from live.status import HaltWatch, gather_status
from live.store import Store


def _config(tmp_path, **feed):
    raw = {
        "runner": {"name": "status-test", "market": "equities", "mode": "paper"},
        "sleeves": [
            {"name": "trend", "strategy": "ma_crossover", "symbols": ["SP500"],
             "allocation": 1.0, "params": {"fast": 5, "slow": 20}},
        ],
        "feed": {"source": "builtin:sp500", "start": "2018-06-01", "end": "2018-06-15", **feed},
        "store": {"url": f"sqlite:///{tmp_path}/state.db"},
        "metrics": {"enabled": False},
    }  # fmt: skip
    return parse_config(raw, source="status-test.toml")


def _samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"quantshift_live_{name}")]


def test_regression_no_portfolio_value_is_exported_before_the_first_cycle():
    """A restarted runner exported portfolio_value 0 until its first cycle, which fires every
    alert on equity; the series is declared (rules and panels find it) but has no sample."""
    metrics = LiveMetrics(["trend"])
    families = {family.name for family in metrics.registry.collect()}
    assert {"quantshift_live_portfolio_value", "quantshift_live_daily_pnl"} <= families
    assert _samples(metrics.render(), "portfolio_value") == []
    assert _samples(metrics.render(), "daily_pnl") == []
    metrics.set_portfolio(99_500.25, -500.0, 1)
    assert _samples(metrics.render(), "portfolio_value") == [
        "quantshift_live_portfolio_value 99500.25"
    ]
    assert _samples(metrics.render(), "daily_pnl") == ["quantshift_live_daily_pnl -500.0"]


def test_halt_and_resume_are_logged_once_when_they_take_effect(tmp_path, caplog):
    with Store.open(f"sqlite:///{tmp_path}/halts.db") as store:
        watch = HaltWatch(store)
        with caplog.at_level(logging.WARNING, logger="quantshift.live"):
            watch.observe(None, 1_528_070_400_000_000_000, 1)
            halt = store.halt("news", by="desk")
            for _ in range(3):  # the cycles under it, a redo of the bar among them
                watch.observe(store.active_halt(), 1_528_156_800_000_000_000, 1)
            store.resume(by="lead")
            watch.observe(store.active_halt(), 1_528_243_200_000_000_000, 1)
            watch.observe(store.active_halt(), 1_528_329_600_000_000_000, 1)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"HALT {halt.halt_id} in effect from bar 2018-06-05 00:00:00: news (by desk at "
        f"{messages[0].split(' at ')[1].split(' UTC')[0]} UTC); no new orders until `live resume`",
        f"HALT {halt.halt_id} cleared by lead: trading resumes at bar 2018-06-06 00:00:00",
    ]
    assert caplog.records[0].cycle == 1_528_156_800_000_000_000


def test_the_runner_logs_a_halt_in_effect_and_a_finished_replay_says_so(tmp_path, caplog):
    config = _config(tmp_path)
    assert Runner(config, max_bars=2).run().bars == 2
    with Store.open(config.store_url) as store:
        store.halt("desk says stop", by="pytest")
    with caplog.at_level(logging.WARNING, logger="quantshift.live"):
        assert Runner(config).run().ended == "replay finished"
    halts = [r.getMessage() for r in caplog.records if "in effect" in r.getMessage()]
    assert len(halts) == 1 and "desk says stop (by pytest" in halts[0]
    # The leader stopped: status shows its heartbeat age, and warns once it is stale.
    with Store.open(config.store_url) as store:
        fresh = gather_status(config, store)
    assert fresh["leader"]["age_s"] < 60 and fresh["leader_stale"] is None
    import live.status

    later = fresh["leader"]["ts_ns"] + 3_600 * 1_000_000_000
    original = live.status.now_ns
    live.status.now_ns = lambda: later
    try:
        with Store.open(config.store_url) as store:
            stale = gather_status(config, store)
    finally:
        live.status.now_ns = original
    assert stale["leader"]["age_s"] == 3_600.0
    assert (
        stale["leader_stale"] == "stopped: no heartbeat for 60 min (a replay heartbeats every bar)"
    )
    # Run again: nothing is left, and the command says why and what to do, not "0 bars".
    path = tmp_path / "status-test.toml"
    path.write_text(
        '[runner]\nname = "status-test"\nmarket = "equities"\nmode = "paper"\n\n'
        '[[sleeves]]\nname = "trend"\nstrategy = "ma_crossover"\nsymbols = ["SP500"]\n'
        "allocation = 1.0\nparams = { fast = 5, slow = 20 }\n\n"
        '[feed]\nsource = "builtin:sp500"\nstart = "2018-06-01"\nend = "2018-06-15"\n\n'
        f'[store]\nurl = "{config.store_url}"\n\n[metrics]\nenabled = false\n'
    )
    again = CliRunner().invoke(live_app, ["run", "--config", str(path)])
    assert again.exit_code == 0, again.output
    assert again.output.strip().splitlines()[-1] == (  # after the runner's JSON log lines
        "status-test: 0 bars to run: the replay has finished (last bar 2018-06-14 00:00:00 UTC, "
        f"stored in {config.store_url}); use a new store ([store] url) or delete that one to "
        "replay again"
    )


def test_the_lease_reads_as_fields_not_a_python_dict():
    from live.status import status_lines

    base = {
        "runner": "r", "store": "sqlite:///s.db", "schema_version": 5, "fence_epoch": 4,
        "owner": {"runner": "r", "lease_name": "l"}, "leader": None, "heartbeats": [],
        "equity": None, "realized_pnl": 0.0, "day_pnl": None, "open_orders": 0,
    }  # fmt: skip
    held = {"held": True, "epoch": 4, "ttl_left_ms": 2_150, "last_epoch": 4}
    free = {"held": False, "epoch": None, "ttl_left_ms": None, "last_epoch": 4}
    lines = {
        name: [text for text, _ in status_lines({**base, "lease": lease}) if "lease" in text]
        for name, lease in (("held", held), ("free", free), ("down", {"error": "refused"}))
    }
    assert lines == {
        "held": ["lease: held by epoch 4, 2.1 s left (last epoch 4)"],
        "free": ["lease: free (last epoch 4)"],
        "down": ["lease: cannot read it: refused"],
    }
    assert not any("{" in text for text, _ in status_lines({**base, "lease": held}))
