"""The bars a runner decided on, kept in its store: written each cycle (the warm-up history with
the first), read back as ``Bars`` to replay a cycle or rebuild the backtest of a live run; and
the overlay inputs (regime labels, news scores) each bar was decided with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from live.store import checks
from quantshift.data import Bars
from quantshift.errors import ConfigError
from quantshift.portfolio.overlay import REGIME_UNKNOWN, regime_code

_ROWS_PER_STATEMENT = 400
_COLUMNS = ("open", "high", "low", "close", "volume")


class DecidedInputs(NamedTuple):
    """Stored overlay inputs on a grid of bar times (rows) and symbols (columns)."""

    regime: np.ndarray
    """int64 label codes; ``REGIME_UNKNOWN`` (-1) where not known or not stored."""
    sentiment: np.ndarray
    """float64 scores; NaN where the symbol had no news or nothing is stored."""
    stored: np.ndarray
    """bool per time: whether the store holds the inputs of that bar."""


class BarBook:
    """Store methods for ``decided_bars`` and ``decided_inputs`` (mixed into
    :class:`~live.store.store.Store`).

    Bars are facts of the market, not trading writes: they are not fenced, and writing a bar
    already stored leaves the first copy (a standby redoing a cycle sees the same bar). The
    overlay inputs are part of a leader's decision (a model's output, news as the venue served
    it then): fenced, and a redo's inputs replace the earlier ones.
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

    def record_inputs(
        self,
        runner: str,
        bar_ts_ns: int,
        *,
        epoch: int | None,
        regime: Mapping[str, object] | None = None,
        sentiment: Mapping[str, float] | None = None,
    ) -> int:
        """Store the overlay inputs ``runner`` decided the bar at ``bar_ts_ns`` with; return the
        rows written.

        ``regime`` maps a symbol to its label (0..4 or a ``REGIMES`` name; -1, NaN or None:
        unknown), ``sentiment`` a symbol to its news score in [-1, 1] (NaN or None: no news);
        either is None when the config has no such overlay. Fenced like the cycle's other
        writes. A bar written again (a leader redoing it) keeps the last writer's inputs: they
        are what its decision, the one that counts, used.
        """
        runner = checks.text("runner", runner)
        ts_ns = checks.integer("bar_ts_ns", bar_ts_ns)
        epoch = checks.epoch_of(epoch)
        labels, scores = dict(regime or {}), dict(sentiment or {})
        now = time.time_ns()
        rows = []
        for symbol in sorted(set(labels) | set(scores)):
            where = f"inputs of runner {runner!r} at bar {ts_ns}, {symbol}"
            code = regime_code(labels.get(symbol), f"{where}: regime")
            rows.append((runner, ts_ns, checks.text("symbol", symbol),
                         None if code == REGIME_UNKNOWN else code,
                         _score(scores.get(symbol), where), epoch, now))  # fmt: skip
        with self._db.write(f"decided inputs of {runner} at {ts_ns}", epoch) as tx:
            for values in rows:
                tx.run(
                    "INSERT INTO decided_inputs (runner, bar_ts_ns, symbol, regime, sentiment, "
                    "epoch, ts_recorded_ns) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (runner, "
                    "bar_ts_ns, symbol) DO UPDATE SET regime = excluded.regime, sentiment = "
                    "excluded.sentiment, epoch = excluded.epoch, ts_recorded_ns = "
                    "excluded.ts_recorded_ns",
                    values,
                )
        return len(rows)

    def decided_inputs(
        self, runner: str, ts_ns: Sequence[int] | np.ndarray, symbols: Sequence[str]
    ) -> DecidedInputs:
        """The overlay inputs ``runner`` stored, on the bar times ``ts_ns`` (ascending) and
        ``symbols``: arrays as ``portfolio_backtest`` takes them, with which bars have any."""
        times = np.asarray(ts_ns, dtype=np.int64)
        columns = {symbol: k for k, symbol in enumerate(symbols)}
        shape = (len(times), len(columns))
        out = DecidedInputs(np.full(shape, REGIME_UNKNOWN, np.int64), np.full(shape, np.nan),
                            np.zeros(len(times), bool))  # fmt: skip
        if not len(times):
            return out
        with self._db.read("read decided inputs") as tx:
            rows = tx.all(
                "SELECT bar_ts_ns, symbol, regime, sentiment FROM decided_inputs "
                "WHERE runner = ? AND bar_ts_ns >= ? AND bar_ts_ns <= ?",
                (checks.text("runner", runner), int(times[0]), int(times[-1])),
            )
        for row in rows:
            t = int(np.searchsorted(times, int(row["bar_ts_ns"])))
            if t == len(times) or times[t] != int(row["bar_ts_ns"]):
                continue
            out.stored[t] = True
            k = columns.get(row["symbol"])
            if k is not None:
                if row["regime"] is not None:
                    out.regime[t, k] = int(row["regime"])
                if row["sentiment"] is not None:
                    out.sentiment[t, k] = float(row["sentiment"])
        return out


def _score(value, where: str) -> float | None:
    """A news score as stored: None for no news (None or NaN), else a number in [-1, 1]."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return None
    score = checks.finite(f"{where}: sentiment", value)
    if abs(score) > 1.0:
        raise ConfigError(f"{where}: sentiment must be in [-1, 1] or NaN, got {value!r}")
    return score
