"""The trial ledger: recording, counts by state, DSR inputs, best trial, Parquet round trip, joins.

Rebuilding a ledger from an Optuna study is tested with the optimiser (test_research_optimize).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from quantshift.engine.metrics import METRICS
from quantshift.errors import ConfigError, UnknownNameError
from research.ledger import STATES, TrialLedger

SHARPE = METRICS.index("sharpe")
DRAWDOWN = METRICS.index("max_drawdown_pct")


def _metrics(sharpes, drawdowns) -> np.ndarray:
    out = np.full((len(sharpes), len(METRICS)), np.nan)
    out[:, SHARPE] = sharpes
    out[:, DRAWDOWN] = drawdowns
    return out


@pytest.fixture
def ledger() -> TrialLedger:
    """Five trials of one study: three complete, one pruned, one failed, one infeasible."""
    led = TrialLedger("ma_crossover", ("fast", "slow"))
    led.record(
        study="s",
        stage="optimize",
        trials=np.arange(4),
        states=["complete", "complete", "pruned", "complete"],
        params=np.array([[5, 20], [10, 50], [3, 9], [8, 30]], dtype=float),
        metrics=_metrics([1.2, 0.4, -0.3, 0.9], [10.0, 5.0, 30.0, 7.0]),
        n_bars=600,
        periods_per_year=252.0,
        values=np.array([1.2, 0.4, np.nan, 0.9]),
        seconds=0.01,
        worker="w0",
    )
    led.record(
        study="s",
        stage="optimize",
        trials=np.array([4, 5]),
        states=np.array(["fail", "infeasible"]),
        params=np.array([[2, 500], [40, 30]], dtype=float),
        metrics=np.vstack([_metrics([np.nan], [0.0]), np.full((1, len(METRICS)), np.nan)]),
        n_bars=np.array([600, 0]),
        periods_per_year=np.array([252.0, np.nan]),
        worker=["w1", "w1"],
    )
    return led


def test_counts_by_state(ledger):
    assert ledger.counts() == {"complete": 3, "pruned": 1, "fail": 1, "infeasible": 1}
    assert ledger.n_trials() == 6 == len(ledger)
    assert ledger.n_trials(states=("complete", "pruned")) == 4
    assert ledger.n_trials(stage="wf-fold-0") == 0
    assert set(ledger.counts()) == set(STATES)


def test_frame_columns_and_per_period_sharpe(ledger):
    frame = ledger.frame
    assert list(frame.columns[:7]) == ["study", "stage", "trial", "state", "worker", "fast", "slow"]
    assert list(frame.columns[7 : 7 + len(METRICS)]) == list(METRICS)
    assert list(frame.columns[-5:]) == [
        "sharpe_per_period",
        "n_bars",
        "periods_per_year",
        "value_0",
        "seconds",
    ]
    np.testing.assert_allclose(
        frame["sharpe_per_period"][:4], np.array([1.2, 0.4, -0.3, 0.9]) / math.sqrt(252)
    )
    assert frame["worker"].tolist() == ["w0"] * 4 + ["w1"] * 2
    frame.loc[0, "state"] = "changed"  # a copy: the ledger is unaffected
    assert ledger.frame.loc[0, "state"] == "complete"


def test_dsr_inputs_count_every_trial_run_on_data(ledger):
    n, variance = ledger.dsr_inputs()
    sharpes = np.array([1.2, 0.4, -0.3, 0.9]) / math.sqrt(252)  # the failed trial has none
    assert n == 5  # complete, pruned and failed; the infeasible set never ran
    np.testing.assert_allclose(ledger.trial_sharpes(), sharpes)
    assert variance == pytest.approx(np.var(sharpes, ddof=0), rel=1e-14)
    assert ledger.dsr_inputs(stage="other") == (0, pytest.approx(math.nan, nan_ok=True))


def test_best_uses_complete_trials_and_metric_direction(ledger):
    assert ledger.best("sharpe")["trial"] == 0
    assert ledger.best("max_drawdown_pct")["trial"] == 1  # minimised; the pruned 30% is ignored
    assert ledger.best("sharpe", direction="minimize")["trial"] == 1
    assert ledger.best("value_0")["trial"] == 0
    with pytest.raises(UnknownNameError, match="no numeric column 'sharp'"):
        ledger.best("sharp")
    with pytest.raises(ConfigError, match="no complete trial"):
        ledger.best("sortino")


def test_parquet_round_trip(ledger, tmp_path):
    path = ledger.to_parquet(tmp_path / "sub" / "ledger.parquet")
    back = TrialLedger.read_parquet(path)
    assert (back.strategy_name, back.param_names) == ("ma_crossover", ("fast", "slow"))
    pd.testing.assert_frame_equal(back.frame, ledger.frame)
    assert back.counts() == ledger.counts()
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(ConfigError, match="not a QuantShift trial ledger"):
        TrialLedger.read_parquet(tmp_path / "plain.parquet")


def test_concat_joins_stages_and_rejects_overlap(ledger):
    other = TrialLedger("ma_crossover", ("fast", "slow"))
    other.record(
        study="s",
        stage="wf-fold-1",
        trials=[0, 1],
        states="complete",
        params=np.array([[5, 20], [6, 21]], dtype=float),
        metrics=_metrics([0.5, 0.6], [4.0, 5.0]),
        values=np.array([[0.5, 4.0], [0.6, 5.0]]),
        periods_per_year=365.0,
    )
    joined = TrialLedger.concat([ledger, other])
    assert joined.n_trials() == 8
    assert joined.n_trials(stage="wf-fold-1") == 2
    frame = joined.frame
    assert frame["value_1"].isna().sum() == 6  # the first ledger had one objective
    assert frame["sharpe_per_period"].iloc[-1] == pytest.approx(0.6 / math.sqrt(365))
    with pytest.raises(ConfigError, match="recorded twice"):
        TrialLedger.concat([ledger, ledger])
    with pytest.raises(ConfigError, match="cannot join"):
        TrialLedger.concat([ledger, TrialLedger("rsi_reversion", ("rsi_window",))])


def test_record_validates_inputs(ledger):
    good = {
        "study": "s",
        "stage": "x",
        "trials": [0],
        "states": "complete",
        "params": np.array([[1.0, 2.0]]),
    }
    with pytest.raises(ConfigError, match=r"unknown state\(s\) \['done'\]"):
        ledger.record(**{**good, "states": "done"})
    with pytest.raises(ConfigError, match=r"params has shape \(1, 3\), expected \(1, 2\)"):
        ledger.record(**{**good, "params": np.zeros((1, 3))})
    with pytest.raises(ConfigError, match="metrics has shape"):
        ledger.record(**{**good, "metrics": np.zeros((1, 3))})
    with pytest.raises(ConfigError, match=r"states has shape \(2,\)"):
        ledger.record(**{**good, "states": ["complete", "pruned"]})
    with pytest.raises(ConfigError, match="recorded twice"):
        ledger.record(**{**good, "stage": "optimize"})
    with pytest.raises(ConfigError, match="recorded twice"):
        ledger.record(**{**good, "trials": [7, 7], "params": np.zeros((2, 2))})
    with pytest.raises(ConfigError, match="clash"):
        TrialLedger("bad", ("sharpe",))
    assert ledger.n_trials() == 6  # nothing half-recorded


def test_empty_ledger():
    empty = TrialLedger("ma_crossover", ("fast", "slow"))
    assert len(empty.frame) == 0
    assert empty.counts() == dict.fromkeys(STATES, 0)
    assert empty.trial_sharpes().size == 0
    assert "empty" in repr(empty)
