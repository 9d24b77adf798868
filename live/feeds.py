"""Where the runner's closed bars come from: a replayed data set, or the venue's own bars on the
wall clock (history at start, then each bar once it has closed, polled from the venue or taken
from its stream: ``live.streaming``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from live.broker import TIMEFRAME_SECONDS
from live.clock import DAY_S, MarketClock
from quantshift.data import Bars, load_bars
from quantshift.errors import ConfigError

log = logging.getLogger("quantshift.live")

TIMEFRAMES = {seconds: name for name, seconds in TIMEFRAME_SECONDS.items()}
NS = 1_000_000_000


class ReplayFeed:
    """A data set played bar by bar (the embedded default, and every parity test)."""

    def __init__(self, source: str, symbols: list[str], start=None, end=None) -> None:
        self.bars: Bars = load_bars(source, symbols=symbols, start=start, end=end)

    def next_index(self, last_ts_ns: int | None, stop: threading.Event) -> int | None:
        """Position of the bar after ``last_ts_ns``; None when the replay is over."""
        t = after(self.bars.ts_ns, last_ts_ns)
        return t if t < self.bars.n_bars else None

    def now_ns(self, t: int, interval_ns: int) -> int:
        """The replay's "now" during bar ``t``'s cycle: half an interval after its close."""
        return int(self.bars.ts_ns[t]) + interval_ns // 2

    def close(self) -> None:
        """Nothing to release (a streaming feed stops its thread here)."""


class VenueFeed:
    """Closed bars of ``symbols`` from the venue, on the wall clock.

    Parameters
    ----------
    pages : callable
        ``pages(symbol, start_ns, end_ns, timeframe)`` yielding bar pages (the venue's
        ``bar_pages`` bound to its adapter).
    symbols : list of str
    clock : MarketClock
        The market's sessions (when a daily equity bar closes).
    history_bars : int
        Bars loaded at start and kept (the signals' warm-up window).
    poll_s, settle_s, late_after_s : float
        Poll period; how long after its close a bar is asked for (venues aggregate late
        trades); how long to wait for a symbol that has no bar yet before the others go ahead
        without it (NaN for that symbol at that time).
    now_ns, wait : callable
        The wall clock and the wait between polls (tests pass a simulated clock).
    """

    def __init__(
        self,
        pages: Callable[[str, int, int, str], Iterator[pd.DataFrame]],
        symbols: list[str],
        clock: MarketClock,
        *,
        history_bars: int,
        poll_s: float = 5.0,
        settle_s: float = 2.0,
        late_after_s: float = 60.0,
        now_ns: Callable[[], int] = time.time_ns,
        wait: Callable[[threading.Event, float], bool] | None = None,
    ) -> None:
        interval = clock.bar_interval_s
        if interval not in TIMEFRAMES:
            raise ConfigError(f"venue feed: no venue timeframe for a {interval} s bar")
        self._pages, self.symbols, self.clock = pages, list(symbols), clock
        self.timeframe = TIMEFRAMES[interval]
        self.history_bars = int(history_bars)
        self.poll_s, self.settle_s, self.late_after_s = poll_s, settle_s, late_after_s
        self._now = now_ns
        self._wait = wait or (lambda stop, seconds: stop.wait(seconds))
        self._rows: dict[str, pd.DataFrame] = {}
        self._fetched_to: dict[str, int] = {}
        self.bars: Bars | None = None

    # ------------------------------------------------------------------ public
    def start(self) -> Bars:
        """Load the warm-up history (every closed bar of the last ``history_bars``)."""
        now = self._now()
        span = self.history_bars * self.clock.bar_interval_s * NS * self._calendar_factor()
        for symbol in self.symbols:
            self._rows[symbol] = _empty()
            self._fetched_to[symbol] = now - int(span)
        self._poll(now)
        if self.bars is None or self.bars.n_bars == 0:
            raise ConfigError(
                f"venue feed: no closed {self.timeframe} bars of {', '.join(self.symbols)} "
                "in the warm-up window (unknown symbols, or a venue without history)"
            )
        return self.bars

    def next_index(self, last_ts_ns: int | None, stop: threading.Event) -> int | None:
        """Wait for the first closed bar after ``last_ts_ns``; its position in ``bars``
        (None once ``stop`` is set)."""
        while not stop.is_set():
            n = self.bars.n_bars
            if last_ts_ns is None and n:
                return n - 1  # a fresh start decides on the newest closed bar
            t = after(self.bars.ts_ns, last_ts_ns)
            if t < n:
                return t
            self._wait_for_bars(stop)
        return None

    def _wait_for_bars(self, stop: threading.Event) -> None:
        """Wait a poll period, then ask the venue for what closed meanwhile."""
        self._wait(stop, self.poll_s)
        if not stop.is_set():
            self._poll(self._now())

    def now_ns(self, t: int, interval_ns: int) -> int:
        return self._now()

    def close(self) -> None:
        """Nothing to release: polling holds no connection of its own."""

    # ------------------------------------------------------------------ polling
    def _poll(self, now: int) -> None:
        fresh = False
        for symbol in self.symbols:
            start = self._fetched_to[symbol]
            if now <= start:
                continue
            for page in self._pages(symbol, start, now, self.timeframe):
                closed = page[[self._closes_at(int(t)) + self.settle_s * NS <= now
                               for t in page["ts_ns"]]]  # fmt: skip
                if len(closed):
                    rows = self._rows[symbol]
                    merged = pd.concat([rows, closed]).drop_duplicates("ts_ns", keep="last")
                    self._rows[symbol] = merged.sort_values("ts_ns").tail(self.history_bars)
                    fresh = True
            rows = self._rows[symbol]
            if len(rows):
                self._fetched_to[symbol] = int(rows["ts_ns"].iloc[-1]) + 1_000
        if fresh or self.bars is None:
            self._assemble(now)

    def _assemble(self, now: int) -> None:
        """Bars on the union of times all symbols have reported (or waited out)."""
        latest = {s: (int(r["ts_ns"].iloc[-1]) if len(r) else None) for s, r in self._rows.items()}
        times = sorted({int(t) for r in self._rows.values() for t in r["ts_ns"]})
        admitted = []
        for t in times:
            behind = [s for s, last in latest.items() if last is None or last < t]
            late = now >= self._closes_at(t) + self.late_after_s * NS
            if behind and not late:
                break
            admitted.append(t)
        frames = {}
        for symbol, rows in self._rows.items():
            kept = rows[rows["ts_ns"].isin(admitted)]
            frames[symbol] = pd.DataFrame(
                kept[["open", "high", "low", "close", "volume"]].to_numpy(dtype=float),
                index=pd.to_datetime(kept["ts_ns"].to_numpy(), utc=True),
                columns=["open", "high", "low", "close", "volume"],
            )
        bars = Bars.from_frames(frames, source=f"venue:{self.timeframe}")
        self.bars = bars[-self.history_bars :] if bars.n_bars > self.history_bars else bars
        if admitted:
            log.debug("venue feed: %d bars, newest %s", self.bars.n_bars, admitted[-1])

    def _closes_at(self, open_ns: int) -> int:
        return self.clock.bar_close_ns(open_ns)

    def _calendar_factor(self) -> float:
        """Wall time per bar of history: sessions skip nights, weekends and holidays."""
        if self.clock.market == "crypto":
            return 1.05
        return 1.6 if self.clock.bar_interval_s >= DAY_S else 24 / 6.5 * 1.6


def after(ts_ns: np.ndarray, last_ts_ns: int | None) -> int:
    """Position of the first bar after ``last_ts_ns`` (0 when nothing was traded yet)."""
    return 0 if last_ts_ns is None else int(np.searchsorted(ts_ns, last_ts_ns, "right"))


def _check_interval(config, bars: Bars) -> None:
    """Refuse a replay whose bars are not ``[runner] bar_interval`` apart: the clock, the stale
    data guard and the annualisation (Sharpe, volatility) all read that interval."""
    spacing_s = bars.bar_spacing_s()
    if spacing_s is None or spacing_s == config.bar_interval_s:
        return
    configured = TIMEFRAMES[config.bar_interval_s]
    detected = TIMEFRAMES.get(int(spacing_s)) if spacing_s.is_integer() else None
    fix = f'set bar_interval = "{detected}"' if detected else "use data at the configured interval"
    raise ConfigError(
        f"{config.path or 'live config'}: [runner] bar_interval is {configured!r} but the bars "
        f"of {config.feed.source} are {detected or f'{spacing_s:g} s'} apart (the most common "
        f"spacing); {fix}"
    )


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts_ns": pd.Series(dtype="int64"),
            **{c: pd.Series(dtype=float) for c in ("open", "high", "low", "close", "volume")},
        }
    )


def open_feed(config, portfolio, clock: MarketClock, broker=None, *, now_ns=time.time_ns,
              wait=None):  # fmt: skip
    """The feed ``config.feed`` names: a replay, or the venue's bars (started: history loaded)."""
    feed = config.feed
    symbols = list(portfolio.symbols)
    if feed.kind == "replay":
        replay = ReplayFeed(feed.source, symbols, start=feed.start, end=feed.end)
        _check_interval(config, replay.bars)
        return replay
    from live.venues import venue_bar_pages, venue_bar_stream

    options = dict(
        history_bars=max(feed.history_bars, portfolio.warmup_bars() + 1),
        poll_s=feed.poll_s,
        settle_s=feed.settle_s,
        late_after_s=feed.late_after_s,
        now_ns=now_ns,
    )
    if feed.stream:
        from live.streaming import StreamingFeed

        open_stream = venue_bar_stream(broker, clock.bar_interval_s, config.path or config.name)
        venue = StreamingFeed(venue_bar_pages(broker), open_stream, symbols, clock, **options)
    else:
        venue = VenueFeed(venue_bar_pages(broker), symbols, clock, wait=wait, **options)
    venue.start()
    return venue
