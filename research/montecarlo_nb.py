"""Numba kernels of the Monte Carlo module: resample returns into paths, one row of metrics each.

Arrays in, arrays out; :mod:`research.montecarlo` is the validating wrapper around them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from quantshift.engine.metrics import cagr_pct_nb, drawdown_step_nb, sharpe_nb

METHOD_RESHUFFLE = 0
METHOD_BOOTSTRAP = 1
METHOD_BLOCK = 2

# Paths are drawn in fixed chunks, each from the thread's generator seeded anew from (seed, chunk),
# so the paths do not depend on how many threads share the chunks out. numba compiles only the
# legacy np.random API (its state is per thread), hence the NPY002 exceptions below.
PATHS_PER_CHUNK = 64


@njit(cache=True)
def mix32_nb(x):
    """Scramble a 32-bit integer (Wellons' lowbias32): nearby seeds give unrelated streams.

    Products stay below 2**64 and are masked back to 32 bits, so plain Python ints (under
    NUMBA_DISABLE_JIT) and numba's int64 give the same value.
    """
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


@njit(cache=True)
def path_metrics_nb(path_returns, years, sharpe_factor, wealth_out):
    """Compound one path of returns from wealth 1.0; return its four metrics.

    Returns ``(final_wealth, max_drawdown_pct, cagr_pct, sharpe)`` by the engine's metric
    helpers. The starting wealth 1.0 is the first peak. CAGR is NaN unless ``years > 0``, and
    -100 once the wealth is gone. Sharpe is the mean over the sample
    (ddof 1) standard deviation of ``path_returns`` times ``sharpe_factor``; NaN for fewer than
    two returns or zero spread. ``wealth_out`` (length n + 1, or 0 to skip) receives the path.
    """
    n = path_returns.shape[0]
    store = wealth_out.shape[0] > 0
    wealth = 1.0
    peak = 1.0
    max_drawdown = 0.0
    total = 0.0
    if store:
        wealth_out[0] = 1.0
    for k in range(n):
        r = path_returns[k]
        total += r
        wealth *= 1.0 + r
        peak, max_drawdown = drawdown_step_nb(wealth, peak, max_drawdown)
        if store:
            wealth_out[k + 1] = wealth
    sharpe = math.nan
    if n > 1:
        # Two passes: per-trade returns can have a mean comparable to their spread.
        mean = total / n
        squares = 0.0
        for k in range(n):
            d = path_returns[k] - mean
            squares += d * d
        sharpe = sharpe_nb(mean, math.sqrt(squares / (n - 1)), sharpe_factor)
    return wealth, 100.0 * max_drawdown, cagr_pct_nb(wealth, years), sharpe


@njit(cache=True)
def draw_path_nb(method, returns, buffer, p_new_block):
    """Fill ``buffer`` with one resampled path, drawing from this thread's seeded generator.

    Reshuffle permutes ``buffer`` in place (Fisher-Yates): any starting order gives a uniform
    permutation, so a chunk keeps shuffling the same buffer. Bootstrap draws with replacement.
    Block is Politis & Romano's stationary bootstrap: each step starts a new block at a
    uniform position with probability ``p_new_block``, else continues the block, wrapping at
    the end of the series.
    """
    n = returns.shape[0]
    if method == METHOD_RESHUFFLE:
        for i in range(n - 1, 0, -1):
            j = np.random.randint(0, i + 1)  # noqa: NPY002
            buffer[i], buffer[j] = buffer[j], buffer[i]
    elif method == METHOD_BOOTSTRAP:
        for k in range(n):
            buffer[k] = returns[np.random.randint(0, n)]  # noqa: NPY002
    else:
        position = np.random.randint(0, n)  # noqa: NPY002
        buffer[0] = returns[position]
        for k in range(1, n):
            u = np.random.random()  # noqa: NPY002
            if u < p_new_block:
                # Given u < p, u / p is uniform on [0, 1): one draw decides and places the block.
                position = min(int(u / p_new_block * n), n - 1)
            else:
                position += 1
                if position == n:
                    position = 0
            buffer[k] = returns[position]


@njit(cache=True, parallel=True)
def simulate_nb(returns, method, n_paths, seed, p_new_block, years, sharpe_factor, stored):
    """Resample ``returns`` into ``n_paths`` paths and measure each one.

    Parameters
    ----------
    returns : float64 array (n,)
    method : int
        ``METHOD_RESHUFFLE``, ``METHOD_BOOTSTRAP`` or ``METHOD_BLOCK``.
    n_paths, seed : int
        Chunk ``c`` of ``PATHS_PER_CHUNK`` paths is drawn from a generator seeded with
        ``mix32(seed ^ mix32(c))``; ``seed`` is below 2**32.
    p_new_block : float
        Probability of starting a new block at a step (1 / mean block length), block only.
    years, sharpe_factor : float
        As in :func:`path_metrics_nb`.
    stored : float64 array (n_stored, n + 1)
        Receives the wealth of the first ``n_stored`` paths (``n_stored`` may be 0).

    Returns
    -------
    final_wealth, max_drawdown_pct, cagr_pct, sharpe : float64 arrays (n_paths,)
    """
    final_wealth = np.empty(n_paths)
    max_drawdown_pct = np.empty(n_paths)
    cagr_pct = np.empty(n_paths)
    sharpe = np.empty(n_paths)
    no_store = np.empty(0)
    n_chunks = (n_paths + PATHS_PER_CHUNK - 1) // PATHS_PER_CHUNK
    for c in prange(n_chunks):
        np.random.seed(mix32_nb(seed ^ mix32_nb(int(c))))  # noqa: NPY002
        buffer = returns.copy()
        stop = min((c + 1) * PATHS_PER_CHUNK, n_paths)
        for p in range(c * PATHS_PER_CHUNK, stop):
            draw_path_nb(method, returns, buffer, p_new_block)
            wealth_out = stored[p] if p < stored.shape[0] else no_store
            f, d, g, s = path_metrics_nb(buffer, years, sharpe_factor, wealth_out)
            final_wealth[p] = f
            max_drawdown_pct[p] = d
            cagr_pct[p] = g
            sharpe[p] = s
    return final_wealth, max_drawdown_pct, cagr_pct, sharpe


@njit(cache=True)
def permutations_nb(returns, years, sharpe_factor, stored):
    """Measure every ordering of ``returns`` once, in lexicographic order of positions.

    ``stored`` is (n!, n + 1) or (0, n + 1), as in :func:`simulate_nb`.
    """
    n = returns.shape[0]
    n_paths = 1
    for k in range(2, n + 1):
        n_paths *= k
    final_wealth = np.empty(n_paths)
    max_drawdown_pct = np.empty(n_paths)
    cagr_pct = np.empty(n_paths)
    sharpe = np.empty(n_paths)
    order = np.arange(n)
    buffer = np.empty(n)
    no_store = np.empty(0)
    for p in range(n_paths):
        for k in range(n):
            buffer[k] = returns[order[k]]
        wealth_out = stored[p] if p < stored.shape[0] else no_store
        f, d, g, s = path_metrics_nb(buffer, years, sharpe_factor, wealth_out)
        final_wealth[p] = f
        max_drawdown_pct[p] = d
        cagr_pct[p] = g
        sharpe[p] = s
        _next_permutation_nb(order)
    return final_wealth, max_drawdown_pct, cagr_pct, sharpe


@njit(cache=True)
def _next_permutation_nb(order):
    """Step ``order`` to the next permutation in lexicographic order (no-op after the last)."""
    n = order.shape[0]
    i = n - 2
    while i >= 0 and order[i] >= order[i + 1]:
        i -= 1
    if i < 0:
        return
    j = n - 1
    while order[j] <= order[i]:
        j -= 1
    order[i], order[j] = order[j], order[i]
    order[i + 1 :] = order[i + 1 :][::-1].copy()
