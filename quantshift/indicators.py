"""Technical indicators as numba kernels: 1-D float64 arrays in, arrays of the same length out.

Each kernel reproduces TA-Lib's values and NaN warm-up (checked in tests/test_indicators.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Conventions shared by every kernel
# -----------------------------------
# * A bad window (< 1, or longer than the data) gives an all-NaN result instead of an error, so
#   strategies can be evaluated on short prefixes (the causality tests do exactly that).
# * Like TA-Lib's Python wrapper, leading NaNs are skipped: the series starts at its first value
#   that is not NaN, so a kernel can be applied to another kernel's output.
# * A NaN inside the series makes every rolling window that contains it NaN (windows without it
#   are unaffected); recursive kernels (EMA, RSI, ATR, MACD) carry it forward, as TA-Lib does.


@njit(cache=True)
def _first_valid_nb(x):
    """Return the index of the first value that is not NaN, or len(x) if there is none."""
    for i in range(x.shape[0]):
        if not np.isnan(x[i]):
            return i
    return x.shape[0]


@njit(cache=True)
def _two_sum_nb(a, b):
    """Return (s, e) with s = fl(a + b) and s + e == a + b exactly (Knuth's TwoSum)."""
    s = a + b
    b_virtual = s - a
    e = (a - (s - b_virtual)) + (b - b_virtual)
    return s, e


@njit(cache=True)
def _rolling_sum_nb(x, window):
    """Return the sum over each full window ending at t; NaN if the window is short or has NaN.

    A plain running sum (add the new value, subtract the old one) drifts: every update leaves a
    rounding error of the size of the largest sum seen so far, which ruins small sums after a
    price collapse or over long series. The errors are captured exactly with TwoSum and kept in
    a separate compensation term, so each result is accurate to a few ulps of the window's sum.
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    if window < 1 or window > n:
        return out
    total = 0.0
    compensation = 0.0
    last_nan = -1
    for i in range(n):
        value = x[i]
        if np.isnan(value):
            last_nan = i
        else:
            total, error = _two_sum_nb(total, value)
            compensation += error
        if i >= window:
            leaving = x[i - window]
            if not np.isnan(leaving):
                total, error = _two_sum_nb(total, -leaving)
                compensation += error
        if i >= window - 1 and last_nan <= i - window:
            out[i] = total + compensation
    return out


@njit(cache=True)
def sma_nb(x, window):
    """Return the simple moving average of ``x`` over ``window`` bars (like ``talib.SMA``).

    Parameters
    ----------
    x : ndarray of float64, shape (n,)
        Input series.
    window : int
        Number of bars averaged, including the current one.

    Returns
    -------
    ndarray of float64, shape (n,)
        The average; NaN for the first ``window - 1`` bars.
    """
    out = _rolling_sum_nb(x, window)
    if window >= 1:
        out /= window
    return out


@njit(cache=True)
def _ema_seeded_nb(x, window, seed_index, out):
    """Write into ``out[seed_index:]`` the EMA of ``x`` seeded with the SMA ending at seed_index.

    The update is written in TA-Lib's operation order so results agree to the last bits.
    """
    total = 0.0
    for i in range(seed_index - window + 1, seed_index + 1):
        total += x[i]
    value = total / window
    out[seed_index] = value
    smoothing = 2.0 / (window + 1)
    for i in range(seed_index + 1, x.shape[0]):
        value = ((x[i] - value) * smoothing) + value
        out[i] = value


@njit(cache=True)
def ema_nb(x, window):
    """Return the exponential moving average of ``x`` with smoothing 2 / (window + 1).

    Seeded like ``talib.EMA``: the first value, at bar ``window - 1``, is the SMA of the first
    ``window`` values.

    Parameters
    ----------
    x : ndarray of float64, shape (n,)
        Input series.
    window : int
        EMA period in bars.

    Returns
    -------
    ndarray of float64, shape (n,)
        The EMA; NaN for the first ``window - 1`` bars.
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    seed_index = _first_valid_nb(x) + window - 1
    if window >= 1 and seed_index < n:
        _ema_seeded_nb(x, window, seed_index, out)
    return out


@njit(cache=True)
def rsi_nb(close, window):
    """Return Wilder's relative strength index (0-100) of ``close``, like ``talib.RSI``.

    The first value, at bar ``window``, uses the plain averages of the first ``window`` gains
    and losses; later bars use Wilder's smoothing (weight 1 / window). A window with neither
    gains nor losses gives 0, TA-Lib's convention.

    Parameters
    ----------
    close : ndarray of float64, shape (n,)
        Closing prices.
    window : int
        RSI period in bars.

    Returns
    -------
    ndarray of float64, shape (n,)
        The RSI; NaN for the first ``window`` bars.
    """
    n = close.shape[0]
    out = np.full(n, np.nan)
    start = _first_valid_nb(close)
    first = start + window
    if window < 1 or first >= n:
        return out
    gain = 0.0
    loss = 0.0
    for i in range(start + 1, first + 1):
        change = close[i] - close[i - 1]
        if change < 0.0:
            loss -= change
        else:
            gain += change
    gain /= window
    loss /= window
    for i in range(first, n):
        if i > first:
            change = close[i] - close[i - 1]
            # Multiply, add, divide as separate steps: TA-Lib's order, for bit-level agreement.
            gain *= window - 1
            loss *= window - 1
            if change < 0.0:
                loss -= change
            else:
                gain += change
            gain /= window
            loss /= window
        total = gain + loss
        out[i] = 100.0 * (gain / total) if total != 0.0 else 0.0
    return out


@njit(cache=True)
def _shifted_window_sums_nb(x, start, stop, shift):
    """Return TwoSum-compensated sums (s1, c1, s2, c2) of x - shift and (x - shift)² on a slice."""
    s1 = c1 = s2 = c2 = 0.0
    for j in range(start, stop):
        deviation = x[j] - shift
        s1, error = _two_sum_nb(s1, deviation)
        c1 += error
        s2, error = _two_sum_nb(s2, deviation * deviation)
        c2 += error
    return s1, c1, s2, c2


@njit(cache=True)
def _rolling_variance_nb(x, window):
    """Return the population variance of each full window ending at t (NaN as for the sums).

    Sums of d = x - shift and d² are kept compensated, so E[d²] - E[d]² cancels away only the
    digits by which (mean - shift)² exceeds the variance. Whenever that ratio passes 1e4 the
    shift is re-anchored at the current value and the window re-summed; right after, the ratio
    is at most the window length, so re-anchoring is rare (a long drift or a collapse in
    volatility) and flat windows come out exactly 0.
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    if window < 1 or window > n:
        return out
    first = _first_valid_nb(x)
    shift = x[first] if first < n else 0.0
    s1 = c1 = s2 = c2 = 0.0
    last_nan = -1
    for i in range(n):
        value = x[i]
        if np.isnan(value):
            last_nan = i
        else:
            deviation = value - shift
            s1, error = _two_sum_nb(s1, deviation)
            c1 += error
            s2, error = _two_sum_nb(s2, deviation * deviation)
            c2 += error
        if i >= window:
            leaving = x[i - window]
            if not np.isnan(leaving):
                deviation = leaving - shift
                s1, error = _two_sum_nb(s1, -deviation)
                c1 += error
                s2, error = _two_sum_nb(s2, -(deviation * deviation))
                c2 += error
        if i < window - 1 or last_nan > i - window:
            continue
        mean_offset = (s1 + c1) / window
        variance = (s2 + c2) / window - mean_offset * mean_offset
        if mean_offset * mean_offset > 1e4 * variance:
            shift = value
            s1, c1, s2, c2 = _shifted_window_sums_nb(x, i - window + 1, i + 1, shift)
            mean_offset = (s1 + c1) / window
            variance = (s2 + c2) / window - mean_offset * mean_offset
        out[i] = variance if variance > 0.0 else 0.0
    return out


@njit(cache=True)
def bollinger_nb(x, window, nbdev_up, nbdev_down):
    """Return Bollinger bands (upper, middle, lower) of ``x``, like ``talib.BBANDS`` with an SMA.

    Parameters
    ----------
    x : ndarray of float64, shape (n,)
        Input series.
    window : int
        Bars in the moving average and standard deviation.
    nbdev_up, nbdev_down : float
        Multiples of the population standard deviation added above and below the middle band.

    Returns
    -------
    upper, middle, lower : ndarray of float64, shape (n,)
        The bands; NaN for the first ``window - 1`` bars.
    """
    middle = sma_nb(x, window)
    deviation = np.sqrt(_rolling_variance_nb(x, window))
    return middle + nbdev_up * deviation, middle, middle - nbdev_down * deviation


@njit(cache=True)
def true_range_nb(high, low, close):
    """Return the true range: max(high - low, |prev close - high|, |prev close - low|).

    Parameters
    ----------
    high, low, close : ndarray of float64, shape (n,)
        Bar prices.

    Returns
    -------
    ndarray of float64, shape (n,)
        The true range; NaN on the first bar, which has no previous close (like ``talib.TRANGE``).
    """
    n = close.shape[0]
    out = np.full(n, np.nan)
    # The sum is NaN exactly where one of the three is, which is where TA-Lib's wrapper looks.
    start = _first_valid_nb(high + low + close)
    for i in range(start + 1, n):
        greatest = high[i] - low[i]
        gap_high = abs(close[i - 1] - high[i])
        if gap_high > greatest:
            greatest = gap_high
        gap_low = abs(close[i - 1] - low[i])
        if gap_low > greatest:
            greatest = gap_low
        out[i] = greatest
    return out


@njit(cache=True)
def atr_nb(high, low, close, window):
    """Return Wilder's average true range, like ``talib.ATR``.

    The first value, at bar ``window``, is the mean of the true ranges of bars 1..window; later
    bars use Wilder's smoothing (weight 1 / window).

    Parameters
    ----------
    high, low, close : ndarray of float64, shape (n,)
        Bar prices.
    window : int
        ATR period in bars.

    Returns
    -------
    ndarray of float64, shape (n,)
        The ATR in price units; NaN for the first ``window`` bars.
    """
    n = close.shape[0]
    out = np.full(n, np.nan)
    true_range = true_range_nb(high, low, close)
    start = _first_valid_nb(high + low + close)
    first = start + window
    if window < 1 or first >= n:
        return out
    total = 0.0
    for i in range(start + 1, first + 1):
        total += true_range[i]
    value = total / window
    out[first] = value
    for i in range(first + 1, n):
        # Multiply, add, divide as separate steps: TA-Lib's order, for bit-level agreement.
        value *= window - 1
        value += true_range[i]
        value /= window
        out[i] = value
    return out


@njit(cache=True)
def macd_nb(close, fast, slow, signal):
    """Return (macd, signal, histogram) exactly as ``talib.MACD`` computes them.

    TA-Lib's conventions are kept: both EMAs (smoothing 2 / (n + 1)) are seeded at the slow
    EMA's first bar, the fast one with the SMA of the ``fast`` closes ending there; the signal
    line is the EMA of the MACD line seeded with its first ``signal`` values; all three outputs
    start together at bar ``slow + signal - 2``; ``fast > slow`` is swapped.

    Parameters
    ----------
    close : ndarray of float64, shape (n,)
        Closing prices.
    fast, slow, signal : int
        Periods of the fast EMA, slow EMA and signal EMA in bars.

    Returns
    -------
    macd, signal, histogram : ndarray of float64, shape (n,)
        Fast EMA minus slow EMA, its signal EMA, and their difference.
    """
    n = close.shape[0]
    macd = np.full(n, np.nan)
    signal_line = np.full(n, np.nan)
    histogram = np.full(n, np.nan)
    if fast < 1 or slow < 1 or signal < 1:
        return macd, signal_line, histogram
    if slow < fast:
        fast, slow = slow, fast
    line_start = _first_valid_nb(close) + slow - 1
    signal_start = line_start + signal - 1
    if signal_start >= n:
        return macd, signal_line, histogram
    fast_ema = np.full(n, np.nan)
    slow_ema = np.full(n, np.nan)
    _ema_seeded_nb(close, fast, line_start, fast_ema)
    _ema_seeded_nb(close, slow, line_start, slow_ema)
    line = fast_ema - slow_ema
    _ema_seeded_nb(line, signal, signal_start, signal_line)
    for i in range(signal_start, n):
        macd[i] = line[i]
        histogram[i] = line[i] - signal_line[i]
    return macd, signal_line, histogram


@njit(cache=True)
def rolling_max_nb(x, window):
    """Return the highest value of the ``window`` bars ending at each bar (like ``talib.MAX``).

    A monotonic queue of candidate indices makes it O(n) whatever the window.

    Parameters
    ----------
    x : ndarray of float64, shape (n,)
        Input series.
    window : int
        Bars considered, including the current one.

    Returns
    -------
    ndarray of float64, shape (n,)
        The rolling maximum; NaN for the first ``window - 1`` bars.
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    if window < 1 or window > n:
        return out
    # Indices of bars that can still be a window's maximum; their values strictly decrease.
    queue = np.empty(n, np.int64)
    head = 0
    tail = 0
    last_nan = -1
    for i in range(n):
        value = x[i]
        if np.isnan(value):
            last_nan = i
        else:
            while tail > head and x[queue[tail - 1]] <= value:
                tail -= 1
            queue[tail] = i
            tail += 1
        while tail > head and queue[head] <= i - window:
            head += 1
        if i >= window - 1 and last_nan <= i - window:
            out[i] = x[queue[head]]
    return out


@njit(cache=True)
def rolling_min_nb(x, window):
    """Return the lowest value of the ``window`` bars ending at each bar (like ``talib.MIN``).

    Parameters
    ----------
    x : ndarray of float64, shape (n,)
        Input series.
    window : int
        Bars considered, including the current one.

    Returns
    -------
    ndarray of float64, shape (n,)
        The rolling minimum; NaN for the first ``window - 1`` bars.
    """
    # Negation is exact, so the minimum is the negated maximum of the negated series.
    return -rolling_max_nb(-x, window)


@njit(cache=True)
def volume_mean_nb(volume, window):
    """Return the average volume of the ``window`` bars ending at each bar (an SMA of volume).

    Parameters
    ----------
    volume : ndarray of float64, shape (n,)
        Traded volume per bar.
    window : int
        Bars averaged, including the current one.

    Returns
    -------
    ndarray of float64, shape (n,)
        The average volume; NaN for the first ``window - 1`` bars.
    """
    return sma_nb(volume, window)
