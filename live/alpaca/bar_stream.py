"""Alpaca's market data stream as a source of closed bars: alpaca-py's ``StockDataStream`` in a
thread, each minute bar handed on as it closes, and every (re)connect reported so the feed can
backfill what the socket missed from REST.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable, Sequence

import msgpack
import pandas as pd
from alpaca.data.enums import DataFeed
from alpaca.data.live import StockDataStream

from live.alpaca.client import AlpacaBroker
from live.broker import BrokerError
from live.streaming import StreamedBar

log = logging.getLogger("quantshift.live")

STOP_WAIT_S = 7.0
"""How long ``stop`` waits for the thread (the socket is closed, so it ends at once)."""


class AlpacaBarStream:
    """Minute bars of ``symbols`` from the data stream, delivered to ``on_bar`` on a thread.

    Parameters
    ----------
    broker : AlpacaBroker
        The adapter: its keys, data feed and (for tests) ``data_stream_url``.
    symbols : sequence of str
    on_bar : callable
        Called with each :class:`~live.streaming.StreamedBar`, in the order the venue sent
        them (duplicates and late bars included: the feed decides what to keep).
    on_connect : callable
        Called after every successful login and subscription, the first one included.
    """

    def __init__(
        self,
        broker: AlpacaBroker,
        symbols: Sequence[str],
        on_bar: Callable[[StreamedBar], None],
        on_connect: Callable[[], None],
    ) -> None:
        _check_sdk_shape()
        config = broker.config
        key_id, secret = broker.credentials()
        self._stream = _ReportingStream(
            key_id,
            secret,
            raw_data=True,  # msgpack timestamps kept exact (to the nanosecond)
            feed=DataFeed(config.data_feed),
            url_override=config.resolved_data_stream_url,
            on_connect=on_connect,
        )
        self._symbols = list(symbols)
        self._on_bar = on_bar
        self._thread = threading.Thread(target=self._run, name="alpaca-bars", daemon=True)

    @property
    def refused(self) -> str | None:
        """Why the venue refused the stream (wrong keys, no subscription), or None."""
        return self._stream.refused

    def start(self) -> Callable[[], None]:
        """Subscribe and start the thread; return the function that stops it."""
        self._stream.subscribe_bars(self._deliver, *self._symbols)
        self._thread.start()
        return self.stop

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        loop = self._stream.loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self._stream.halt(), loop)
        self._thread.join(timeout=STOP_WAIT_S)

    def _run(self) -> None:
        try:
            self._stream.run()
        except Exception as exc:  # the runner goes on with REST polling; say why once
            log.error("alpaca bar stream: stopped on %s; bars come from REST polling",
                      type(exc).__name__)  # fmt: skip

    async def _deliver(self, message: dict) -> None:
        try:
            bar = StreamedBar(
                symbol=str(message["S"]),
                ts_ns=_ns(message["t"]),
                open=float(message["o"]),
                high=float(message["h"]),
                low=float(message["l"]),
                close=float(message["c"]),
                volume=float(message["v"]),
            )
        except (KeyError, TypeError, ValueError):
            log.warning("alpaca bar stream: ignored a malformed bar message %r", sorted(message))
            return
        try:
            self._on_bar(bar)
        except Exception:
            log.exception("alpaca bar stream: on_bar failed for %s", bar.symbol)


class _ReportingStream(StockDataStream):
    """``StockDataStream`` reporting each (re)connect, and giving up on a refused login
    (the SDK would retry wrong keys forever)."""

    def __init__(self, *args, on_connect: Callable[[], None], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._on_connect = on_connect
        self.refused: str | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    async def halt(self) -> None:
        """Stop, and close the socket: alpaca-py alone notices a stop only between receives,
        which wait up to 5 s."""
        await self.stop_ws()
        await self.close()

    async def _start_ws(self) -> None:
        try:
            await super()._start_ws()
        except ValueError as exc:
            if "auth" in str(exc):
                self.refused = f"login refused ({exc}); check the key id and secret key"
                log.error("alpaca bar stream: %s", self.refused)
                await self.stop_ws()
            raise
        self._on_connect()


def _ns(stamp) -> int:
    """A bar's open time in UTC ns from the wire's msgpack timestamp (or RFC 3339 text)."""
    if isinstance(stamp, msgpack.Timestamp):
        return int(stamp.to_unix_nano())
    return int(pd.Timestamp(stamp).tz_convert("UTC").value)


def _check_sdk_shape() -> None:
    """The subclass relies on ``_start_ws`` and ``_loop`` of alpaca-py's DataStream."""
    start = getattr(StockDataStream, "_start_ws", None)
    if start is None or not inspect.iscoroutinefunction(start):
        raise BrokerError(
            "alpaca",
            "the installed alpaca-py has no DataStream._start_ws; the bar stream needs a "
            "version this adapter was tested with",
        )
