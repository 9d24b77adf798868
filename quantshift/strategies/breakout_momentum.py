"""Breakout momentum: buy a close over the prior N-bar high on heavy volume, exit under the low.

The exit level is the lowest low of the prior M bars; an ATR trailing stop protects each trade.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import njit

from quantshift.indicators import atr_nb, rolling_max_nb, rolling_min_nb, volume_mean_nb
from quantshift.strategies.base import Param, Strategy


@njit
def signal_nb(
    open_, high, low, close, volume, params, entries, exits, stop_dist, take_profit_dist, trail_dist
):
    """Mark volume-confirmed breakouts and breakdowns; the contract is in the Strategy docstring."""
    highest = rolling_max_nb(high, int(params[0]))
    lowest = rolling_min_nb(low, int(params[1]))
    mean_volume = volume_mean_nb(volume, int(params[2]))
    volume_mult = params[3]
    atr = atr_nb(high, low, close, int(params[4]))
    trail_atr = params[5]
    # Levels come from bars before t: bar t's own high always reaches the window's highest high.
    for t in range(1, close.shape[0]):
        if np.isnan(atr[t]):
            continue
        trail_dist[t] = trail_atr * atr[t]
        # Signals start once every indicator exists, so an entry always has its trailing stop.
        if np.isnan(highest[t - 1]) or np.isnan(lowest[t - 1]) or np.isnan(mean_volume[t - 1]):
            continue
        entries[t] = close[t] > highest[t - 1] and volume[t] > volume_mult * mean_volume[t - 1]
        exits[t] = close[t] < lowest[t - 1]


def _warmup(values: Mapping[str, float]) -> int:
    # A level over the previous w bars exists from bar w; ATR exists from bar atr_window.
    windows = ("entry_window", "exit_window", "volume_window", "atr_window")
    return int(max(values[name] for name in windows))


STRATEGY = Strategy(
    name="breakout_momentum",
    description=(
        "Long when the close exceeds the highest high of the previous entry_window bars on volume "
        "above volume_mult times its previous volume_window-bar average; flat when the close falls "
        "below the lowest low of the previous exit_window bars; trailing stop trail_atr ATRs."
    ),
    params=(
        Param(
            name="entry_window", default=20, low=5, high=200, integer=True, description="high bars"
        ),
        Param(
            name="exit_window", default=10, low=2, high=100, integer=True, description="low bars"
        ),
        Param(
            name="volume_window",
            default=20,
            low=5,
            high=100,
            integer=True,
            description="volume average bars",
        ),
        Param(
            name="volume_mult", default=1.5, low=1, high=5, description="volume over its average"
        ),
        Param(name="atr_window", default=14, low=2, high=50, integer=True, description="ATR bars"),
        Param(name="trail_atr", default=1.5, low=0.5, high=10, description="trailing stop in ATRs"),
    ),
    signal_nb=signal_nb,
    warmup=_warmup,
    uses_stops=True,
)
