"""Alpaca's fills of our orders: the FILL activities (the poll and every backfill), the
trade_updates stream, and which of our client order ids each fill belongs to.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.models import Order
from alpaca.trading.requests import GetOrdersRequest
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

from live.alpaca import trailing
from live.alpaca.parse import VENUE, fill_from_activity, fill_from_trade_update, to_datetime
from live.broker import LEG_CODES, BrokerError, BrokerFill, leg_id, leg_of, venue_answer

if TYPE_CHECKING:
    from live.alpaca.client import AlpacaBroker

log = logging.getLogger(__name__)

ACTIVITIES_PAGE_SIZE = 100


def leg_kind(order: Order) -> str | None:
    """The protective leg an Alpaca order is (``stop``, ``limit``, ``trailing_stop``) by its
    type; None for any other type."""
    kind = str(getattr(order.type or order.order_type, "value", order.type or order.order_type))
    return kind if kind in LEG_CODES else None


class Fills:
    """Fills of our orders, each under the client order id it is ours by.

    Alpaca names a fill by the venue order that executed. A position's protection rests as
    one venue order under its group's id (``leg_id(group, "group")``): a lone trailing stop,
    or an OCO order whose parent is the take-profit limit and whose stop-loss is a child order
    with an order id and a client order id Alpaca makes up (it ignores ours on legs; see
    ``tests/fakes/alpaca_server.py``). A fill of any of them is the leg's (``leg_id(group,
    kind)``), from the activities and from the stream alike.

    Parameters
    ----------
    call : callable
        The broker's policy for one SDK call (``AlpacaBroker._call``).
    """

    def __init__(self, call: Callable[[str, Callable[[], Any]], Any]) -> None:
        self._call = call
        self._by_venue_id: dict[str, str] = {}

    def remember(self, venue_order_id: str, client_order_id: str) -> None:
        """Note that fills of the venue order ``venue_order_id`` are ``client_order_id``'s."""
        self._by_venue_id[venue_order_id] = client_order_id

    def owner(self, client: TradingClient, order: Order) -> str:
        """The client order id a fill of ``order`` is ours under (looked up once per order)."""
        venue_id = str(order.id)
        known = self._by_venue_id.get(venue_id)
        if known is None:
            known = order.client_order_id
            carrier = leg_of(known)
            folded = trailing.owner(known, leg_kind(order))
            if folded is not None:
                known = folded
            elif carrier is not None and carrier[1] == "group":
                kind = leg_kind(order)
                known = leg_id(carrier[0], kind) if kind else known
            elif carrier is None and not known.startswith("qs"):
                known = self._leg_owner(client, venue_id) or known
            self._by_venue_id[venue_id] = known
        return known

    def _owner_of_id(self, client: TradingClient, venue_order_id: str) -> str:
        """Activities name the venue's order id only: look the order up once."""
        known = self._by_venue_id.get(venue_order_id)
        if known is not None:
            return known
        order = self._call(
            f"order id {venue_order_id}", lambda: client.get_order_by_id(venue_order_id)
        )
        return self.owner(client, order)

    def _leg_owner(self, client: TradingClient, venue_order_id: str) -> str | None:
        """The leg id of an OCO's stop leg, found in the recent orders that carry a position's
        protection (nested: a child order is listed under its parent's ``legs``)."""
        query = GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500, nested=True)
        for order in self._call("orders", lambda: client.get_orders(query)):
            if trailing.decode(order.client_order_id) is not None:  # a folded group's OCO
                for leg in order.legs or []:
                    if str(leg.id) == venue_order_id:
                        return trailing.owner(order.client_order_id, leg_kind(leg) or "")
                continue
            carrier = leg_of(order.client_order_id)
            if carrier is None or carrier[1] != "group":
                continue
            for leg in order.legs or []:
                if str(leg.id) == venue_order_id and leg_kind(leg):
                    return leg_id(carrier[0], leg_kind(leg))
        return None

    def from_activities(self, client: TradingClient, since_ns: int) -> list[BrokerFill]:
        """FILL account activities at or after ``since_ns``, oldest first. alpaca-py 0.44 does
        not wrap ``/v2/account/activities``; its ``RESTClient.get`` keeps auth the SDK's."""
        params: dict[str, Any] = {
            "after": to_datetime(max(since_ns - 1000, 0)).isoformat(),
            "direction": "asc",
            "page_size": ACTIVITIES_PAGE_SIZE,
        }
        rows: list[dict] = []
        while True:
            query = dict(params)
            page = self._call("fills", lambda q=query: client.get("/account/activities/FILL", q))
            with venue_answer(VENUE, "fills"):
                rows.extend(page or [])
                if not page or len(page) < ACTIVITIES_PAGE_SIZE:
                    break
                params["page_token"] = page[-1]["id"]
        with venue_answer(VENUE, "fills"):
            out = [fill_from_activity(a, self._owner_of_id(client, a["order_id"])) for a in rows]
        return sorted((f for f in out if f.ts_fill_ns >= since_ns), key=lambda f: f.ts_fill_ns)

    def from_trade_update(self, client: TradingClient, data: dict) -> BrokerFill | None:
        """The fill a ``trade_updates`` message's ``data`` carries (None for other events)."""
        with venue_answer(VENUE, "fill stream"):
            return fill_from_trade_update(data, owner=lambda order: self.owner(client, order))


class FillStream:
    """The trade_updates stream as a thread. alpaca-py's ``TradingStream`` is not used: it has
    no silence detection, waits up to 5 s to notice a stop (trading/stream.py ``_consume``),
    and retries a refused login forever, logging each failure. The wire protocol is the same."""

    def __init__(self, broker: AlpacaBroker, on_fill: Callable[[BrokerFill], None]) -> None:
        self._broker = broker
        self._config = broker.config
        self._fills: Fills = broker._fills
        self._on_fill = on_fill
        self._rest = broker._trading_client()  # the thread's own session for backfills
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._healthy_ns = time.time_ns()
        self._thread = threading.Thread(target=self._run, name="alpaca-fills", daemon=True)
        self.connects = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._config.timeout_s + 1.0)

    def _deliver(self, fill: BrokerFill) -> None:
        if fill.fill_id in self._seen:
            return
        self._seen.add(fill.fill_id)
        try:
            self._on_fill(fill)
        except Exception:
            log.exception("alpaca fill stream: on_fill failed for fill %s", fill.fill_id)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with ws_connect(
                    self._config.resolved_stream_url,
                    open_timeout=self._config.timeout_s,
                    close_timeout=1.0,
                ) as ws:
                    self._login(ws)
                    self.connects += 1
                    # Listening already: what fills from now on arrives on the socket, what
                    # filled while we were away comes from the activities endpoint.
                    listening_ns = time.time_ns()
                    since = self._healthy_ns - int(self._config.backfill_overlap_s * 1e9)
                    for fill in self._fills.from_activities(self._rest, since):
                        self._deliver(fill)
                    self._healthy_ns = max(self._healthy_ns, listening_ns)
                    self._listen(ws)
            except (OSError, TimeoutError, WebSocketException, BrokerError, ValueError) as exc:
                text = str(exc) if isinstance(exc, BrokerError) else type(exc).__name__
                log.warning("alpaca fill stream: %s; reconnecting", text)
            except Exception as exc:  # the thread must survive anything one message does
                log.error("alpaca fill stream: unexpected %s; reconnecting", type(exc).__name__)
            self._stop.wait(self._config.stream_reconnect_s)
        self._rest._session.close()

    def _login(self, ws) -> None:
        key_id, secret = self._broker.credentials()
        ws.send(json.dumps({"action": "authenticate",
                            "data": {"key_id": key_id, "secret_key": secret}}))  # fmt: skip
        reply = json.loads(ws.recv(timeout=self._config.timeout_s))
        if reply.get("data", {}).get("status") != "authorized":
            raise self._broker._auth_error("fill stream login", 401, "unauthorized")
        ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))

    def _listen(self, ws) -> None:
        """Read until stopped, dropped, or silent for ``stream_silence_s`` (then reconnect)."""
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                raw = ws.recv(timeout=min(0.1, self._config.stream_silence_s))
            except TimeoutError:
                if time.monotonic() - last > self._config.stream_silence_s:
                    log.warning("alpaca fill stream: silent, reconnecting")
                    return
                continue
            last = time.monotonic()
            self._healthy_ns = time.time_ns()
            message = json.loads(raw)
            if message.get("stream") == "trade_updates":
                # The leg's owner is known by now (remembered at submit, or one lookup): the
                # fill is the leg's as it arrives, never first the group's or a stranger's.
                fill = self._fills.from_trade_update(self._rest, message.get("data", {}))
                if fill is not None:
                    self._deliver(fill)
