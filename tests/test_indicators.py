"""Indicator kernels against TA-Lib on real and long synthetic data, plus edge cases.

TA-Lib is the oracle for values and NaN warm-up; exact sliding-window sums check accuracy.
"""

from __future__ import annotations

import functools
import textwrap
import time

import arch.data.nasdaq
import arch.data.sp500
import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from probe import run_python

from quantshift import indicators as ind

RTOL = 1e-9
WINDOWS = (2, 5, 14, 20, 50, 200)
DATASETS = ("sp500", "nasdaq", "random_walk")
WALK_BARS = 100_000


@functools.cache
def load(name: str) -> dict[str, np.ndarray]:
    """Return float64 OHLCV arrays of a named data set."""
    if name == "random_walk":
        return random_walk(WALK_BARS, seed=7)
    frame = {"sp500": arch.data.sp500, "nasdaq": arch.data.nasdaq}[name].load()
    return {
        field: np.ascontiguousarray(frame[column].to_numpy(np.float64))
        for field, column in zip(
            ("open", "high", "low", "close", "volume"),
            ("Open", "High", "Low", "Close", "Volume"),
            strict=True,
        )
    }


def random_walk(n_bars: int, seed: int) -> dict[str, np.ndarray]:
    """Return seeded geometric random-walk OHLCV bars (positive prices, high >= low)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, 0.002, n_bars))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.005, n_bars)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.005, n_bars)))
    volume = rng.lognormal(13.0, 0.5, n_bars)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def assert_matches(ours, expected, scale=None) -> None:
    """Assert NaN exactly where ``expected`` has NaN and values within RTOL elsewhere.

    ``scale`` serves differences of prices such as MACD, which cross zero where relative error
    means nothing: there, 1e-12 of the price level is allowed on top of the relative bound.
    """
    ours = np.asarray(ours)
    expected = np.asarray(expected)
    assert ours.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected), err_msg="NaN positions")
    valid = ~np.isnan(expected)
    if scale is None:
        np.testing.assert_allclose(ours[valid], expected[valid], rtol=RTOL)
    else:
        bound = RTOL * np.abs(expected[valid]) + 1e-12 * np.abs(scale[valid])
        np.testing.assert_array_less(np.abs(ours[valid] - expected[valid]), bound)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_moving_averages_match_talib(dataset, window):
    bars = load(dataset)
    assert_matches(ind.sma_nb(bars["close"], window), talib.SMA(bars["close"], window))
    assert_matches(ind.ema_nb(bars["close"], window), talib.EMA(bars["close"], window))
    assert_matches(ind.volume_mean_nb(bars["volume"], window), talib.SMA(bars["volume"], window))


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_rsi_matches_talib(dataset, window):
    close = load(dataset)["close"]
    assert_matches(ind.rsi_nb(close, window), talib.RSI(close, window))


@pytest.mark.parametrize("nbdev", [(2.0, 2.0), (1.0, 1.0), (1.5, 2.5)])
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_bollinger_matches_talib(dataset, window, nbdev):
    close = load(dataset)["close"]
    ours = ind.bollinger_nb(close, window, *nbdev)
    expected = talib.BBANDS(close, window, *nbdev, matype=0)
    for band, oracle in zip(ours, expected, strict=True):
        assert_matches(band, oracle)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_atr_and_true_range_match_talib(dataset, window):
    b = load(dataset)
    assert_matches(
        ind.true_range_nb(b["high"], b["low"], b["close"]),
        talib.TRANGE(b["high"], b["low"], b["close"]),
    )
    assert_matches(
        ind.atr_nb(b["high"], b["low"], b["close"], window),
        talib.ATR(b["high"], b["low"], b["close"], window),
    )


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_rolling_max_min_match_talib(dataset, window):
    b = load(dataset)
    assert_matches(ind.rolling_max_nb(b["high"], window), talib.MAX(b["high"], window))
    assert_matches(ind.rolling_min_nb(b["low"], window), talib.MIN(b["low"], window))


@pytest.mark.parametrize(
    "periods",
    [(12, 26, 9), (5, 35, 5), (2, 3, 2), (2, 2, 2), (50, 200, 20), (26, 12, 9)],
    ids=["classic", "wide", "tiny", "equal", "long", "swapped"],
)
@pytest.mark.parametrize("dataset", DATASETS)
def test_macd_matches_talib(dataset, periods):
    close = load(dataset)["close"]
    ours = ind.macd_nb(close, *periods)
    expected = talib.MACD(close, *periods)
    for line, oracle in zip(ours, expected, strict=True):
        assert_matches(line, oracle, scale=close)


def test_window_of_one():
    b = load("sp500")
    close = b["close"]
    assert_matches(ind.sma_nb(close, 1), talib.SMA(close, 1))
    assert_matches(ind.ema_nb(close, 1), talib.EMA(close, 1))
    assert_matches(
        ind.atr_nb(b["high"], b["low"], close, 1), talib.ATR(b["high"], b["low"], close, 1)
    )
    np.testing.assert_array_equal(ind.rolling_max_nb(close, 1), close)
    np.testing.assert_array_equal(ind.rolling_min_nb(close, 1), close)
    # TA-Lib refuses RSI(1); with one change per window it is 100 on a rise and 0 otherwise.
    change = np.diff(close)
    np.testing.assert_array_equal(
        ind.rsi_nb(close, 1), np.r_[np.nan, np.where(change > 0, 100.0, 0.0)]
    )
    upper, middle, lower = ind.bollinger_nb(close, 1, 2.0, 2.0)
    for band in (upper, middle, lower):
        np.testing.assert_array_equal(band, close)


def _all_kernels(x, window):
    """Run every kernel with one window on a series; return all output arrays."""
    return [
        ind.sma_nb(x, window),
        ind.ema_nb(x, window),
        ind.rsi_nb(x, window),
        *ind.bollinger_nb(x, window, 2.0, 2.0),
        ind.atr_nb(x * 1.01, x * 0.99, x, window),
        *ind.macd_nb(x, window, window + 1, window),
        ind.rolling_max_nb(x, window),
        ind.rolling_min_nb(x, window),
        ind.volume_mean_nb(x, window),
    ]


@pytest.mark.parametrize("window", [0, -1, -1000, 11, 12, 1000])
def test_bad_window_gives_all_nan(window):
    x = load("sp500")["close"][:10].copy()
    for out in _all_kernels(x, window):
        assert out.shape == x.shape
        assert np.isnan(out).all()


def test_window_just_fitting_gives_one_value():
    x = load("sp500")["close"][:10].copy()
    assert np.count_nonzero(~np.isnan(ind.sma_nb(x, 10))) == 1
    assert np.count_nonzero(~np.isnan(ind.rolling_max_nb(x, 10))) == 1
    # RSI and ATR need one bar more: the first change or previous close.
    assert np.isnan(ind.rsi_nb(x, 10)).all()
    assert np.count_nonzero(~np.isnan(ind.rsi_nb(x, 9))) == 1


def test_empty_and_all_nan_inputs():
    for x in (np.empty(0), np.full(30, np.nan)):
        for out in _all_kernels(x, 5):
            assert out.shape == x.shape
            assert np.isnan(out).all()
    assert ind.true_range_nb(np.empty(0), np.empty(0), np.empty(0)).shape == (0,)


def test_leading_nans_are_skipped_like_talib():
    b = load("sp500")
    pad = np.full(7, np.nan)
    close = np.r_[pad, b["close"][:500]]
    high = np.r_[pad, b["high"][:500]]
    low = np.r_[pad, b["low"][:500]]
    low[7] = np.nan  # the three inputs start at different bars
    for window in (2, 14):
        assert_matches(ind.sma_nb(close, window), talib.SMA(close, window))
        assert_matches(ind.ema_nb(close, window), talib.EMA(close, window))
        assert_matches(ind.rsi_nb(close, window), talib.RSI(close, window))
        assert_matches(ind.rolling_max_nb(close, window), talib.MAX(close, window))
        assert_matches(ind.rolling_min_nb(close, window), talib.MIN(close, window))
        assert_matches(ind.atr_nb(high, low, close, window), talib.ATR(high, low, close, window))
        bands = talib.BBANDS(close, window, 2.0, 2.0)
        for ours, oracle in zip(ind.bollinger_nb(close, window, 2.0, 2.0), bands, strict=True):
            assert_matches(ours, oracle)
        macd = talib.MACD(close, 12, 26, 9)
        for ours, oracle in zip(ind.macd_nb(close, 12, 26, 9), macd, strict=True):
            assert_matches(ours, oracle, scale=close)
    assert_matches(ind.true_range_nb(high, low, close), talib.TRANGE(high, low, close))


def _window_oracle(x, window, reduce):
    """Apply ``reduce`` to every full window of ``x`` (NaN-propagating, exact per window)."""
    out = np.full(x.shape, np.nan)
    out[window - 1 :] = reduce(sliding_window_view(x, window), axis=1)
    return out


def test_nan_inside_series_only_affects_windows_containing_it():
    x = load("sp500")["close"][:300].copy()
    x[[100, 101, 200]] = np.nan
    for window in (1, 5, 20):
        np.testing.assert_allclose(
            ind.sma_nb(x, window), _window_oracle(x, window, np.mean), rtol=1e-13
        )
        np.testing.assert_array_equal(
            ind.rolling_max_nb(x, window), _window_oracle(x, window, np.max)
        )
        np.testing.assert_array_equal(
            ind.rolling_min_nb(x, window), _window_oracle(x, window, np.min)
        )
        upper = ind.bollinger_nb(x, window, 1.0, 1.0)[0]
        oracle = _window_oracle(x, window, np.mean) + _window_oracle(x, window, np.std)
        np.testing.assert_allclose(upper, oracle, rtol=1e-13)


def test_rolling_sums_stay_exact_after_a_price_collapse():
    # 100k bars near 1e6 then 100k near 1e-2: a plain running sum keeps the big values'
    # rounding errors forever, which swamps every later window.
    rng = np.random.default_rng(3)
    n = 100_000
    x = np.r_[
        1e6 * np.exp(np.cumsum(rng.normal(0, 0.01, n))),
        1e-2 * np.exp(np.cumsum(rng.normal(0, 0.01, n))),
    ]
    window = 50
    mean = _window_oracle(x, window, np.mean)
    std = _window_oracle(x, window, np.std)
    cumulative = np.cumsum(np.r_[0.0, x])
    naive = np.r_[
        np.full(window - 1, np.nan), (cumulative[window:] - cumulative[:-window]) / window
    ]
    assert np.nanmax(np.abs(naive / mean - 1.0)) > 1e-3  # the test series does defeat naive sums
    np.testing.assert_allclose(ind.sma_nb(x, window), mean, rtol=1e-13)
    np.testing.assert_allclose(ind.volume_mean_nb(x, window), mean, rtol=1e-13)
    upper, middle, lower = ind.bollinger_nb(x, window, 2.0, 2.0)
    np.testing.assert_allclose(middle, mean, rtol=1e-13)
    np.testing.assert_allclose((upper - middle) / 2.0, std, rtol=1e-9)
    np.testing.assert_allclose((middle - lower) / 2.0, std, rtol=1e-9)


def test_flat_window_has_zero_deviation():
    x = np.r_[np.linspace(100.0, 50.0, 40), np.full(30, 0.1)]
    upper, middle, lower = ind.bollinger_nb(x, 10, 2.0, 2.0)
    np.testing.assert_array_equal(upper[-21:], middle[-21:])
    np.testing.assert_array_equal(lower[-21:], middle[-21:])


def test_rolling_max_is_linear_in_bars_not_window():
    x = random_walk(1_000_000, seed=1)["close"]
    ind.rolling_max_nb(x[:10], 2)  # compile outside the timing
    started = time.perf_counter()
    out = ind.rolling_max_nb(x, 100_000)
    elapsed = time.perf_counter() - started
    # O(n * window) would be 1e11 steps (minutes); the monotonic queue takes milliseconds.
    assert elapsed < 1.0
    assert out[-1] == x[-100_000:].max()


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.floats(1.0, 1000.0), min_size=1, max_size=120),
    window=st.integers(1, 130),
)
def test_random_short_series_match_talib(data, window):
    x = np.array(data)
    high, low = x * 1.02, x * 0.97
    # TA-Lib's minimum window is 2 for these.
    if window >= 2:
        assert_matches(ind.rsi_nb(x, window), talib.RSI(x, window))
        assert_matches(ind.rolling_max_nb(x, window), talib.MAX(x, window))
        assert_matches(ind.rolling_min_nb(x, window), talib.MIN(x, window))
        bands = talib.BBANDS(x, window, 2.0, 1.0)
        for ours, oracle in zip(ind.bollinger_nb(x, window, 2.0, 1.0), bands, strict=True):
            assert_matches(ours, oracle)
    assert_matches(ind.sma_nb(x, window), talib.SMA(x, window))
    assert_matches(ind.ema_nb(x, window), talib.EMA(x, window))
    assert_matches(ind.atr_nb(high, low, x, window), talib.ATR(high, low, x, window))


_PLAIN_PYTHON_CHECK = textwrap.dedent(
    """
    import arch.data.sp500, numpy as np, talib
    from quantshift import indicators as ind
    assert not hasattr(ind.sma_nb, "py_func"), "numba JIT is still on"
    f = arch.data.sp500.load().iloc[:400]
    h, l, c, v = (f[k].to_numpy(np.float64) for k in ("High", "Low", "Close", "Volume"))
    def same(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * c.max(), equal_nan=True)
    same(ind.sma_nb(c, 20), talib.SMA(c, 20))
    same(ind.ema_nb(c, 20), talib.EMA(c, 20))
    same(ind.rsi_nb(c, 14), talib.RSI(c, 14))
    same(ind.atr_nb(h, l, c, 14), talib.ATR(h, l, c, 14))
    same(ind.true_range_nb(h, l, c), talib.TRANGE(h, l, c))
    same(ind.rolling_max_nb(h, 20), talib.MAX(h, 20))
    same(ind.rolling_min_nb(l, 20), talib.MIN(l, 20))
    same(ind.volume_mean_nb(v, 20), talib.SMA(v, 20))
    for a, b in zip(ind.bollinger_nb(c, 20, 2.0, 2.0), talib.BBANDS(c, 20, 2.0, 2.0), strict=True):
        same(a, b)
    for a, b in zip(ind.macd_nb(c, 12, 26, 9), talib.MACD(c, 12, 26, 9), strict=True):
        same(a, b)
    """
)


def test_kernels_run_as_plain_python():
    result = run_python(_PLAIN_PYTHON_CHECK, timeout=120, NUMBA_DISABLE_JIT="1")
    assert result.returncode == 0, result.stderr
