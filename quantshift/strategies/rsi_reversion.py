"""RSI mean reversion: buy when Wilder's RSI is oversold, sell when it is overbought.

Each position carries a stop-loss and a take-profit sized in ATRs at the entry bar.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import njit

from quantshift.indicators import atr_nb, rsi_nb
from quantshift.strategies.base import Constraint, Param, Strategy


@njit
def signal_nb(
    open_, high, low, close, volume, params, entries, exits, stop_dist, take_profit_dist, trail_dist
):
    """Mark oversold entries and overbought exits; see the Strategy docstring for the contract."""
    rsi = rsi_nb(close, int(params[0]))
    entry_below = params[1]
    exit_above = params[2]
    atr = atr_nb(high, low, close, int(params[3]))
    stop_atr = params[4]
    take_profit_atr = params[5]
    for t in range(close.shape[0]):
        if np.isnan(atr[t]):
            continue
        stop_dist[t] = stop_atr * atr[t]
        take_profit_dist[t] = take_profit_atr * atr[t]
        # Signals start once both indicators exist, so an entry always has its stop.
        if np.isnan(rsi[t]):
            continue
        entries[t] = rsi[t] < entry_below
        exits[t] = rsi[t] > exit_above


def _warmup(values: Mapping[str, float]) -> int:
    # RSI exists from bar rsi_window, ATR from bar atr_window.
    return int(max(values["rsi_window"], values["atr_window"]))


STRATEGY = Strategy(
    name="rsi_reversion",
    description=(
        "Long when Wilder's RSI falls below entry_below, flat when it rises above exit_above; "
        "stop-loss stop_atr ATRs and take-profit take_profit_atr ATRs from the entry."
    ),
    params=(
        Param(name="rsi_window", default=14, low=2, high=50, integer=True, description="RSI bars"),
        Param(name="entry_below", default=35, low=5, high=50, description="RSI level to buy under"),
        Param(name="exit_above", default=65, low=50, high=95, description="RSI level to sell over"),
        Param(name="atr_window", default=14, low=2, high=50, integer=True, description="ATR bars"),
        Param(name="stop_atr", default=2.0, low=0.5, high=10, description="stop-loss in ATRs"),
        Param(
            name="take_profit_atr", default=3.0, low=0.5, high=20, description="take-profit in ATRs"
        ),
    ),
    constraints=(Constraint(left="entry_below", op="<", right="exit_above"),),
    signal_nb=signal_nb,
    warmup=_warmup,
    uses_stops=True,
)
