"""Bollinger bounce: buy a lower-band touch while RSI confirms weakness, sell at the upper band.

A mean-reversion seed strategy with an ATR stop-loss.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import njit

from quantshift.indicators import atr_nb, bollinger_nb, rsi_nb
from quantshift.strategies.base import Param, Strategy


@njit
def signal_nb(
    open_, high, low, close, volume, params, entries, exits, stop_dist, take_profit_dist, trail_dist
):
    """Mark lower-band entries and upper-band exits; see the Strategy docstring for the contract."""
    bb_std = params[1]
    upper, _, lower = bollinger_nb(close, int(params[0]), bb_std, bb_std)
    rsi = rsi_nb(close, int(params[2]))
    rsi_below = params[3]
    atr = atr_nb(high, low, close, int(params[4]))
    stop_atr = params[5]
    for t in range(close.shape[0]):
        if np.isnan(atr[t]):
            continue
        stop_dist[t] = stop_atr * atr[t]
        # Signals start once every indicator exists, so an entry always has its stop.
        if np.isnan(rsi[t]) or np.isnan(lower[t]):
            continue
        entries[t] = low[t] <= lower[t] and rsi[t] < rsi_below
        exits[t] = high[t] >= upper[t]


def _warmup(values: Mapping[str, float]) -> int:
    # The bands exist from bar bb_window - 1, RSI from rsi_window, ATR from atr_window.
    return int(max(values["bb_window"] - 1, values["rsi_window"], values["atr_window"]))


STRATEGY = Strategy(
    name="bollinger_bounce",
    description=(
        "Long when the low touches the lower Bollinger band and RSI is below rsi_below; flat "
        "when the high touches the upper band; stop-loss stop_atr ATRs from the entry."
    ),
    params=(
        Param(name="bb_window", default=20, low=5, high=100, integer=True, description="band bars"),
        Param(name="bb_std", default=2.0, low=0.5, high=4, description="band width in deviations"),
        Param(name="rsi_window", default=14, low=2, high=50, integer=True, description="RSI bars"),
        Param(name="rsi_below", default=45, low=10, high=60, description="RSI level to buy under"),
        Param(name="atr_window", default=14, low=2, high=50, integer=True, description="ATR bars"),
        Param(name="stop_atr", default=1.5, low=0.5, high=10, description="stop-loss in ATRs"),
    ),
    signal_nb=signal_nb,
    warmup=_warmup,
    uses_stops=True,
)
