"""Overfitting statistics against published numbers, scipy, empyrical and simulation.

Published numbers are truncated (not rounded) in the sources, so they are checked to their
last stated digit with an absolute tolerance of one unit of that digit.
"""

from __future__ import annotations

import itertools
import math
import time

import empyrical
import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import special
from scipy import stats as sps

from quantshift.errors import ConfigError
from research.stats import (
    EULER_GAMMA,
    PBOResult,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    min_track_record_length,
    pbo,
    probabilistic_sharpe_ratio,
    return_moments,
    sharpe_ratio,
)

matplotlib.use("Agg")


# --------------------------------------------------------------------------- golden numbers
def test_psr_min_trl_dsr_golden_numbers():
    # SR = 1.14 per period against SR* = 1 over T = 250 normal returns.
    assert probabilistic_sharpe_ratio(1.14, 1.0, 250) == pytest.approx(0.95727, abs=1e-5)
    assert min_track_record_length(1.14, 1.0, alpha=0.05) == pytest.approx(228.73497, abs=1e-5)
    # Three trials; SR* = expected max Sharpe of 3 trials with their population variance.
    dsr = deflated_sharpe_ratio(1.14, [3.5, 1.01, 1.02], 250)
    assert dsr == pytest.approx(0.95836, abs=1e-5)


def test_psr_paper_monthly_example():
    # Bailey & Lopez de Prado (2012), "The Sharpe Ratio Efficient Frontier": 24 monthly
    # returns with SR = 0.458 give PSR(0) = 0.982 if normal, and 0.913 with the sample's
    # skewness -2.448 and (Pearson) kurtosis 10.164.
    assert probabilistic_sharpe_ratio(0.458, 0.0, 24) == pytest.approx(0.982, abs=1e-3)
    non_normal = probabilistic_sharpe_ratio(0.458, 0.0, 24, skew=-2.448, kurtosis=10.164)
    assert non_normal == pytest.approx(0.913, abs=1e-3)


# --------------------------------------------------------------------------- oracles
@pytest.mark.parametrize(
    ("sharpe", "benchmark", "n", "skew", "kurtosis"),
    [(0.1, 0.0, 500, 0.0, 3.0), (0.05, 0.08, 1000, -0.7, 6.5), (-0.2, -0.1, 60, 0.4, 2.5)],
)
def test_psr_is_the_normal_cdf_of_the_standardised_sharpe_gap(sharpe, benchmark, n, skew, kurtosis):
    sigma = math.sqrt((1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe**2) / (n - 1))
    expected = sps.norm(loc=benchmark, scale=sigma).cdf(sharpe)
    assert probabilistic_sharpe_ratio(sharpe, benchmark, n, skew, kurtosis) == pytest.approx(
        expected, rel=1e-12
    )
    assert probabilistic_sharpe_ratio(sharpe, sharpe, n, skew, kurtosis) == 0.5


def test_min_track_record_length_is_where_psr_reaches_the_confidence():
    for sharpe, benchmark, alpha, skew, kurtosis in [
        (0.1, 0.0, 0.05, 0.0, 3.0),
        (0.3, 0.1, 0.01, -1.0, 8.0),
    ]:
        length = min_track_record_length(sharpe, benchmark, alpha, skew, kurtosis)
        psr = probabilistic_sharpe_ratio(sharpe, benchmark, length, skew, kurtosis)
        assert psr == pytest.approx(1 - alpha, abs=1e-12)


def test_psr_is_calibrated_on_simulated_normal_returns():
    # With true SR equal to the benchmark, PSR > 0.95 should happen about 5% of the time.
    rng = np.random.default_rng(7)
    n, true_sharpe, reps = 250, 0.1, 4000
    returns = rng.normal(true_sharpe * 0.01, 0.01, size=(reps, n))
    estimated = returns.mean(axis=1) / returns.std(axis=1, ddof=1)
    psr = np.array([probabilistic_sharpe_ratio(s, true_sharpe, n) for s in estimated])
    assert np.mean(psr > 0.95) == pytest.approx(0.05, abs=0.012)
    assert np.mean(psr > 0.5) == pytest.approx(0.5, abs=0.03)


def test_sharpe_and_moments_against_empyrical_and_scipy():
    returns = np.random.default_rng(3).standard_t(5, size=400) * 0.01 + 0.0004
    assert sharpe_ratio(returns) == pytest.approx(
        empyrical.sharpe_ratio(returns, annualization=1), rel=1e-12
    )
    skew, kurtosis = return_moments(returns)
    assert skew == pytest.approx(sps.skew(returns), rel=1e-12)
    assert kurtosis == pytest.approx(sps.kurtosis(returns, fisher=False), rel=1e-12)
    assert kurtosis > 3  # Student t: fat tails, Pearson kurtosis above the normal's 3


@pytest.mark.parametrize("n_trials", [10, 100, 1000])
def test_expected_max_sharpe_against_monte_carlo(n_trials):
    # The formula approximates E[max of N normals]; it is within ~2.5% for N >= 10.
    variance = 0.04
    rng = np.random.default_rng(11)
    reps = 400_000 // n_trials
    simulated = (rng.standard_normal((reps, n_trials)) * math.sqrt(variance)).max(axis=1).mean()
    assert expected_max_sharpe(n_trials, variance) == pytest.approx(simulated, rel=0.03)


def test_expected_max_sharpe_formula_pieces():
    assert expected_max_sharpe(1, 0.5) == 0.0
    assert expected_max_sharpe(50, 0.0) == 0.0
    assert EULER_GAMMA == pytest.approx(-special.digamma(1.0), rel=1e-15)
    with pytest.raises(ConfigError, match="n_trials"):
        expected_max_sharpe(0, 1.0)


def test_deflated_sharpe_ratio_ledger_forms():
    trials = np.array([3.5, 1.01, 1.02])
    by_array = deflated_sharpe_ratio(1.14, trials, 250)
    by_counts = deflated_sharpe_ratio(
        1.14, n_observations=250, n_trials=3, trial_sharpe_variance=float(trials.var())
    )
    assert by_counts == pytest.approx(by_array, rel=1e-12)
    # Failed trials without a Sharpe ratio still count: more trials, higher bar, lower DSR.
    with_failures = deflated_sharpe_ratio(1.14, trials, 250, n_trials=10)
    assert with_failures < by_array
    expected = probabilistic_sharpe_ratio(1.14, expected_max_sharpe(10, trials.var()), 250)
    assert with_failures == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ConfigError, match="not both"):
        deflated_sharpe_ratio(1.14, trials, 250, trial_sharpe_variance=1.0)
    with pytest.raises(ConfigError, match="both n_trials and trial_sharpe_variance"):
        deflated_sharpe_ratio(1.14, n_observations=250, n_trials=3)
    with pytest.raises(ConfigError, match="less than the 3 trial_sharpes"):
        deflated_sharpe_ratio(1.14, trials, 250, n_trials=2)
    with pytest.raises(ConfigError, match="NaN"):
        deflated_sharpe_ratio(1.14, [1.0, np.nan], 250)


def test_statistics_reject_bad_input():
    with pytest.raises(ConfigError, match="sharpe > benchmark_sharpe"):
        min_track_record_length(1.0, 1.0)
    with pytest.raises(ConfigError, match="not excess kurtosis"):
        probabilistic_sharpe_ratio(1.0, 0.0, 100, kurtosis=0.0)  # a normal's excess kurtosis
    with pytest.raises(ConfigError, match="not excess kurtosis"):
        min_track_record_length(1.0, 0.5, skew=-1.5, kurtosis=3.0)  # needs kurtosis >= 3.25
    with pytest.raises(ConfigError, match="n_observations"):
        probabilistic_sharpe_ratio(1.0, 0.0, 1)
    with pytest.raises(ConfigError, match="NaN at position 1"):
        sharpe_ratio([0.1, np.nan, 0.2])
    with pytest.raises(ConfigError, match="constant"):
        sharpe_ratio([0.01, 0.01, 0.01])


# --------------------------------------------------------------------------- PBO
PAPER_MATRIX = np.array([[-3, 4, 3], [1, 5, -1], [-5, 4, -5], [-2, 0, 2]], dtype=float)


def test_pbo_golden_matrix():
    # Rows are the S = 4 blocks. Of the C(4, 2) = 6 in-sample halves, the in-sample best
    # column ranks last out of sample once (rows {0, 3}: column 2) and at the median once
    # (rows {1, 2}: column 1, w = 2/4, logit 0): PBO = 2/6 with w = rank / (N + 1).
    result = pbo(PAPER_MATRIX, n_splits=4, metric="mean")
    assert isinstance(result, PBOResult)
    assert result.pbo == pytest.approx(1 / 3, abs=1e-15)
    assert result.n_combinations == 6 and result.n_splits == 4
    np.testing.assert_allclose(result.logits, np.log([3, 3, 1 / 3, 1, 3, 3]), rtol=1e-15)
    np.testing.assert_array_equal(result.is_performance, [4.5, 4, 2.5, 4.5, 2.5, 2])
    np.testing.assert_array_equal(result.oos_performance, [2, 2.5, -3, 2, 4, 4.5])
    assert result.prob_oos_loss == pytest.approx(1 / 6)
    slope, intercept = np.polyfit(result.is_performance, result.oos_performance, 1)
    assert result.degradation_slope == pytest.approx(slope, rel=1e-12)
    assert result.degradation_intercept == pytest.approx(intercept, rel=1e-12)
    frame = pd.DataFrame(PAPER_MATRIX, columns=["a", "b", "c"])
    assert pbo(frame, n_splits=4, metric="mean").pbo == result.pbo


def test_pbo_dominant_column_gives_zero():
    rng = np.random.default_rng(5)
    performance = rng.uniform(-1, 1, size=(64, 6))
    performance[:, 4] = 2 + rng.uniform(0, 1, size=64)  # above every other column every row
    for metric in ("mean", "sharpe"):
        result = pbo(performance, n_splits=8, metric=metric)
        assert result.pbo == 0.0
        if metric == "mean":
            np.testing.assert_allclose(result.logits, math.log(6))  # best of 6 out of sample


def test_pbo_identical_demeaned_columns_give_one():
    # Columns that are one series plus different constants, each de-meaned over the whole
    # sample, are the same series: every metric ties, the selected column's out-of-sample rank
    # is the median (N + 1) / 2, w = 1/2, logit = 0 and every combination counts (logit <= 0).
    # Integers with an integer mean keep the de-meaning exact, so the ties are exact.
    base = np.array([3, -1, 4, -2, 5, -9, 2, 6, -5, 3, 1, -7, 8, 0, -4, -4], dtype=float)
    assert base.sum() % base.size == 0
    shifted = base[:, None] + np.array([0.0, 7.0, -3.0, 11.0, 2.0])
    demeaned = shifted - shifted.mean(axis=0)
    for metric in ("mean", "sharpe"):
        result = pbo(demeaned, n_splits=4, metric=metric)
        assert result.pbo == 1.0
        np.testing.assert_array_equal(result.logits, 0.0)
    # Without de-meaning the largest constant wins everywhere: no overfitting at all.
    assert pbo(shifted, n_splits=4, metric="mean").pbo == 0.0


def _pbo_by_loops(performance: np.ndarray, n_splits: int, metric) -> tuple[float, np.ndarray]:
    """CSCV written out from the paper, one combination at a time, with scipy's ranks.

    Returns PBO and, per combination, the logit and the selected column's IS and OOS metric.
    """
    blocks = np.array_split(np.arange(performance.shape[0]), n_splits)
    n = performance.shape[1]
    rows = []
    for chosen in itertools.combinations(range(n_splits), n_splits // 2):
        rest = [b for b in range(n_splits) if b not in chosen]
        inside = metric(performance[np.concatenate([blocks[b] for b in chosen])])
        outside = metric(performance[np.concatenate([blocks[b] for b in rest])])
        best = int(np.argmax(inside))
        w = sps.rankdata(outside)[best] / (n + 1)
        rows.append((math.log(w / (1 - w)), inside[best], outside[best]))
    table = np.array(rows)
    return float(np.mean(table[:, 0] <= 0)), table


def test_pbo_vectorised_equals_loop_over_combinations():
    rng = np.random.default_rng(9)
    performance = rng.normal(0.0005, 0.01, size=(203, 12))  # 203 rows: unequal blocks
    performance[:, 3] += 0.001
    sharpe = lambda a: a.mean(axis=0) / a.std(axis=0, ddof=1)  # noqa: E731
    for name, function in (("sharpe", sharpe), ("mean", lambda a: a.mean(axis=0))):
        expected_pbo, expected = _pbo_by_loops(performance, 8, function)
        for metric in (name, function):
            result = pbo(performance, n_splits=8, metric=metric)
            assert result.pbo == expected_pbo
            np.testing.assert_allclose(result.logits, expected[:, 0], rtol=1e-12)
            np.testing.assert_allclose(result.is_performance, expected[:, 1], rtol=1e-9)
            np.testing.assert_allclose(result.oos_performance, expected[:, 2], rtol=1e-9)
            assert result.prob_oos_loss == np.mean(expected[:, 2] < 0)


def test_pbo_on_noise_is_near_one_half():
    # Each matrix's PBO varies a lot (combinations share blocks); their mean is near 1/2.
    values = [
        pbo(np.random.default_rng(seed).normal(0, 0.01, size=(1000, 200)), n_splits=10).pbo
        for seed in range(20)
    ]
    assert np.mean(values) == pytest.approx(0.5, abs=0.1)


def test_pbo_with_one_real_edge_is_near_zero():
    performance = np.random.default_rng(0).normal(0, 0.01, size=(1000, 50))
    performance[:, 7] += 0.002  # per-bar Sharpe 0.2 against noise
    result = pbo(performance, n_splits=10)
    assert result.pbo < 0.05
    assert result.prob_oos_loss < 0.05


def test_pbo_is_fast_on_a_large_study():
    performance = np.random.default_rng(1).normal(0, 0.01, size=(5000, 1000))
    started = time.perf_counter()
    result = pbo(performance, n_splits=16)
    elapsed = time.perf_counter() - started
    assert result.n_combinations == 12870
    assert elapsed < 5.0, f"pbo took {elapsed:.2f} s for S=16, N=1000, T=5000"


@pytest.mark.parametrize(
    ("performance", "kwargs", "match"),
    [
        (np.where(np.eye(8, 3) > 0, np.nan, 0.0), {"n_splits": 4}, "NaN at row 0, column 0"),
        (np.zeros((3, 4)), {"n_splits": 4}, "3 rows cannot form n_splits=4 blocks"),
        (np.zeros((20, 4)), {"n_splits": 5}, "n_splits must be even"),
        (np.zeros((20, 1)), {"n_splits": 4}, "at least 2 columns"),
        (np.zeros(20), {"n_splits": 4}, "2-D"),
        (np.zeros((20, 3)), {"n_splits": 4, "metric": "median"}, "metric must be"),
        (np.zeros((6, 3)), {"n_splits": 4}, "at least 2 rows per block"),
    ],
)
def test_pbo_rejects_bad_input(performance, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        pbo(performance, **kwargs)


def test_pbo_plot_draws_histogram_and_degradation(tmp_path):
    result = pbo(np.random.default_rng(2).normal(0, 0.01, size=(400, 20)), n_splits=8)
    path = tmp_path / "pbo.png"
    figure = result.plot(path)
    assert path.stat().st_size > 0
    histogram, scatter = figure.axes
    assert sum(patch.get_height() for patch in histogram.patches) == result.n_combinations
    np.testing.assert_array_equal(scatter.collections[0].get_offsets()[:, 0], result.is_performance)
