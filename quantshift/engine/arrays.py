"""Kernel inputs: each symbol's own bars packed contiguously, missing bars removed.

A symbol's missing bars (NaN) are dropped before signals and fills, so nothing trades through them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantshift.data.bars import FIELDS, Bars
from quantshift.engine.config import SimConfig
from quantshift.engine.metrics import infer_periods_per_year
from quantshift.engine.records import BarArrays


@dataclass(frozen=True)
class PackedBars:
    """Symbol-major (n_symbols, n_max) arrays of each symbol's valid bars, left-aligned.

    ``rows[s]`` maps symbol s's packed positions back to rows of the original time axis;
    ``gap_free`` says every symbol has every bar (then the packed arrays are the bars, transposed).
    """

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    lengths: np.ndarray
    rows: tuple[np.ndarray, ...]
    periods_per_year: np.ndarray
    gap_free: bool

    def kernel_bars(self) -> BarArrays:
        """Return the arrays the kernels read."""
        return BarArrays(
            self.open, self.high, self.low, self.close, self.volume, self.lengths,
            self.periods_per_year,
        )  # fmt: skip


def pack(bars: Bars, config: SimConfig) -> PackedBars:
    """Pack ``bars`` for the kernels; periods per year come from ``config`` or the timestamps."""
    valid = bars.valid
    gap_free = bool(valid.all())
    if gap_free:
        rows = (np.arange(bars.n_bars),) * bars.n_symbols
    else:
        rows = tuple(np.flatnonzero(valid[:, s]) for s in range(bars.n_symbols))
    lengths = np.array([r.shape[0] for r in rows], dtype=np.int64)
    n_max = int(lengths.max()) if lengths.size else 0
    packed = {}
    for name in FIELDS:
        source = getattr(bars, name)
        if gap_free:
            packed[name] = np.ascontiguousarray(source.T)  # no copy for a single symbol
            continue
        out = np.full((bars.n_symbols, n_max), np.nan)
        for s, r in enumerate(rows):
            out[s, : r.shape[0]] = source[r, s]
        packed[name] = out
    if config.periods_per_year is not None:
        ppy = np.full(bars.n_symbols, float(config.periods_per_year))
    else:
        ppy = np.array([infer_periods_per_year(bars.ts_ns[r]) for r in rows], dtype=np.float64)
    return PackedBars(lengths=lengths, rows=rows, periods_per_year=ppy, gap_free=gap_free, **packed)
