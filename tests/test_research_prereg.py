"""Pre-registered specs and the lockbox: a spec is registered by hash before its first trial, an
edited one is its parent's child and inherits its count, the walk-forward searches the root's
space, research never reads the lockbox, and promote's looks at it are counted."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from quantshift.engine.backtest import backtest
from quantshift.engine.metrics import infer_periods_per_year
from quantshift.errors import ConfigError
from quantshift.promotion import PaperGate, PromotionRecord, evaluate_paper_gate
from quantshift.provenance import code_fingerprint
from research.lockbox import evaluate_lockbox, split_lockbox
from research.preregistration import canonical_spec, spec_hash
from research.promote import evidence_from_summary, look_at_lockbox, with_lockbox
from research.registry import default_registry
from research.spec import parse_spec
from research.study import json_summary, load_experiment_bars, load_window, run

RAW = {
    "experiment": {"name": "prereg-test", "strategy": "ma_crossover", "seed": 3},
    "data": {"source": "builtin:sp500", "start": "2010-01-01", "end": "2015-01-01"},
    "costs": {"fees_bps": 1.0},
    "search": {
        "method": "grid",
        "min_trades": 3,
        "space": {"fast": [4.0, 8.0, 12.0], "slow": [30.0, 50.0, 70.0]},
    },
    "walk_forward": {"train": 400, "test": 200},
}


def _spec(name="prereg-test", seed=3, space=None, **sections):
    raw = {k: dict(v) for k, v in RAW.items()}
    raw["experiment"] = {**raw["experiment"], "name": name, "seed": seed}
    if space is not None:
        raw["search"] = {**raw["search"], "space": space}
    raw.update(sections)
    return parse_spec(raw, source=f"{name}.toml")


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch, tmp_path):
    monkeypatch.setenv("QUANTSHIFT_REGISTRY_URL", f"sqlite:///{tmp_path / 'registry.db'}")


def _study(spec, command="optimize"):
    return run(spec, command, track=False, plots=False)


def test_a_renamed_or_reseeded_study_is_the_same_registered_spec_and_its_trials_add_up():
    first = _study(_spec())
    again = _study(_spec(name="another-name", seed=11))
    a, b = first.summary["preregistration"], again.summary["preregistration"]
    assert a["spec_hash"] == b["spec_hash"]
    assert first.parts["registration"].new and not again.parts["registration"].new
    assert a["parent_hash"] is None and a["chain"] == [a["spec_hash"]]
    registry = default_registry()
    # Each study evaluated its 9 grid points on the same lineage and data: 18, not 9 twice.
    assert registry.count(a["lineage"], a["data"], spec_hash=a["spec_hash"]) >= 18
    assert spec_hash(canonical_spec(_spec(name="x", seed=99))) == a["spec_hash"]


def test_a_narrowed_spec_is_a_child_that_inherits_the_count_and_walks_forward_on_the_root_space():
    root = _study(_spec())
    pre = root.summary["preregistration"]
    registry = default_registry()
    before = registry.count(pre["lineage"], pre["data"])
    narrowed = _spec(space={"fast": [8.0], "slow": [50.0]})
    child = _study(narrowed, "report")
    c = child.summary["preregistration"]
    assert c["parent_hash"] == pre["spec_hash"] and c["chain"] == [c["spec_hash"], pre["spec_hash"]]
    assert c["root_hash"] == pre["spec_hash"] and c["walk_forward_space"] == "root"
    assert "root spec" in c["walk_forward_space_note"]
    assert child.summary["spec"] == (
        f"{c['spec_hash']} (ma_crossover) child of {pre['spec_hash']}; "
        "walk-forward on the root's space"
    )
    # The child's count on this lineage and data includes every trial its parent ran.
    assert registry.count(c["lineage"], c["data"]) >= before + 1 > before >= 9
    # The walk-forward searched the root's 3 x 3 grid, not the narrowed single point.
    ledger = child.parts["walk_forward"].ledger.frame
    assert set(ledger["fast"]) == {4.0, 8.0, 12.0} and set(ledger["slow"]) == {30.0, 50.0, 70.0}
    # A spec that is edited again is a child of the latest one.
    grand = _study(_spec(space={"fast": [8.0, 12.0], "slow": [50.0]}))
    assert grand.summary["preregistration"]["chain"] == [
        grand.summary["preregistration"]["spec_hash"],
        c["spec_hash"],
        pre["spec_hash"],
    ]


def test_research_never_reads_the_lockbox():
    spec = _spec()
    window = load_window(spec)
    research = load_experiment_bars(spec)
    assert research.n_bars == window.n_bars - round(0.2 * window.n_bars)
    report = _study(spec, "report")
    box = report.summary["lockbox"]
    assert box["bars"] == window.n_bars - research.n_bars
    assert report.summary["data_last_bar"] < box["first_bar"]
    assert report.summary["data_bars"] == research.n_bars
    wf = report.parts["walk_forward"]
    assert wf.equity.index[-1] < pd.Timestamp(box["first_bar"])
    assert report.parts["best"].equity.index[-1] < pd.Timestamp(box["first_bar"])


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (0.7, r"prereg-test.toml: \[lockbox\] fraction: must be in \[0, 0.5\]"),
        ("a", r"\[lockbox\] fraction: must be a number"),
    ],
)
def test_a_bad_lockbox_setting_is_refused_naming_the_key(value, match):
    with pytest.raises(ConfigError, match=match):
        _spec(lockbox={"fraction": value})
    with pytest.raises(ConfigError, match=r"\[lockbox\] size: unknown key"):
        _spec(lockbox={"size": 3})


def test_the_lockbox_numbers_match_a_plain_computation():
    spec = _spec()
    bars = load_window(spec)
    _, lockbox = split_lockbox(bars, 0.2)
    params = {"fast": 8.0, "slow": 50.0}
    got = evaluate_lockbox("ma_crossover", bars, params, spec.costs, int(lockbox.ts_ns[0]))
    equity = backtest("ma_crossover", bars, params, config=spec.costs).equity.iloc[:, 0]
    start = bars.n_bars - lockbox.n_bars
    returns = equity.iloc[start - 1 :].pct_change().dropna()
    assert len(returns) == got["bars"] == lockbox.n_bars
    annual = math.sqrt(infer_periods_per_year(bars.ts_ns))  # the engine's annualisation
    assert got["sharpe"] == pytest.approx(returns.mean() / returns.std() * annual, rel=1e-9)
    total = equity.iloc[-1] / equity.iloc[start - 1] - 1.0
    assert got["total_return_pct"] == pytest.approx(100.0 * total, rel=1e-9)


def _gate_lines(summary, run_id):
    evidence, _ = evidence_from_summary(summary, code_fingerprint("ma_crossover"), None)
    lockbox, counts = look_at_lockbox(summary, run_id)
    result = evaluate_paper_gate(with_lockbox(evidence, lockbox), PaperGate())
    return lockbox, counts, {c.name: c for c in result.checks}


def test_a_second_look_by_another_choice_fails_and_every_look_is_counted():
    report = _study(_spec())
    summary = json_summary(report)
    box, counts, checks = _gate_lines(summary, "run-1")
    assert box["looks"] == 1 and box["other_choices_before"] == 0
    assert checks["lockbox looks by other choices before this one"].passed
    assert checks["lockbox Sharpe"].value == box["sharpe"]
    assert "lockbox looked at once" in checks["lockbox Sharpe"].note
    assert counts["trials"] >= 9 and counts["lineage"] == "ma_crossover"
    # The same choice again learns nothing new: counted, not failed.
    box, _, checks = _gate_lines(summary, "run-1")
    assert box["looks"] == 2 and box["choices"] == 1
    assert checks["lockbox looks by other choices before this one"].passed
    assert "lockbox looked at 2 times" in checks["lockbox Sharpe"].note
    # Another choice on the same lockbox: the lockbox is spent.
    other = dict(summary, best_params={"fast": 4.0, "slow": 70.0})
    box, _, checks = _gate_lines(other, "run-2")
    relook = checks["lockbox looks by other choices before this one"]
    assert box["looks"] == 3 and box["choices"] == 2 and not relook.passed and relook.value == 2
    assert "lockbox looked at 3 times by 2 different choices" in relook.note
    waived = evaluate_paper_gate(
        with_lockbox(evidence_from_summary(other, code_fingerprint("ma_crossover"), None)[0], box),
        PaperGate(allow_lockbox_relook=True),
    )
    line = next(c for c in waived.checks if c.name.startswith("lockbox looks")).line()
    assert line.startswith("WAIVED") and "allow_lockbox_relook = true; would fail" in line


def test_a_study_without_a_lockbox_fails_the_gate_saying_so():
    report = _study(_spec(lockbox={"fraction": 0.0}))
    assert report.summary["lockbox"] == {"fraction": 0.0, "bars": 0}
    box, _, checks = _gate_lines(json_summary(report), "run-0")
    assert box == {}
    check = checks["lockbox Sharpe"]
    assert not check.passed and check.value is None
    assert check.note == "the study kept no lockbox"


def test_the_record_carries_spec_registry_and_lockbox_and_old_records_keep_their_id():
    from test_promotion_record import record

    plain = record()
    assert not {"preregistration", "registry", "lockbox"} & set(plain.to_dict())
    full = dataclasses.replace(
        plain,
        preregistration={"spec_hash": "spabc", "lineage": "ma_crossover",
                         "chain": ["spabc", "sp0"]},
        registry={"trials": 341, "n_effective": 57.2, "studies": 3, "specs": 2},
        lockbox={"first_bar": "2016-01-04", "last_bar": "2017-12-29", "bars": 503,
                 "sharpe": 0.4, "total_return_pct": 6.1, "looks": 2, "note": "looked at 2 times"},
    )  # fmt: skip
    assert full.record_id != plain.record_id
    back = PromotionRecord.from_json(full.to_json())
    assert back == full and back.record_id == full.record_id
    text = "\n".join(full.summary_lines())
    assert "spec spabc of lineage ma_crossover (parents: spabc <- sp0)" in text
    assert "registry: 341 trials of ma_crossover on this data (effective N 57.2)" in text
    assert "lockbox 2016-01-04..2017-12-29 (503 bars): Sharpe 0.4" in text
    tampered = full.to_dict()
    tampered["lockbox"] = {**tampered["lockbox"], "looks": 1}
    with pytest.raises(ConfigError, match="does not match its content"):
        PromotionRecord.from_dict(tampered)
    assert np.isfinite(full.registry["n_effective"])
