"""Coinbase Advanced's candles channel as a source of closed bars: the SDK's market data client
over the verifying WebSocket, a 5-minute candle handed on once the next one starts, and every
(re)connect reported so the feed can backfill what the socket missed from REST.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

from coinbase.websocket import WSClientException

from live.coinbase import parse
from live.coinbase.stream import (
    VerifiedMarketClient,
    check_sdk_shape,
    check_verified,
    close_client,
    follow,
    tls_context,
)
from live.streaming import StreamedBar

log = logging.getLogger("quantshift.live")

CANDLE_S = 300
"""The candles channel carries 5-minute candles only."""


class CoinbaseBarStream:
    """Closed 5-minute candles of ``symbols`` (product ids), delivered to ``on_bar``.

    The channel sends the forming candle on every trade and no "closed" mark: a candle is
    closed when a later one of the same product arrives, and its last update is the bar. After
    a reconnect the candle that was forming is forgotten (updates were missed while away; REST
    has the closed bar), and an update of a candle already handed on goes to ``on_bar`` too
    (the feed counts it late or as a duplicate). Silence for ``stream_silence_s`` (heartbeats
    come every second) or a drop reconnects after ``stream_reconnect_s``.

    Parameters
    ----------
    broker : CoinbaseBroker
        The adapter (its config: ``market_ws_url``, ``ca_file``, timeouts).
    symbols : sequence of str
    on_bar, on_connect : callable
        As ``live.streaming.OpenStream`` describes.
    """

    def __init__(self, broker, symbols: Sequence[str], on_bar: Callable[[StreamedBar], None],
                 on_connect: Callable[[], None]) -> None:  # fmt: skip
        check_sdk_shape()
        self._config = broker.config
        self._tls = tls_context(self._config)
        self._symbols = list(symbols)
        self._on_bar, self._on_connect = on_bar, on_connect
        self._messages: queue.Queue[str] = queue.Queue()
        self._forming: dict[str, StreamedBar] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coinbase-candles", daemon=True)
        self.connections = 0

    def start(self) -> Callable[[], None]:
        """Start the thread; return the function that stops it."""
        self._thread.start()
        return self.stop

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3 * self._config.timeout_s + 1.0)

    def _run(self) -> None:
        follow("candles channel", self._messages, self._open, self._opened, self._handle,
               self._config, self._stop)  # fmt: skip

    def _opened(self, client) -> None:
        if client is not None:
            self._forming.clear()  # updates were missed while away: REST has the closed bars
            self._on_connect()

    def _open(self) -> VerifiedMarketClient | None:
        # Public market data: no key is sent (the JWT stays on the user channel).
        client = VerifiedMarketClient(
            ssl_context=self._tls,
            api_key=None,
            api_secret=None,
            base_url=self._config.market_ws_url,
            timeout=self._config.timeout_s,
            on_message=self._messages.put,
            retry=False,
        )
        try:
            client.open()
            check_verified(client)
            client.candles(self._symbols)
            client.heartbeats()
        except (WSClientException, OSError) as exc:
            log.warning("coinbase candles channel: cannot connect to %s: %s", client.base_url, exc)
            close_client(client)
            return None
        self.connections += 1
        return client

    def _handle(self, text: str) -> None:
        try:
            bars = parse.streamed_candles(parse.stream_message(text))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("coinbase candles channel: ignored a malformed message (%s)", exc)
            return
        for bar in bars:
            forming = self._forming.get(bar.symbol)
            if forming is None or bar.ts_ns == forming.ts_ns:
                self._forming[bar.symbol] = bar
            elif bar.ts_ns > forming.ts_ns:
                self._forming[bar.symbol] = bar
                self._deliver(forming)  # the next candle started: this one is closed
            else:
                self._deliver(bar)  # an update of a candle already closed

    def _deliver(self, bar: StreamedBar) -> None:
        try:
            self._on_bar(bar)
        except Exception:
            log.exception("coinbase candles channel: on_bar failed for %s", bar.symbol)
