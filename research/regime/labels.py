"""Regime labels: the regime of the next ``horizon`` bars, by the rule of
``quantshift.regime_features`` on the forward window with the thresholds known at the bar.

The label of bar t reads bars t+1..t+horizon, so a training row whose forward window reaches
into a test fold must be purged (``purge = horizon`` in the splitters).
"""

from __future__ import annotations

import numpy as np

from quantshift.regime_features import NO_REGIME, RegimeSettings, classify, thresholds, window_stats


def forward_labels(close: np.ndarray, settings: RegimeSettings) -> np.ndarray:
    """Return, for each bar t, the regime of bars (t, t + horizon]: their return and realised
    volatility against the trailing quantiles at t. ``NO_REGIME`` (-1) for the last
    ``horizon`` bars (no complete forward window) and before ``min_history``."""
    h = settings.horizon
    ret, vol = window_stats(close, h)
    limits = thresholds(ret, vol, settings)
    forward_ret = np.full(ret.shape, np.nan)
    forward_vol = np.full(vol.shape, np.nan)
    if len(ret) > h:
        forward_ret[:-h] = ret[h:]
        forward_vol[:-h] = vol[h:]
    labels = classify(forward_ret, forward_vol, limits)
    labels[np.isnan(forward_ret)] = NO_REGIME
    return labels
