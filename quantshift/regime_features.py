"""Market regimes: the five labels, the rule that assigns them, and the causal per-bar features a
regime model reads. Pure, so research (training) and live (prediction at each bar close) share it.

The rule classifies a window of ``horizon`` bars by its return and its realised volatility,
each compared with quantiles of the same quantity over the trailing ``quantile_window`` bars
(known at the decision bar). In order of precedence:

1. ``high_volatility``: volatility above its ``high_vol_quantile``;
2. ``bull_trending``: return above its ``bull_quantile``;
3. ``bear_trending``: return below its ``bear_quantile``;
4. ``low_volatility``: volatility below its ``low_vol_quantile``;
5. ``range_bound``: everything else.

Applied to the window ending at bar t it gives the *current* regime (a feature: bars 0..t);
applied to the window after t, ``(t, t + horizon]``, with the thresholds known at t, it gives the
*label* a model learns to predict (``research.regime.labels``): the regime of the next bars.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quantshift.errors import ConfigError
from quantshift.indicators import atr_nb, macd_nb, rsi_nb, sma_nb, volume_mean_nb
from quantshift.portfolio.overlay import REGIME_UNKNOWN, REGIMES

# A label is the index of its name in REGIMES, the codes the decision layer reads.
_NAMES = ("bull_trending", "bear_trending", "high_volatility", "low_volatility", "range_bound")
BULL, BEAR, HIGH_VOL, LOW_VOL, RANGE = (REGIMES.index(name) for name in _NAMES)
NO_REGIME = REGIME_UNKNOWN


@dataclass(frozen=True, kw_only=True)
class RegimeSettings:
    """The label rule and the feature windows (bars); saved with every trained model so live
    computes exactly the features the model was trained on."""

    horizon: int = 20
    quantile_window: int = 756
    min_history: int = 252
    bull_quantile: float = 0.7
    bear_quantile: float = 0.3
    high_vol_quantile: float = 0.8
    low_vol_quantile: float = 0.3
    atr_fast: int = 14
    atr_slow: int = 100
    sma_fast: int = 20
    sma_slow: int = 50
    sma_trend: int = 200
    slope_bars: int = 5
    rsi: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    volume_window: int = 50
    vol_long: int = 100

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_quantile"):
                if not 0.0 < value < 1.0:
                    raise ConfigError(f"{f.name} must be in (0, 1), got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(f"{f.name} must be an integer >= 2 bars, got {value!r}")
        if not self.bear_quantile < self.bull_quantile:
            raise ConfigError("bear_quantile must be below bull_quantile")
        if not self.low_vol_quantile < self.high_vol_quantile:
            raise ConfigError("low_vol_quantile must be below high_vol_quantile")
        if self.min_history > self.quantile_window:
            raise ConfigError("min_history must be at most quantile_window")

    @property
    def warmup(self) -> int:
        """Bars before the first bar with every feature defined."""
        longest = max(self.sma_trend, self.atr_slow + 1, self.vol_long + 1, self.volume_window)
        return max(longest, self.horizon + self.min_history)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegimeSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"regime settings: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


FEATURES = (
    "atr_ratio",
    "atr_pct",
    "sma_fast_slope",
    "sma_slow_slope",
    "close_vs_sma_slow",
    "close_vs_sma_trend",
    "macd_hist_pct",
    "rsi",
    "volume_ratio",
    "realized_vol",
    "vol_ratio",
    "window_return",
    "return_vs_bull",
    "return_vs_bear",
    "vol_vs_high",
    "vol_vs_low",
    "current_regime",
)
"""Feature columns, in the order a model sees them."""


def window_stats(close: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the return and the realised volatility (sample std of log returns) of the
    ``horizon`` bars ending at each bar; NaN where the window is not complete."""
    close = np.asarray(close, dtype=np.float64)
    n = close.shape[0]
    ret = np.full(n, np.nan)
    if n > horizon:
        ret[horizon:] = close[horizon:] / close[:-horizon] - 1.0
    log_ret = np.full(n, np.nan)
    log_ret[1:] = np.diff(np.log(close))
    vol = pd.Series(log_ret).rolling(horizon, min_periods=horizon).std().to_numpy()
    return ret, vol


def thresholds(ret: np.ndarray, vol: np.ndarray, settings: RegimeSettings) -> dict[str, np.ndarray]:
    """Return the rule's thresholds at each bar: trailing quantiles of the window return and
    volatility over the last ``quantile_window`` bars up to and including that bar."""
    s = settings

    def rolling(x, q):
        return (
            pd.Series(x)
            .rolling(s.quantile_window, min_periods=s.min_history)
            .quantile(q, interpolation="linear")
            .to_numpy()
        )

    return {
        "bull": rolling(ret, s.bull_quantile),
        "bear": rolling(ret, s.bear_quantile),
        "high_vol": rolling(vol, s.high_vol_quantile),
        "low_vol": rolling(vol, s.low_vol_quantile),
    }


def classify(ret: np.ndarray, vol: np.ndarray, limits: dict[str, np.ndarray]) -> np.ndarray:
    """Apply the regime rule (see the module docstring) element-wise; ``NO_REGIME`` where an
    input or a threshold is NaN."""
    out = np.full(ret.shape, RANGE, dtype=np.int64)
    out[vol < limits["low_vol"]] = LOW_VOL
    out[ret < limits["bear"]] = BEAR
    out[ret > limits["bull"]] = BULL
    out[vol > limits["high_vol"]] = HIGH_VOL
    missing = np.isnan(ret) | np.isnan(vol)
    for value in limits.values():
        missing |= np.isnan(value)
    out[missing] = NO_REGIME
    return out


def _slope(x: np.ndarray, bars: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    out[bars:] = x[bars:] / x[:-bars] - 1.0
    return out


def regime_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    settings: RegimeSettings,
) -> np.ndarray:
    """Return the features of one symbol's bars, shape (n, len(FEATURES)), float64.

    Row t is a function of bars 0..t only (tests/test_research_regime.py changes later bars
    and checks it); NaN until every input has its history (``settings.warmup`` bars).
    """
    del open_  # the signature takes every bar field so callers pass a symbol's bars whole
    s = settings
    high, low, close, volume = (
        np.ascontiguousarray(a, dtype=np.float64) for a in (high, low, close, volume)
    )
    atr_fast = atr_nb(high, low, close, s.atr_fast)
    atr_slow = atr_nb(high, low, close, s.atr_slow)
    sma_fast = sma_nb(close, s.sma_fast)
    sma_slow = sma_nb(close, s.sma_slow)
    sma_trend = sma_nb(close, s.sma_trend)
    _, _, histogram = macd_nb(close, s.macd_fast, s.macd_slow, s.macd_signal)
    ret, vol = window_stats(close, s.horizon)
    _, vol_long = window_stats(close, s.vol_long)
    limits = thresholds(ret, vol, s)
    current = classify(ret, vol, limits).astype(np.float64)
    current[current == NO_REGIME] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        columns = {
            "atr_ratio": atr_fast / atr_slow,
            "atr_pct": atr_fast / close,
            "sma_fast_slope": _slope(sma_fast, s.slope_bars),
            "sma_slow_slope": _slope(sma_slow, s.slope_bars),
            "close_vs_sma_slow": close / sma_slow - 1.0,
            "close_vs_sma_trend": close / sma_trend - 1.0,
            "macd_hist_pct": histogram / close,
            "rsi": rsi_nb(close, s.rsi),
            "volume_ratio": volume / volume_mean_nb(volume, s.volume_window),
            "realized_vol": vol,
            "vol_ratio": vol / vol_long,
            "window_return": ret,
            "return_vs_bull": ret - limits["bull"],
            "return_vs_bear": ret - limits["bear"],
            "vol_vs_high": vol / limits["high_vol"],
            "vol_vs_low": vol / limits["low_vol"],
            "current_regime": current,
        }
    out = np.column_stack([columns[name] for name in FEATURES])
    out[~np.isfinite(out)] = np.nan
    return out


def current_regime(close: np.ndarray, settings: RegimeSettings) -> np.ndarray:
    """Return the regime of the ``horizon`` bars ending at each bar (the persistence baseline
    predicts that the next regime is this one)."""
    ret, vol = window_stats(close, settings.horizon)
    return classify(ret, vol, thresholds(ret, vol, settings))
