"""The promotion record format and the gate: validation on load, every check with its threshold."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest

from quantshift.errors import ConfigError
from quantshift.promotion import (
    FORMAT_VERSION,
    GateConfig,
    LiveGate,
    PaperEvidence,
    PaperGate,
    PaperStretch,
    PromotionRecord,
    ResearchEvidence,
    evaluate_live_gate,
    evaluate_paper_gate,
    fingerprint_mismatch,
    load_gate_config,
    paper_evidence,
)

CODE = {"version": "0.1.0", "strategy_hash": "ab" * 32, "git_commit": "c" * 40, "git_dirty": False}
GOOD = ResearchEvidence(
    oos_method="walk-forward",
    oos_folds=10,
    oos_trades=40,
    oos_sharpe=0.6,
    oos_psr=0.98,
    dsr=0.97,
    n_trials=300,
    pbo=0.1,
    mc_max_drawdown_pct_p95=18.0,
    mc_source="out-of-sample bar returns",
    mc_method="block",
    code_dirty=False,
    strategy_file="quantshift/strategies/ma_crossover.py",
    strategy_file_git="committed",
    causality="SP500: ma_crossover: causal",
    causal=True,
)


def record(**changes) -> PromotionRecord:
    values = {
        "name": "trend",
        "stage": "paper",
        "strategy": "ma_crossover",
        "params": {"fast": 10.0, "slow": 50.0},
        "symbols": ("SP500",),
        "allocation": 0.5,
        "code": CODE,
        "data": {"source": "builtin:sp500", "fingerprint": "f" * 64},
        "in_sample": {"sharpe": 0.7},
        "out_of_sample": {"sharpe": 0.4, "trades": 40},
        "statistics": {"dsr": 0.97, "n_trials": 300, "pbo": 0.1},
        "monte_carlo": {"max_drawdown_pct_p95": 18.0},
        "gates": (evaluate_paper_gate(GOOD, PaperGate()),),
        "mlflow_run_id": "0123abcd",
        "created_by": "quant@desk",
        "created_at": "2026-11-22T10:00:00+00:00",
    }
    values.update(changes)
    return PromotionRecord(**values)


def test_a_record_round_trips_through_json_with_a_stable_content_id():
    r = record()
    back = PromotionRecord.from_json(r.to_json())
    assert back == r and back.record_id == r.record_id and r.record_id.startswith("pr")
    assert record(params={"fast": 11.0, "slow": 50.0}).record_id != r.record_id
    assert json.loads(r.to_json())["format_version"] == FORMAT_VERSION


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(format_version=99), "format_version 99 is not supported"),
        (lambda d: d.update(surprise=1), r"unknown key\(s\) \['surprise'\]"),
        (lambda d: d.pop("code"), r"missing key\(s\) \['code'\]"),
        (lambda d: d.update(stage="prod"), "stage must be one of"),
        (lambda d: d.update(allocation=1.5), r"allocation must be in \(0, 1\]"),
        (lambda d: d.update(symbols=[]), "symbols must be a non-empty list"),
        (lambda d: d.update(params={"fast": "ten"}), "params must map names to finite numbers"),
        (lambda d: d["params"].update(fast=12.0), "was altered after it was written"),
        (lambda d: d.pop("record_id"), "no record_id, so its content cannot be verified"),
        (lambda d: d.update(code={"version": "0.1.0"}), "code fingerprint lacks"),
        (lambda d: d["gates"][0].update(passed=False), "'passed' disagrees with its checks"),
    ],
)
def test_a_bad_record_is_refused_on_load_naming_what_is_wrong(change, match):
    data = json.loads(record().to_json())
    change(data)
    with pytest.raises(ConfigError, match=match):
        PromotionRecord.from_dict(data, "promotion 7")


def test_not_json_is_a_clear_error():
    with pytest.raises(ConfigError, match="promotion 3: not valid JSON"):
        PromotionRecord.from_json("{oops", "promotion 3")


def test_the_paper_gate_passes_good_evidence_and_names_each_failing_check():
    assert evaluate_paper_gate(GOOD, PaperGate()).passed
    bad = ResearchEvidence(
        oos_method=None, oos_folds=0, oos_trades=5, oos_sharpe=-0.2, oos_psr=0.3, dsr=0.80,
        n_trials=300, pbo=0.45,
        mc_max_drawdown_pct_p95=31.0, mc_source="in-sample bar or trade returns",
        mc_method="reshuffle", code_dirty=True, strategy_file="mine.py",
        strategy_file_git="untracked", causality="SP500: peeking: LOOKS AHEAD", causal=False,
    )  # fmt: skip
    result = evaluate_paper_gate(bad, PaperGate())
    assert not result.passed
    failed = {c.name: (c.value, c.threshold) for c in result.failed}
    assert failed == {
        "out-of-sample folds": (0, 1),
        "out-of-sample trades": (5, 20),
        "out-of-sample Sharpe": (-0.2, 0.0),
        "out-of-sample PSR": (0.3, 0.95),
        "deflated Sharpe ratio": (0.80, 0.95),
        "PBO": (0.45, 0.2),
        "Monte Carlo max drawdown p95 (%)": (31.0, 25.0),
        "Monte Carlo is a block bootstrap of out-of-sample bars": (False, True),
        "code committed (git clean)": (False, True),
        "strategy causal on the study's data": (False, True),
    }
    text = "\n".join(result.lines())
    assert "FAIL deflated Sharpe ratio 0.8 (needs >= 0.95; over 300 trials)" in text
    assert "reshuffle of in-sample bar or trade returns; the bound needs the stationary" in text
    assert "the strategy's source mine.py is untracked in git" in text
    assert "FAIL strategy causal on the study's data no (needs yes; SP500: peeking" in text


def test_regression_a_reshuffled_drawdown_bound_is_refused_unless_waived_and_shown_waived():
    reshuffled = dataclasses.replace(GOOD, mc_method="reshuffle")
    failed = evaluate_paper_gate(reshuffled, PaperGate())
    assert [c.name for c in failed.failed] == [
        "Monte Carlo is a block bootstrap of out-of-sample bars"
    ]
    waived = evaluate_paper_gate(reshuffled, PaperGate(require_block_bootstrap=False))
    assert waived.passed
    assert any(
        line.strip().startswith("WAIVED Monte Carlo is a block bootstrap")
        and "require_block_bootstrap = false" in line
        for line in waived.lines()
    )


def test_regression_an_oos_psr_under_095_fails_the_gate():
    weak = dataclasses.replace(GOOD, oos_psr=0.9)
    assert [c.name for c in evaluate_paper_gate(weak, PaperGate()).failed] == ["out-of-sample PSR"]


def test_regression_missing_evidence_fails_its_check_and_a_missing_pbo_fails_like_a_missing_dsr():
    missing = ResearchEvidence(
        oos_method="walk-forward", oos_folds=3, oos_trades=None, oos_sharpe=None, oos_psr=None,
        dsr=math.nan, n_trials=1, pbo=None, mc_max_drawdown_pct_p95=None, mc_source=None,
        mc_method=None, code_dirty=None, strategy_file=None, strategy_file_git=None,
        causality=None, causal=None,
    )  # fmt: skip
    result = evaluate_paper_gate(missing, PaperGate())
    assert {c.name for c in result.failed} == {
        "out-of-sample trades",
        "out-of-sample Sharpe",
        "out-of-sample PSR",
        "deflated Sharpe ratio",
        "PBO",
        "Monte Carlo max drawdown p95 (%)",
        "Monte Carlo is a block bootstrap of out-of-sample bars",
        "code committed (git clean)",
        "strategy causal on the study's data",
    }
    text = "\n".join(result.lines())
    assert "FAIL PBO missing (needs <= 0.2; not measured: the study has no [pbo] section" in text
    assert "the study did not run the causality check" in text
    assert all(c.value is None for c in result.failed if c.name != "code committed (git clean)")


def test_the_live_gate_reads_the_paper_record():
    good = PaperEvidence(
        trades=12, days=45.0, win_rate_pct=50.0, max_drawdown_pct=8.0, total_pnl=900.0,
        halts=0, first_ts_ns=0, last_ts_ns=1,
    )  # fmt: skip
    assert evaluate_live_gate(good, LiveGate()).passed
    legacy = PaperEvidence(
        trades=0, days=30.0, win_rate_pct=None, max_drawdown_pct=None, total_pnl=0.0,
        halts=1, first_ts_ns=0, last_ts_ns=1,
    )  # fmt: skip
    result = evaluate_live_gate(legacy, LiveGate())
    # "zero meaningful trades" never promotes, whatever else is true
    assert {c.name for c in result.failed} == {
        "paper trades",
        "paper win rate (%)",
        "paper max drawdown (%)",
        "HALTs during paper trading",
    }
    forced = evaluate_live_gate(legacy, LiveGate(), force=True)
    assert not forced.passed and forced.forced and "FORCED" in forced.lines()[0]


DAY_NS = 86_400 * 10**9
PUBLISHED_NS = 20_000 * DAY_NS  # 2024-10-04
STUDY_END_NS = PUBLISHED_NS - 300 * DAY_NS


def stretch(first_day: float, days: float, adopted_day: float, pnls=(), equity=()):
    return PaperStretch(
        runner="paper-trend", sleeve="trend",
        first_bar_ts_ns=PUBLISHED_NS + int(first_day * DAY_NS),
        last_bar_ts_ns=PUBLISHED_NS + int((first_day + days) * DAY_NS),
        ts_adopted_ns=PUBLISHED_NS + int(adopted_day * DAY_NS),
        trade_pnls=tuple(pnls), equity=tuple(equity),
    )  # fmt: skip


def evidence_of(*stretches):
    return paper_evidence(
        stretches, published_ts_ns=PUBLISHED_NS, data_last_bar_ts_ns=STUDY_END_NS, halts=0
    )


def test_paper_evidence_matches_a_plain_computation():
    rng = np.random.default_rng(5)
    equity = 100_000 * np.cumprod(1 + rng.normal(0, 0.01, 200))
    pnls = rng.normal(10, 100, 25)
    ev = evidence_of(stretch(1.0, 45.0, 1.5, pnls, equity))
    peak = pd_peak = equity[0]
    worst = 0.0
    for value in equity:
        pd_peak = max(pd_peak, value)
        worst = max(worst, (pd_peak - value) / pd_peak)
    assert peak > 0 and ev.max_drawdown_pct == pytest.approx(worst * 100, rel=1e-12)
    assert ev.win_rate_pct == pytest.approx(100 * np.mean(pnls > 0))
    assert ev.trades == 25 and ev.days == 45.0 and ev.total_pnl == pytest.approx(pnls.sum())
    assert ev.uncounted_days == 0.0 and ev.stretches[0]["clock"] == "wall-clock"
    assert ev.stretches[0]["counts"] is True


def test_regression_a_replay_only_paper_record_is_refused_and_the_gate_says_why():
    # A 5-second replay of 363 days of history, run after the record was published: it was
    # reported as "paper days: 363" and passed the live gate.
    pnls = [50.0] * 14 + [-20.0] * 6
    equity = np.linspace(100_000, 101_000, 363)
    replay = stretch(-1000.0, 363.0, 0.01, pnls, equity)
    ev = evidence_of(replay)
    assert ev.days == 0.0 and ev.trades == 0 and ev.uncounted_days == 363.0
    assert ev.stretches[0]["clock"] == "replay" and ev.stretches[0]["counts"] is False
    result = evaluate_live_gate(ev, LiveGate())
    assert not result.passed
    text = "\n".join(result.lines())
    assert (
        "FAIL paper days 0 (needs >= 30; counted on the wall clock; 363 days traded otherwise do "
        "not count: a replay (paper-trend/trend traded bars from 2022-01-08 on 2024-10-04, "
        "1000 days after they happened; only trading on the wall clock counts))"
    ) in text
    assert "FAIL paper trades 0 (needs >= 10; counted on the wall clock; 20 trades traded" in text


def test_paper_trading_before_publication_or_inside_the_study_window_does_not_count():
    early = evidence_of(stretch(-2.0, 40.0, -1.0, [10.0] * 12))
    assert early.days == 0.0 and "before the record was published" in early.uncounted_why
    inside = paper_evidence(
        [stretch(0.5, 40.0, 1.0, [10.0] * 12)],
        published_ts_ns=PUBLISHED_NS,
        data_last_bar_ts_ns=PUBLISHED_NS + 10 * DAY_NS,
        halts=0,
    )
    assert inside.days == 0.0 and "inside the study's data window" in inside.uncounted_why
    # Wall clock after both: counts, and a replay beside it is shown but not counted.
    both = evidence_of(stretch(1.0, 40.0, 1.5, [10.0] * 12), stretch(-900.0, 300.0, 2.0))
    assert both.days == 40.0 and both.trades == 12 and both.uncounted_days == 300.0
    assert [s["counts"] for s in both.stretches] == [True, False]


def test_gate_thresholds_come_from_toml_and_unknown_keys_are_refused(tmp_path):
    path = tmp_path / "gate.toml"
    path.write_text("[paper]\nmin_dsr = 0.9\n\n[live]\nmin_trades = 25\nallow_halts = true\n")
    gate = load_gate_config(path)
    assert gate.paper.min_dsr == 0.9 and gate.paper.max_pbo == 0.2
    assert gate.live.min_trades == 25 and gate.live.allow_halts is True
    assert load_gate_config(None) == GateConfig()
    for text, match in [
        ("[paper]\nmin_dsr_pct = 1\n", r"\[paper\] min_dsr_pct: unknown key; allowed: max_mc"),
        ("[paper]\nmin_dsr = 'high'\n", r"\[paper\] min_dsr: must be a number, got 'high'"),
        ("[paper]\nmin_dsr = -1\n", r"gate.toml: \[paper\] min_dsr = -1 must be a number >= 0"),
        ("[live]\nmin_trades = 2.5\n", r"\[live\] min_trades: must be an integer, got 2.5"),
        ("[live]\nallow_halts = 1\n", r"\[live\] allow_halts: must be true or false"),
        ("[prod]\n", r"gate.toml: prod: unknown section; allowed: live, paper"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_gate_config(path)


def test_fingerprints_must_agree_on_version_strategy_and_commit():
    assert fingerprint_mismatch(CODE, dict(CODE)) == []
    edited = {**CODE, "strategy_hash": "cd" * 32}
    assert fingerprint_mismatch(CODE, edited)[0].startswith("strategy_hash")
    assert fingerprint_mismatch(CODE, {**CODE, "git_commit": "d" * 40})[0].startswith("git_commit")
    # A runner outside git is pinned by version and strategy hash alone.
    assert fingerprint_mismatch(CODE, {**CODE, "git_commit": None}) == []
    # With a core hash on both sides, a commit that changed no core code is no mismatch, and
    # an edit of the engine is one whatever the commits say.
    core = {**CODE, "core_hash": "e" * 64}
    assert fingerprint_mismatch(core, {**core, "git_commit": "d" * 40}) == []
    edited_engine = fingerprint_mismatch(core, {**core, "core_hash": "f" * 64})
    assert edited_engine and edited_engine[0].startswith("core_hash")


def test_the_running_code_fingerprint_has_a_core_hash():
    from quantshift.provenance import code_fingerprint

    code = code_fingerprint("ma_crossover")
    assert len(code["core_hash"]) == 64 and fingerprint_mismatch(code, dict(code)) == []


def test_a_waived_check_stays_in_the_report_and_says_it_would_fail():
    dirty = dataclasses.replace(GOOD, code_dirty=True)
    result = evaluate_paper_gate(dirty, PaperGate(require_committed_code=False))
    assert result.passed
    (check,) = [c for c in result.checks if c.name == "code committed (git clean)"]
    assert check.passed and check.value is False
    assert "WAIVED code committed (git clean)" in check.line()
    assert "WAIVED by require_committed_code = false; would fail" in check.line()
    clean = evaluate_paper_gate(GOOD, PaperGate(require_committed_code=False))
    assert [c.line().split()[0] for c in clean.checks].count("WAIVED") == 0


STRATEGY_SOURCE = """
from numba import njit

from quantshift.strategies import Strategy


@njit
def _signal_nb(open_, high, low, close, volume, params, entries, exits, stop, tp, trail):
    for t in range(1, close.shape[0]):
        entries[t] = close[t] > close[t - 1]


STRATEGY = Strategy(
    name="mine", description="mine", params=(), signal_nb=_signal_nb, warmup=lambda v: 1
)
"""


def _git(repo, *args):
    import subprocess

    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _strategy_from(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"user_strategy_{path.stat().st_ino}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STRATEGY


@pytest.mark.parametrize("state", ["untracked", "modified", "committed"])
def test_regression_an_untracked_or_modified_strategy_file_fails_the_code_check(tmp_path, state):
    # The code check asked git with --untracked-files=no: an untracked strategy file gave
    # git_dirty=false and "PASS code committed", pinned to a commit without the strategy.
    from quantshift.provenance import code_fingerprint

    repo = tmp_path / "my-strategies"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "quant@example.com")
    _git(repo, "config", "user.name", "quant")
    (repo / "README").write_text("strategies\n")
    _git(repo, "add", "README")
    path = repo / "mine.py"
    path.write_text(STRATEGY_SOURCE)
    if state != "untracked":
        _git(repo, "add", "mine.py")
        _git(repo, "commit", "-q", "-m", "strategy")
    if state == "modified":
        path.write_text(STRATEGY_SOURCE.replace("close[t - 1]", "close[t - 2]"))
    _git(repo, "commit", "-q", "--allow-empty", "-m", "anything")
    code = code_fingerprint(_strategy_from(path))
    assert code["strategy_file"] == str(path.resolve())
    assert code["strategy_file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert code["strategy_file_git"] == state
    evidence = dataclasses.replace(
        GOOD, strategy_file=code["strategy_file"], strategy_file_git=code["strategy_file_git"]
    )
    result = evaluate_paper_gate(evidence, PaperGate())
    (check,) = [c for c in result.checks if c.name == "code committed (git clean)"]
    if state == "committed":
        assert result.passed and check.note == f"strategy source {path.resolve()} is committed"
        return
    assert not result.passed and [c.name for c in result.failed] == [check.name]
    assert check.line() == (
        f"FAIL code committed (git clean) no (needs yes; the strategy's source "
        f"{path.resolve()} is {state} in git)"
    )
