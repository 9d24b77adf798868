"""Pure translations between Coinbase Advanced Trade JSON and our broker vocabulary: orders,
fills, balances, create/cancel answers, user-channel events, candles and timestamps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from live.broker import BrokerFill, BrokerOrder, OrderRequest, OrderStatus
from live.streaming import StreamedBar

VENUE_SIDES = {"buy": "BUY", "sell": "SELL"}
GRANULARITIES = {
    "1m": ("ONE_MINUTE", 60),
    "5m": ("FIVE_MINUTE", 300),
    "15m": ("FIFTEEN_MINUTE", 900),
    "1h": ("ONE_HOUR", 3600),
    "1d": ("ONE_DAY", 86_400),
}
"""Our timeframe -> (Coinbase granularity, seconds)."""
BAR_COLUMNS = ("ts_ns", "open", "high", "low", "close", "volume")

_FINAL_STATUS = {
    "FILLED": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELLED,
    "EXPIRED": OrderStatus.CANCELLED,
    "FAILED": OrderStatus.REJECTED,
}
_LIVE_STATUS = {"PENDING", "OPEN", "QUEUED", "CANCEL_QUEUED", "UNKNOWN_ORDER_STATUS"}
_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


# ----------------------------------------------------------------------------- scalars
def rfc3339_to_ns(text: str) -> int:
    """Return UTC nanoseconds of a Coinbase timestamp (``2024-05-01T12:00:00.123456789Z``);
    the fraction keeps all nine digits the user channel sends."""
    match = _TS.match(text.strip().replace(" ", "T", 1)) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"coinbase: not an RFC 3339 timestamp: {text!r}")
    whole, fraction, zone = match.groups()
    seconds = datetime.fromisoformat(whole + (zone or "+00:00").replace("Z", "+00:00"))
    nanos = int((fraction or "0")[:9].ljust(9, "0"))
    return int(seconds.timestamp()) * 1_000_000_000 + nanos


def ns_to_rfc3339(ts_ns: int) -> str:
    """Format UTC nanoseconds as RFC 3339 with microseconds (what Coinbase filters accept)."""
    seconds, nanos = divmod(int(ts_ns), 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos // 1000:06d}Z"


def decimal_text(value: float) -> str:
    """Format a size or price as Coinbase expects: plain decimal, never exponent notation, and
    at 15 significant digits so float noise (``0.1 + 0.2``) does not look like extra precision.
    Sizes off the product's increment are left for the venue to reject."""
    return format(Decimal(format(float(value), ".15g")).normalize(), "f")


def _number(value: Any, default: float = 0.0) -> float:
    if value is None or value == "":
        return default
    return float(value)


def _timestamp(value: Any) -> int:
    if not value or str(value).startswith("0001-01-01"):
        return 0
    return rfc3339_to_ns(str(value))


# ----------------------------------------------------------------------------- orders
def order_status(venue_status: str, filled_qty: float) -> str:
    """Map a Coinbase order status to ``OrderStatus`` (a live order with fills is partial)."""
    status = str(venue_status).upper()
    if status in _FINAL_STATUS:
        return _FINAL_STATUS[status]
    if status in _LIVE_STATUS:
        return OrderStatus.PARTIALLY_FILLED if filled_qty > 0 else OrderStatus.OPEN
    raise ValueError(f"coinbase: unknown order status {venue_status!r}")


def order_kind(order_configuration: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """Return our order type and the inner settings of a Coinbase ``order_configuration``."""
    for key, inner in order_configuration.items():
        if inner is None:
            continue
        if key.startswith("market_"):
            return "market", inner
        if key.startswith("stop_limit_"):
            return "stop", inner
        if key.startswith(("limit_", "sor_limit_", "trigger_bracket_")):
            return "limit", inner  # a bracket rests as its limit, with a stop trigger
    raise ValueError(f"coinbase: unsupported order configuration {sorted(order_configuration)}")


def order_from_venue(order: Mapping[str, Any]) -> BrokerOrder:
    """Translate one order of ``get_order`` / ``list_orders`` (as a dict) to a ``BrokerOrder``."""
    kind, inner = order_kind(order.get("order_configuration") or {})
    filled = _number(order.get("filled_size"))
    avg = _number(order.get("average_filled_price"), default=0.0)
    qty = _number(inner.get("base_size"), default=filled)  # a quote-sized order has no base size
    return BrokerOrder(
        client_order_id=str(order.get("client_order_id") or ""),
        venue_order_id=str(order["order_id"]),
        symbol=str(order["product_id"]),
        side=str(order["side"]).lower(),
        qty=qty,
        order_type=kind,
        status=order_status(order["status"], filled),
        filled_qty=filled,
        avg_fill_price=avg if filled > 0 and avg > 0 else None,
        fees=_number(order.get("total_fees")),
        ts_updated_ns=(
            _timestamp(order.get("last_fill_time")) or _timestamp(order.get("created_time"))
        ),
        stop_price=_number(inner.get("stop_price") or inner.get("stop_trigger_price")) or None,
        limit_price=_number(inner.get("limit_price")) or None,
    )


def order_configuration(request: OrderRequest) -> dict[str, dict[str, Any]]:
    """Build the ``order_configuration`` of a create-order call for ``request``.

    Market orders are sized in base units (``market_market_ioc.base_size``); limit orders are
    ``limit_limit_gtc`` (``gtc``) or ``sor_limit_ioc`` (``ioc``); stop orders are Coinbase
    stop-limits (``stop_limit_stop_limit_gtc``) and so need ``limit_price`` as well.

    Raises
    ------
    ValueError
        For what Coinbase cannot express: ``day`` on a resting order (crypto trades around the
        clock), a stop without a limit price, or bracket legs.
    """
    where = f"coinbase: order {request.client_order_id}"
    if request.take_profit_price is not None or request.stop_loss_price is not None:
        raise ValueError(f"{where}: bracket orders are not supported by this adapter")
    size = decimal_text(request.qty)
    if request.order_type == "market":
        return {"market_market_ioc": {"base_size": size}}
    if request.time_in_force == "day":
        raise ValueError(
            f"{where}: Coinbase has no 'day' time in force for {request.order_type} orders; "
            "use 'gtc' (or 'ioc' for a limit order)"
        )
    if request.order_type == "limit":
        price = decimal_text(request.limit_price)
        if request.time_in_force == "ioc":
            return {"sor_limit_ioc": {"base_size": size, "limit_price": price}}
        return {"limit_limit_gtc": {"base_size": size, "limit_price": price, "post_only": False}}
    if request.limit_price is None or request.time_in_force != "gtc":
        raise ValueError(
            f"{where}: Coinbase stops are stop-limit GTC orders; give limit_price and "
            "time_in_force 'gtc'"
        )
    direction = "STOP_DIRECTION_STOP_UP" if request.side == "buy" else "STOP_DIRECTION_STOP_DOWN"
    return {
        "stop_limit_stop_limit_gtc": {
            "base_size": size,
            "limit_price": decimal_text(request.limit_price),
            "stop_price": decimal_text(request.stop_price),
            "stop_direction": direction,
        }
    }


@dataclass(frozen=True, kw_only=True)
class CreateResult:
    """What a create-order answer says (HTTP 200 can still be ``success: false``)."""

    success: bool
    order_id: str | None
    client_order_id: str | None
    reason: str
    """The venue's reason for a failure, for messages (empty on success)."""
    duplicate: bool
    """The failure names a duplicate client order id (the caller adopts the existing order)."""


def create_result(response: Mapping[str, Any]) -> CreateResult:
    """Read a create-order answer: ``success`` first, then ``success_response`` or
    ``error_response``/``failure_reason``."""
    ok = response.get("success") is True
    body = response.get("success_response") or {}
    error = response.get("error_response") or {}
    order_id = body.get("order_id") or response.get("order_id") or None
    parts = [
        str(error.get(k))
        for k in ("error", "message", "error_details", "new_order_failure_reason")
        if error.get(k) and error.get(k) != "UNKNOWN_FAILURE_REASON"
    ]
    if not parts and response.get("failure_reason"):
        parts = [str(response["failure_reason"])]
    if ok and order_id:
        reason = ""
    elif ok:
        reason = "success=true without an order_id"
    else:
        reason = "; ".join(dict.fromkeys(parts)) or "success=false without a reason"
    return CreateResult(
        success=ok and bool(order_id),
        order_id=order_id,
        client_order_id=body.get("client_order_id"),
        reason=reason,
        duplicate=not ok and "DUPLICATE" in reason.upper().replace(" ", "_"),
    )


def cancel_result(response: Mapping[str, Any], order_id: str) -> tuple[bool, str]:
    """Return (success, failure reason) of one order in a ``cancel_orders`` answer."""
    for result in response.get("results") or []:
        if result.get("order_id") == order_id:
            return result.get("success") is True, str(result.get("failure_reason") or "")
    return False, "order missing from the cancel answer"


# ----------------------------------------------------------------------------- fills, balances
def fill_from_venue(fill: Mapping[str, Any], client_order_id: str) -> BrokerFill:
    """Translate one ``list_fills`` entry; ``fill_id`` is the fill's ``entry_id`` (unique per
    execution) or, failing that, its ``trade_id``."""
    return BrokerFill(
        fill_id=str(fill.get("entry_id") or fill["trade_id"]),
        client_order_id=client_order_id,
        symbol=str(fill["product_id"]),
        side=str(fill["side"]).lower(),
        qty=_number(fill["size"]),
        price=_number(fill["price"]),
        fee=_number(fill.get("commission")),
        ts_fill_ns=rfc3339_to_ns(fill["trade_time"]),
    )


@dataclass(frozen=True, kw_only=True)
class Balances:
    """The accounts of a portfolio read as cash and long positions."""

    cash: float
    """Quote currency owned (available plus held for open orders)."""
    available_cash: float
    units: dict[str, float]
    """Units owned per product ``"{CURRENCY}-{quote}"`` (available plus held)."""


def balances(accounts: Iterable[Mapping[str, Any]], quote: str) -> Balances:
    """Sum ``get_accounts`` entries into cash (``quote``) and units per product."""
    cash = available = 0.0
    units: dict[str, float] = {}
    for account in accounts:
        currency = str(account.get("currency") or "")
        free = _number((account.get("available_balance") or {}).get("value"))
        held = _number((account.get("hold") or {}).get("value"))
        if currency == quote:
            cash += free + held
            available += free
        elif currency and free + held != 0:
            symbol = f"{currency}-{quote}"
            units[symbol] = units.get(symbol, 0.0) + free + held
    return Balances(cash=cash, available_cash=available, units=units)


# ----------------------------------------------------------------------------- user channel
@dataclass(frozen=True, kw_only=True)
class UserOrderUpdate:
    """One order of a user-channel event: the channel sends order state, never single fills."""

    order_id: str
    client_order_id: str
    symbol: str
    status: str
    filled_qty: float


def stream_message(text: str | bytes) -> dict[str, Any]:
    """Decode one WebSocket message (a JSON object)."""
    message = json.loads(text)
    if not isinstance(message, dict):
        raise ValueError("coinbase: a WebSocket message is not a JSON object")
    return message


def user_order_updates(message: Mapping[str, Any]) -> list[UserOrderUpdate]:
    """The order updates of a ``user`` channel message (snapshot or update); [] otherwise."""
    if message.get("channel") != "user":
        return []
    out = []
    for event in message.get("events") or []:
        for order in event.get("orders") or []:
            filled = _number(order.get("cumulative_quantity"))
            out.append(
                UserOrderUpdate(
                    order_id=str(order["order_id"]),
                    client_order_id=str(order.get("client_order_id") or ""),
                    symbol=str(order.get("product_id") or ""),
                    status=order_status(order.get("status", "OPEN"), filled),
                    filled_qty=filled,
                )
            )
    return out


# ----------------------------------------------------------------------------- candles
def streamed_candles(message: Mapping[str, Any]) -> list[StreamedBar]:
    """The candles of a ``candles`` channel message (snapshot or update; ``start`` in UNIX
    seconds, the 5-minute candle forming or just closed); [] for any other channel."""
    if message.get("channel") != "candles":
        return []
    return [
        StreamedBar(
            symbol=str(c["product_id"]),
            ts_ns=int(c["start"]) * 1_000_000_000,
            open=float(c["open"]),
            high=float(c["high"]),
            low=float(c["low"]),
            close=float(c["close"]),
            volume=float(c["volume"]),
        )
        for event in message.get("events") or []
        for c in event.get("candles") or []
    ]


def candles_frame(candles: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Turn ``get_candles`` entries (``start`` in UNIX seconds, newest first) into bars:
    ``ts_ns`` int64 UTC open time and float64 OHLCV, ascending, one row per time."""
    rows = [
        (
            int(c["start"]) * 1_000_000_000,
            float(c["open"]),
            float(c["high"]),
            float(c["low"]),
            float(c["close"]),
            float(c["volume"]),
        )
        for c in candles
    ]
    frame = pd.DataFrame.from_records(rows, columns=list(BAR_COLUMNS))
    frame = frame.astype({"ts_ns": np.int64, **dict.fromkeys(BAR_COLUMNS[1:], np.float64)})
    frame = frame.drop_duplicates("ts_ns", keep="last").sort_values("ts_ns")
    return frame.reset_index(drop=True)
