"""Monte Carlo robustness of a backtest: reshuffle, bootstrap and block-bootstrap its returns.

Turns one equity path into distributions of final wealth, drawdown, CAGR and Sharpe, seeded.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from quantshift.errors import ConfigError, DataError
from research.montecarlo_nb import (
    METHOD_BLOCK,
    METHOD_BOOTSTRAP,
    METHOD_RESHUFFLE,
    path_metrics_nb,
    permutations_nb,
    simulate_nb,
)

METHODS = ("reshuffle", "bootstrap", "block", "permutations")
"""Resampling methods of :func:`monte_carlo`."""

_KERNEL_METHOD = {
    "reshuffle": METHOD_RESHUFFLE,
    "bootstrap": METHOD_BOOTSTRAP,
    "block": METHOD_BLOCK,
}
_TRADE_METHODS = ("reshuffle", "permutations")
FAN_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
"""Per-step wealth quantiles kept for the fan chart."""
FAN_SAMPLE_PATHS = 500
"""Paths whose wealth is kept to estimate the fan chart's quantiles (the first ones drawn)."""
MAX_PERMUTATION_TRADES = 9
_METRIC_NAMES = ("final_wealth", "max_drawdown_pct", "cagr_pct", "sharpe")
# Below 11 observations the longest lag examined (ceil(sqrt n) + 5) leaves no terms to
# normalise its autocorrelation.
MIN_BLOCK_LENGTH_OBS = 11


@dataclass(frozen=True, eq=False)
class MonteCarloResult:
    """Distributions of path metrics from :func:`monte_carlo`.

    Attributes
    ----------
    method : str
    n_paths, seed : int
    block_length : float or None
        Mean block length of the stationary bootstrap (``"block"`` only).
    final_wealth, max_drawdown_pct, cagr_pct, sharpe : ndarray (n_paths,)
        Per path: wealth at the end (start 1.0), largest fall from a running peak (%, the start
        is the first peak), compound annual growth (%, NaN without a time span) and Sharpe
        (per trade for trade returns, annualised for per-bar returns; see ``sharpe_unit``).
    original : dict
        The same four metrics for the returns in their original order.
    original_wealth : ndarray (n_steps + 1,)
        Wealth path of the original order.
    wealth_quantiles : ndarray (len(FAN_QUANTILES), n_steps + 1)
        Per-step wealth quantiles at ``FAN_QUANTILES``, from the first ``fan_paths`` paths.
    fan_paths : int
        How many paths the fan chart's quantiles come from.
    step_unit, sharpe_unit : str
        What one step of a path is (``"trade"`` or ``"bar"``) and how Sharpe is scaled.
    ruin_drawdown_pct, confidence : float
        The settings :meth:`summary` applies.
    paths : ndarray (n_paths, n_steps + 1) or None
        Every path's wealth, only when asked for with ``keep_paths=True``.
    """

    method: str
    n_paths: int
    seed: int
    block_length: float | None
    final_wealth: np.ndarray
    max_drawdown_pct: np.ndarray
    cagr_pct: np.ndarray
    sharpe: np.ndarray
    original: dict[str, float]
    original_wealth: np.ndarray
    wealth_quantiles: np.ndarray
    fan_paths: int
    step_unit: str
    sharpe_unit: str
    ruin_drawdown_pct: float
    confidence: float
    paths: np.ndarray | None = None

    def summary(self) -> dict[str, float]:
        """Return the headline numbers of the distributions as a flat dict.

        Max drawdown percentiles 50/95/99, equal-tailed ``confidence`` intervals of CAGR and
        Sharpe (``*_low``, ``*_high``), ``prob_ruin`` (share of paths whose max drawdown is at
        least ``ruin_drawdown_pct``), ``prob_loss`` (final wealth below 1), final wealth
        percentiles 5/50/95, and the original order's values (``original_*``).
        """
        tail = (1.0 - self.confidence) / 2.0
        out = {
            "n_paths": float(self.n_paths),
            "confidence": self.confidence,
            "ruin_drawdown_pct": self.ruin_drawdown_pct,
        }
        for q in (50, 95, 99):
            out[f"max_drawdown_pct_p{q}"] = _quantile(self.max_drawdown_pct, q / 100.0)
        for name in ("cagr_pct", "sharpe"):
            values = getattr(self, name)
            out[f"{name}_low"] = _quantile(values, tail)
            out[f"{name}_high"] = _quantile(values, 1.0 - tail)
        out["prob_ruin"] = float(np.mean(self.max_drawdown_pct >= self.ruin_drawdown_pct))
        out["prob_loss"] = float(np.mean(self.final_wealth < 1.0))
        for q in (5, 50, 95):
            out[f"final_wealth_p{q}"] = _quantile(self.final_wealth, q / 100.0)
        out.update({f"original_{k}": v for k, v in self.original.items()})
        return out

    def to_frame(self) -> pd.DataFrame:
        """Return one row per path: final wealth, max drawdown, CAGR and Sharpe."""
        return pd.DataFrame(
            {name: getattr(self, name) for name in _METRIC_NAMES},
            index=pd.RangeIndex(self.n_paths, name="path"),
        )

    def plot(self, path: str | Path | None = None):
        """Plot a wealth fan chart over histograms of max drawdown and CAGR.

        The fan shades the 5-95 and 25-75 per-step quantile bands with the median and the
        original path drawn over them; the histograms mark the original path's value. Without
        a time span (CAGR is NaN) the second histogram shows final wealth instead; a metric
        that is the same on every path (CAGR of a reshuffle) is written out, not binned.

        Parameters
        ----------
        path : str or Path, optional
            Save the figure there (format from the suffix, e.g. ``.png``).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from research.plots import plot_monte_carlo

        return plot_monte_carlo(self, path)


def monte_carlo(
    *,
    trade_returns=None,
    returns=None,
    method: str = "reshuffle",
    n_paths: int = 10_000,
    seed: int = 0,
    ruin_drawdown_pct: float = 50.0,
    block_length: float | None = None,
    periods_per_year: float = 252.0,
    years: float | None = None,
    confidence: float = 0.95,
    keep_paths: bool = False,
) -> MonteCarloResult:
    """Resample a backtest's returns into many paths and measure each one.

    Parameters
    ----------
    trade_returns : array_like, optional
        Per-trade returns as fractions of equity (+0.10 is +10%), in time order; see
        :func:`trade_equity_returns`. Used by ``"reshuffle"``, ``"permutations"`` and
        ``"bootstrap"``. Sharpe is then per trade: mean over sample standard deviation of the
        path's trade returns, not annualised.
    returns : array_like, optional
        Per-bar returns (fractions), used by ``"block"`` and ``"bootstrap"``. Sharpe is
        annualised with ``periods_per_year``.
    method : {"reshuffle", "bootstrap", "block", "permutations"}
        ``"reshuffle"`` permutes the trades; ``"bootstrap"`` draws with replacement;
        ``"block"`` is the stationary block bootstrap (Politis & Romano 1994) with mean
        block length ``block_length``; ``"permutations"`` enumerates every order of at most
        nine trades exactly (``n_paths`` and ``seed`` are then ignored).
    n_paths : int
        Number of resampled paths.
    seed : int
        Seed in ``[0, 2**32)``. Paths are drawn in fixed chunks, each seeded from (seed,
        chunk), so results do not depend on the number of numba threads.
    ruin_drawdown_pct : float
        A path whose max drawdown reaches this (%) counts as ruined in ``prob_ruin``.
    block_length : float, optional
        Mean block length in bars for ``"block"`` (ignored otherwise); default
        :func:`optimal_block_length` of ``returns``. Lengths below 1 are raised to 1 (an iid
        bootstrap); the length used is ``result.block_length``.
    periods_per_year : float
        Bars per year, for the Sharpe of per-bar returns and their default time span.
    years : float, optional
        Time span of the backtest, for CAGR. Required for CAGR of trade returns (else CAGR is
        NaN); per-bar returns default to ``n_bars / periods_per_year``.
    confidence : float
        Level of the CAGR and Sharpe intervals in :meth:`MonteCarloResult.summary`.
    keep_paths : bool
        Keep every path's wealth (n_paths x n_steps memory). By default memory is
        O(n_paths + n_steps): the fan chart's per-step quantiles come from a capped sample,
        the first ``FAN_SAMPLE_PATHS`` paths (all orders for ``"permutations"``).

    Returns
    -------
    MonteCarloResult
    """
    if method not in METHODS:
        raise ConfigError(f"monte_carlo: unknown method {method!r}; allowed: {', '.join(METHODS)}")
    values, is_trades = _pick_input(method, trade_returns, returns)
    _check_settings(n_paths, seed, ruin_drawdown_pct, periods_per_year, years, confidence)
    n_paths, seed = int(n_paths), int(seed)
    n_steps = values.shape[0]
    sharpe_factor = 1.0 if is_trades else math.sqrt(periods_per_year)
    if years is None:
        years = math.nan if is_trades else n_steps / periods_per_year
    if method == "block":
        if block_length is None:
            block_length = optimal_block_length(values)
        elif not (math.isfinite(block_length) and block_length > 0.0):
            raise ConfigError(f"monte_carlo: block_length must be positive, got {block_length}")
        block_length = max(float(block_length), 1.0)
    else:
        block_length = None

    if method == "permutations":
        if n_steps > MAX_PERMUTATION_TRADES:
            raise ConfigError(
                f"monte_carlo: method 'permutations' enumerates n! orders and takes at most "
                f"{MAX_PERMUTATION_TRADES} trades, got {n_steps}; use method='reshuffle'"
            )
        n_paths = math.factorial(n_steps)
        seed = 0
        stored = np.empty((n_paths, n_steps + 1))
        metrics = permutations_nb(values, years, sharpe_factor, stored)
    else:
        n_stored = n_paths if keep_paths else min(n_paths, FAN_SAMPLE_PATHS)
        stored = np.empty((n_stored, n_steps + 1))
        metrics = simulate_nb(
            values,
            _KERNEL_METHOD[method],
            n_paths,
            seed,
            1.0 / block_length if block_length is not None else 1.0,
            years,
            sharpe_factor,
            stored,
        )
    original_wealth = np.empty(n_steps + 1)
    original = path_metrics_nb(values, years, sharpe_factor, original_wealth)
    return MonteCarloResult(
        method=method,
        n_paths=n_paths,
        seed=seed,
        block_length=block_length,
        final_wealth=metrics[0],
        max_drawdown_pct=metrics[1],
        cagr_pct=metrics[2],
        sharpe=metrics[3],
        original=dict(zip(_METRIC_NAMES, original, strict=True)),
        original_wealth=original_wealth,
        wealth_quantiles=np.quantile(stored, FAN_QUANTILES, axis=0),
        fan_paths=stored.shape[0],
        step_unit="trade" if is_trades else "bar",
        sharpe_unit="per trade" if is_trades else f"annualised ({periods_per_year:g}/year)",
        ruin_drawdown_pct=float(ruin_drawdown_pct),
        confidence=float(confidence),
        paths=stored if keep_paths else None,
    )


def optimal_block_length(returns) -> float:
    """Estimate the optimal mean block length of the stationary bootstrap.

    Politis & White (2004), "Automatic block-length selection for the dependent bootstrap",
    Econometric Reviews 23(1), with the correction of Patton, Politis & White (2009),
    Econometric Reviews 28(4): ``b = (2 G^2 / D)^(1/3) n^(1/3)`` with ``D = 2 sigma^4`` for the
    stationary bootstrap, flat-top lag window ``min(1, 2(1 - |k|/M))``, ``M`` twice the first
    lag after which ``K_N = max(5, floor(log10 n))`` autocorrelations all lie inside
    ``+-2 sqrt(log10(n) / n)``, capped at ``ceil(sqrt n) + K_N``, and ``b`` capped at
    ``ceil(min(3 sqrt n, n / 3))``. The tuning follows ``arch.bootstrap.optimal_block_length``
    (whose ``"stationary"`` column this equals), including its autocorrelation normalisation.

    Parameters
    ----------
    returns : array_like
        One series of returns, at least about a dozen finite values with some spread.

    Returns
    -------
    float
        Mean block length in observations (may be below 1 for serially independent data).
    """
    x = _as_series(returns, "optimal_block_length: returns", compounded=False)
    n = x.shape[0]
    if n < MIN_BLOCK_LENGTH_OBS:
        raise DataError(
            f"optimal_block_length: needs at least {MIN_BLOCK_LENGTH_OBS} returns, got {n}"
        )
    kn = max(5, int(np.log10(n)))
    m_max = math.ceil(math.sqrt(n)) + kn
    if x.max() == x.min():
        raise DataError("optimal_block_length: returns are constant; no block length exists")
    eps = x - x.mean()
    band = 2.0 * math.sqrt(math.log10(n) / n)
    acv = np.empty(m_max + 1)
    abs_acorr = np.empty(m_max + 1)
    first_quiet = None
    for i in range(m_max + 1):
        cross = eps[i:] @ eps[: n - i]
        acv[i] = cross / n
        # Normalised over the n - i - 1 leading and trailing terms, as arch does, so that the
        # lag M chosen here is the one arch chooses.
        head = eps[i + 1 :] @ eps[i + 1 :]
        tail = eps[: n - i - 1] @ eps[: n - i - 1]
        abs_acorr[i] = abs(cross) / math.sqrt(head * tail)
        if first_quiet is None and i >= kn and np.all(abs_acorr[i - kn : i] < band):
            first_quiet = i - kn
    m = min(2 * max(first_quiet, 1), m_max) if first_quiet is not None else m_max
    k = np.arange(1, m + 1)
    window = np.where(k / m <= 0.5, 1.0, 2.0 * (1.0 - k / m))
    g = float(np.sum(2.0 * window * k * acv[1 : m + 1]))
    long_run_var = acv[0] + float(np.sum(2.0 * window * acv[1 : m + 1]))
    d_stationary = 2.0 * long_run_var**2
    b = (2.0 * g**2 / d_stationary) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    return float(min(b, math.ceil(min(3.0 * math.sqrt(n), n / 3.0))))


def trade_equity_returns(result, *, symbol: str | None = None, include_open: bool = False):
    """Return each trade's P&L as a fraction of its symbol's equity just before entry.

    The fraction is ``pnl / equity[bar before the entry bar]`` (the initial cash for a trade
    entered on the first bar): the equity the sizing saw. Compounding these fractions in
    order reproduces a symbol's equity growth over its closed trades, so they are the input
    that :func:`monte_carlo` reshuffles.

    Parameters
    ----------
    result : quantshift.BacktestResult
    symbol : str, optional
        Only this symbol's trades. By default every symbol's trades, merged in time order of
        entry (ties keep symbol order).
    include_open : bool
        Include a position still open at the end (marked at the last close).

    Returns
    -------
    ndarray of float64
    """
    trades = result.trades
    if symbol is not None:
        if symbol not in result.symbols:
            raise ConfigError(
                f"trade_equity_returns: symbol {symbol!r} not in the backtest; "
                f"symbols: {', '.join(result.symbols)}"
            )
        trades = trades[trades["symbol"] == symbol]
    if not include_open:
        trades = trades[trades["exit_reason"] != "open"]
    trades = trades.sort_values("entry_time", kind="stable")
    rows = result.equity.index.get_indexer(trades["entry_time"])
    columns = result.equity.columns.get_indexer(trades["symbol"].astype(str))
    equity = result.equity.to_numpy()
    before = np.where(rows > 0, equity[np.maximum(rows - 1, 0), columns], result.config.cash)
    return trades["pnl"].to_numpy(dtype=np.float64) / before


def _pick_input(method: str, trade_returns, returns) -> tuple[np.ndarray, bool]:
    """Check which series was given for ``method``; return it and whether it holds trades."""
    if (trade_returns is None) == (returns is None):
        raise ConfigError("monte_carlo: pass exactly one of trade_returns= or returns=")
    if returns is not None and method in _TRADE_METHODS:
        raise ConfigError(
            f"monte_carlo: method {method!r} reorders trades; pass trade_returns=, "
            "or use method='block' or 'bootstrap' for per-bar returns"
        )
    if trade_returns is not None and method == "block":
        raise ConfigError(
            "monte_carlo: method 'block' resamples per-bar returns (returns=); "
            "use 'reshuffle' or 'bootstrap' for trade_returns="
        )
    if trade_returns is not None:
        return _as_series(trade_returns, "monte_carlo: trade_returns"), True
    return _as_series(returns, "monte_carlo: returns"), False


def _as_series(values, what: str, *, compounded: bool = True) -> np.ndarray:
    """Return ``values`` as a contiguous float64 vector of finite values.

    ``compounded`` values are returns that wealth compounds, so they must stay above -100%.
    """
    x = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    if x.ndim != 1:
        raise DataError(f"{what} must be one-dimensional, got shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{what} is empty")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise DataError(f"{what} has {bad.size} NaN or infinite values, first at position {bad[0]}")
    ruined = np.flatnonzero(x <= -1.0)
    if compounded and ruined.size:
        raise DataError(
            f"{what}: a return of -100% or less wipes out the account "
            f"(position {ruined[0]}: {x[ruined[0]]:g}); returns must be above -1"
        )
    return x


def _check_settings(n_paths, seed, ruin_drawdown_pct, periods_per_year, years, confidence):
    problems = []
    if not isinstance(n_paths, int | np.integer) or n_paths < 1:
        problems.append(f"n_paths must be a positive integer, got {n_paths!r}")
    if not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        problems.append(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if not 0.0 < ruin_drawdown_pct <= 100.0:
        problems.append(f"ruin_drawdown_pct must be in (0, 100], got {ruin_drawdown_pct}")
    if not (math.isfinite(periods_per_year) and periods_per_year > 0.0):
        problems.append(f"periods_per_year must be positive, got {periods_per_year}")
    if years is not None and not (math.isfinite(years) and years > 0.0):
        problems.append(f"years must be positive, got {years}")
    if not 0.0 < confidence < 1.0:
        problems.append(f"confidence must be in (0, 1), got {confidence}")
    if problems:
        raise ConfigError("monte_carlo: " + "; ".join(problems))


def _quantile(values: np.ndarray, q: float) -> float:
    """Quantile over the finite values (NaN when there are none, e.g. CAGR without years)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanquantile(values, q))


__all__ = [
    "FAN_QUANTILES",
    "FAN_SAMPLE_PATHS",
    "METHODS",
    "MonteCarloResult",
    "monte_carlo",
    "optimal_block_length",
    "trade_equity_returns",
]
