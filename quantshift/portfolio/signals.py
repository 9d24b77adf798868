"""Each sleeve's signals on its symbols, from the strategies' cached signal kernels.

Computed over a whole history for a backtest, over a warm-up window live; ``at(t)`` is one bar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantshift.data.bars import Bars
from quantshift.engine.fused import kernels_for
from quantshift.errors import DataError
from quantshift.indicators import atr_nb
from quantshift.portfolio.config import PortfolioConfig


@dataclass(frozen=True, eq=False)
class BarSignals:
    """What the decision reads at one bar: its time, each symbol's close (NaN: no bar, so no
    decision for that symbol) and each sleeve's signals, arrays of (n_sleeves, n_symbols).

    ``recent_close`` holds the closes of the bars up to and including this one (rows: bars,
    last row: this bar), as many as the correlation limit reads; None: this bar's only.
    """

    ts_ns: int
    close: np.ndarray
    entries: np.ndarray
    exits: np.ndarray
    stop_distance: np.ndarray
    take_profit_distance: np.ndarray
    trail_distance: np.ndarray
    recent_close: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class SignalHistory:
    """Signals of every sleeve on the bars' time axis: (n_bars, n_sleeves, n_symbols) arrays
    beside the (n_bars, n_symbols) prices; False/NaN where a sleeve does not trade a symbol or
    the symbol has no bar. ``history_rows`` is how many closes up to a bar ``at`` hands the
    decision (the correlation limit's window)."""

    bars: Bars
    entries: np.ndarray
    exits: np.ndarray
    stop_distance: np.ndarray
    take_profit_distance: np.ndarray
    trail_distance: np.ndarray
    history_rows: int = 1

    def at(self, t: int) -> BarSignals:
        """Return bar ``t``'s signals (``-1``: the last bar, what a live runner decides on)."""
        t = range(self.bars.n_bars)[t]
        return BarSignals(
            ts_ns=int(self.bars.ts_ns[t]),
            close=self.bars.close[t],
            entries=self.entries[t],
            exits=self.exits[t],
            stop_distance=self.stop_distance[t],
            take_profit_distance=self.take_profit_distance[t],
            trail_distance=self.trail_distance[t],
            recent_close=self.bars.close[max(0, t + 1 - self.history_rows) : t + 1],
        )


def compute_signals(config: PortfolioConfig, bars: Bars) -> SignalHistory:
    """Run each sleeve's signal kernel on each of its symbols' bars.

    A symbol's missing bars are dropped first, as the single-symbol backtest does, so nothing
    is computed or traded through them. Where a sleeve has ``stop_atr`` and its strategy gives
    no stop distance, the distance is ``stop_atr`` ATRs of the bar. Signals are causal: bar t's
    depend on bars up to t of the data given, so a live runner computes them on a window of at
    least ``config.warmup_bars()`` bars (recursive indicators such as Wilder's RSI and ATR
    depend on where the window starts; the same start gives the same numbers).
    """
    layout = config.layout()
    missing = [s for s in layout.symbols if s not in bars.symbols]
    if missing:
        raise DataError(f"{bars.source}: no bars for symbol(s) {', '.join(missing)}")
    if bars.symbols != layout.symbols:
        bars = bars.select(list(layout.symbols))
    n_bars, n_symbols = bars.n_bars, bars.n_symbols
    shape = (n_bars, len(layout.sleeves), n_symbols)
    entries = np.zeros(shape, np.bool_)
    exits = np.zeros(shape, np.bool_)
    stop, take_profit, trail = (np.full(shape, np.nan) for _ in range(3))
    valid = bars.valid
    for s, sleeve in enumerate(config.sleeves):
        kernel = kernels_for(sleeve.strategy_object).signals
        for k in np.flatnonzero(layout.member[s]):
            rows = np.flatnonzero(valid[:, k])
            if rows.size == 0:
                continue
            o, h, lo, c, v = (
                np.ascontiguousarray(getattr(bars, f)[rows, k])
                for f in ("open", "high", "low", "close", "volume")
            )
            e, x, st, tp, tr = kernel(o, h, lo, c, v, layout.params[s])
            if sleeve.stop_atr is not None:
                st = np.where(
                    np.isnan(st), sleeve.stop_atr * atr_nb(h, lo, c, sleeve.atr_window), st
                )
            entries[rows, s, k] = e
            exits[rows, s, k] = x
            stop[rows, s, k] = st
            take_profit[rows, s, k] = tp
            trail[rows, s, k] = tr
    return SignalHistory(
        bars=bars,
        entries=entries,
        exits=exits,
        stop_distance=stop,
        take_profit_distance=take_profit,
        trail_distance=trail,
        history_rows=config.limits.history_rows,
    )
