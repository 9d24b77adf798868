"""The Coinbase user channel (the SDK's WSUserClient) as a fill feed: order updates trigger a
fill fetch, silence or a drop triggers reconnect plus backfill, and each fill arrives once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import websockets
from coinbase.constants import USER_AGENT
from coinbase.websocket import WSClient, WSClientException, WSUserClient

from live.broker import BrokerError, BrokerFill
from live.coinbase import parse
from live.coinbase.config import CoinbaseConfig
from quantshift.errors import ConfigError

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

    Raises
    ------
    BrokerError
        When the installed SDK no longer has the shape ``_VerifiedUserClient`` relies on.
    ConfigError
        When ``ca_file`` cannot be read as a CA bundle.
    """

    def __init__(self, venue: _Venue, on_fill: Callable[[BrokerFill], None]) -> None:
        check_sdk_shape()
        self._venue = venue
        self._config = venue.config
        self._tls = tls_context(self._config)
        self._on_fill = on_fill
        self._messages: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._seen: set[str] = set()
        self._fetched_qty: dict[str, float] = {}
        self._since_ns = time.time_ns()
        self._thread = threading.Thread(target=self._run, name="coinbase-fills", daemon=True)
        self.connections = 0
        """WebSocket connections opened so far (reconnects are ``connections - 1``)."""
        self.backfills = 0
        """Backfills done so far (one after each connection attempt)."""

    def start(self) -> Callable[[], None]:
        """Start the thread; return the function that stops it."""
        self._thread.start()
        return self.stop

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3 * self._config.timeout_s + 1.0)

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        follow(
            "user channel",
            self._messages,
            self._open,
            lambda client: self._guarded("backfill", self._backfill),
            lambda text: self._guarded("message", lambda: self._handle(text)),
            self._config,
            self._stop,
        )

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
        client = _VerifiedUserClient(
            ssl_context=self._tls,
            api_key=credentials.key_name.reveal(),
            api_secret=credentials.private_key.reveal(),
            base_url=self._config.ws_url,
            timeout=self._config.timeout_s,
            on_message=self._messages.put,
            retry=False,
        )
        try:
            client.open()
            check_verified(client)  # before subscribing sends the JWT
            self.connections += 1
            client.user(list(self._config.products))
            client.heartbeats()
        except (WSClientException, OSError) as exc:
            logger.warning("coinbase user channel: cannot connect to %s: %s", client.base_url, exc)
            close_client(client)
            return None
        return client

    # ------------------------------------------------------------------ fills
    def _backfill(self) -> None:
        started = time.time_ns()
        self._deliver(self._venue.fills(self._since_ns))
        self._since_ns = started - int(self._config.backfill_overlap_s * 1e9)
        self.backfills += 1

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


# ----------------------------------------------------------------------------- the loop
def follow(
    channel: str,
    messages: queue.Queue,
    open_client: Callable[[], Any],
    on_open: Callable[[Any], object],
    handle: Callable[[str], object],
    config: CoinbaseConfig,
    stop: threading.Event,
) -> None:
    """Keep one channel followed until ``stop``: open it, call ``on_open`` (with None when the
    connection failed), hand each message to ``handle`` (False: the venue reported an error),
    and reconnect after ``stream_reconnect_s`` on an error, a drop, or ``stream_silence_s``
    without a message (heartbeats come every second)."""
    tick = max(min(config.stream_silence_s / 4, 0.25), 0.005)
    while not stop.is_set():
        client = open_client()
        on_open(client)
        last_message = time.monotonic()
        reason = "connection failed" if client is None else ""
        while not stop.is_set() and not reason:
            try:
                text = messages.get(timeout=tick)
            except queue.Empty:
                text = None
            if text is not None:
                last_message = time.monotonic()
                if handle(text) is False:
                    reason = "the venue reported an error"
            if not reason and not alive(client):
                reason = "connection lost"
            if not reason and time.monotonic() - last_message > config.stream_silence_s:
                reason = f"no message for {config.stream_silence_s}s"
        close_client(client)
        if not stop.is_set():
            logger.warning("coinbase %s: %s; reconnecting", channel, reason)
            stop.wait(config.stream_reconnect_s)


# ----------------------------------------------------------------------------- TLS
def tls_context(config: CoinbaseConfig) -> ssl.SSLContext:
    """The TLS context of the user channel: certificate and host name verified against the
    system trust store, or against ``config.ca_file`` alone when it is set (as for REST)."""
    try:
        return ssl.create_default_context(cafile=config.ca_file)
    except OSError as exc:  # ssl.SSLError included
        raise ConfigError(
            f"coinbase config: ca_file={config.ca_file!r} cannot be read as a CA bundle: {exc}"
        ) from None


class _VerifyingOpen:
    """The SDK's ``open_async`` with a TLS context that verifies the venue.

    coinbase-advanced-py 1.8.4 opens every ``wss://`` URL with ``ssl=ssl.SSLContext()``
    (``WSBase.open_async``, coinbase/websocket/websocket_base.py line 150): no certificate or
    host-name check and no parameter to pass another context, so a man in the middle would
    receive the JWT sent on subscribe (and could feed us made-up bars). This is that method
    with ``ssl_context`` in its place (the SDK's debug logging left out); everything else is
    the SDK's. ``_check_sdk_shape`` refuses to stream if an SDK upgrade moves what it relies on.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ssl_context = ssl_context

    async def open_async(self) -> None:
        self._ensure_websocket_not_open()
        try:
            self.websocket = await websockets.connect(
                self.base_url,
                open_timeout=self.timeout,
                max_size=self.max_size,
                user_agent_header=USER_AGENT,
                extra_headers=self._set_headers(),
                ssl=self.ssl_context if self.base_url.startswith("wss://") else None,
            )
        except (TimeoutError, websockets.exceptions.WebSocketException, OSError) as exc:
            self.websocket = None
            raise WSClientException(f"{type(exc).__name__}: {exc}") from exc
        if self.on_open:
            self.on_open()
        if not self._retrying:
            self._task = asyncio.create_task(self._message_handler())


class _VerifiedUserClient(_VerifyingOpen, WSUserClient):
    """The SDK's user-channel client, connecting through :class:`_VerifyingOpen`."""


class VerifiedMarketClient(_VerifyingOpen, WSClient):
    """The SDK's market data client (candles, heartbeats), connecting through
    :class:`_VerifyingOpen`."""


_SDK_METHODS = ("_ensure_websocket_not_open", "_set_headers", "_message_handler")
_SDK_ATTRIBUTES = ("base_url", "timeout", "max_size", "on_open", "websocket", "_retrying")


def check_sdk_shape() -> None:
    """Raise ``BrokerError`` unless the SDK still opens through ``open_async`` and has what
    ``_VerifiedUserClient.open_async`` uses: otherwise the SDK's unverified connect could run
    instead of ours, or ours would break at every connect."""
    problems = []
    code = getattr(WSUserClient.open, "__code__", None)
    if code is None or "open_async" not in code.co_names:
        problems.append("WSUserClient.open no longer calls open_async")
    probe = WSUserClient(api_key=None, api_secret=None, on_message=lambda _: None, retry=False)
    problems += [f"{n} is gone" for n in _SDK_METHODS if not callable(getattr(probe, n, None))]
    problems += [f"{n} is gone" for n in _SDK_ATTRIBUTES if not hasattr(probe, n)]
    if problems:
        raise BrokerError(
            "coinbase",
            f"the installed {USER_AGENT} changed shape ({'; '.join(problems)}), so the "
            "TLS-verifying user-channel client in live/coinbase/stream.py would not apply; "
            "refusing to stream fills until _VerifiedUserClient is updated",
        )


def check_verified(client: WSUserClient) -> None:
    """Raise ``WSClientException`` if a ``wss://`` connection was opened without certificate
    and host-name verification (the SDK's own connect ran after all)."""
    if not client.base_url.startswith("wss://"):
        return
    tls = client.websocket.transport.get_extra_info("ssl_object")
    context = getattr(tls, "context", None)
    if context is None or context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        raise WSClientException(
            f"{client.base_url} was opened without certificate and host-name verification "
            "(the installed SDK bypassed _VerifiedUserClient.open_async); not subscribing"
        )


def alive(client: WSUserClient | None) -> bool:
    if client is None or client.websocket is None or not client.websocket.open:
        return False
    try:
        client.raise_background_exception()
    except Exception:
        return False
    return True


def close_client(client: WSUserClient | None) -> None:
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
