"""Moving-average crossover: enter when the fast SMA crosses above the slow SMA, exit when below.

The trend-following seed strategy; it uses no stops.
"""

from __future__ import annotations

from collections.abc import Mapping

from numba import njit

from quantshift.indicators import sma_nb
from quantshift.strategies.base import Constraint, Param, Strategy


@njit
def signal_nb(
    open_, high, low, close, volume, params, entries, exits, stop_dist, take_profit_dist, trail_dist
):
    """Mark SMA crossovers; see the Strategy docstring for the contract."""
    fast = sma_nb(close, int(params[0]))
    slow = sma_nb(close, int(params[1]))
    for t in range(1, close.shape[0]):
        # A comparison with NaN is False, so nothing fires until both averages exist at t - 1.
        entries[t] = fast[t] > slow[t] and fast[t - 1] <= slow[t - 1]
        exits[t] = fast[t] < slow[t] and fast[t - 1] >= slow[t - 1]


def _warmup(values: Mapping[str, float]) -> int:
    # The slow SMA exists from bar slow - 1; a cross also needs the bar before.
    return int(values["slow"])


STRATEGY = Strategy(
    name="ma_crossover",
    description="Long when the fast SMA crosses above the slow SMA; flat when it crosses under.",
    params=(
        Param(name="fast", default=5, low=2, high=100, integer=True, description="fast SMA bars"),
        Param(name="slow", default=20, low=5, high=400, integer=True, description="slow SMA bars"),
    ),
    constraints=(Constraint(left="fast", op="<", right="slow"),),
    signal_nb=signal_nb,
    warmup=_warmup,
    uses_stops=False,
)
