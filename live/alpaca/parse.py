"""Pure translations between Alpaca's JSON / alpaca-py models and the broker contract's objects:
orders, fills, account, positions, clock, bars and order requests. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from alpaca.trading import enums as sdk_enums
from alpaca.trading import requests as sdk_requests
from alpaca.trading.models import Clock, Order, Position, TradeAccount, TradeUpdate

from live.broker import Account, BrokerFill, BrokerOrder, OrderRequest, OrderStatus

VENUE = "alpaca"
BAR_COLUMNS = ("ts_ns", "open", "high", "low", "close", "volume")

_STATUS = {
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "expired": OrderStatus.CANCELLED,
    "replaced": OrderStatus.CANCELLED,
    "rejected": OrderStatus.REJECTED,
}
"""Alpaca statuses that say something definite. Every other one (new, accepted, pending_new,
held, pending_cancel, done_for_day, calculated, stopped, suspended, ...) leaves the order
working, so it maps to OPEN or PARTIALLY_FILLED by the filled quantity: an unknown future
status is never taken for a final one."""

_TYPES = {"stop_limit": "stop"}
"""Alpaca order types without a twin in ours (market, limit, stop and trailing_stop keep their
names)."""
_FILL_EVENTS = ("fill", "partial_fill")


@dataclass(frozen=True, kw_only=True)
class MarketClock:
    """The US equity market clock (all times UTC)."""

    is_open: bool
    next_open: datetime
    next_close: datetime
    timestamp: datetime


def ts_ns(value: datetime | str) -> int:
    """Return UTC nanoseconds of an RFC 3339 string (keeping all nine fraction digits) or of an
    aware datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{VENUE}: naive timestamp {value!r}")
        delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    text = value.strip().replace("Z", "+00:00")
    main, fraction, offset = text, "", ""
    if "." in text:
        main, rest = text.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, offset = rest[:digits], rest[digits:]
    else:
        main, offset = text[:19], text[19:]
    whole = datetime.fromisoformat(main + (offset or "+00:00"))
    return ts_ns(whole) + int((fraction + "000000000")[:9])


def to_datetime(ns: int) -> datetime:
    """UTC datetime of nanoseconds (microsecond precision, what the SDK sends)."""
    return datetime.fromtimestamp(ns // 1000 / 1e6, tz=UTC)


def _value(x: Any) -> str:
    return x.value if hasattr(x, "value") else str(x)


def _float(x: Any, default: float = 0.0) -> float:
    return default if x is None or x == "" else float(x)


def order_status(status: str, filled_qty: float) -> str:
    """Map Alpaca's order status (and the filled quantity) to ``OrderStatus``."""
    mapped = _STATUS.get(status)
    if mapped is not None:
        return mapped
    return OrderStatus.PARTIALLY_FILLED if filled_qty > 0 else OrderStatus.OPEN


def order_from_model(order: Order) -> BrokerOrder:
    """An alpaca-py ``Order`` as a ``BrokerOrder`` (fees are 0: Alpaca charges no commission
    on equities; regulatory fees arrive later as separate activities)."""
    filled = _float(order.filled_qty)
    avg = _float(order.filled_avg_price, default=math.nan)
    kind = _value(order.type or order.order_type)
    return BrokerOrder(
        client_order_id=order.client_order_id,
        venue_order_id=str(order.id),
        symbol=order.symbol or "",
        side=_value(order.side),
        qty=_float(order.qty),
        order_type=_TYPES.get(kind, kind),
        status=order_status(_value(order.status), filled),
        filled_qty=filled,
        avg_fill_price=None if filled <= 0 or math.isnan(avg) else avg,
        fees=0.0,
        ts_updated_ns=ts_ns(order.updated_at),
        stop_price=_level(order.stop_price),
        limit_price=_level(order.limit_price),
        trail_amount=_level(order.trail_price),
        trail_best_price=_level(order.hwm),
    )


def _level(x: Any) -> float | None:
    return None if x is None or x == "" else float(x)


def account_from_model(account: TradeAccount) -> Account:
    """Cash, equity and buying power of an alpaca-py ``TradeAccount``."""
    return Account(
        cash=_float(account.cash),
        equity=_float(account.equity),
        buying_power=_float(account.buying_power),
        currency=account.currency or "USD",
    )


def is_paper_account(account: TradeAccount) -> bool:
    """True for a paper account: Alpaca numbers them ``PA...``."""
    return str(account.account_number).upper().startswith("PA")


def positions_from_models(positions: Iterable[Position]) -> dict[str, float]:
    """Net signed shares per symbol (short positions negative, zero positions dropped)."""
    out: dict[str, float] = {}
    for p in positions:
        qty = abs(float(p.qty))
        signed = -qty if _value(p.side) == "short" else qty
        if signed != 0:
            out[p.symbol] = out.get(p.symbol, 0.0) + signed
    return out


def clock_from_model(clock: Clock) -> MarketClock:
    return MarketClock(
        is_open=bool(clock.is_open),
        next_open=clock.next_open.astimezone(UTC),
        next_close=clock.next_close.astimezone(UTC),
        timestamp=clock.timestamp.astimezone(UTC),
    )


def fill_id(venue_order_id: str, cum_qty: float) -> str:
    """The id of one execution: the venue order id and the cumulative quantity after it.

    The trade stream calls an execution ``execution_id`` and the activities endpoint gives it
    a different ``id``; both carry the order id and the cumulative filled quantity, which is
    strictly increasing per order, so this key is the same whichever source saw it first.
    """
    return f"{venue_order_id}:{float(cum_qty):.9g}"


def fill_from_trade_update(
    data: Mapping[str, Any], owner: Callable[[Order], str] | None = None
) -> BrokerFill | None:
    """The execution carried by a ``trade_updates`` message's ``data`` (None for events that
    are not fills: new, canceled, ...), under the client order id ``owner`` names for the
    executed order (default: the order's own; a protective leg's is not, see
    ``live.alpaca.fills.Fills``)."""
    if data.get("event") not in _FILL_EVENTS:
        return None
    update = TradeUpdate(**data)
    order = update.order
    return BrokerFill(
        fill_id=fill_id(str(order.id), _float(order.filled_qty)),
        client_order_id=order.client_order_id if owner is None else owner(order),
        symbol=order.symbol or "",
        side=_value(order.side),
        qty=float(update.qty),
        price=float(update.price),
        fee=0.0,
        ts_fill_ns=ts_ns(data["timestamp"]),
    )


def fill_from_activity(activity: Mapping[str, Any], client_order_id: str) -> BrokerFill:
    """A ``FILL`` account activity as a fill (activities carry the venue order id only; the
    caller looks up ``client_order_id``)."""
    return BrokerFill(
        fill_id=fill_id(str(activity["order_id"]), float(activity["cum_qty"])),
        client_order_id=client_order_id,
        symbol=str(activity["symbol"]),
        side=str(activity["side"]).replace("sell_short", "sell"),
        qty=float(activity["qty"]),
        price=float(activity["price"]),
        fee=0.0,
        ts_fill_ns=ts_ns(activity["transaction_time"]),
    )


def bars_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Alpaca bar objects (``t, o, h, l, c, v``) as our bar columns, ascending by ``ts_ns``."""
    rows = list(rows)
    frame = pd.DataFrame(
        {
            "ts_ns": np.array([ts_ns(r["t"]) for r in rows], dtype=np.int64),
            "open": np.array([r["o"] for r in rows], dtype=np.float64),
            "high": np.array([r["h"] for r in rows], dtype=np.float64),
            "low": np.array([r["l"] for r in rows], dtype=np.float64),
            "close": np.array([r["c"] for r in rows], dtype=np.float64),
            "volume": np.array([r["v"] for r in rows], dtype=np.float64),
        },
        columns=list(BAR_COLUMNS),
    )
    return frame.sort_values("ts_ns", kind="stable").reset_index(drop=True)


def order_request_to_sdk(request: OrderRequest) -> sdk_requests.OrderRequest:
    """Our ``OrderRequest`` as alpaca-py's request model; stop-loss and take-profit make a
    ``bracket`` (both legs) or an ``oto`` (one leg) order. A trailing stop trails by
    ``trail_amount`` (Alpaca's ``trail_price``) from the venue's own high-water mark: Alpaca
    takes no starting price, so ``trail_from_price`` is not sent."""
    common: dict[str, Any] = {
        "symbol": request.symbol,
        "qty": request.qty,
        "side": sdk_enums.OrderSide(request.side),
        "time_in_force": sdk_enums.TimeInForce(request.time_in_force),
        "client_order_id": request.client_order_id,
    }
    legs = (request.take_profit_price, request.stop_loss_price)
    if any(v is not None for v in legs):
        both = all(v is not None for v in legs)
        common["order_class"] = sdk_enums.OrderClass.BRACKET if both else sdk_enums.OrderClass.OTO
        if request.take_profit_price is not None:
            common["take_profit"] = sdk_requests.TakeProfitRequest(
                limit_price=request.take_profit_price
            )
        if request.stop_loss_price is not None:
            common["stop_loss"] = sdk_requests.StopLossRequest(stop_price=request.stop_loss_price)
    if request.order_type == "limit":
        return sdk_requests.LimitOrderRequest(limit_price=request.limit_price, **common)
    if request.order_type == "stop":
        return sdk_requests.StopOrderRequest(stop_price=request.stop_price, **common)
    if request.order_type == "trailing_stop":
        return sdk_requests.TrailingStopOrderRequest(trail_price=request.trail_amount, **common)
    return sdk_requests.MarketOrderRequest(**common)


def replace_request_to_sdk(
    current: BrokerOrder, request: OrderRequest
) -> sdk_requests.ReplaceOrderRequest:
    """The PATCH that moves the resting order ``current`` to ``request``'s level (and client
    order id). Alpaca replaces the level, quantity (whole shares) and time in force of an
    order, never its symbol, side or type.

    Raises
    ------
    ValueError
        If ``request`` differs from ``current`` in what Alpaca cannot replace.
    """
    where = f"replace {current.client_order_id} by {request.client_order_id}"
    for name in ("symbol", "side", "order_type"):
        if getattr(request, name) != getattr(current, name):
            raise ValueError(f"{where}: Alpaca cannot replace an order's {name}")
    fields: dict[str, Any] = {
        "client_order_id": request.client_order_id,
        "time_in_force": sdk_enums.TimeInForce(request.time_in_force),
    }
    if not math.isclose(request.qty, current.qty, rel_tol=0.0, abs_tol=1e-9):
        if request.qty != int(request.qty):
            raise ValueError(f"{where}: Alpaca replaces a quantity in whole shares only")
        fields["qty"] = int(request.qty)
    level = {"limit": ("limit_price", request.limit_price),
             "stop": ("stop_price", request.stop_price),
             "trailing_stop": ("trail", request.trail_amount)}.get(request.order_type)  # fmt: skip
    if level is None:
        raise ValueError(f"{where}: only a resting (limit, stop, trailing stop) order is replaced")
    fields[level[0]] = level[1]
    return sdk_requests.ReplaceOrderRequest(**fields)


def protection_to_sdk(venue_id: str, requests: list[OrderRequest]) -> sdk_requests.OrderRequest:
    """One position's protective legs as the one closing order Alpaca takes for its shares:
    a stop and a target as an ``oco`` order (the take-profit limit carries the stop-loss leg),
    one leg as itself, all good till cancelled, under the client order id ``venue_id``.

    Raises
    ------
    ValueError
        If the legs cannot be one Alpaca order: a trailing stop beside a stop or a target (it
        cannot join an OCO; the adapter folds it into the stop first, ``live.alpaca.trailing``),
        or legs of different symbols, sides or quantities.
    """
    first = requests[0]
    by_kind = {r.order_type: r for r in requests}
    if len(by_kind) != len(requests) or any(
        (r.symbol, r.side, r.qty) != (first.symbol, first.side, first.qty) for r in requests
    ):
        raise ValueError(f"{venue_id}: the legs of one position differ in symbol, side or qty")
    if "trailing_stop" in by_kind and len(by_kind) > 1:
        raise ValueError(
            f"{venue_id}: a trailing stop cannot rest beside a stop or a take-profit at Alpaca "
            "(one closing order per position, and an OCO takes a limit and a stop only)"
        )
    if set(by_kind) != {"stop", "limit"}:
        return order_request_to_sdk(_renamed(first, venue_id))
    return sdk_requests.LimitOrderRequest(
        symbol=first.symbol,
        qty=first.qty,
        side=sdk_enums.OrderSide(first.side),
        time_in_force=sdk_enums.TimeInForce(first.time_in_force),
        client_order_id=venue_id,
        order_class=sdk_enums.OrderClass.OCO,
        take_profit=sdk_requests.TakeProfitRequest(limit_price=by_kind["limit"].limit_price),
        stop_loss=sdk_requests.StopLossRequest(stop_price=by_kind["stop"].stop_price),
    )


def _renamed(request: OrderRequest, client_order_id: str) -> OrderRequest:
    fields = {f: getattr(request, f) for f in request.__dataclass_fields__}
    return OrderRequest(**(fields | {"client_order_id": client_order_id}))


def leg_from_model(order: Order, leg: str, client_order_id: str) -> BrokerOrder | None:
    """The protective leg ``leg`` of the venue order ``order`` that carries a position's
    protection (``protection_to_sdk``), as a ``BrokerOrder`` under the leg's own client order
    id; None if that order has no such leg."""
    parts = [order, *(order.legs or [])]
    found = next((o for o in parts if _TYPES.get(k := _value(o.type or o.order_type), k) == leg),
                 None)  # fmt: skip
    if found is None:
        return None
    view = order_from_model(found)
    fields = {f: getattr(view, f) for f in view.__dataclass_fields__}
    return BrokerOrder(**(fields | {"client_order_id": client_order_id,
                                    "oco_group": client_order_id[:-1]}))  # fmt: skip
