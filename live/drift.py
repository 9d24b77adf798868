"""Realised slippage and drift from the backtest, exported while the runner runs: the numbers of
`live divergence` (live.divergence) as Prometheus metrics, at a cost bounded per cycle.

Slippage is measured on each market-order fill against the price the fill model slips from
(the open of the bar after the decision), so it compares directly with the assumed
``slippage_bps``. Drift is the divergence report itself, recomputed after a cycle at most every
``[metrics] drift_interval_s`` seconds (it replays the backtest over every stored bar).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import numpy as np

from live.config import LiveConfig
from live.divergence import Divergence, divergence, slippage_bps
from live.metrics import LiveMetrics
from quantshift.data import Bars

log = logging.getLogger("quantshift.live")


def fill_slippage(fills: Iterable, bars: Bars) -> list[tuple[str, str, float]]:
    """(sleeve, symbol, realised slippage in bps) of each fill of a market order decided on a
    bar of ``bars``, against the open of the bar after its decision (positive is worse)."""
    out = []
    column = {symbol: i for i, symbol in enumerate(bars.symbols)}
    for fill in fills:
        order = fill.order
        at = int(np.searchsorted(bars.ts_ns, order.ts_ns, "left")) + 1
        if at >= bars.n_bars or int(bars.ts_ns[at - 1]) != order.ts_ns:
            continue  # decided on a bar this feed no longer holds: no model price to compare
        reference = float(bars.open[at, column[order.symbol]])
        if not reference > 0:
            continue
        buying = order.side == "buy"
        out.append((order.sleeve, order.symbol, slippage_bps(fill.price, reference, buying=buying)))
    return out


class DriftExport:
    """Recompute the divergence report of a runner and export it, at most every ``interval_s``
    seconds of ``clock`` (0: after every cycle).

    Parameters
    ----------
    config : LiveConfig
    store : live.store.Store
        The runner's store (its decided bars, trades, intents and equity snapshots).
    metrics : LiveMetrics
    interval_s : float
        Minimum time between two computations, from the end of the last one.
    clock : callable
        Seconds on a monotonic clock (``time.monotonic``; a simulation passes its own).
    """

    def __init__(
        self,
        config: LiveConfig,
        store,
        metrics: LiveMetrics,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.interval_s = float(interval_s)
        self.clock = clock
        self._last_s: float | None = None
        self._stale = False
        self.computations = 0

    def after_cycle(self, bar_ts_ns: int) -> Divergence | None:
        """After the cycle of bar ``bar_ts_ns``: recompute when due; return the report then."""
        self._stale = True
        if self._last_s is not None and self.clock() - self._last_s < self.interval_s:
            return None
        return self.compute(bar_ts_ns)

    def finish(self, bar_ts_ns: int | None) -> Divergence | None:
        """When the runner stops: recompute if a cycle ran since the last computation, so the
        last figures exported are those of the last bar."""
        if not self._stale or bar_ts_ns is None:
            return None
        return self.compute(bar_ts_ns)

    def compute(self, bar_ts_ns: int) -> Divergence | None:
        """Compute and export the drift now; a failure is logged, never raised (the metric
        goes stale, ``drift_bar_timestamp_seconds`` says since when, trading goes on)."""
        started = time.perf_counter()
        portfolio = self.config.portfolio
        try:
            report = divergence(self.config, self.store)
            by_position = dict.fromkeys(
                ((s, y) for s in portfolio.sleeve_names for y in portfolio.symbols), 0.0
            )
            by_position.update(report.pnl_difference_by_position())
            self.metrics.set_drift(
                by_position,
                report.initial_cash,
                report.equity_drift_pct,
                bar_ts_ns,
                time.perf_counter() - started,
            )
        except Exception as exc:  # a metric must not stop the trading loop
            log.warning("drift from the backtest not computed: %s", exc, extra={"cycle": bar_ts_ns})
            return None
        else:
            self.computations += 1
            return report
        finally:
            self._last_s, self._stale = self.clock(), False
