"""Walk-forward optimisation: selection in sample only, honest out-of-sample stitching."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import quantshift as qs
from quantshift.engine.metrics import equity_metrics
from quantshift.errors import ConfigError
from research.splitters import WalkForward
from research.walkforward import walk_forward

GRID = {"fast": [3, 5, 8, 13], "slow": [20, 30, 50, 80]}


@pytest.fixture(scope="module")
def bars():
    return qs.load_bars("builtin:sp500").between("2004-01-01", "2012-01-01")


@pytest.fixture(scope="module")
def result(bars):
    return walk_forward("ma_crossover", bars, WalkForward(504, 252), search=GRID, fees_bps=1)


def test_each_fold_chooses_the_in_sample_best_of_an_independent_sweep(bars, result):
    windows = WalkForward(504, 252).folds(bars)
    assert len(result.folds) == len(windows) == 5
    for (train_lo, train_hi, _, _), (_, row) in zip(windows, result.folds.iterrows(), strict=True):
        table = qs.sweep("ma_crossover", bars[train_lo:train_hi], GRID, fees_bps=1)
        table = table[table["trades"] >= 1]
        best = table.loc[table["sharpe"].idxmax()]
        assert (row["fast"], row["slow"]) == (best["fast"], best["slow"])
        assert row["is_sharpe"] == pytest.approx(best["sharpe"], rel=1e-12)


def test_out_of_sample_is_a_backtest_of_the_choice_on_the_test_window_only(bars, result):
    strat = qs.get_strategy("ma_crossover")
    windows = WalkForward(504, 252).folds(bars)
    initial = 100_000.0
    stitched = []
    for (_, _, test_lo, test_hi), (_, row) in zip(windows, result.folds.iterrows(), strict=True):
        params = {"fast": row["fast"], "slow": row["slow"]}
        lo = test_lo - strat.warmup_bars(params)
        direct = qs.backtest("ma_crossover", bars[lo:test_hi], params, fees_bps=1)
        segment = direct.equity.iloc[test_lo - lo :, 0].to_numpy()
        # Nothing can happen before the first test bar: the warm-up only feeds indicators.
        assert (direct.equity.iloc[: test_lo - lo, 0] == initial).all()
        assert (direct.trades["entry_time"] >= bars.index[test_lo]).all()
        got = equity_metrics(segment, initial, result.periods_per_year)
        assert row["oos_sharpe"] == pytest.approx(got["sharpe"], rel=1e-12, nan_ok=True)
        stitched.append(segment / np.concatenate(([initial], segment[:-1])))
    curve = initial * np.cumprod(np.concatenate(stitched))
    np.testing.assert_allclose(result.equity.to_numpy(), curve, rtol=1e-12)
    assert result.equity.index[0] == bars.index[windows[0][2]]
    assert result.metrics["sharpe"] == pytest.approx(
        equity_metrics(curve, initial, result.periods_per_year)["sharpe"], rel=1e-12
    )


def test_future_bars_do_not_change_earlier_folds(bars, result):
    """Truncating the data after fold 3's test window leaves folds 0-3 unchanged (bars per year
    fixed: inferred from the timestamps it would differ slightly between the two data sets)."""
    cut = bars.index.get_loc(result.folds["test_end"].iloc[3]) + 1
    splitter = WalkForward(504, 252)
    full = walk_forward("ma_crossover", bars, splitter, search=GRID, periods_per_year=252)
    short = walk_forward("ma_crossover", bars[:cut], splitter, search=GRID, periods_per_year=252)
    assert len(short.folds) == 4
    columns = ["fast", "slow", "is_sharpe", "oos_sharpe", "oos_trades"]
    pd.testing.assert_frame_equal(short.folds[columns], full.folds[columns].iloc[:4])


def test_every_in_sample_evaluation_is_in_the_ledger(result):
    frame = result.ledger.frame
    assert len(frame) == 5 * 16
    assert sorted(frame["stage"].unique()) == [f"wf-fold-{k}" for k in range(5)]
    assert result.summary()["trials"] == 80


def test_stability_and_efficiency_are_reported(result):
    stability = result.stability
    assert list(stability.index) == ["fast", "slow"]
    assert (stability["distinct"] >= 1).all() and (stability["modal_share"] <= 1).all()
    expected = result.metrics["cagr_pct"] / result.folds["is_cagr_pct"].mean()
    assert result.efficiency == pytest.approx(expected)


def test_anchored_windows_grow(bars):
    anchored = walk_forward("ma_crossover", bars, WalkForward(504, 252, anchored=True), search=GRID)
    assert (anchored.folds["train_start"] == bars.index[0]).all()


def test_bad_settings_are_refused(bars):
    with pytest.raises(ConfigError, match=r"too few|no complete"):
        walk_forward("ma_crossover", bars[:300], WalkForward(504, 252), search=GRID)
    with pytest.raises(ConfigError, match="overlap"):
        walk_forward("ma_crossover", bars, WalkForward(504, 252, step=100), search=GRID)
    with pytest.raises(ConfigError, match="min_trades"):
        walk_forward("ma_crossover", bars, WalkForward(504, 252), search=GRID, min_trades=10_000)
    with pytest.raises(ConfigError, match="method"):
        walk_forward("ma_crossover", bars, WalkForward(504, 252), method="bayes")


def test_optuna_per_fold_is_seeded_and_ledgered(bars):
    def go():
        return walk_forward(
            "ma_crossover",
            bars,
            WalkForward(504, 252),
            method="optuna",
            search={"fast": (3, 15), "slow": (20, 80)},
            n_trials=16,
            batch_size=8,
            seed=11,
        )

    a, b = go(), go()
    pd.testing.assert_frame_equal(a.folds, b.folds)
    frame = a.ledger.frame
    assert len(frame) == 5 * 16
    for k, row in a.folds.iterrows():
        rows = frame[(frame["stage"] == f"wf-fold-{k}") & (frame["state"] == "complete")]
        rows = rows[rows["trades"] >= 1]  # the default min_trades
        best = rows.loc[rows["sharpe"].idxmax()]
        assert (row["fast"], row["slow"]) == (best["fast"], best["slow"])
