"""The Coinbase user channel (the SDK's WSUserClient) as a fill feed: order updates trigger a
fill fetch, silence or a drop triggers reconnect plus backfill, and each fill arrives once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from coinbase.websocket import WSClientException, WSUserClient

from live.broker import BrokerError, BrokerFill
from live.coinbase import parse
from live.coinbase.config import CoinbaseConfig

logger = logging.getLogger(__name__)


class _Venue(Protocol):
    config: CoinbaseConfig

    @property
    def credentials(self): ...
    def remember(self, client_order_id: str, venue_order_id: str) -> None: ...
    def fills(self, since_ns: int = 0) -> list[BrokerFill]: ...
    def order_fills(self, venue_order_id: str, client_order_id: str = "") -> list[BrokerFill]: ...


class FillStream:
    """A background thread that follows the user channel and calls ``on_fill``.

    The user channel carries order state (cumulative quantity), not single executions, so an
    update whose quantity is above what was already fetched for that order reads the order's
    fills from REST: stream and backfill then share the venue's fill ids and a duplicate,
    late or out-of-order event is harmless. The SDK's own reconnect (waits of 5 s and more,
    no backfill) is off; this thread reconnects after ``stream_silence_s`` without a message
    (heartbeats come every second) or a drop, then backfills with ``fills``.
    """

    def __init__(self, venue: _Venue, on_fill: Callable[[BrokerFill], None]) -> None:
        self._venue = venue
        self._config = venue.config
        self._on_fill = on_fill
        self._messages: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._seen: set[str] = set()
        self._fetched_qty: dict[str, float] = {}
        self._since_ns = time.time_ns()
        self._thread = threading.Thread(target=self._run, name="coinbase-fills", daemon=True)
        self.connections = 0
        """WebSocket connections opened so far (reconnects are ``connections - 1``)."""

    def start(self) -> Callable[[], None]:
        """Start the thread; return the function that stops it."""
        self._thread.start()
        return self.stop

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3 * self._config.timeout_s + 1.0)

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        tick = max(min(self._config.stream_silence_s / 4, 0.25), 0.005)
        while not self._stop.is_set():
            client = self._open()
            self._guarded("backfill", self._backfill)
            last_message = time.monotonic()
            reason = "connection failed" if client is None else ""
            while not self._stop.is_set() and not reason:
                try:
                    text = self._messages.get(timeout=tick)
                except queue.Empty:
                    text = None
                if text is not None:
                    last_message = time.monotonic()
                    if self._guarded("message", lambda t=text: self._handle(t)) is False:
                        reason = "the venue reported an error"
                if not reason and not _alive(client):
                    reason = "connection lost"
                if not reason and time.monotonic() - last_message > self._config.stream_silence_s:
                    reason = f"no message for {self._config.stream_silence_s}s"
            _close(client)
            if not self._stop.is_set():
                logger.warning("coinbase user channel: %s; reconnecting", reason)
                self._stop.wait(self._config.stream_reconnect_s)

    def _guarded(self, what: str, step: Callable[[], object]) -> object:
        # The thread must outlive any single failure: the next reconnect backfills what a
        # failed step missed.
        try:
            return step()
        except BrokerError as exc:
            logger.warning("coinbase user channel %s failed: %s", what, exc)
        except Exception:
            logger.exception("coinbase user channel %s failed", what)
        return None

    def _open(self) -> WSUserClient | None:
        credentials = self._venue.credentials
        client = WSUserClient(
            api_key=credentials.key_name.reveal(),
            api_secret=credentials.private_key.reveal(),
            base_url=self._config.ws_url,
            timeout=self._config.timeout_s,
            on_message=self._messages.put,
            retry=False,
        )
        try:
            client.open()
            self.connections += 1
            client.user(list(self._config.products))
            client.heartbeats()
        except (WSClientException, OSError) as exc:
            logger.warning("coinbase user channel: cannot connect to %s: %s", client.base_url, exc)
            _close(client)
            return None
        return client

    # ------------------------------------------------------------------ fills
    def _backfill(self) -> None:
        started = time.time_ns()
        self._deliver(self._venue.fills(self._since_ns))
        self._since_ns = started - int(self._config.backfill_overlap_s * 1e9)

    def _handle(self, text: str) -> bool:
        message = parse.stream_message(text)
        if message.get("type") == "error":
            logger.warning("coinbase user channel error: %s", message.get("message"))
            return False
        for update in parse.user_order_updates(message):
            self._venue.remember(update.client_order_id, update.order_id)
            if update.filled_qty <= self._fetched_qty.get(update.order_id, 0.0) + 1e-12:
                continue  # nothing new: a duplicate or an older event arriving late
            fills = self._venue.order_fills(update.order_id, update.client_order_id)
            self._fetched_qty[update.order_id] = sum(f.qty for f in fills)
            self._deliver(fills)
        return True

    def _deliver(self, fills: list[BrokerFill]) -> None:
        for fill in sorted(fills, key=lambda f: (f.ts_fill_ns, f.fill_id)):
            if fill.fill_id in self._seen:
                continue
            self._seen.add(fill.fill_id)
            try:
                self._on_fill(fill)
            except Exception:  # the caller's bug must not stop the feed
                logger.exception("coinbase on_fill failed for fill %s", fill.fill_id)


def _alive(client: WSUserClient | None) -> bool:
    if client is None or client.websocket is None or not client.websocket.open:
        return False
    try:
        client.raise_background_exception()
    except Exception:
        return False
    return True


def _close(client: WSUserClient | None) -> None:
    """Close the SDK client and its event-loop thread. ``WSClient.close`` raises when the
    socket is already gone and then leaves its loop running, so stop the loop here."""
    if client is None or client.loop is None or client.loop.is_closed():
        return
    try:
        client.close()
    except Exception:
        loop = client.loop
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            client.thread.join(timeout=5.0)
            if not loop.is_running():
                loop.close()
