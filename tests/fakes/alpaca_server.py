"""A fake Alpaca venue on 127.0.0.1 for alpaca-py: trading REST (/v2/...), market data bars, the
trade_updates WebSocket and the market data stream (msgpack bars, as StockDataStream reads them),
with a small matching engine and knobs for the faults we test.

Orders: market, limit, stop and trailing-stop (``trail_price`` or ``trail_percent``), simple or as
bracket, OTO and OCO classes, replaced with PATCH /v2/orders/{id}; refused with Alpaca's answers
(422 for a malformed order, a fractional quantity on anything but a DAY order or on a trailing
stop, or a replace of a final order; 403 for insufficient buying power and for a closing order
on shares another open closing order already holds, Alpaca's "insufficient qty available").

Two ways the market moves:

- ``set_price(symbol, price)``: a quote; market orders fill at it at once, resting orders when
  it reaches their level (unit tests of the adapter).
- ``replay=True``: the fake replays bars, told by the test in the same process what the runner
  replays. ``open_bar(ts_ns, opens)`` fills the market orders waiting for that open at the open
  moved by ``slippage_bps`` against the order; ``trade_bar(ts_ns, {symbol: (open, high, low)})``
  executes the resting orders the bar reaches by the fill model's intrabar rules
  (``live.paper.match_levels`` over ``check_levels_nb``: a gap through a level fills at the open,
  a stop and a target of one OCO order both reached fill the stop, a trailing stop follows the
  best price), each OCO order as one group and every other order on its own. The runner calls
  the same two hooks on its broker each cycle (no-ops on a real venue); a test forwards them to
  the fake, so the venue's market moves exactly with the bars the runner decides on.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from live.paper import market_fill, match_levels
from quantshift.engine.records import config_dt

TIMEFRAMES = ("1Min", "5Min", "15Min", "1Hour", "1Day")
SIDES = ("buy", "sell")
_FINAL = ("filled", "canceled", "expired", "rejected", "replaced")
_RESTING = ("limit", "stop", "trailing_stop")
_TIME_IN_FORCE = ("day", "gtc", "opg", "cls", "ioc", "fok")


def iso(ns: int) -> str:
    """RFC 3339 with nine fraction digits, the way Alpaca writes order timestamps."""
    whole = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC)
    return f"{whole:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000:09d}Z"


def _num(x: float | None) -> str | None:
    return None if x is None else f"{x:.10g}"


@dataclass
class Fault:
    """The next ``count`` requests matching ``method`` and ``path`` answer ``status`` (0: the
    real answer) after ``delay_s``; with ``land`` the request is carried out first (the answer
    is lost, the effect is not). ``body`` replaces the fault's answer: JSON, or ``bytes`` sent
    as they are (a malformed answer, even with status 200)."""

    method: str
    path: str
    status: int
    count: int = 1
    land: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: Any = None


@dataclass
class _Conn:
    ws: Any
    queue: queue.Queue = field(default_factory=queue.Queue)
    muted: bool = False
    drop: bool = False
    symbols: set = field(default_factory=set)


class FakeAlpaca:
    """The venue. ``url`` is the trading and data base URL, ``stream_url`` the WebSocket."""

    def __init__(
        self,
        *,
        key_id: str = "PKFAKEKEY0001",
        secret_key: str = "fake-secret-0123456789abcdef",
        account_number: str = "PA3FAKE00001",
        cash: float = 100_000.0,
        replay: bool = False,
        slippage_bps: float = 0.0,
    ) -> None:
        self.key_id, self.secret_key = key_id, secret_key
        self.account_number = account_number
        self.cash = cash
        self.lock = threading.RLock()
        self.prices: dict[str, float] = {}
        self.orders: dict[str, dict] = {}
        self.by_cid: dict[str, str] = {}
        self.activities: list[dict] = []
        self.positions: dict[str, float] = {}
        self.bars: dict[str, list[dict]] = {}
        self.news: list[dict] = []
        """Articles of GET /v1beta1/news, as the API writes them (see :meth:`add_news`)."""
        self.whole_shares_only: set[str] = set()
        self.clock = {"is_open": True, "next_open": "2024-01-03T09:30:00-05:00"}
        self.clock["next_close"] = "2024-01-02T16:00:00-05:00"
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, Any]] = []
        """(method, path, query or JSON body) of every request, in order."""
        self.forbid = False
        self.fill_parts = 1
        self.partial_qty: float | None = None
        self.duplicate_events = 1
        self.hold_events = False
        self.held: list[bytes] = []
        self.conns: list[_Conn] = []
        self.stream_connects = 0
        self.data_conns: list[_Conn] = []
        self.data_connects = 0
        self.replay = replay
        self.last_trade: dict[str, float] = {}
        """The last execution price per symbol: where a trailing stop's high-water mark starts
        when the bars replay (Alpaca starts it at the market when the order arrives)."""
        self._cfg = np.zeros(1, config_dt)
        self._cfg[0].slippage_rate = slippage_bps / 1e4  # Alpaca charges no commission
        self._http: ThreadingHTTPServer | None = None
        self._ws = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeAlpaca:
        fake = self

        class Handler(_Handler):
            venue = fake

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._ws = serve(self._stream, "127.0.0.1", 0)
        http = threading.Thread(target=self._http.serve_forever, args=(0.02,), daemon=True)
        http.start()
        threading.Thread(target=self._ws.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.drop_stream()
        self._http.shutdown()
        self._http.server_close()
        self._ws.shutdown()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self._ws.socket.getsockname()[1]}/stream"

    @property
    def data_stream_url(self) -> str:
        """The market data stream (the SDK's ``url_override``: Alpaca's path is /v2/{feed})."""
        return f"ws://127.0.0.1:{self._ws.socket.getsockname()[1]}/v2/iex"

    # ------------------------------------------------------------------ knobs
    def fail(self, method: str, path: str, status: int, **kwargs: Any) -> Fault:
        fault = Fault(method, path, status, **kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    def rate_limit(self, method: str, path: str, count: int, reset_in_s: int = 1) -> Fault:
        headers = {
            "X-RateLimit-Limit": "200",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(time.time()) + reset_in_s),
        }
        return self.fail(method, path, 429, count=count, headers=headers)

    def set_price(self, symbol: str, price: float) -> None:
        with self.lock:
            self.prices[symbol] = price
            for order in list(self.orders.values()):
                if order["symbol"] == symbol and order["status"] not in _FINAL:
                    self._try_fill(order)

    def open_bar(self, ts_ns: int, opens: dict[str, float]) -> None:
        """A replayed bar opened: fill the market orders waiting for it, in the order they came,
        at the open moved by the slippage against the order."""
        with self.lock:
            self.prices.update({s: float(p) for s, p in opens.items() if p == p})
            for order in list(self.orders.values()):
                price = self.prices.get(order["symbol"])
                if order["type"] == "market" and order["status"] not in _FINAL and price:
                    left = order["qty"] - order["filled_qty"]
                    self._fill(order, market_fill(order["side"], left, price, self._cfg[0])[0])

    def trade_bar(self, ts_ns: int, ranges: dict[str, tuple[float, float, float]]) -> None:
        """The rest of a replayed bar traded: execute the resting orders it reaches, an OCO
        order as one group, by the fill model's intrabar rules; trailing stops follow."""
        with self.lock:
            groups: dict[str, list[dict]] = {}
            for order in self.orders.values():
                if (order["type"] in _RESTING and order["status"] not in _FINAL
                        and order["status"] != "held" and order["symbol"] in ranges):  # fmt: skip
                    groups.setdefault(order["parent"] or order["id"], []).append(order)
            for legs in groups.values():
                open_, high, low = (float(x) for x in ranges[legs[0]["symbol"]])
                if open_ == open_:
                    self._match(legs, open_, high, low)

    def _match(self, legs: list[dict], open_: float, high: float, low: float) -> None:
        by_type = {o["type"]: o for o in legs}
        trailing = by_type.get("trailing_stop")
        if trailing is not None and trailing["hwm"] is None:
            trailing["hwm"] = open_  # a replay's first bar: the venue's mark is the open
        qty = max(o["qty"] - o["filled_qty"] for o in legs)
        done = match_levels(
            legs[0]["side"], qty, open_, high, low, self._cfg[0],
            stop_price=by_type["stop"]["stop_price"] if "stop" in by_type else None,
            limit_price=by_type["limit"]["limit_price"] if "limit" in by_type else None,
            trail_amount=None if trailing is None else _trail(trailing, trailing["hwm"]),
            best_price=None if trailing is None else trailing["hwm"],
        )  # fmt: skip
        if done.leg is None:
            if trailing is not None:
                trailing["hwm"] = done.best_price
            return
        self._fill(by_type[done.leg], done.price)

    def _fill(self, order: dict, price: float) -> None:
        """Execute what is left of ``order`` at ``price`` and start or cancel its legs."""
        self._execute(order, order["qty"] - order["filled_qty"], price)
        self._after_fill(order)

    def calls(self, method: str, path: str) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and p == path)

    def add_news(
        self, headline: str, symbols: list[str], created_at: str, *, summary: str = ""
    ) -> dict:
        """Publish an article with the fields the news API returns for each one."""
        with self.lock:
            article = {
                "id": 24_000_000 + len(self.news),
                "headline": headline,
                "author": "Fake Newswire",
                "created_at": created_at,
                "updated_at": created_at,
                "summary": summary,
                "content": "",
                "url": f"https://news.invalid/{len(self.news)}",
                "images": [],
                "symbols": list(symbols),
                "source": "benzinga",
            }
            self.news.append(article)
            return article

    def mute_stream(self) -> None:
        """Keep current stream connections open but send nothing more on them."""
        with self.lock:
            for conn in self.conns:
                conn.muted = True

    def drop_stream(self) -> None:
        with self.lock:
            for conn in self.conns:
                conn.drop = True

    def publish_bar(
        self, symbol: str, ts_ns: int, ohlcv: tuple[float, float, float, float, float], *,
        rest: bool = True, stream: bool = True,
    ) -> None:  # fmt: skip
        """A minute bar opening at ``ts_ns`` has closed: serve it on REST (``rest``) and send it
        to the data stream's subscribers of ``symbol`` (``stream``), as Alpaca does."""
        o, h, low, c, v = (float(x) for x in ohlcv)
        row = {"t": iso(ts_ns).replace(".000000000", ""), "o": o, "h": h, "l": low, "c": c,
               "v": v, "n": 1, "vw": c}  # fmt: skip
        with self.lock:
            if rest:
                rows = [r for r in self.bars.get(symbol, []) if _epoch(r["t"]) * 1e9 != ts_ns]
                self.bars[symbol] = sorted([*rows, row], key=lambda r: _epoch(r["t"]))
            if stream:
                wire = dict(row, T="b", S=symbol, t=msgpack.Timestamp.from_unix_nano(ts_ns))
                message = msgpack.packb([wire])
                for conn in self.data_conns:
                    if symbol in conn.symbols:
                        conn.queue.put(message)

    def drop_data_stream(self) -> None:
        """Close every market data stream connection (the SDK reconnects)."""
        with self.lock:
            for conn in self.data_conns:
                conn.drop = True

    def release_events(self, *, reverse: bool = False) -> None:
        with self.lock:
            held, self.held, self.hold_events = self.held, [], False
            for message in reversed(held) if reverse else held:
                self._broadcast(message)

    # ------------------------------------------------------------------ REST
    def handle(self, method: str, path: str, query: dict, headers, body: Any):
        with self.lock:
            self.requests.append((method, path, body if method in ("POST", "PATCH") else query))
            if (
                headers.get("APCA-API-KEY-ID") != self.key_id
                or headers.get("APCA-API-SECRET-KEY") != self.secret_key
            ):
                return 401, {}, {"code": 40110000, "message": "request is not authorized"}
            if self.forbid:
                return 403, {}, {"code": 40310000, "message": "access to this API is forbidden"}
            fault = next(
                (f for f in self.faults if f.count > 0 and (f.method, f.path) == (method, path)),
                None,
            )
            if fault is not None:
                fault.count -= 1
        answer = None
        if fault is None or fault.land or not fault.status:
            with self.lock:
                answer = self._route(method, path, query, body)
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)  # the client times out; the effect (if landed) stays
        if fault is not None and fault.status:
            body = {"code": fault.status, "message": "fault"} if fault.body is None else fault.body
            return fault.status, fault.headers, body
        return answer

    def _route(self, method: str, path: str, query: dict, body: Any):
        one = {k: v[-1] for k, v in query.items()}
        if (method, path) == ("GET", "/v2/account"):
            return 200, {}, self._account()
        if (method, path) == ("GET", "/v2/positions"):
            return 200, {}, [self._position(s, q) for s, q in self.positions.items() if q]
        if method == "GET" and path.startswith("/v2/assets/"):
            symbol = path.rsplit("/", 1)[1]
            return 200, {}, self._asset(symbol)
        if (method, path) == ("GET", "/v2/clock"):
            return 200, {}, {"timestamp": iso(time.time_ns()), **self.clock}
        if (method, path) == ("POST", "/v2/orders"):
            return self._submit(body)
        # Alpaca lists an order's legs only when asked for them nested (GET /v2/orders and
        # GET /v2/orders/{id} take ``nested``; by client order id does not): "Each order of
        # the group is reported as an independent order in GET /v2/orders endpoint. But if
        # you specify additional parameter nested=true, the order response will nest the
        # result to include child orders under the parent order with an array field legs"
        # (alpacahq/alpaca-docs content/trading/orders.md, Bracket Orders; the query
        # parameters in data/webapi/endpoints/orders.yaml; the order entity's ``legs``:
        # "When querying non-simple order_class orders in a nested style ... Otherwise, null",
        # alpaca-py trading/models.py).
        nested = str(one.get("nested", "false")).lower() == "true"
        if (method, path) == ("GET", "/v2/orders"):
            status = one.get("status", "open")
            found = [
                self._json(o, nested=nested)
                for o in self.orders.values()
                if (o["parent"] is None or not nested)
                and (status == "all" or (o["status"] in _FINAL) == (status == "closed"))
            ]
            return 200, {}, found[: int(one.get("limit", 50))]
        if (method, path) == ("GET", "/v2/orders:by_client_order_id"):
            oid = self.by_cid.get(one.get("client_order_id", ""))
            return self._found(oid, nested=False)
        if method == "GET" and path.startswith("/v2/orders/"):
            return self._found(path.rsplit("/", 1)[1], nested=nested)
        if method == "DELETE" and path.startswith("/v2/orders/"):
            return self._cancel(path.rsplit("/", 1)[1])
        if method == "PATCH" and path.startswith("/v2/orders/"):
            return self._replace(path.rsplit("/", 1)[1], body or {})
        if (method, path) == ("GET", "/v2/account/activities/FILL"):
            return 200, {}, self._activities(one)
        if (method, path) == ("GET", "/v2/stocks/bars"):
            return self._bars(one)
        if (method, path) == ("GET", "/v1beta1/news"):
            return self._news(one)
        if (method, path) == ("GET", "/v2/stocks/bars/latest"):
            symbol = one["symbols"]
            return (
                200,
                {},
                {"bars": {symbol: self.bars[symbol][-1]} if self.bars.get(symbol) else {}},
            )
        return 404, {}, {"code": 40410000, "message": "endpoint not found"}

    def _found(self, oid: str | None, *, nested: bool):
        if oid is None or oid not in self.orders:
            return 404, {}, {"code": 40410000, "message": "order not found"}
        return 200, {}, self._json(self.orders[oid], nested=nested)

    def _asset(self, symbol: str) -> dict:
        return {
            "id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415", "class": "us_equity",
            "exchange": "NASDAQ", "symbol": symbol, "name": symbol, "status": "active",
            "tradable": True, "marginable": True, "shortable": True, "easy_to_borrow": True,
            "fractionable": symbol not in self.whole_shares_only,
        }  # fmt: skip

    def _account(self) -> dict:
        value = sum(q * self.prices.get(s, 0.0) for s, q in self.positions.items())
        return {
            "id": "c8f1ef5d-edc0-4f23-9ee4-378f19cb92a4",
            "account_number": self.account_number,
            "status": "ACTIVE",
            "currency": "USD",
            "cash": _num(self.cash),
            "buying_power": _num(max(self.cash, 0.0)),
            "equity": _num(self.cash + value),
            "portfolio_value": _num(self.cash + value),
            "trading_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T15:00:00.000000Z",
        }

    def _position(self, symbol: str, qty: float) -> dict:
        price = self.prices.get(symbol, 0.0)
        return {
            "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
            "symbol": symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "avg_entry_price": _num(price),
            "qty": _num(qty),
            "side": "long" if qty > 0 else "short",
            "market_value": _num(qty * price),
            "cost_basis": _num(qty * price),
            "current_price": _num(price),
        }

    def _submit(self, body: dict):
        cid = body.get("client_order_id") or str(uuid.uuid4())
        if cid in self.by_cid:
            return 422, {}, {"code": 40010001, "message": "client_order_id must be unique"}
        refused = self._refusal(body)
        if refused is not None:
            return refused
        qty = float(body["qty"])
        price = self.prices.get(body["symbol"], 0.0)
        if body["side"] == "buy" and qty * price > self.cash and self._available(body) is None:
            return 403, {}, {"code": 40310000, "message": "insufficient buying power"}
        available = self._available(body)
        if available is not None and qty > available + 1e-9:
            message = f"insufficient qty available for order (requested: {qty:g}, " \
                      f"available: {max(available, 0.0):g})"  # fmt: skip
            return 403, {}, {"code": 40310000, "message": message}
        if body.get("order_class") == "oco":
            body = dict(body, limit_price=body["take_profit"]["limit_price"])
        order = self._new_order(body, cid, qty, parent=None)
        if body.get("order_class") == "oco":
            # "the take-profit order shows up as the parent order while the stop-loss order
            # appears as a child order" (alpacahq/alpaca-docs content/trading/orders.md, OCO
            # Orders). The child gets an order id and a client order id of Alpaca's own: a
            # client_order_id given for a leg is ignored (alpacahq/Alpaca-API#115,
            # alpacahq/alpaca-trade-api-csharp#617).
            stop = {"symbol": body["symbol"], "side": body["side"], "type": "stop",
                    "stop_price": body["stop_loss"]["stop_price"],
                    "time_in_force": body.get("time_in_force")}  # fmt: skip
            leg = self._new_order(stop, str(uuid.uuid4()), qty, order["id"])
            leg["status"] = "new"
            order["legs"].append(leg["id"])
        # The answer to POST carries the legs: "commonly observed but not clearly documented"
        # (QuantConnect/Lean.Brokerages.Alpaca#74); a client that needs them asks nested.
        snapshot = self._json(order)
        self._try_fill(order)
        return 200, {}, snapshot

    def _refusal(self, body: dict):
        """Alpaca's 422 for an order it will not take (None: it takes it)."""

        def no(message: str):
            return 422, {}, {"code": 40010001, "message": message}

        kind = body.get("type")
        try:
            qty = float(body.get("qty") or 0)
        except (TypeError, ValueError):
            return no("invalid qty")
        if kind not in ("market", *_RESTING) or qty <= 0 or body.get("side") not in SIDES:
            return no("invalid order request")
        if body.get("time_in_force", "day") not in _TIME_IN_FORCE:
            return no("invalid time_in_force")
        if kind in ("limit", "stop") and body.get(f"{kind}_price") is None:
            if not (kind == "limit" and body.get("order_class") == "oco"):
                return no(f"{kind}_price is required")
        if kind == "trailing_stop":
            given = [k for k in ("trail_price", "trail_percent") if body.get(k) is not None]
            if len(given) != 1:
                return no(
                    "trailing stop orders require exactly one of trail_price or trail_percent"
                )
            if float(body[given[0]]) <= 0:
                return no(f"{given[0]} must be > 0")
        if qty != int(qty):
            if body.get("time_in_force", "day") != "day":
                return no("fractional orders must be DAY orders")
            if kind == "trailing_stop" or body.get("order_class"):
                return no("fractional orders are not supported for this order type or class")
        if body.get("order_class") == "oco":
            if kind != "limit" or not body.get("take_profit") or not body.get("stop_loss"):
                return no("oco orders require type limit, take_profit and stop_loss")
        return None

    def _available(self, body: dict) -> float | None:
        """Shares an order closing a position may still take when open closing orders hold
        some: the position less what they hold (the legs of one bracket or OCO order hold the
        same shares once). None if nothing holds any or the order opens or adds to a
        position."""
        held_now = self.positions.get(body["symbol"], 0.0)
        sign = 1.0 if body["side"] == "buy" else -1.0
        if abs(held_now) < 1e-9 or sign * held_now > 0:
            return None
        held: dict[str, float] = {}
        for order in self.orders.values():
            if (order["symbol"] == body["symbol"] and order["side"] == body["side"]
                    and order["status"] not in _FINAL and order["status"] != "held"):  # fmt: skip
                key = order["parent"] or order["id"]
                held[key] = max(held.get(key, 0.0), order["qty"] - order["filled_qty"])
        return abs(held_now) - sum(held.values()) if held else None

    def _new_order(self, body: dict, cid: str, qty: float, parent: str | None) -> dict:
        now = time.time_ns()
        order = {
            "id": str(uuid.uuid4()),
            "client_order_id": cid,
            "symbol": body["symbol"],
            "side": body["side"],
            "type": body["type"],
            "qty": qty,
            "filled_qty": 0.0,
            "notional_filled": 0.0,
            "limit_price": body.get("limit_price"),
            "stop_price": body.get("stop_price"),
            "time_in_force": body.get("time_in_force", "day"),
            "order_class": body.get("order_class") or "",
            "take_profit": body.get("take_profit"),
            "stop_loss": body.get("stop_loss"),
            "trail_price": body.get("trail_price"),
            "trail_percent": body.get("trail_percent"),
            "hwm": None,
            "replaces": body.get("replaces"),
            "replaced_by": None,
            "status": "accepted",
            "created_ns": now,
            "updated_ns": now,
            "filled_ns": None,
            "parent": parent,
            "legs": [],
            "stuck": False,
        }
        self.orders[order["id"]] = order
        self.by_cid[cid] = order["id"]
        return order

    def _try_fill(self, order: dict) -> None:
        price = self.prices.get(order["symbol"])
        if price is None or order["stuck"] or order["status"] in (*_FINAL, "held"):
            return
        kind, buy = order["type"], order["side"] == "buy"
        if self.replay:  # the bars execute orders: open_bar and trade_bar
            order["status"] = "new" if kind in _RESTING else order["status"]
            if kind == "trailing_stop" and order["hwm"] is None:
                # "keep track of the highest (for sell, lowest for buy) prices (called high
                # water mark, or hwm) since the order was submitted" (alpacahq/alpaca-docs
                # content/trading/orders.md): it starts at the market's last trade.
                order["hwm"] = self.last_trade.get(order["symbol"], price)
            return
        limit, stop = order["limit_price"], order["stop_price"]
        if kind == "trailing_stop":
            hwm = order["hwm"] = (price if order["hwm"] is None
                                  else (min if buy else max)(order["hwm"], price))  # fmt: skip
            stop = hwm + (1.0 if buy else -1.0) * _trail(order, hwm)
        if kind == "limit" and (price > limit if buy else price < limit):
            order["status"] = "new"
            return
        if kind in ("stop", "trailing_stop") and (price < stop if buy else price > stop):
            order["status"] = "new"
            return
        left = order["qty"] - order["filled_qty"]
        if self.partial_qty is not None and order["parent"] is None:
            left, order["stuck"], self.partial_qty = min(self.partial_qty, left), True, None
        parts = max(1, self.fill_parts)
        for i in range(parts):
            self._execute(order, left / parts if i < parts - 1 else left - left / parts * i, price)
        if order["status"] == "filled":
            self._after_fill(order)

    def _execute(self, order: dict, qty: float, price: float) -> None:
        now = time.time_ns()
        order["filled_qty"] += qty
        order["notional_filled"] += qty * price
        done = order["filled_qty"] >= order["qty"] - 1e-12
        order["status"] = "filled" if done else "partially_filled"
        order["updated_ns"], order["filled_ns"] = now, now
        sign = 1.0 if order["side"] == "buy" else -1.0
        self.last_trade[order["symbol"]] = price
        self.positions[order["symbol"]] = self.positions.get(order["symbol"], 0.0) + sign * qty
        self.cash -= sign * qty * price
        ms = datetime.fromtimestamp(now / 1e9, tz=UTC).strftime("%Y%m%d%H%M%S%f")[:17]
        event = "fill" if done else "partial_fill"
        self.activities.append(
            {
                "id": f"{ms}::{uuid.uuid4()}",
                "activity_type": "FILL",
                "transaction_time": iso(now),
                "type": event,
                "price": _num(price),
                "qty": _num(qty),
                "side": order["side"],
                "symbol": order["symbol"],
                "leaves_qty": _num(order["qty"] - order["filled_qty"]),
                "order_id": order["id"],
                "cum_qty": _num(order["filled_qty"]),
                "order_status": order["status"],
            }
        )
        message = {
            "stream": "trade_updates",
            "data": {
                "event": event,
                "execution_id": str(uuid.uuid4()),
                "order": self._json(order, nested=False),  # a leg's event names the leg
                "timestamp": iso(now),
                "position_qty": _num(self.positions[order["symbol"]]),
                "price": _num(price),
                "qty": _num(qty),
            },
        }
        encoded = json.dumps(message).encode()
        if self.hold_events:
            self.held.append(encoded)
        else:
            self._broadcast(encoded)

    def _after_fill(self, order: dict) -> None:
        """Bracket / OTO legs start working once the entry fills; OCO legs cancel each other."""
        if order["order_class"] in ("bracket", "oto"):
            exit_side = "sell" if order["side"] == "buy" else "buy"
            legs = []
            if order["take_profit"]:
                tp = {"type": "limit", "limit_price": order["take_profit"]["limit_price"]}
                legs.append(tp)
            if order["stop_loss"]:
                legs.append({"type": "stop", "stop_price": order["stop_loss"]["stop_price"]})
            for spec in legs:
                body = {"symbol": order["symbol"], "side": exit_side, **spec}
                leg = self._new_order(body, str(uuid.uuid4()), order["qty"], order["id"])
                order["legs"].append(leg["id"])
            for leg_id in order["legs"]:
                self._try_fill(self.orders[leg_id])
        elif order["parent"] is not None:
            parent = self.orders[order["parent"]]
            for sibling in [parent["id"], *parent["legs"]] if parent["order_class"] == "oco" \
                    else parent["legs"]:  # fmt: skip
                if self.orders[sibling]["status"] not in _FINAL:
                    self.orders[sibling]["status"] = "canceled"
        elif order["order_class"] == "oco" and order["status"] == "filled":
            for leg in order["legs"]:
                if self.orders[leg]["status"] not in _FINAL:
                    self.orders[leg]["status"] = "canceled"

    def _cancel(self, oid: str):
        order = self.orders.get(oid)
        if order is None:
            return 404, {}, {"code": 40410000, "message": "order not found"}
        if order["status"] in _FINAL:
            return 422, {}, {"code": 42210000, "message": f"order is already in {order['status']}"}
        if order["parent"] is not None and self.orders[order["parent"]]["order_class"] == "oco":
            order = self.orders[order["parent"]]  # cancelling one leg of an OCO cancels both
        order["status"], order["updated_ns"] = "canceled", time.time_ns()
        for leg in order["legs"]:
            if self.orders[leg]["status"] not in _FINAL:
                self.orders[leg]["status"] = "canceled"
        return 204, {}, None

    def _replace(self, oid: str, body: dict):
        """PATCH /v2/orders/{id}: a new order with the new level (quantity, time in force,
        client order id), the old one ``replaced``; a final order is not replaceable."""
        order = self.orders.get(oid)
        if order is None:
            return 404, {}, {"code": 40410000, "message": "order not found"}
        if order["status"] in _FINAL or order["type"] == "market":
            return 422, {}, {"code": 42210000, "message": f"order is not replaceable "
                                                         f"(status {order['status']})"}  # fmt: skip
        cid = body.get("client_order_id") or str(uuid.uuid4())
        if cid in self.by_cid:
            return 422, {}, {"code": 40010001, "message": "client_order_id must be unique"}
        new = {k: order[k] for k in ("symbol", "side", "type", "limit_price", "stop_price",
                                     "time_in_force", "trail_price", "trail_percent")}  # fmt: skip
        for key in ("limit_price", "stop_price", "time_in_force"):
            if body.get(key) is not None:
                new[key] = body[key]
        if body.get("trail") is not None:
            new["trail_price" if order["trail_price"] is not None else "trail_percent"] = \
                body["trail"]  # fmt: skip
        qty = float(body["qty"]) if body.get("qty") is not None else order["qty"]
        replacement = self._new_order(dict(new, replaces=oid), cid, qty, order["parent"])
        replacement["hwm"] = order["hwm"]
        if order["parent"] is not None:
            parent = self.orders[order["parent"]]
            parent["legs"] = [replacement["id"] if x == oid else x for x in parent["legs"]]
        order["status"], order["replaced_by"] = "replaced", replacement["id"]
        order["updated_ns"] = time.time_ns()
        snapshot = self._json(replacement)
        self._try_fill(replacement)
        return 200, {}, snapshot

    def _json(self, order: dict, *, nested: bool = True) -> dict:
        filled = order["filled_qty"]
        avg = order["notional_filled"] / filled if filled else None
        return {
            "id": order["id"],
            "client_order_id": order["client_order_id"],
            "created_at": iso(order["created_ns"]),
            "updated_at": iso(order["updated_ns"]),
            "submitted_at": iso(order["created_ns"]),
            "filled_at": iso(order["filled_ns"]) if order["status"] == "filled" else None,
            "expired_at": None,
            "canceled_at": iso(order["updated_ns"]) if order["status"] == "canceled" else None,
            "failed_at": None,
            "replaced_at": iso(order["updated_ns"]) if order["status"] == "replaced" else None,
            "replaced_by": order["replaced_by"],
            "replaces": order["replaces"],
            "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
            "symbol": order["symbol"],
            "asset_class": "us_equity",
            "notional": None,
            "qty": _num(order["qty"]),
            "filled_qty": _num(filled),
            "filled_avg_price": _num(avg),
            "order_class": order["order_class"],
            "order_type": order["type"],
            "type": order["type"],
            "side": order["side"],
            "time_in_force": order["time_in_force"],
            "limit_price": _num(order["limit_price"]),
            "stop_price": _num(_stop_price(order)),
            "status": order["status"],
            "extended_hours": False,
            "legs": (nested and [self._json(self.orders[leg]) for leg in order["legs"]]) or None,
            "trail_percent": _num(order["trail_percent"]),
            "trail_price": _num(order["trail_price"]),
            "hwm": _num(order["hwm"]),
        }

    def _activities(self, q: dict) -> list[dict]:
        rows = sorted(self.activities, key=lambda a: a["id"], reverse=q.get("direction") != "asc")
        if "after" in q:
            after = datetime.fromisoformat(q["after"].replace("Z", "+00:00")).timestamp()
            rows = [a for a in rows if _epoch(a["transaction_time"]) > after]
        if "page_token" in q:
            token = q["page_token"]
            asc = q.get("direction") == "asc"
            rows = [a for a in rows if (a["id"] > token if asc else a["id"] < token)]
        return rows[: int(q.get("page_size", 100))]

    def _bars(self, q: dict):
        if q.get("timeframe") not in TIMEFRAMES:
            return 400, {}, {"code": 40010001, "message": "invalid timeframe"}
        symbol = q["symbols"]
        start, end = _epoch(q["start"]), _epoch(q["end"])
        rows = [b for b in self.bars.get(symbol, []) if start <= _epoch(b["t"]) <= end]
        offset = int(base64.b64decode(q["page_token"]).decode()) if q.get("page_token") else 0
        limit = int(q.get("limit") or 10_000)
        page = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        token = base64.b64encode(str(offset + limit).encode()).decode() if more else None
        return 200, {}, {"bars": {symbol: page} if page else {}, "next_page_token": token}

    def _news(self, q: dict):
        """The news API's filters and paging: symbols (comma-separated, any match), start and
        end (inclusive, on created_at), sort (desc by default), limit (at most 50)."""
        limit = int(q.get("limit") or 10)
        if not 1 <= limit <= 50:
            return 400, {}, {"code": 40010001, "message": "limit must be between 1 and 50"}
        wanted = set(filter(None, q.get("symbols", "").split(",")))
        start = _epoch(q["start"]) if q.get("start") else float("-inf")
        end = _epoch(q["end"]) if q.get("end") else float("inf")
        rows = [
            a
            for a in self.news
            if (not wanted or wanted & set(a["symbols"]))
            and start <= _epoch(a["created_at"]) <= end
        ]
        rows.sort(key=lambda a: (_epoch(a["created_at"]), a["id"]), reverse=q.get("sort") != "asc")
        offset = int(base64.b64decode(q["page_token"]).decode()) if q.get("page_token") else 0
        page = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        token = base64.b64encode(str(offset + limit).encode()).decode() if more else None
        return 200, {}, {"news": page, "next_page_token": token}

    # ------------------------------------------------------------------ stream
    def _broadcast(self, message: bytes) -> None:
        for conn in self.conns:
            if not conn.muted:
                for _ in range(self.duplicate_events):
                    conn.queue.put(message)

    def _stream(self, ws) -> None:
        if ws.request.path.startswith("/v2/"):
            self._data_stream(ws)
            return
        try:
            hello = json.loads(ws.recv(timeout=5))
            data = hello.get("data", {})
            ok = hello.get("action") == "authenticate" and (
                data.get("key_id"),
                data.get("secret_key"),
            ) == (self.key_id, self.secret_key)
            status = "authorized" if ok else "unauthorized"
            reply = {
                "stream": "authorization",
                "data": {"action": "authenticate", "status": status},
            }
            ws.send(json.dumps(reply).encode())
            if not ok:
                return
            listen = json.loads(ws.recv(timeout=5))
            streams = listen.get("data", {}).get("streams", [])
            ws.send(json.dumps({"stream": "listening", "data": {"streams": streams}}).encode())
            conn = _Conn(ws)
            with self.lock:
                self.conns.append(conn)
                self.stream_connects += 1
            try:
                self._pump(conn)
            finally:
                with self.lock:
                    self.conns.remove(conn)
        except (ConnectionClosed, TimeoutError):
            return

    def _data_stream(self, ws) -> None:
        """Alpaca's market data protocol: connected, auth, subscribe, then msgpack frames."""
        try:
            ws.send(msgpack.packb([{"T": "success", "msg": "connected"}]))
            auth = msgpack.unpackb(ws.recv(timeout=5))
            if (auth.get("action"), auth.get("key"), auth.get("secret")) != (
                "auth", self.key_id, self.secret_key,
            ):  # fmt: skip
                ws.send(msgpack.packb([{"T": "error", "code": 402, "msg": "auth failed"}]))
                return
            ws.send(msgpack.packb([{"T": "success", "msg": "authenticated"}]))
            subscribe = msgpack.unpackb(ws.recv(timeout=5))
            symbols = list(subscribe.get("bars", []))
            ws.send(msgpack.packb([{"T": "subscription", "trades": [], "quotes": [],
                                    "bars": symbols}]))  # fmt: skip
            conn = _Conn(ws)
            conn.symbols = set(symbols)
            with self.lock:
                self.data_conns.append(conn)
                self.data_connects += 1
            try:
                self._pump(conn)
            finally:
                with self.lock:
                    self.data_conns.remove(conn)
        except (ConnectionClosed, TimeoutError):
            return

    def _pump(self, conn: _Conn) -> None:
        while not conn.drop:
            try:
                conn.ws.recv(timeout=0.01)
            except TimeoutError:
                pass
            while not conn.queue.empty():
                message = conn.queue.get_nowait()
                if not conn.muted:
                    conn.ws.send(message)
        conn.ws.close()


def _stop_price(order: dict) -> float | None:
    """A trailing stop's stop price is "derived from hwm and trail parameter, and continuously
    updates as hwm changes" (alpacahq/alpaca-docs content/trading/orders.md, Trailing Stop
    Orders): ``hwm - trail`` for a sell, ``hwm + trail`` for a buy."""
    if order["type"] != "trailing_stop" or order["hwm"] is None:
        return order["stop_price"]
    sign = 1.0 if order["side"] == "buy" else -1.0
    return order["hwm"] + sign * _trail(order, order["hwm"])


def _trail(order: dict, hwm: float) -> float:
    """A trailing stop's distance in price units (``trail_percent`` is of the high-water mark)."""
    if order["trail_price"] is not None:
        return float(order["trail_price"])
    return hwm * float(order["trail_percent"]) / 100.0


def _epoch(text: str) -> float:
    text = text.replace("Z", "+00:00")
    if "." in text:
        main, rest = text.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = main + "." + rest[: min(digits, 6)] + rest[digits:]
    return datetime.fromisoformat(text).timestamp()


class _Handler(BaseHTTPRequestHandler):
    venue: FakeAlpaca

    def log_message(self, *args: Any) -> None:
        pass

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        status, headers, payload = self.venue.handle(
            method, parts.path, parse_qs(parts.query), self.headers, body
        )
        if isinstance(payload, bytes):
            data = payload
        else:
            data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")
