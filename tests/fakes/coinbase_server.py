"""A fake Coinbase Advanced Trade venue on 127.0.0.1 for coinbase-advanced-py: HTTPS REST and a
wss user channel (trustme certificate), ES256 JWT checks, a matching engine, fault knobs.

Two ways its market moves. ``set_price`` sets a last trade price, and every resting order that
price reaches fills at it (the adapter's unit tests). ``replay`` plays bars instead, as the paper
venue does: ``open_bar`` fills the waiting market orders at the bar's open (with the configured
slippage, priced by the fill model's ``exit_nb``), ``trade_bar`` executes the resting orders on
the bar's (open, high, low) by the fill model's intrabar rules (``check_levels_nb``: a gap
through a level fills at the open, a touched level at the level, a bar reaching both sides of a
bracket fills the stop), with what Coinbase adds: a stop-limit fills only at its limit price or
better (a gap past it leaves it resting as a limit order), and a bracket's stop, once triggered,
is a stop-limit 5% past its trigger. In a runner test the venue learns that the market moved
in-process, from the bars the runner itself replays: the test binds the adapter's
``Broker.open_bar`` / ``trade_bar`` hooks (no-ops on the real venue, whose market moves by
itself) to ``open_bar`` / ``trade_bar`` here, so each bar reaches the venue at the point of the
cycle where a simulated venue's market moves, and everything else goes through the SDK.
"""

from __future__ import annotations

import json
import queue
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import numpy as np
import trustme
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from live.paper import market_fill, match_levels
from quantshift.engine.records import config_dt

PREFIX = "/api/v3/brokerage"
GRANULARITY_S = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "ONE_HOUR": 3600,
    "ONE_DAY": 86_400,
}
MAX_CANDLES = 350
ZERO = Decimal(0)
BRACKET_STOP_LIMIT = Decimal("0.05")
"""A triggered bracket's stop becomes a stop-limit this far past its trigger price."""


def stamp(ns: int, digits: int = 6) -> str:
    """RFC 3339 UTC with ``digits`` fraction digits (REST: 6, user channel: 9)."""
    whole = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC)
    return f"{whole:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000:09d}"[: 20 + digits] + "Z"


def _epoch_ns(text: str) -> int:
    head, _, frac = text.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(head).replace(tzinfo=UTC)
    return int(whole.timestamp()) * 1_000_000_000 + int((frac or "0")[:9].ljust(9, "0"))


def _dec(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


@dataclass
class Fault:
    """The next ``count`` requests matching ``method`` and ``path`` (relative to the API prefix;
    a trailing ``*`` matches a prefix), after ``after`` matching ones went through, answer
    ``status`` after ``delay_s``; with ``land`` the request is carried out first (the effect
    happens, the answer is lost). ``body`` replaces the fault's answer: JSON, or ``bytes`` sent
    as they are (a malformed answer, even with status 200)."""

    method: str
    path: str
    status: int
    count: int = 1
    after: int = 0
    land: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: Any = None

    @property
    def answer(self) -> Any:
        return {"error": "FAULT", "message": "injected"} if self.body is None else self.body

    def matches(self, method: str, path: str) -> bool:
        if method != self.method:
            return False
        return path.startswith(self.path[:-1]) if self.path.endswith("*") else path == self.path


@dataclass
class FakeOrder:
    order_id: str
    client_order_id: str
    product_id: str
    side: str
    configuration: dict[str, Any]
    size: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    created_ns: int
    status: str = "OPEN"
    triggered: bool = True
    filled: Decimal = ZERO
    filled_value: Decimal = ZERO
    fees: Decimal = ZERO
    last_fill_ns: int = 0
    partial: Decimal | None = None

    @property
    def remaining(self) -> Decimal:
        return self.size - self.filled

    @property
    def kind(self) -> str:
        return next(iter(self.configuration))

    @property
    def order_type(self) -> str:
        kind = self.kind
        if kind.startswith("trigger_bracket"):
            return "BRACKET"
        return (
            "MARKET" if kind.startswith("market") else "STOP_LIMIT" if "stop" in kind else "LIMIT"
        )

    @property
    def trigger_status(self) -> str:
        if self.stop_price is None:
            return "INVALID_ORDER_TYPE"
        return "STOP_TRIGGERED" if self.triggered else "STOP_PENDING"

    def trigger(self) -> None:
        """The stop was reached: a bracket's resting limit becomes its stop-limit."""
        self.triggered = True
        if self.kind.startswith("trigger_bracket"):
            away = BRACKET_STOP_LIMIT if self.side == "BUY" else -BRACKET_STOP_LIMIT
            self.limit_price = self.stop_price * (1 + away)

    @property
    def time_in_force(self) -> str:
        ioc = "ioc" in next(iter(self.configuration))
        return "IMMEDIATE_OR_CANCEL" if ioc else "GOOD_UNTIL_CANCELLED"

    # fmt: off
    def json(self) -> dict[str, Any]:
        avg = self.filled_value / self.filled if self.filled else ZERO
        return {
            "order_id": self.order_id, "product_id": self.product_id, "user_id": "fake-user",
            "order_configuration": self.configuration, "side": self.side,
            "client_order_id": self.client_order_id, "status": self.status,
            "time_in_force": self.time_in_force, "created_time": stamp(self.created_ns),
            "completion_percentage": _dec(self.filled / self.size * 100),
            "filled_size": _dec(self.filled), "average_filled_price": _dec(avg), "fee": "",
            "number_of_fills": "1" if self.filled else "0",
            "filled_value": _dec(self.filled_value), "pending_cancel": False,
            "size_in_quote": False, "total_fees": _dec(self.fees),
            "size_inclusive_of_fees": False,
            "total_value_after_fees": _dec(self.filled_value + self.fees),
            "trigger_status": self.trigger_status, "order_type": self.order_type,
            "reject_reason": "", "settled": self.status == "FILLED", "product_type": "SPOT",
            "reject_message": "",
            "cancel_message": "User requested cancel" if self.status == "CANCELLED" else "",
            "order_placement_source": "RETAIL_ADVANCED", "outstanding_hold_amount": "0",
            "is_liquidation": False,
            "last_fill_time": stamp(self.last_fill_ns) if self.last_fill_ns else None,
            "edit_history": [], "leverage": "", "margin_type": "UNKNOWN_MARGIN_TYPE",
            "retail_portfolio_id": "fake-portfolio",
        }

    def stream_json(self) -> dict[str, Any]:
        avg = self.filled_value / self.filled if self.filled else ZERO
        return {
            "order_id": self.order_id, "client_order_id": self.client_order_id,
            "cumulative_quantity": _dec(self.filled),
            "leaves_quantity": _dec(self.remaining if self.status == "OPEN" else ZERO),
            "avg_price": _dec(avg), "total_fees": _dec(self.fees), "status": self.status,
            "product_id": self.product_id, "creation_time": stamp(self.created_ns, 9),
            "order_side": self.side, "order_type": self.order_type.title().replace("_", " "),
            "cancel_reason": "", "reject_reason": "", "product_type": "SPOT",
            "time_in_force": self.time_in_force,
        }
    # fmt: on


@dataclass
class _Conn:
    ws: Any
    queue: queue.Queue = field(default_factory=queue.Queue)
    user: bool = False
    heartbeats: bool = False
    candles: bool = False
    silenced: bool = False
    sequence: int = 0


class FakeCoinbase:
    """The venue. ``base_url`` is what the SDK's ``base_url`` takes (host:port), ``ws_url`` the
    user channel, ``ca_file`` the CA bundle that signed both certificates.

    Parameters
    ----------
    cash : float
        Starting USD balance.
    fee_rate : float
        Fee as a fraction of notional, charged in USD.
    heartbeat_s : float
        Interval of heartbeat messages on subscribed connections.
    base_increment : str
        Every product's quantity increment (``Broker.quantity_step``), as Coinbase writes it.
    slippage_rate : float
        Adverse move of a replayed fill, as a fraction of its price (the fill model's).
    duplicate_mode : {"error", "existing"}
        Answer to a create with a known client order id: ``success: false`` naming a duplicate
        (``error``), or ``success: true`` with the existing order (``existing``).
    cert_hosts : tuple of str
        Host names in the server certificate; without 127.0.0.1 a client's host-name check fails.
    """

    def __init__(
        self,
        *,
        cash: float = 100_000.0,
        fee_rate: float = 0.001,
        heartbeat_s: float = 0.05,
        duplicate_mode: str = "error",
        cert_hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
        slippage_rate: float = 0.0,
        base_increment: str = "0.00000001",
    ) -> None:
        self.cert_hosts = cert_hosts
        self.base_increment = base_increment
        self.replaying = False
        """True once ``replay`` was called: the market moves only with ``open_bar``."""
        self._cfg = np.zeros(1, config_dt)
        self._cfg[0].fee_rate = fee_rate
        self._cfg[0].slippage_rate = slippage_rate
        self.fee_rate = Decimal(str(fee_rate))
        self.heartbeat_s = heartbeat_s
        self.duplicate_mode = duplicate_mode
        self.balances: dict[str, Decimal] = {"USD": Decimal(str(cash))}
        self.prices: dict[str, Decimal] = {}
        self.keys: dict[str, Any] = {}
        self.can_trade = True
        self.orders: dict[str, FakeOrder] = {}
        self.fills: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, str]] = []
        self.create_bodies: list[dict[str, Any]] = []
        self.candle_gaps: set[int] = set()
        self.duplicate_events = False
        self.subscriptions: list[str] = []
        """Channels of every subscribe request received, in order (the JWT went with each)."""
        self._held: list[dict] | None = None
        self._pending: list[dict] = []
        self._partial_next: Decimal | None = None
        self._partial_resting: Decimal | None = None
        self._conns: list[_Conn] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._dir = Path(tempfile.mkdtemp(prefix="fake-coinbase-"))
        self.ca_file = str(self._dir / "ca.pem")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeCoinbase:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(self.ca_file)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*self.cert_hosts).configure_cert(context)
        fake = self

        class Handler(_Handler):
            venue = fake

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        self._ws = serve(self._stream, "127.0.0.1", 0, ssl=context)
        threading.Thread(target=self._http.serve_forever, args=(0.02,), daemon=True).start()
        for target in (self._ws.serve_forever, self._beat):
            threading.Thread(target=target, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.drop_stream()
        self._http.shutdown()
        self._http.server_close()
        self._ws.shutdown()
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def base_url(self) -> str:
        return f"127.0.0.1:{self._http.server_address[1]}"

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self._ws.socket.getsockname()[1]}"

    # ------------------------------------------------------------------ knobs
    def add_key(self, name: str, public_key: Any) -> None:
        """Accept JWTs signed by the private half of ``public_key`` under key name ``name``."""
        self.keys[name] = public_key

    def fail(self, method: str, path: str, status: int, **kwargs: Any) -> Fault:
        fault = Fault(method, path, status, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def rate_limit(self, method: str, path: str, count: int, retry_after_s: float) -> Fault:
        return self.fail(
            method, path, 429, count=count, headers={"Retry-After": str(retry_after_s)}
        )

    def partial_next(self, fraction: float) -> None:
        """The next order that would fill fills only ``fraction`` of its size (a market order
        then ends CANCELLED, a limit order rests with the rest)."""
        self._partial_next = Decimal(str(fraction))

    def partial_resting(self, fraction: float) -> None:
        """The next resting order (stop, stop-limit, bracket or limit: a position's protection)
        to execute, by ``set_price`` or on a replayed bar, fills only ``fraction`` of its size
        then; the rest keeps resting (a triggered stop as its limit order) for later prices."""
        self._partial_resting = Decimal(str(fraction))

    def set_price(self, product_id: str, price: float) -> None:
        """Move the market; resting orders that become marketable fill at ``price``."""
        with self._lock:
            self.prices[product_id] = Decimal(str(price))
            for order in list(self.orders.values()):
                if order.product_id == product_id and order.status == "OPEN":
                    self._try_fill(order)
        self._flush()

    def replay(self) -> FakeCoinbase:
        """Let bars move the market (``open_bar``, ``trade_bar``) from now on; a market order
        then waits for the next bar's open."""
        self.replaying = True
        return self

    def open_bar(self, ts_ns: int, opens: dict[str, float]) -> None:
        """A bar opened: fill the market orders waiting for it, in the order they came."""
        with self._lock:
            for product, price in opens.items():
                if not np.isfinite(price):
                    continue
                self.prices[product] = Decimal(repr(float(price)))
                for order in self._open(product):
                    if order.kind.startswith("market"):
                        self._execute(order, order.remaining, self._exit_price(order, price),
                                      ts_ns)  # fmt: skip
        self._flush()

    def trade_bar(self, ts_ns: int, ranges: dict[str, tuple[float, float, float]]) -> None:
        """The rest of a bar traded: ``{product: (open, high, low)}``; resting orders execute
        by the fill model's intrabar rules (see the module docstring)."""
        with self._lock:
            for product, (open_, high, low) in ranges.items():
                if not np.isfinite(open_):
                    continue
                for order in self._open(product):
                    if not order.kind.startswith("market"):
                        self._match(order, float(open_), float(high), float(low), ts_ns)
        self._flush()

    def _open(self, product: str) -> list[FakeOrder]:
        return sorted((o for o in self.orders.values()
                       if o.product_id == product and o.status == "OPEN"),
                      key=lambda o: o.created_ns)  # fmt: skip

    def _exit_price(self, order: FakeOrder, price: float) -> Decimal:
        """The fill model's price of a market order at ``price`` (an order closes the position
        on its other side: a buy pays the slippage up, a sell down)."""
        fill_price, _ = market_fill(order.side.lower(), float(order.remaining), price,
                                    self._cfg[0])  # fmt: skip
        return Decimal(repr(fill_price))

    def _match(self, order: FakeOrder, open_: float, high: float, low: float, ts: int) -> None:
        # The order closes a position on its other side: its levels, as the fill model matches.
        sign = 1.0 if order.side == "SELL" else -1.0
        target = None
        if order.limit_price is not None and (order.triggered or order.kind.startswith(
                ("limit", "sor_limit", "trigger_bracket"))):  # fmt: skip
            target = float(order.limit_price)
        done = match_levels(
            order.side.lower(), float(order.remaining), open_, high, low, self._cfg[0],
            stop_price=None if order.triggered else float(order.stop_price), limit_price=target,
        )  # fmt: skip
        if done.leg is None:
            return
        price = done.price
        if done.leg != "limit":
            order.trigger()
            worst = float(order.limit_price)
            if sign * (price - worst) < 0:
                return  # gapped past the stop-limit's limit: it rests as a limit order
        self._execute(order, self._fill_qty(order), Decimal(repr(price)), ts)

    def count(self, method: str, path: str) -> int:
        return sum(1 for c in self.calls if c == (method, path))

    def hold_events(self) -> None:
        """Queue user-channel updates until ``release_events``."""
        self._held = []

    def release_events(self, *, reverse: bool = False) -> None:
        held, self._held = self._held or [], None
        for message in reversed(held) if reverse else held:
            self._broadcast(message)

    def silence_stream(self) -> None:
        """Connections open now stay open but send nothing more (heartbeats included)."""
        with self._lock:
            for conn in self._conns:
                conn.silenced = True

    def drop_stream(self) -> None:
        """Cut connections open now without a close frame."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.queue.put(None)

    @property
    def stream_connections(self) -> int:
        with self._lock:
            return sum(1 for c in self._conns if c.user)

    # ------------------------------------------------------------------ REST
    def handle(self, method: str, target: str, headers: Any, body: Any) -> tuple[int, dict, Any]:
        url = urlsplit(target)
        path = url.path.removeprefix(PREFIX)
        query = parse_qs(url.query)
        with self._lock:
            self.calls.append((method, path))
            fault = self._fault(method, path)
        public = path.startswith("/market/") or path == "/time"
        if not public and not self._authorised(method, url.path, headers):
            return 401, {}, {"error": "UNAUTHORIZED", "message": "Unauthorized"}
        if fault is not None and not fault.land:
            time.sleep(fault.delay_s)
            return fault.status, fault.headers, fault.answer
        with self._lock:
            status, answer = self._route(method, path, query, body)
        self._flush()
        if fault is not None:
            time.sleep(fault.delay_s)
            return fault.status, fault.headers, fault.answer
        return status, {}, answer

    def _fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.count > 0 and fault.matches(method, path):
                if fault.after > 0:
                    fault.after -= 1
                    return None
                fault.count -= 1
                return fault
        return None

    def _authorised(self, method: str, path: str, headers: Any) -> bool:
        token = (headers.get("Authorization") or "").removeprefix("Bearer ")
        claims = self._verify(token)
        return claims is not None and claims.get("uri") == f"{method} {headers['Host']}{path}"

    def _verify(self, token: str) -> dict | None:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self.keys.get(kid)
            if key is None:
                return None
            claims = jwt.decode(token, key, algorithms=["ES256", "EdDSA"])
        except jwt.PyJWTError:
            return None
        return claims if claims.get("sub") == kid and claims.get("iss") == "cdp" else None

    def _route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if (method, path) == ("GET", "/key_permissions"):
            return 200, {"can_view": True, "can_trade": self.can_trade, "can_transfer": False,
                         "portfolio_uuid": "fake", "portfolio_type": "DEFAULT"}  # fmt: skip
        if (method, path) == ("GET", "/accounts"):
            return 200, self._page(self._accounts(), query, "accounts")
        if (method, path) == ("GET", "/products"):
            wanted = query.get("product_ids") or sorted(self.prices)
            products = [self._product(p) for p in wanted if p in self.prices]
            return 200, {"products": products, "num_products": len(products)}
        if method == "GET" and len(parts) == 2 and parts[0] == "products":
            if parts[1] not in self.prices:
                return 404, {"error": "NOT_FOUND", "message": "product not found"}
            return 200, self._product(parts[1])
        if method == "GET" and parts[-1] == "candles":
            return self._candles(parts[-2], query)
        if (method, path) == ("POST", "/orders"):
            return 200, self._create(body)
        if (method, path) == ("POST", "/orders/batch_cancel"):
            return 200, {"results": [self._cancel(oid) for oid in body.get("order_ids", [])]}
        if (method, path) == ("GET", "/orders/historical/batch"):
            return 200, self._page(self._list_orders(query), query, "orders")
        if (method, path) == ("GET", "/orders/historical/fills"):
            return 200, self._page(self._list_fills(query), query, "fills")
        if method == "GET" and path.startswith("/orders/historical/"):
            order = self.orders.get(parts[-1])
            if order is None:
                return 404, {"error": "NOT_FOUND", "message": "order not found"}
            return 200, {"order": order.json()}
        return 404, {"error": "NOT_FOUND", "message": f"no route {method} {path}"}

    @staticmethod
    def _page(items: list, query: dict, key: str) -> dict:
        start = int((query.get("cursor") or ["0"])[0] or 0)
        limit = int((query.get("limit") or ["100"])[0])
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {key: page, "has_next": more, "cursor": str(start + limit) if more else ""}

    def _holds(self) -> dict[str, Decimal]:
        holds: dict[str, Decimal] = {}
        for o in self.orders.values():
            if o.status != "OPEN" or o.limit_price is None:
                continue
            base, quote = o.product_id.split("-")
            if o.side == "BUY":
                holds[quote] = holds.get(quote, ZERO) + o.remaining * o.limit_price * (
                    1 + self.fee_rate
                )
            else:
                holds[base] = holds.get(base, ZERO) + o.remaining
        return holds

    def _accounts(self) -> list[dict]:
        holds = self._holds()
        out = []
        for currency, total in sorted(self.balances.items()):
            hold = holds.get(currency, ZERO)
            out.append({
                "uuid": f"acct-{currency.lower()}", "name": f"{currency} Wallet",
                "currency": currency,
                "available_balance": {"value": _dec(total - hold), "currency": currency},
                "default": currency == "USD", "active": True,
                "created_at": "2024-01-02T03:04:05.000Z", "updated_at": "2024-01-02T03:04:05.000Z",
                "deleted_at": None,
                "type": "ACCOUNT_TYPE_FIAT" if currency == "USD" else "ACCOUNT_TYPE_CRYPTO",
                "ready": True, "hold": {"value": _dec(hold), "currency": currency},
                "retail_portfolio_id": "fake-portfolio", "platform": "ACCOUNT_PLATFORM_CONSUMER",
            })  # fmt: skip
        return out

    def _product(self, product_id: str) -> dict:
        base, quote = product_id.split("-")
        return {"product_id": product_id, "price": _dec(self.prices[product_id]),
                "base_increment": self.base_increment, "quote_increment": "0.01",
                "base_min_size": "0.00000001", "base_max_size": "3400",
                "quote_min_size": "1", "quote_max_size": "150000000", "status": "online",
                "product_type": "SPOT", "base_currency_id": base, "quote_currency_id": quote,
                "trading_disabled": False, "is_disabled": False}  # fmt: skip

    def _candles(self, product_id: str, query: dict) -> tuple[int, Any]:
        step = GRANULARITY_S[query["granularity"][0]]
        start, end = int(query["start"][0]), int(query["end"][0])
        if (end - start) / step > MAX_CANDLES:
            message = "number of candles requested should be less than 350"
            return 400, {"error": "INVALID_ARGUMENT", "message": message}
        first = -(-start // step) * step
        candles = []
        for t in range(first, end + 1, step):
            if t not in self.candle_gaps:
                candles.append(self.candle(t, step))
        return 200, {"candles": candles[::-1]}

    @staticmethod
    def candle(start_s: int, step_s: int = 300, *, bump: float = 0.0) -> dict[str, str]:
        """The venue's candle opening at ``start_s`` (REST and the candles channel agree)."""
        base = 100.0 + (start_s // step_s) % 50 + bump
        return {"start": str(start_s), "low": str(base - 1), "high": str(base + 2),
                "open": str(base), "close": str(base + 1), "volume": "2"}  # fmt: skip

    def send_candle(self, product_id: str, start_s: int, *, bump: float = 0.0,
                    kind: str = "update") -> None:  # fmt: skip
        """Send a candles channel event for the 5-minute candle opening at ``start_s`` (the
        venue sends the forming candle on every trade; it is closed once the next one starts)."""
        candle = dict(self.candle(start_s, bump=bump), product_id=product_id)
        message = {"channel": "candles", "client_id": "",
                   "events": [{"type": kind, "candles": [candle]}]}  # fmt: skip
        self._broadcast(message, channel="candles")

    def _list_orders(self, query: dict) -> list[dict]:
        statuses = set(query.get("order_status") or [])
        products = set(query.get("product_ids") or [])
        since = _epoch_ns(query["start_date"][0]) if query.get("start_date") else 0
        chosen = [
            o for o in self.orders.values()
            if (not statuses or o.status in statuses)
            and (not products or o.product_id in products) and o.created_ns >= since
        ]  # fmt: skip
        return [o.json() for o in sorted(chosen, key=lambda o: o.created_ns, reverse=True)]

    def _list_fills(self, query: dict) -> list[dict]:
        ids = set(query.get("order_ids") or [])
        since = query.get("start_sequence_timestamp")
        since_ns = _epoch_ns(since[0]) if since else 0
        chosen = [
            f for f in self.fills
            if (not ids or f["order_id"] in ids) and _epoch_ns(f["sequence_timestamp"]) >= since_ns
        ]  # fmt: skip
        return chosen[::-1]

    def _create(self, body: dict) -> dict:
        self.create_bodies.append(body)
        cid, product, side = body["client_order_id"], body["product_id"], body["side"]
        existing = next((o for o in self.orders.values() if o.client_order_id == cid), None)
        if existing is not None:
            if self.duplicate_mode == "existing":
                return _created(existing, body)
            return _failed("DUPLICATE_CLIENT_ORDER_ID", "duplicate client order id", body)
        if product not in self.prices or side not in ("BUY", "SELL"):
            return _failed("INVALID_PRODUCT_ID", f"unknown product {product}", body)
        kind, inner = next(iter(body["order_configuration"].items()))
        size = Decimal(inner["base_size"])
        limit = Decimal(inner["limit_price"]) if "limit_price" in inner else None
        stop_text = inner.get("stop_price") or inner.get("stop_trigger_price")
        stop = Decimal(stop_text) if stop_text else None
        if kind.startswith("trigger_bracket") and (stop >= limit if side == "SELL"
                                                   else stop <= limit):  # fmt: skip
            message = "stop trigger price must be on the other side of the limit price"
            return _failed("INVALID_PRICE", message, body)
        base, quote = product.split("-")
        price = limit or self.prices[product]
        free = self.balances.get(quote if side == "BUY" else base, ZERO) - self._holds().get(
            quote if side == "BUY" else base, ZERO
        )
        need = size * price * (1 + self.fee_rate) if side == "BUY" else size
        if need > free:
            return _failed("INSUFFICIENT_FUND", "Insufficient balance in source account", body)
        order = FakeOrder(
            order_id=str(uuid.uuid4()), client_order_id=cid, product_id=product, side=side,
            configuration=body["order_configuration"], size=size, limit_price=limit,
            stop_price=stop, created_ns=time.time_ns(), triggered=stop is None,
        )  # fmt: skip
        if self._partial_next is not None:
            order.partial, self._partial_next = self._partial_next, None
        self.orders[order.order_id] = order
        if self.replaying:  # the market moves with the bars: everything waits for one
            return _created(order, body)
        self._try_fill(order)
        if kind.startswith("market") or "ioc" in kind:
            if order.status == "OPEN":  # immediate-or-cancel: the rest is cancelled
                order.status = "CANCELLED"
                self._publish(order)
        return _created(order, body)

    def _try_fill(self, order: FakeOrder) -> None:
        price = self.prices[order.product_id]
        buy = order.side == "BUY"
        bracket = order.kind.startswith("trigger_bracket")
        if (
            bracket
            and not order.triggered
            and (price <= order.limit_price if buy else price >= order.limit_price)
        ):
            self._execute(order, order.remaining, price)  # the bracket's target
            return
        if not order.triggered and (
            price >= order.stop_price if buy else price <= order.stop_price
        ):
            order.trigger()
        if not order.triggered:
            return
        if order.limit_price is not None and (
            price > order.limit_price if buy else price < order.limit_price
        ):
            return
        self._execute(order, self._fill_qty(order), price)

    def _fill_qty(self, order: FakeOrder) -> Decimal:
        """What one execution of ``order`` fills: its rest, or a part set by a knob."""
        resting = not order.kind.startswith("market")
        if order.partial is None and self._partial_resting is not None and resting:
            order.partial, self._partial_resting = self._partial_resting, None
        if order.partial is None:
            return order.remaining
        qty, order.partial = (order.size * order.partial).quantize(Decimal("1e-8")), None
        return qty

    def _execute(self, order: FakeOrder, qty: Decimal, price: Decimal, ts_ns: int = 0) -> None:
        base, quote = order.product_id.split("-")
        fee = qty * price * self.fee_rate
        sign = 1 if order.side == "BUY" else -1
        self.balances[base] = self.balances.get(base, ZERO) + sign * qty
        self.balances[quote] = self.balances.get(quote, ZERO) - sign * qty * price - fee
        now = ts_ns or time.time_ns()  # a replayed fill happens at its bar's time
        order.filled += qty
        order.filled_value += qty * price
        order.fees += fee
        order.last_fill_ns = now
        if order.remaining <= 0:
            order.status = "FILLED"
        trade = str(uuid.uuid4())
        self.fills.append({
            "entry_id": f"entry-{trade}", "trade_id": trade, "order_id": order.order_id,
            "trade_time": stamp(now), "trade_type": "FILL", "price": _dec(price),
            "size": _dec(qty), "commission": _dec(fee), "product_id": order.product_id,
            "sequence_timestamp": stamp(now), "liquidity_indicator": "TAKER",
            "size_in_quote": False, "user_id": "fake-user", "side": order.side,
            "retail_portfolio_id": "fake-portfolio",
        })  # fmt: skip
        self._publish(order)

    def _cancel(self, order_id: str) -> dict:
        order = self.orders.get(order_id)
        if order is None:
            return {
                "success": False,
                "failure_reason": "UNKNOWN_CANCEL_ORDER",
                "order_id": order_id,
            }
        if order.status != "OPEN":
            return {"success": False, "failure_reason": "INVALID_CANCEL_REQUEST",
                    "order_id": order_id}  # fmt: skip
        order.status = "CANCELLED"
        self._publish(order)
        return {"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON",
                "order_id": order_id}  # fmt: skip

    # ------------------------------------------------------------------ user channel
    def _publish(self, order: FakeOrder) -> None:
        event = {"type": "update", "orders": [order.stream_json()]}
        self._pending.append(event)

    def _flush(self) -> None:
        with self._lock:
            events, self._pending = self._pending, []
        for event in events:
            message = {"channel": "user", "client_id": "", "events": [event]}
            if self._held is not None:
                self._held.append(message)
                continue
            self._broadcast(message)
            if self.duplicate_events:
                self._broadcast(message)

    def _broadcast(self, message: dict, *, channel: str = "user") -> None:
        with self._lock:
            conns = [c for c in self._conns if getattr(c, channel) and not c.silenced]
        for conn in conns:
            conn.queue.put(message)

    def _beat(self) -> None:
        counter = 0
        while not self._stopping.wait(self.heartbeat_s):
            counter += 1
            now = time.time_ns()
            self._broadcast(
                {"channel": "heartbeats", "client_id": "",
                 "events": [{"current_time": stamp(now, 9), "heartbeat_counter": counter}]},
                channel="heartbeats",
            )  # fmt: skip

    def _stream(self, ws: Any) -> None:
        conn = _Conn(ws)
        with self._lock:
            self._conns.append(conn)
        threading.Thread(target=self._pump, args=(conn,), daemon=True).start()
        try:
            for raw in ws:
                request = json.loads(raw)
                if request.get("type") != "subscribe":
                    continue
                channel = request.get("channel")
                self.subscriptions.append(channel)
                if channel == "user":
                    if self._verify(request.get("jwt") or "") is None:
                        conn.queue.put({"type": "error", "message": "authentication failure"})
                        conn.queue.put(None)
                        return
                    conn.user = True
                elif channel == "heartbeats":
                    conn.heartbeats = True
                elif channel == "candles":
                    conn.candles = True
                subscribed = {channel: request.get("product_ids", [])}
                conn.queue.put({"channel": "subscriptions", "client_id": "",
                                "events": [{"subscriptions": subscribed}]})  # fmt: skip
        except ConnectionClosed:
            pass
        finally:
            conn.queue.put(None)

    def _pump(self, conn: _Conn) -> None:
        while True:
            message = conn.queue.get()
            if message is None:
                break
            conn.sequence += 1
            if "channel" in message:
                message = {**message, "timestamp": stamp(time.time_ns(), 9),
                           "sequence_num": conn.sequence}  # fmt: skip
            try:
                conn.ws.send(json.dumps(message))
            except ConnectionClosed:
                break
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        try:  # no close frame: the client sees an abnormal closure, as after a network drop
            conn.ws.socket.shutdown(2)
        except OSError:
            pass


def _created(order: FakeOrder, body: dict) -> dict:
    return {
        "success": True,
        "failure_reason": "UNKNOWN_FAILURE_REASON",
        "order_id": order.order_id,
        "success_response": {"order_id": order.order_id, "product_id": order.product_id,
                             "side": order.side, "client_order_id": order.client_order_id},
        "order_configuration": body["order_configuration"],
    }  # fmt: skip


def _failed(reason: str, message: str, body: dict) -> dict:
    return {
        "success": False,
        "failure_reason": "UNKNOWN_FAILURE_REASON",
        "order_id": "",
        "error_response": {"error": reason, "message": message, "error_details": message,
                           "new_order_failure_reason": reason},
        "order_configuration": body["order_configuration"],
    }  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall
    timeout = 5
    venue: FakeCoinbase

    def log_message(self, *args: Any) -> None:
        pass

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        status, headers, answer = self.venue.handle(method, self.path, self.headers, body)
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")
