"""Aligned OHLCV arrays for one or many symbols.

Time is axis 0, symbols are axis 1; timestamps are int64 UTC nanoseconds. NaN marks a bar a symbol
does not have (all five fields NaN together); such bars are never traded through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from quantshift.errors import DataError, UnknownNameError

FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, eq=False)
class Bars:
    """OHLCV bars of one or more symbols on a shared, strictly increasing time axis.

    Parameters
    ----------
    ts_ns : ndarray of int64, shape (n_bars,)
        Bar timestamps in UTC nanoseconds, strictly increasing.
    symbols : tuple of str
        Symbol names, one per column.
    open, high, low, close, volume : ndarray of float64, shape (n_bars, n_symbols)
        Prices and volume; NaN where a symbol has no bar.
    source : str
        Where the bars came from (a spec string or file), used in error messages.
    """

    ts_ns: np.ndarray
    symbols: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    source: str = "<memory>"

    def __post_init__(self) -> None:
        ts = np.ascontiguousarray(self.ts_ns, dtype=np.int64)
        object.__setattr__(self, "ts_ns", ts)
        object.__setattr__(self, "symbols", tuple(str(s) for s in self.symbols))
        n, m = ts.shape[0], len(self.symbols)
        if ts.ndim != 1:
            raise DataError(f"{self.source}: timestamps must be one-dimensional, got {ts.shape}")
        if len(set(self.symbols)) != m:
            raise DataError(f"{self.source}: duplicate symbol names in {self.symbols}")
        for name in FIELDS:
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.ndim == 1 and m == 1:
                arr = arr.reshape(-1, 1)
            if arr.shape != (n, m):
                raise DataError(
                    f"{self.source}: field '{name}' has shape {arr.shape}, expected ({n}, {m})"
                )
            object.__setattr__(self, name, np.ascontiguousarray(arr))

    # ----------------------------------------------------------------- shape and access
    @property
    def n_bars(self) -> int:
        return int(self.ts_ns.shape[0])

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    def __len__(self) -> int:
        return self.n_bars

    def __repr__(self) -> str:
        shown = ", ".join(self.symbols[:5]) + (
            f", ... ({self.n_symbols} symbols)" if self.n_symbols > 5 else ""
        )
        if self.n_bars == 0:
            return f"Bars(0 bars, symbols=[{shown}], source={self.source!r})"
        first, last = self.index[0], self.index[-1]
        return (
            f"Bars({self.n_bars} bars {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC, "
            f"symbols=[{shown}], source={self.source!r})"
        )

    @property
    def index(self) -> pd.DatetimeIndex:
        """Timestamps as a UTC pandas index (built once per object)."""
        cached = self.__dict__.get("_index")
        if cached is None:
            cached = pd.DatetimeIndex(pd.to_datetime(self.ts_ns, unit="ns", utc=True), name="time")
            object.__setattr__(self, "_index", cached)
        return cached

    def bar_spacing_s(self) -> float | None:
        """Return the most common time between consecutive bars in seconds (a daily equity
        series is 86,400 despite its weekends); None with fewer than two bars."""
        if self.n_bars < 2:
            return None
        steps, counts = np.unique(np.diff(self.ts_ns), return_counts=True)
        return float(steps[np.argmax(counts)]) / 1e9

    @property
    def valid(self) -> np.ndarray:
        """Boolean (n_bars, n_symbols): True where the symbol has a bar."""
        return ~np.isnan(self.close)

    def column(self, symbol: str) -> int:
        """Return the column index of ``symbol``."""
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise UnknownNameError(
                f"{self.source}: unknown symbol '{symbol}'; available: {', '.join(self.symbols)}"
            ) from None

    def _take(self, rows, cols) -> Bars:
        return Bars(
            ts_ns=self.ts_ns[rows],
            symbols=tuple(self.symbols[c] for c in cols),
            open=self.open[rows][:, cols],
            high=self.high[rows][:, cols],
            low=self.low[rows][:, cols],
            close=self.close[rows][:, cols],
            volume=self.volume[rows][:, cols],
            source=self.source,
        )

    def select(self, symbols: str | Sequence[str]) -> Bars:
        """Return the bars of the given symbol(s), dropping times none of them trades."""
        names = [symbols] if isinstance(symbols, str) else list(symbols)
        if not names:
            raise DataError(f"{self.source}: select() needs at least one symbol")
        cols = [self.column(s) for s in names]
        keep = ~np.all(np.isnan(self.close[:, cols]), axis=1)
        return self._take(np.flatnonzero(keep), cols)

    def between(self, start=None, end=None) -> Bars:
        """Return the bars with ``start <= time < end`` (anything ``pd.Timestamp`` accepts)."""
        lo = 0 if start is None else int(np.searchsorted(self.ts_ns, _to_ns(start), side="left"))
        hi = (
            self.n_bars
            if end is None
            else int(np.searchsorted(self.ts_ns, _to_ns(end), side="left"))
        )
        return self[lo:hi]

    def __getitem__(self, rows) -> Bars:
        """Slice by bar position on the time axis (``bars[:t]``, ``bars[-500:]``)."""
        if not isinstance(rows, slice):
            raise TypeError("Bars supports slicing by time position, e.g. bars[100:200]")
        return self._take(rows, list(range(self.n_symbols)))

    # ----------------------------------------------------------------- pandas edges
    def to_frame(self, symbol: str | None = None) -> pd.DataFrame:
        """Return one symbol's bars as a DataFrame (open, high, low, close, volume) without gaps."""
        if symbol is None:
            if self.n_symbols != 1:
                names = ", ".join(self.symbols)
                raise DataError(f"{self.source}: {self.n_symbols} symbols; name one of {names}")
            symbol = self.symbols[0]
        c = self.column(symbol)
        frame = pd.DataFrame({name: getattr(self, name)[:, c] for name in FIELDS}, index=self.index)
        return frame[~np.isnan(frame["close"].to_numpy())]

    @classmethod
    def from_frames(cls, frames: dict[str, pd.DataFrame], source: str = "<memory>") -> Bars:
        """Build bars from per-symbol DataFrames with a DatetimeIndex and OHLCV columns.

        The time axis is the sorted union of all indexes; a symbol missing at a time gets NaN.
        """
        if not frames:
            raise DataError(f"{source}: no symbols given")
        indexes = []
        for sym, df in frames.items():
            if not isinstance(df.index, pd.DatetimeIndex):
                raise DataError(f"{source}: symbol '{sym}' needs a DatetimeIndex")
            missing = [f for f in FIELDS if f not in df.columns]
            if missing:
                raise DataError(f"{source}: symbol '{sym}' lacks column(s) {missing}")
            index = _utc(df.index)
            if index.has_duplicates:
                dup = index[index.duplicated()][0]
                raise DataError(
                    f"{source}: symbol '{sym}' has duplicate timestamp {dup.isoformat()}"
                )
            indexes.append(index)
        union = indexes[0]
        for idx in indexes[1:]:
            union = union.union(idx)
        union = union.sort_values()
        arrays = {f: np.full((len(union), len(frames)), np.nan) for f in FIELDS}
        for c, (df, idx) in enumerate(zip(frames.values(), indexes, strict=True)):
            pos = union.get_indexer(idx)
            for f in FIELDS:
                arrays[f][pos, c] = df[f].to_numpy(dtype=np.float64)
        return cls(
            ts_ns=_index_ns(union),
            symbols=tuple(frames),
            source=source,
            **arrays,
        )

    # ----------------------------------------------------------------- identity
    def fingerprint(self) -> str:
        """Return a SHA-256 hex digest of timestamps, symbols and all fields.

        Computed once per object: Bars are immutable, so do not write into their arrays.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is not None:
            return cached
        h = hashlib.sha256()
        h.update(self.ts_ns.tobytes())
        h.update("\x1f".join(self.symbols).encode())
        for name in FIELDS:
            h.update(getattr(self, name).tobytes())
        digest = h.hexdigest()
        object.__setattr__(self, "_fingerprint", digest)
        return digest


def _index_ns(index: pd.DatetimeIndex) -> np.ndarray:
    return index.as_unit("ns").asi8.astype(np.int64)


def _utc(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return index.as_unit("ns")


def _to_ns(value) -> int:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value)


def concat_symbols(parts: Iterable[Bars]) -> Bars:
    """Join bars of disjoint symbol sets onto the union of their time axes."""
    frames: dict[str, pd.DataFrame] = {}
    sources = []
    for part in parts:
        sources.append(part.source)
        for sym in part.symbols:
            if sym in frames:
                raise DataError(f"symbol '{sym}' appears in more than one source")
            frames[sym] = part.to_frame(sym)
    return Bars.from_frames(frames, source="+".join(sources))
