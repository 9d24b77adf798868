"""Bars as they close: a venue feed that takes each bar from the venue's stream, with the REST
bars as the backfill after every (re)connect and as the fallback when the stream misses a bar.

Whatever the socket does (duplicates, late or out-of-order bars, a drop in the middle of a
minute), each bar time is decided once and in order: the runner asks ``next_index`` for the bar
after the last one it decided, and a bar arriving for a time already decided is counted and
dropped, never decided again.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from live.feeds import NS, VenueFeed, after

log = logging.getLogger("quantshift.live")

_CONNECTED = "connected"
"""Put in the inbox by the stream's thread after each (re)connect: backfill from REST."""


@dataclass(frozen=True, kw_only=True)
class StreamedBar:
    """One closed bar as a venue's stream sent it (``ts_ns``: the bar's open time, UTC ns)."""

    symbol: str
    ts_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float


OpenStream = Callable[[list[str], Callable[[StreamedBar], None], Callable[[], None]],
                      Callable[[], None]]  # fmt: skip
"""``open_stream(symbols, on_bar, on_connect)`` starts a venue's bar stream; returns its stop."""


class StreamingFeed(VenueFeed):
    """A :class:`~live.feeds.VenueFeed` whose bars arrive from the venue's stream.

    The stream's thread only queues what it receives; the runner's thread merges it while it
    waits in :meth:`next_index`, so the bars are never touched by two threads. A bar time is
    admitted (decided on) as soon as every symbol has sent it, or ``late_after_s`` after its
    close for a symbol that sent nothing (no trades in that minute, or a missed message).
    REST is asked after each (re)connect (for what closed while the socket was down, and
    between loading the history and subscribing) and when no streamed bar has come for an
    interval plus ``settle_s`` (the stream is up but missing bars).

    Parameters
    ----------
    pages : callable
        The venue's REST bar pages (see :class:`~live.feeds.VenueFeed`).
    open_stream : callable
        See :data:`OpenStream`.
    symbols, clock, **options
        As :class:`~live.feeds.VenueFeed`; ``poll_s`` is how often the fallback is
        considered while no bar arrives.
    """

    def __init__(self, pages, open_stream: OpenStream, symbols, clock, **options) -> None:
        super().__init__(pages, symbols, clock, **options)
        self._open_stream = open_stream
        self._inbox: queue.Queue = queue.Queue()
        self._stop_stream: Callable[[], None] | None = None
        self._heard_ns = 0
        self._decided_ns: int | None = None
        self._second_look_ns: int | None = None
        self._asked_ns = 0
        self.counts = {"streamed": 0, "duplicate": 0, "late": 0, "unknown": 0, "backfill": 0,
                       "fallback": 0}  # fmt: skip
        self.admitted_ns: dict[int, int] = {}
        """Wall time (``now_ns``) at which each bar time was first admitted (latency)."""

    def start(self):
        bars = super().start()
        self._heard_ns = self._now()
        self._stop_stream = self._open_stream(self.symbols, self._inbox.put,
                                              lambda: self._inbox.put(_CONNECTED))  # fmt: skip
        return bars

    def close(self) -> None:
        """Stop the stream's thread (the runner calls this when it stops)."""
        if self._stop_stream is not None:
            stop, self._stop_stream = self._stop_stream, None
            stop()

    def next_index(self, last_ts_ns: int | None, stop: threading.Event) -> int | None:
        self._decided_ns = last_ts_ns  # what arrives for this time or before is late
        return super().next_index(last_ts_ns, stop)

    def _wait_for_bars(self, stop: threading.Event) -> None:
        """Wait for the stream (or the next look at REST), then merge what came."""
        wait_s = self.poll_s
        if self._second_look_ns is not None:
            wait_s = min(wait_s, max((self._second_look_ns - self._now()) / NS, 0.0))
        try:
            first = self._inbox.get(timeout=wait_s)
        except queue.Empty:
            first = None
        if not stop.is_set():
            self._take(first)

    # ------------------------------------------------------------------ merging
    def _take(self, first) -> None:
        """Merge ``first`` and whatever else is queued, then reassemble the bars once."""
        items = [] if first is None else [first]
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        now = self._now()
        fresh: dict[str, list[StreamedBar]] = {}
        for item in items:
            if item == _CONNECTED:
                self._merge(fresh)
                fresh = {}
                self.counts["backfill"] += 1
                self._poll(now)
                # A bar that closed less than settle_s ago was not asked for: look again then.
                self._second_look_ns = now + int(self.settle_s * NS) + 1
            else:
                self._admit(item, fresh)
        self._merge(fresh)
        if self._second_look_ns is not None and now >= self._second_look_ns:
            self._second_look_ns = None
            self._poll(now)
        elif self._missing(now, silent=first is None) and now - self._asked_ns >= self.poll_s * NS:
            self.counts["fallback"] += 1
            self._asked_ns = now
            self._poll(now)
        before = self.bars.ts_ns[-1] if self.bars.n_bars else None
        self._assemble(now)
        for ts in self.bars.ts_ns[after(self.bars.ts_ns, before) :]:
            self.admitted_ns.setdefault(int(ts), now)

    def _missing(self, now: int, *, silent: bool) -> bool:
        """Whether REST should be asked: a symbol lacks a bar the others streamed (closed and
        settled), or nothing at all was streamed for an interval plus ``settle_s``."""
        if silent and now - self._heard_ns > (self.clock.bar_interval_s + self.settle_s) * NS:
            return True
        latest = [int(r["ts_ns"].iloc[-1]) if len(r) else None for r in self._rows.values()]
        newest = max((t for t in latest if t is not None), default=None)
        if newest is None or all(t == newest for t in latest):
            return False
        return now >= self._closes_at(newest) + self.settle_s * NS

    def _admit(self, bar: StreamedBar, fresh: dict[str, list[StreamedBar]]) -> None:
        if bar.symbol not in self._rows:
            self.counts["unknown"] += 1
            log.warning("bar stream: a bar of %s, which this runner does not trade", bar.symbol)
            return
        self._heard_ns = self._now()
        if self._decided_ns is not None and bar.ts_ns <= self._decided_ns:
            self.counts["late"] += 1
            log.info("bar stream: late bar %s %s dropped (that time was decided)", bar.symbol,
                     pd.Timestamp(bar.ts_ns, tz="UTC"))  # fmt: skip
            return
        self.counts["streamed"] += 1
        fresh.setdefault(bar.symbol, []).append(bar)

    def _merge(self, fresh: dict[str, list[StreamedBar]]) -> None:
        for symbol, bars in fresh.items():
            rows = self._rows[symbol]
            new = pd.DataFrame(
                {
                    "ts_ns": pd.Series([b.ts_ns for b in bars], dtype="int64"),
                    **{c: pd.Series([getattr(b, c) for b in bars], dtype=float)
                       for c in ("open", "high", "low", "close", "volume")},
                }
            )  # fmt: skip
            repeated = int(new["ts_ns"].isin(rows["ts_ns"]).sum() + new["ts_ns"].duplicated().sum())
            self.counts["duplicate"] += repeated
            merged = pd.concat([rows, new]).drop_duplicates("ts_ns", keep="last")
            self._rows[symbol] = merged.sort_values("ts_ns").tail(self.history_bars)
