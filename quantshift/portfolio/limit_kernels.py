"""Numba helpers of the entry limits that read more than the book: the rolling correlation of
returns, per-sector notional, and the regime and sentiment multipliers of an entry.

Plain ``njit``, inlined into the decision kernel (``quantshift.portfolio.kernels``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from quantshift.portfolio.rows import LIMIT_NONE, LIMIT_REGIME, LIMIT_SENTIMENT


@njit
def window_returns_nb(recent_close, window):
    """Return the one-bar returns of the last ``window`` steps of ``recent_close`` (rows: bars
    up to the decision bar), NaN where either close is missing; fewer rows early on."""
    n = recent_close.shape[0]
    lo = max(1, n - window)
    out = np.empty((n - lo, recent_close.shape[1]))
    for i in range(lo, n):
        for k in range(recent_close.shape[1]):
            out[i - lo, k] = recent_close[i, k] / recent_close[i - 1, k] - 1.0
    return out


@njit
def pair_correlation_nb(returns, a, b, min_returns):
    """Return Pearson's correlation of columns ``a`` and ``b`` of ``returns`` over the rows
    where both are known; NaN with fewer than ``min_returns`` such rows (at least 2) or a
    constant series. What pandas gives with ``rolling(window, min_periods).corr()``."""
    count = 0
    sum_a = sum_b = 0.0
    for i in range(returns.shape[0]):
        ra, rb = returns[i, a], returns[i, b]
        if not (math.isnan(ra) or math.isnan(rb)):
            count += 1
            sum_a += ra
            sum_b += rb
    if count < max(min_returns, 2):
        return math.nan
    mean_a, mean_b = sum_a / count, sum_b / count
    cov = var_a = var_b = 0.0
    for i in range(returns.shape[0]):
        ra, rb = returns[i, a], returns[i, b]
        if not (math.isnan(ra) or math.isnan(rb)):
            cov += (ra - mean_a) * (rb - mean_b)
            var_a += (ra - mean_a) ** 2
            var_b += (rb - mean_b) ** 2
    if not (var_a > 0.0 and var_b > 0.0):
        return math.nan
    return cov / math.sqrt(var_a * var_b)


@njit
def correlated_holding_nb(k, side, held_side, returns, limits):
    """Return whether an entry of ``side`` in symbol ``k`` is too correlated with a holding:
    ``side * held * correlation > max_correlation`` for another symbol held on a side
    (``held_side[j, 0]`` long, ``held_side[j, 1]`` short); ``returns`` from
    :func:`window_returns_nb`."""
    limit = limits.max_correlation
    for j in range(held_side.shape[0]):
        if j == k or not (held_side[j, 0] or held_side[j, 1]):
            continue
        rho = pair_correlation_nb(returns, k, j, limits.correlation_min_returns)
        if math.isnan(rho):
            continue
        if held_side[j, 0] and side * rho > limit:
            return True
        if held_side[j, 1] and -side * rho > limit:
            return True
    return False


@njit
def sector_notional_nb(sector, notional):
    """Return the summed notional per sector code of ``notional`` (per symbol)."""
    n_sectors = 0
    for k in range(sector.shape[0]):
        n_sectors = max(n_sectors, sector[k] + 1)
    out = np.zeros(n_sectors)
    for k in range(sector.shape[0]):
        if sector[k] >= 0:
            out[sector[k]] += notional[k]
    return out


@njit
def entry_scale_nb(s, k, side, inputs, setup):
    """Return (size multiplier, LIMIT_* naming what set it) of sleeve ``s``'s entry in symbol
    ``k``: the regime's allocation multiplier times the sentiment cut. The reason is the
    regime's when its multiplier is below 1, else the sentiment's (LIMIT_NONE: 1)."""
    scale = 1.0
    reason = LIMIT_NONE
    r = inputs.regime[k]
    if r >= 0:
        scale = setup.regime_allocation[r, s]
        if scale < 1.0:
            reason = LIMIT_REGIME
    score = inputs.sentiment[k]
    cut = setup.limits[0].sentiment_scaling
    if cut > 0.0 and not math.isnan(score):
        adverse = max(0.0, -side * score)
        if adverse > 0.0:
            scale *= 1.0 - cut * adverse
            if reason == LIMIT_NONE:
                reason = LIMIT_SENTIMENT
    return scale, reason


@njit
def sentiment_vetoes_nb(k, side, inputs, limits):
    """Return whether the side-aligned news score of symbol ``k`` is below the threshold."""
    score = inputs.sentiment[k]
    return not math.isnan(score) and side * score < limits.min_sentiment
