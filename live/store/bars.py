"""The bars a runner decided on, kept in its store: written each cycle (the warm-up history with
the first), read back as ``Bars`` to replay a cycle or rebuild the backtest of a live run.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from live.store import checks
from quantshift.data import Bars

_ROWS_PER_STATEMENT = 400
_COLUMNS = ("open", "high", "low", "close", "volume")


class BarBook:
    """Store methods for ``decided_bars`` (mixed into :class:`~live.store.store.Store`).

    Bars are facts of the market, not trading writes: they are not fenced, and writing a bar
    already stored leaves the first copy (a standby redoing a cycle sees the same bar).
    """

    def record_bars(self, bars: Bars, first: int = 0) -> int:
        """Store every bar of ``bars`` from position ``first`` on; return the rows written."""
        rows = []
        now = time.time_ns()
        for t in range(int(first), bars.n_bars):
            ts = int(bars.ts_ns[t])
            for k, symbol in enumerate(bars.symbols):
                values = [float(getattr(bars, c)[t, k]) for c in _COLUMNS]
                if not np.isnan(values[3]):
                    rows.append((symbol, ts, *values, now))
        written = 0
        with self._db.write("record decided bars", None) as tx:
            for at in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[at : at + _ROWS_PER_STATEMENT]
                marks = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                written += tx.run(
                    "INSERT INTO decided_bars (symbol, ts_ns, open, high, low, close, volume, "
                    f"ts_recorded_ns) VALUES {marks} ON CONFLICT (symbol, ts_ns) DO NOTHING",
                    [v for row in chunk for v in row],
                )
        return written

    def mark_decided_from(self, runner: str, ts_ns: int) -> None:
        """Note the first bar ``runner`` decided on (kept if already noted)."""
        values = (checks.text("runner", runner), checks.integer("ts_ns", ts_ns))
        with self._db.write("mark first decided bar", None) as tx:
            tx.run(
                "INSERT INTO decided_from (runner, ts_ns) VALUES (?, ?) "
                "ON CONFLICT (runner) DO NOTHING",
                values,
            )

    def decided_from(self, runner: str) -> int | None:
        """The first bar time ``runner`` decided on, or None before its first cycle."""
        with self._db.read("read first decided bar") as tx:
            row = tx.one("SELECT ts_ns FROM decided_from WHERE runner = ?", (runner,))
        return None if row is None else int(row["ts_ns"])

    def decided_bars(self, symbols: list[str], *, source: str = "store") -> Bars:
        """The stored bars of ``symbols`` on the union of their times (NaN where a symbol has
        none), as the runner saw them."""
        marks = ", ".join("?" * len(symbols))
        with self._db.read("read decided bars") as tx:
            rows = tx.all(
                f"SELECT * FROM decided_bars WHERE symbol IN ({marks}) ORDER BY ts_ns, symbol",
                list(symbols),
            )
        table = pd.DataFrame(rows, columns=["symbol", "ts_ns", *_COLUMNS, "ts_recorded_ns"])
        frames = {}
        for symbol in symbols:
            part = table[table["symbol"] == symbol]
            frames[symbol] = pd.DataFrame(
                part[list(_COLUMNS)].to_numpy(dtype=float),
                index=pd.to_datetime(part["ts_ns"].to_numpy(dtype=np.int64), utc=True),
                columns=list(_COLUMNS),
            )
        return Bars.from_frames(frames, source=source)
