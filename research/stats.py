"""Overfitting statistics: probabilistic and deflated Sharpe ratios, min track record, PBO.

Sharpe ratios here are per period (not annualised); kurtosis is Pearson's (3 for a normal).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from quantshift.errors import ConfigError

__all__ = [
    "EULER_GAMMA",
    "PBOResult",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "min_track_record_length",
    "pbo",
    "probabilistic_sharpe_ratio",
    "return_moments",
    "sharpe_ratio",
]

EULER_GAMMA = 0.5772156649015329
"""The Euler-Mascheroni constant."""

# Combinations evaluated together in pbo(): memory stays about
# _CHUNK * n_splits / 2 * n_columns floats per block statistic, whatever the combination count.
_CHUNK = 256
_MAX_COMBINATIONS = 1_000_000


# --------------------------------------------------------------------------- moments
def _series(returns: Any, name: str = "returns") -> np.ndarray:
    values = np.asarray(returns, dtype=np.float64)
    if values.ndim != 1:
        raise ConfigError(f"{name} must be one-dimensional, got shape {values.shape}")
    if values.size < 2:
        raise ConfigError(f"{name} needs at least 2 observations, got {values.size}")
    if np.isnan(values).any():
        first = int(np.flatnonzero(np.isnan(values))[0])
        raise ConfigError(f"{name} contain NaN at position {first}")
    return values


def sharpe_ratio(returns: Any) -> float:
    """Return the per-period Sharpe ratio ``mean / std`` (sample std, ``ddof=1``), not annualised.

    Parameters
    ----------
    returns : array-like of float, shape (n_periods,)
        Per-period (e.g. per-bar) returns in excess of the benchmark rate.
    """
    values = _series(returns)
    std = values.std(ddof=1)
    if std == 0:
        raise ConfigError("returns are constant: the Sharpe ratio is undefined")
    return float(values.mean() / std)


def return_moments(returns: Any) -> tuple[float, float]:
    """Return ``(skewness, kurtosis)`` of returns, kurtosis Pearson's (3 for a normal).

    Population (biased) moments as in Bailey & Lopez de Prado: ``skew = m3 / m2**1.5`` and
    ``kurtosis = m4 / m2**2`` with ``m_k = mean((r - mean(r))**k)``; the same as
    ``scipy.stats.skew(r)`` and ``scipy.stats.kurtosis(r, fisher=False)``.
    """
    values = _series(returns)
    centred = values - values.mean()
    m2 = float(np.mean(centred**2))
    if m2 == 0:
        raise ConfigError("returns are constant: skewness and kurtosis are undefined")
    return float(np.mean(centred**3) / m2**1.5), float(np.mean(centred**4) / m2**2)


def _sharpe_variance_factor(sharpe: float, skew: float, kurtosis: float) -> float:
    """``1 - skew SR + (kurtosis - 1) / 4 SR^2``: (T - 1) times the variance of the estimated SR."""
    # Every distribution has Pearson kurtosis >= 1 + skew^2; below it, the caller almost
    # certainly passed excess kurtosis (0 for a normal instead of 3).
    if kurtosis < 1.0 + skew**2:
        raise ConfigError(
            f"kurtosis={kurtosis} is impossible with skew={skew} (Pearson kurtosis is at least "
            "1 + skew^2); pass Pearson kurtosis (3 for a normal), not excess kurtosis"
        )
    factor = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if factor <= 0:
        raise ConfigError(
            f"skew={skew} and kurtosis={kurtosis} give a zero Sharpe ratio variance at SR={sharpe}"
        )
    return factor


# --------------------------------------------------------------------------- Sharpe tests
def probabilistic_sharpe_ratio(
    sharpe: float,
    benchmark_sharpe: float,
    n_observations: int,
    skew: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """Return the probability that the true Sharpe ratio exceeds ``benchmark_sharpe``.

    ``PSR = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2))``.

    Parameters
    ----------
    sharpe : float
        Observed per-period Sharpe ratio SR.
    benchmark_sharpe : float
        Per-period Sharpe ratio SR* to beat (0 asks "is there any skill?").
    n_observations : int
        Number of returns T the Sharpe ratio was estimated from, at least 2.
    skew, kurtosis : float
        Skewness and Pearson kurtosis of the returns (0 and 3 for normal returns).

    References
    ----------
    D. H. Bailey and M. Lopez de Prado, "The Sharpe Ratio Efficient Frontier",
    Journal of Risk 15(2), 2012, eq. (11).
    """
    if n_observations < 2:
        raise ConfigError(f"n_observations must be at least 2, got {n_observations}")
    factor = _sharpe_variance_factor(sharpe, skew, kurtosis)
    z = (sharpe - benchmark_sharpe) * math.sqrt(n_observations - 1) / math.sqrt(factor)
    return float(norm.cdf(z))


def min_track_record_length(
    sharpe: float,
    benchmark_sharpe: float,
    alpha: float = 0.05,
    skew: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """Return the number of observations needed for SR > SR* at confidence ``1 - alpha``.

    ``MinTRL = 1 + (1 - skew SR + (kurtosis - 1) / 4 SR^2) (z_{1-alpha} / (SR - SR*))^2``,
    in the periods the Sharpe ratios are measured in.

    References
    ----------
    D. H. Bailey and M. Lopez de Prado, "The Sharpe Ratio Efficient Frontier",
    Journal of Risk 15(2), 2012, eq. (15).
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if sharpe <= benchmark_sharpe:
        raise ConfigError(
            f"the minimum track record length needs sharpe > benchmark_sharpe, "
            f"got {sharpe} <= {benchmark_sharpe}"
        )
    factor = _sharpe_variance_factor(sharpe, skew, kurtosis)
    return float(1.0 + factor * (norm.ppf(1.0 - alpha) / (sharpe - benchmark_sharpe)) ** 2)


def expected_max_sharpe(n_trials: int, trial_sharpe_variance: float) -> float:
    """Return the expected maximum Sharpe ratio of ``n_trials`` unskilled trials.

    ``E[max SR] = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))`` with
    gamma the Euler-Mascheroni constant: the false-strategy threshold when the true Sharpe
    ratio of every trial is 0 and the estimates vary with variance V. One trial gives 0.

    References
    ----------
    D. H. Bailey, J. M. Borwein, M. Lopez de Prado and Q. J. Zhu, "Pseudo-Mathematics and
    Financial Charlatanism", Notices of the AMS 61(5), 2014, appendix;
    D. H. Bailey and M. Lopez de Prado, "The Deflated Sharpe Ratio", Journal of Portfolio
    Management 40(5), 2014, eq. (2).
    """
    if isinstance(n_trials, bool) or int(n_trials) != n_trials or n_trials < 1:
        raise ConfigError(f"n_trials must be a positive integer, got {n_trials!r}")
    if not trial_sharpe_variance >= 0:
        raise ConfigError(f"trial_sharpe_variance must be >= 0, got {trial_sharpe_variance}")
    if n_trials == 1:
        return 0.0
    quantiles = (1 - EULER_GAMMA) * norm.ppf(1 - 1 / n_trials) + EULER_GAMMA * norm.ppf(
        1 - 1 / (n_trials * math.e)
    )
    return float(math.sqrt(trial_sharpe_variance) * quantiles)


def deflated_sharpe_ratio(
    sharpe: float,
    trial_sharpes: Any = None,
    n_observations: int | None = None,
    skew: float = 0.0,
    kurtosis: float = 3.0,
    *,
    n_trials: int | None = None,
    trial_sharpe_variance: float | None = None,
) -> float:
    """Return the deflated Sharpe ratio: the PSR against the best Sharpe ratio luck would give.

    ``DSR = PSR(SR, SR* = expected_max_sharpe(N, V), T, skew, kurtosis)`` where N is the
    number of trials and V the (population, ``ddof=0``) variance of their Sharpe ratios.

    Parameters
    ----------
    sharpe : float
        Per-period Sharpe ratio of the selected strategy.
    trial_sharpes : array-like of float, optional
        Per-period Sharpe ratios of all trials of the search (the selected one included).
    n_observations : int
        Number of returns T behind ``sharpe``.
    skew, kurtosis : float
        Skewness and Pearson kurtosis of the selected strategy's returns.
    n_trials : int, optional
        Number of trials N. Without ``trial_sharpes`` it goes with ``trial_sharpe_variance``;
        with them it may exceed their count, for ledgers that also count trials that failed
        or were pruned before giving a Sharpe ratio.
    trial_sharpe_variance : float, optional
        Variance V of the trial Sharpe ratios, instead of ``trial_sharpes``.

    Notes
    -----
    The paper's N is the number of *independent* trials (it suggests clustering correlated
    ones). We use every trial of the ledger, which overstates N when trials are correlated
    and so errs on the side of a lower DSR.

    References
    ----------
    D. H. Bailey and M. Lopez de Prado, "The Deflated Sharpe Ratio: Correcting for Selection
    Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5), 2014.
    """
    if n_observations is None:
        raise ConfigError("deflated_sharpe_ratio needs n_observations")
    if trial_sharpes is not None:
        if trial_sharpe_variance is not None:
            raise ConfigError("give trial_sharpes or trial_sharpe_variance, not both")
        values = np.asarray(trial_sharpes, dtype=np.float64).ravel()
        if values.size == 0 or np.isnan(values).any():
            raise ConfigError("trial_sharpes must be a non-empty array without NaN")
        variance = float(values.var())
        count = values.size if n_trials is None else n_trials
        if count < values.size:
            raise ConfigError(f"n_trials={n_trials} is less than the {values.size} trial_sharpes")
    else:
        if n_trials is None or trial_sharpe_variance is None:
            raise ConfigError("give trial_sharpes, or both n_trials and trial_sharpe_variance")
        count, variance = n_trials, trial_sharpe_variance
    threshold = expected_max_sharpe(count, variance)
    return probabilistic_sharpe_ratio(sharpe, threshold, n_observations, skew, kurtosis)


# --------------------------------------------------------------------------- PBO
@dataclass(frozen=True, eq=False)
class PBOResult:
    """Outcome of combinatorially symmetric cross-validation (see ``pbo``).

    Attributes
    ----------
    pbo : float
        Probability of backtest overfitting: the share of combinations whose in-sample best
        column ranks at or below the out-of-sample median (logit <= 0).
    logits : ndarray, shape (n_combinations,)
        ``ln(w / (1 - w))`` of the selected column's out-of-sample relative rank w.
    is_performance, oos_performance : ndarray, shape (n_combinations,)
        Metric of the selected column in and out of sample.
    degradation_slope, degradation_intercept : float
        OLS fit ``oos = intercept + slope * is`` over combinations (NaN if ``is`` is constant).
    prob_oos_loss : float
        Share of combinations whose selected column has a negative out-of-sample metric.
    n_combinations, n_splits : int
        Number of combinations ``C(S, S/2)`` and of row blocks S.
    """

    pbo: float
    logits: np.ndarray
    is_performance: np.ndarray
    oos_performance: np.ndarray
    degradation_slope: float
    degradation_intercept: float
    prob_oos_loss: float
    n_combinations: int
    n_splits: int

    def plot(self, path: str | Path | None = None) -> Any:
        """Draw the logit histogram and the IS-vs-OOS degradation scatter; save to ``path``.

        Returns the matplotlib ``Figure`` (built without pyplot, so it works on any backend).
        """
        from research.plots import plot_pbo

        return plot_pbo(self, path)


Metric = str | Callable[[np.ndarray], Any]


def _block_metric(
    kind: str,
    total: np.ndarray,
    total_sq: np.ndarray,
    count: np.ndarray,
    column_mean: np.ndarray,
    flat_std: np.ndarray,
) -> np.ndarray:
    """Per-column metric from sums over the rows of some blocks of column-centred values."""
    centred_mean = total / count
    mean = centred_mean + column_mean
    if kind == "mean":
        return mean
    std = np.sqrt(np.maximum(total_sq - total * centred_mean, 0.0) / (count - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > flat_std, mean / std, 0.0)


def pbo(performance: Any, n_splits: int = 16, metric: Metric = "sharpe") -> PBOResult:
    """Estimate the probability of backtest overfitting by combinatorially symmetric CV.

    The rows (time) are cut into ``n_splits`` contiguous blocks (as ``np.array_split``: the
    first ``T % S`` blocks one row longer). For every choice of half the blocks as in-sample
    and the rest as out-of-sample, the column (trial) with the best in-sample metric is
    selected and its out-of-sample rank among all columns recorded as ``w = rank / (N + 1)``
    (rank 1 = worst, ties averaged) and ``logit = ln(w / (1 - w))``. PBO is the share of
    logits ``<= 0``.

    Parameters
    ----------
    performance : array-like or DataFrame, shape (T, N)
        Rows are periods, columns trials (parameter sets), e.g. per-bar returns.
    n_splits : int, default 16
        Number of blocks S, even and at most T.
    metric : {"sharpe", "mean"} or callable, default "sharpe"
        "sharpe" is mean / std (``ddof=1``) per period, 0 where a column is flat (a
        trial that did not trade in those rows); "mean" is the mean.
        A callable takes a 2-D array (rows x N) and returns one value per column.

    Returns
    -------
    PBOResult

    References
    ----------
    D. H. Bailey, J. M. Borwein, M. Lopez de Prado and Q. J. Zhu, "The Probability of
    Backtest Overfitting", Journal of Computational Finance 20(4), 2017.
    """
    values = performance.to_numpy() if isinstance(performance, pd.DataFrame) else performance
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ConfigError(f"pbo: performance must be a 2-D (T x N) array, got shape {values.shape}")
    n_rows, n_columns = values.shape
    if np.isnan(values).any():
        row, col = np.argwhere(np.isnan(values))[0]
        raise ConfigError(f"pbo: performance has NaN at row {row}, column {col}")
    if isinstance(n_splits, bool) or not isinstance(n_splits, int | np.integer) or n_splits < 2:
        raise ConfigError(f"pbo: n_splits must be an even integer >= 2, got {n_splits!r}")
    if n_splits % 2:
        raise ConfigError(f"pbo: n_splits must be even, got {n_splits}")
    if n_rows < n_splits:
        raise ConfigError(f"pbo: {n_rows} rows cannot form n_splits={n_splits} blocks")
    if n_columns < 2:
        raise ConfigError(f"pbo: need at least 2 columns (trials) to rank, got {n_columns}")
    if not callable(metric) and metric not in ("sharpe", "mean"):
        raise ConfigError(f"pbo: metric must be 'sharpe', 'mean' or a callable, got {metric!r}")
    n_combinations = math.comb(n_splits, n_splits // 2)
    if n_combinations > _MAX_COMBINATIONS:
        raise ConfigError(
            f"pbo: n_splits={n_splits} gives {n_combinations:,} combinations, more than "
            f"{_MAX_COMBINATIONS:,}; use fewer splits"
        )
    if metric == "sharpe" and n_rows < 2 * n_splits:
        raise ConfigError(f"pbo: the Sharpe metric needs at least 2 rows per block ({n_rows=})")

    # Block sizes as np.array_split: the first T % S blocks one row longer.
    sizes = np.full(n_splits, n_rows // n_splits, dtype=np.int64)
    sizes[: n_rows % n_splits] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    combos = np.array(list(itertools.combinations(range(n_splits), n_splits // 2)))
    chosen_is = np.empty(n_combinations)
    chosen_oos = np.empty(n_combinations)
    oos_rank = np.empty(n_combinations)
    lo = 0
    for is_metric, oos_metric in _metric_chunks(values, bounds, combos, metric):
        if np.isnan(is_metric).any() or np.isnan(oos_metric).any():
            raise ConfigError("pbo: the metric returned NaN")
        hi = lo + is_metric.shape[0]
        rows = np.arange(hi - lo)
        selected = np.argmax(is_metric, axis=1)
        chosen_is[lo:hi] = is_metric[rows, selected]
        chosen_oos[lo:hi] = value = oos_metric[rows, selected]
        below = (oos_metric < value[:, None]).sum(axis=1)
        tied = (oos_metric == value[:, None]).sum(axis=1)  # counts the selected column itself
        oos_rank[lo:hi] = below + (tied + 1) / 2
        lo = hi
    relative_rank = oos_rank / (n_columns + 1)
    logits = np.log(relative_rank / (1 - relative_rank))
    slope, intercept = _ols(chosen_is, chosen_oos)
    return PBOResult(
        pbo=float(np.mean(logits <= 0)),
        logits=logits,
        is_performance=chosen_is,
        oos_performance=chosen_oos,
        degradation_slope=slope,
        degradation_intercept=intercept,
        prob_oos_loss=float(np.mean(chosen_oos < 0)),
        n_combinations=n_combinations,
        n_splits=int(n_splits),
    )


def _metric_chunks(
    values: np.ndarray, bounds: np.ndarray, combos: np.ndarray, metric: Metric
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield in-sample and out-of-sample metrics, shape (combinations, N), a chunk at a time."""
    n_splits = len(bounds) - 1
    if callable(metric):
        blocks = [np.arange(bounds[b], bounds[b + 1]) for b in range(n_splits)]
        for chosen in combos:
            inside = np.zeros(n_splits, dtype=bool)
            inside[chosen] = True
            pair = []
            for mask in (inside, ~inside):
                rows = np.concatenate([blocks[b] for b in np.flatnonzero(mask)])
                result = np.asarray(metric(values[rows]), dtype=np.float64).reshape(1, -1)
                if result.shape[1] != values.shape[1]:
                    raise ConfigError(
                        f"pbo: the metric returned {result.shape[1]} values for "
                        f"{values.shape[1]} columns"
                    )
                pair.append(result)
            yield pair[0], pair[1]
        return
    # Centring each column first keeps the sum-of-squares variance accurate.
    column_mean = values.mean(axis=0)
    centred = values - column_mean
    # A standard deviation this small against the column's scale is rounding noise of a flat
    # column (a trial that did not trade there): its Sharpe ratio counts as 0.
    flat_std = 1e-12 * np.abs(values).max(axis=0)
    block_sum = np.add.reduceat(centred, bounds[:-1], axis=0)
    block_sq = np.add.reduceat(centred**2, bounds[:-1], axis=0)
    block_count = np.diff(bounds).astype(np.float64)[:, None]
    total, total_sq, total_count = block_sum.sum(0), block_sq.sum(0), block_count.sum()
    for lo in range(0, len(combos), _CHUNK):
        chosen = combos[lo : lo + _CHUNK]
        # Summing gathered blocks adds every column in the same order, so identical columns
        # get bit-identical metrics (a matrix product would not promise that).
        s_in = block_sum[chosen].sum(axis=1)
        q_in = block_sq[chosen].sum(axis=1)
        n_in = block_count[chosen].sum(axis=1)
        yield (
            _block_metric(metric, s_in, q_in, n_in, column_mean, flat_std),
            _block_metric(
                metric, total - s_in, total_sq - q_in, total_count - n_in, column_mean, flat_std
            ),
        )


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Return ``(slope, intercept)`` of the least-squares line of y on x (NaN if x is constant)."""
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if not np.isfinite(sxx) or sxx == 0:
        return math.nan, math.nan
    slope = float(dx @ (y - y.mean())) / sxx
    return slope, float(y.mean() - slope * x.mean())
