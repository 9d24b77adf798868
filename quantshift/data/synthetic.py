"""Seeded synthetic OHLCV: a regime-switching random walk with realistic bars, volume and gaps.

Used where real data is too short, too clean or cannot be shipped (tests, examples, benchmarks).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from quantshift.data.bars import Bars
from quantshift.errors import ConfigError, DataError

# Market regimes: annual drift, annual volatility, mean duration in years.
_DRIFT = np.array([0.15, 0.06, -0.35])
_VOLATILITY = np.array([0.12, 0.20, 0.45])
_DURATION_YEARS = np.array([2.0, 1.0, 0.3])
# Where a regime goes when it ends (rows: from calm, normal, stress).
_NEXT_REGIME = np.array([[0.0, 0.8, 0.2], [0.6, 0.0, 0.4], [0.3, 0.7, 0.0]])

_UNIT_NS = {"s": 1_000_000_000, "min": 60_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_FREQ = re.compile(r"(\d*)(s|min|m|h|d)")
_YEAR_NS = 365.25 * 86_400 * 1e9
_TRADING_DAYS = 252

# spec key -> (synthetic_bars argument, converter, what a value must look like)
_SPEC_KEYS = {
    "symbols": ("n_symbols", int, "a whole number, e.g. symbols=10"),
    "bars": ("n_bars", int, "a whole number, e.g. bars=2520"),
    "seed": ("seed", int, "a whole number, e.g. seed=7"),
    "start": ("start", str, "a date, e.g. start=2005-01-03"),
    "freq": ("freq", str, "a bar interval, e.g. freq=1d or freq=15min"),
    "gaps": ("gap_rate", float, "a fraction, e.g. gaps=0.01"),
}
_SPEC_REQUIRED = ("symbols", "bars", "seed")


def synthetic_bars(
    n_symbols: int,
    n_bars: int,
    seed: int,
    *,
    start: str = "2000-01-03",
    freq: str = "1d",
    gap_rate: float = 0.01,
) -> Bars:
    """Generate seeded OHLCV bars from a regime-switching log-normal random walk.

    A three-state Markov chain (calm, normal, stress) sets drift and volatility for the whole
    market; each symbol has its own volatility multiple and market correlation, fat-tailed
    idiosyncratic returns, an opening gap against the previous close, an intrabar range, and
    volume that rises with the size of the move.

    Parameters
    ----------
    n_symbols : int
        Number of symbols, named ``SYN000``, ``SYN001``, ...
    n_bars : int
        Number of bars.
    seed : int
        Seed of ``numpy.random.default_rng``; the same arguments give bitwise-identical bars.
    start : str
        First timestamp (UTC); daily bars start on the first business day on or after it.
    freq : str
        Bar interval: ``Nd`` for every N-th business day, or ``Nh``, ``Nmin`` (``Nm``), ``Ns``
        for round-the-clock intraday bars.
    gap_rate : float
        Fraction of bars each symbol misses (all fields NaN); the first bar is never missing.
        A time at which every symbol misses its bar stays on the axis, all NaN.

    Returns
    -------
    Bars
        Bars of shape (n_bars, n_symbols).

    Raises
    ------
    ConfigError
        If an argument is out of range or ``freq``/``start`` cannot be read.
    """
    for name, value, low in (("n_symbols", n_symbols, 1), ("n_bars", n_bars, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
    if not 0.0 <= gap_rate < 1.0:
        raise ConfigError(f"gap_rate must be a fraction in [0, 1), got {gap_rate!r}")
    ts_ns, bars_per_year = _timestamps(start, freq, n_bars)

    rng = np.random.default_rng(seed)
    regime = _regime_path(rng, n_bars, bars_per_year)
    bar_drift = _DRIFT[regime][:, None] / bars_per_year
    bar_vol = _VOLATILITY[regime][:, None] / np.sqrt(bars_per_year)

    vol_multiple = rng.uniform(0.7, 1.6, n_symbols)
    market_corr = rng.uniform(0.3, 0.8, n_symbols)
    start_price = np.exp(rng.uniform(np.log(5.0), np.log(500.0), n_symbols))
    base_volume = np.exp(rng.uniform(np.log(1e4), np.log(1e7), n_symbols))

    market = rng.standard_normal(n_bars)[:, None]
    # Student-t with 5 degrees of freedom, scaled to unit variance, gives fat tails.
    own = rng.standard_t(5, (n_bars, n_symbols)) * np.sqrt(3.0 / 5.0)
    shock = market_corr * market + np.sqrt(1.0 - market_corr**2) * own
    sigma = bar_vol * vol_multiple
    log_return = bar_drift - 0.5 * sigma**2 + sigma * shock

    log_close = np.log(start_price) + np.cumsum(log_return, axis=0)
    overnight = 0.3 * sigma * rng.standard_normal((n_bars, n_symbols))
    close = np.exp(log_close)
    open_ = np.exp(log_close - log_return + overnight)
    high = np.maximum(open_, close) * np.exp(0.5 * sigma * np.abs(rng.standard_normal(close.shape)))
    low = np.minimum(open_, close) * np.exp(-0.5 * sigma * np.abs(rng.standard_normal(close.shape)))
    noise = 0.25 * rng.standard_normal(close.shape)
    volume = np.ceil(base_volume * np.exp(noise + 0.8 * np.abs(shock)))

    missing = rng.random(close.shape) < gap_rate
    missing[0] = False
    for arr in (open_, high, low, close, volume):
        arr[missing] = np.nan

    first = pd.Timestamp(ts_ns[0], tz="UTC")
    first_text = first.strftime("%Y-%m-%d" if first == first.normalize() else "%Y-%m-%dT%H:%M:%S")
    return Bars(
        ts_ns=ts_ns,
        symbols=tuple(f"SYN{i:03d}" for i in range(n_symbols)),
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        source=(
            f"synthetic:symbols={n_symbols},bars={n_bars},seed={seed},start={first_text},"
            f"freq={freq},gaps={float(gap_rate)!r}"
        ),
    )


def synthetic_from_spec(spec: str) -> Bars:
    """Generate bars from a spec such as ``synthetic:symbols=5,bars=500,seed=1,gaps=0.02``.

    Keys: ``symbols``, ``bars`` and ``seed`` (required), ``start``, ``freq`` and ``gaps``
    (``gap_rate``); see ``synthetic_bars``.

    Raises
    ------
    DataError
        For an unknown, repeated, missing or malformed key, naming the key and what it expects.
    """
    kwargs = {}
    for item in spec.split(":", 1)[1].split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        key = key.lower()
        if not sep or key not in _SPEC_KEYS:
            raise DataError(
                f"{spec}: '{item}' is not one of the keys {', '.join(_SPEC_KEYS)} "
                "given as key=value"
            )
        argument, convert, expected = _SPEC_KEYS[key]
        if argument in kwargs:
            raise DataError(f"{spec}: key '{key}' given twice")
        try:
            kwargs[argument] = convert(value)
        except ValueError:
            raise DataError(f"{spec}: key '{key}' must be {expected}; got '{value}'") from None
    missing = [k for k in _SPEC_REQUIRED if _SPEC_KEYS[k][0] not in kwargs]
    if missing:
        raise DataError(
            f"{spec}: missing key(s) {', '.join(missing)} (e.g. symbols=5,bars=500,seed=1)"
        )
    try:
        return synthetic_bars(**kwargs)
    except ConfigError as exc:
        raise DataError(f"{spec}: {exc}") from None


def _timestamps(start: str, freq: str, n_bars: int) -> tuple[np.ndarray, float]:
    match = _FREQ.fullmatch(str(freq))
    step = int(match.group(1) or 1) if match else 0
    if step < 1:
        raise ConfigError(
            f"freq {freq!r} not understood; expected a count and a unit d, h, min "
            "(or m) or s, e.g. 1d, 4h, 15min"
        )
    try:
        first = pd.Timestamp(start)
    except (ValueError, TypeError):
        first = pd.NaT
    if first is pd.NaT:
        raise ConfigError(f"start {start!r} is not a date; expected e.g. 2000-01-03")
    first = first.tz_localize("UTC") if first.tz is None else first.tz_convert("UTC")
    unit = match.group(2)
    # Business days cover 7/5 of calendar time; timestamps must stay within int64 ns (2262).
    bar_ns = 86_400 * 10**9 * 7 / 5 if unit == "d" else _UNIT_NS[unit]
    span_ns = n_bars * step * bar_ns
    if first.as_unit("ns").value + span_ns >= pd.Timestamp.max.value:
        raise ConfigError(
            f"{n_bars} bars of {freq} from {first:%Y-%m-%d} run past "
            f"{pd.Timestamp.max:%Y-%m-%d}, the last time int64 nanoseconds can hold; use a "
            "shorter freq (e.g. 1h), an earlier start or fewer bars"
        )
    if unit == "d":
        index = pd.bdate_range(start=first, periods=n_bars, freq=f"{step}B")
        return index.as_unit("ns").asi8.astype(np.int64), _TRADING_DAYS / step
    step_ns = step * _UNIT_NS[unit]
    ts_ns = first.as_unit("ns").value + np.arange(n_bars, dtype=np.int64) * step_ns
    return ts_ns, _YEAR_NS / step_ns


def _regime_path(rng: np.random.Generator, n_bars: int, bars_per_year: float) -> np.ndarray:
    # Drawing whole regime durations loops once per regime switch, not once per bar.
    leave_prob = np.minimum(1.0, 1.0 / (_DURATION_YEARS * bars_per_year))
    path = np.empty(n_bars, dtype=np.intp)
    state, filled = int(rng.integers(len(_DRIFT))), 0
    while filled < n_bars:
        length = int(rng.geometric(leave_prob[state]))
        path[filled : filled + length] = state
        filled += length
        state = int(rng.choice(len(_DRIFT), p=_NEXT_REGIME[state]))
    return path
