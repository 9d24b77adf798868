"""Golden output of the commands people read: `live status`, `promotions list` and the gate
report of `promotions show`, on a store filled with fixed times and a fixed clock.

The expected text is in tests/golden/. After an intended change of the output, regenerate it
and review the diff: ``UPDATE_GOLDEN=1 uv run pytest tests/test_cli_golden.py``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from test_promotion_record import GOOD, record
from typer.testing import CliRunner

import live.status
from live.cli import app as live_app
from live.store import Store
from quantshift.cli import app
from quantshift.promotion import PaperGate, evaluate_paper_gate

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
S = 1_000_000_000
NOW_NS = 1_796_580_000 * S  # 2026-12-06 18:00:00 UTC
DAY_NS = 86_400 * S
BAR_NS = 1_514_851_200 * S  # 2018-01-02 00:00:00 UTC

CONFIG = """
[runner]
name = "golden"
market = "equities"
mode = "paper"

[[sleeves]]
name = "trend"
strategy = "ma_crossover"
promotion = "trend"
symbols = ["SP500"]
allocation = 0.5

[[sleeves]]
name = "reversion"
strategy = "rsi_reversion"
symbols = ["SP500"]
allocation = 0.5

[feed]
kind = "replay"
source = "builtin:sp500"

[store]
url = "sqlite:///golden.db"
"""


def check_golden(name: str, text: str, tmp_path: Path) -> None:
    """Compare ``text`` (with the temporary directory written as <tmp>) with its golden file."""
    text = text.replace(str(tmp_path), "<tmp>")
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} missing: run UPDATE_GOLDEN=1 uv run pytest {__file__}"
    assert text == path.read_text(), f"{name} changed; if intended, regenerate (see docstring)"


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    """A runner's store as a replay left it: two hosts' heartbeats (the leader stopped 3 min
    ago), a position, equity over two days, a HALT, and three promotion records of which the
    active one of 'trend' was FORCED past a failed gate and is adopted by sleeve trend."""
    monkeypatch.setattr(live.status, "now_ns", lambda: NOW_NS)
    (tmp_path / "golden.toml").write_text(CONFIG)
    passed = record(created_at="2026-11-20T09:00:00+00:00")
    weak = dataclasses.replace(GOOD, dsr=0.9366, pbo=0.76, oos_trades=12, causal=False,
                               causality="SP500: ma_crossover: LOOKS AHEAD at bar 3")  # fmt: skip
    forced = record(
        params={"fast": 12.0, "slow": 90.0},
        gates=(evaluate_paper_gate(weak, PaperGate(), force=True),),
        created_at="2026-11-21T09:00:00+00:00",
    )
    other = record(
        name="breakout", strategy="breakout_momentum", params={"lookback": 55.0, "atr_mult": 3.5},
        allocation=0.25, created_at="2026-11-22T09:00:00+00:00",
    )  # fmt: skip
    with Store.open(f"sqlite:///{tmp_path / 'golden.db'}") as store:
        store.claim_owner("golden", "quantshift-golden")
        store.claim_epoch(2, by="host-a")
        ids = {}
        for k, (r, by) in enumerate(
            ((passed, "quant@desk"), (forced, "lead@desk"), (other, "quant@desk"))
        ):
            row = store.add_promotion(
                name=r.name, stage=r.stage, code_fingerprint=dict(r.code),
                record=r.to_json(), created_by=by, ts_ns=NOW_NS - (3 - k) * DAY_NS,
            )  # fmt: skip
            ids[r.record_id] = row.promotion_id
        store.record_adoption(
            runner="golden", sleeve="trend", promotion_id=ids[forced.record_id],
            record_id=forced.record_id, bar_ts_ns=BAR_NS, epoch=2,
        )  # fmt: skip
        store.record_equity(ts_ns=BAR_NS, equity=100_000.0, epoch=2)
        store.record_equity(ts_ns=BAR_NS + DAY_NS, equity=97_687.49973035883, epoch=2)
        store.upsert_position(
            sleeve="trend", symbol="SP500", qty=18.123456, avg_price=2_695.8123,
            ts_ns=BAR_NS + DAY_NS, epoch=2,
        )  # fmt: skip
        store.halt("max drawdown 16.2% over the 15% breaker", by="runner host-a", epoch=2,
                   ts_ns=NOW_NS - 240 * S)  # fmt: skip
        store.heartbeat("host-a", "leader", 2, NOW_NS - 200 * S)
        store.heartbeat("host-b", "standby", None, NOW_NS - 12 * S)
    return tmp_path


def test_live_status(store_dir):
    shown = CliRunner().invoke(live_app, ["status", "--config", str(store_dir / "golden.toml")])
    assert shown.exit_code == 0, shown.output
    check_golden("live_status.txt", shown.output, store_dir)


def test_promotions_list(store_dir):
    url = f"sqlite:///{store_dir / 'golden.db'}"
    shown = CliRunner().invoke(app, ["promotions", "list", "--store", url])
    assert shown.exit_code == 0, shown.output
    check_golden("promotions_list.txt", shown.output, store_dir)


def test_gate_report_of_a_forced_record(store_dir):
    url = f"sqlite:///{store_dir / 'golden.db'}"
    shown = CliRunner().invoke(app, ["promotions", "show", "trend", "--store", url])
    assert shown.exit_code == 0, shown.output
    check_golden("gate_report.txt", shown.output, store_dir)
