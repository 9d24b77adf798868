"""Donchian breakout: long when the close clears the highest high of the prior N bars, flat when
it falls under the lowest low of the prior M bars.

Your first strategy: edit it, or copy it next to itself under another name and ``name``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import njit

from quantshift import Constraint, Param, Strategy
from quantshift.indicators import rolling_max_nb, rolling_min_nb


@njit
def signal_nb(
    open_, high, low, close, volume, params, entries, exits, stop_dist, take_profit_dist, trail_dist
):
    """Mark channel breakouts; signals at bar t use bars 0..t only."""
    highest = rolling_max_nb(high, int(params[0]))
    lowest = rolling_min_nb(low, int(params[1]))
    # The channel comes from the bars before t: bar t's own high always reaches its own channel.
    for t in range(1, close.shape[0]):
        if np.isnan(highest[t - 1]) or np.isnan(lowest[t - 1]):
            continue
        entries[t] = close[t] > highest[t - 1]
        exits[t] = close[t] < lowest[t - 1]


def _warmup(values: Mapping[str, float]) -> int:
    # The prior bar's channel needs `entry` (or `exit`) bars before it.
    return int(max(values["entry"], values["exit"]))


STRATEGY = Strategy(
    name="donchian_breakout",
    description="Long over the prior N-bar high; flat under the prior M-bar low.",
    params=(
        Param(name="entry", default=20, low=5, high=250, integer=True, description="channel bars"),
        Param(name="exit", default=10, low=2, high=250, integer=True, description="exit bars"),
    ),
    constraints=(Constraint(left="exit", op="<=", right="entry"),),
    signal_nb=signal_nb,
    warmup=_warmup,
)
