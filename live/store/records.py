"""Rows of the live store as frozen dataclasses, and the order state machine.

Field names are the column names; times are UTC nanoseconds, money in the quote currency.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

PORTFOLIO = "*"
"""Sleeve name under which portfolio-wide equity snapshots are kept."""


class OrderState(StrEnum):
    """Life of an order intent. UNKNOWN: the broker's answer was ambiguous (timeout, dropped
    connection); it is resolved by looking the order up, never by sending it again."""

    NEW = "NEW"
    SUBMITTING = "SUBMITTING"
    SUBMITTED = "SUBMITTED"
    ACKED = "ACKED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"


_S = OrderState
TERMINAL_STATES = frozenset({_S.FILLED, _S.CANCELLED, _S.REJECTED})
# NEW -> CANCELLED/REJECTED: abandoned (halt, guard) before anything was sent. SUBMITTING ->
# CANCELLED: a lookup after a crash found the broker never received it. A fill can arrive
# before the submit answer, hence SUBMITTING -> (PARTIALLY_)FILLED.
TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    _S.NEW: frozenset({_S.SUBMITTING, _S.CANCELLED, _S.REJECTED}),
    _S.SUBMITTING: frozenset(
        {
            _S.SUBMITTED,
            _S.ACKED,
            _S.PARTIALLY_FILLED,
            _S.FILLED,
            _S.CANCELLED,
            _S.REJECTED,
            _S.UNKNOWN,
        }
    ),
    _S.SUBMITTED: frozenset(
        {_S.ACKED, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.REJECTED, _S.UNKNOWN}
    ),
    _S.ACKED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.REJECTED, _S.UNKNOWN}),
    _S.PARTIALLY_FILLED: frozenset({_S.FILLED, _S.CANCELLED, _S.UNKNOWN}),
    _S.UNKNOWN: frozenset(
        {_S.SUBMITTED, _S.ACKED, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.REJECTED}
    ),
    _S.FILLED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.REJECTED: frozenset(),
}
"""Legal state changes: ``TRANSITIONS[from_state]`` is the set of allowed next states."""


def is_legal(from_state: str, to_state: str) -> bool:
    """Return whether the state machine allows ``from_state -> to_state``."""
    return OrderState(to_state) in TRANSITIONS[OrderState(from_state)]


def _json(text: str | None) -> dict | None:
    return None if text is None else json.loads(text)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


class _Row:
    """Construction from a database row (JSON columns parsed) and conversion to a dict."""

    _json_fields: tuple[str, ...] = ("details",)

    @classmethod
    def from_row(cls, row: dict[str, Any]):
        values = {f.name: row[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for name in cls._json_fields:
            if name in values:
                values[name] = _json(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return the row as a plain dict (JSON-ready apart from NaN/inf floats)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True, kw_only=True)
class Intent(_Row):
    """An order intent: the decision, its state and its fill progress."""

    client_order_id: str
    sleeve: str
    symbol: str
    side: str
    qty: float
    order_type: str
    limit_price: float | None
    stop_price: float | None
    venue: str
    bar_ts_ns: int
    ts_decided_ns: int
    epoch: int
    state: str
    filled_qty: float
    avg_fill_price: float | None
    ts_updated_ns: int
    details: dict | None = None

    @property
    def is_open(self) -> bool:
        """Whether the order may still fill or change (not FILLED, CANCELLED or REJECTED)."""
        return self.state not in TERMINAL_STATES

    @property
    def remaining_qty(self) -> float:
        """Quantity not yet filled (never negative)."""
        return max(self.qty - self.filled_qty, 0.0)


@dataclass(frozen=True, kw_only=True)
class OrderEvent(_Row):
    """One state change of an intent; ``seq`` orders events by commit."""

    seq: int
    client_order_id: str
    from_state: str | None
    to_state: str
    epoch: int
    ts_ns: int
    reason: str | None


@dataclass(frozen=True, kw_only=True)
class BrokerOrder(_Row):
    """What the broker last said about the order of an intent."""

    _json_fields = ("raw",)

    client_order_id: str
    venue: str
    broker_order_id: str | None
    broker_status: str | None
    ts_updated_ns: int
    raw: dict | None


@dataclass(frozen=True, kw_only=True)
class Fill(_Row):
    """One execution report; unique per (venue, fill_id)."""

    venue: str
    fill_id: str
    client_order_id: str
    qty: float
    price: float
    fee: float
    ts_fill_ns: int
    epoch: int
    ts_recorded_ns: int
    details: dict | None = None


@dataclass(frozen=True, kw_only=True)
class Trade(_Row):
    """A closed round trip of one sleeve on one symbol."""

    trade_id: str
    sleeve: str
    symbol: str
    direction: str
    qty: float
    entry_ts_ns: int
    exit_ts_ns: int
    entry_price: float
    exit_price: float
    fees: float
    pnl: float
    exit_reason: str
    epoch: int
    ts_recorded_ns: int
    details: dict | None = None


@dataclass(frozen=True, kw_only=True)
class Position(_Row):
    """Signed quantity (negative: short) of a sleeve in a symbol as of ``ts_ns``."""

    sleeve: str
    symbol: str
    qty: float
    avg_price: float | None
    ts_ns: int
    epoch: int
    details: dict | None = None


@dataclass(frozen=True, kw_only=True)
class EquitySnapshot(_Row):
    """Equity of a sleeve (or the portfolio, sleeve ``"*"``) at a bar."""

    sleeve: str
    ts_ns: int
    equity: float
    cash: float | None
    realized_pnl: float | None
    unrealized_pnl: float | None
    epoch: int


@dataclass(frozen=True, kw_only=True)
class Heartbeat(_Row):
    """The latest sign of life of one host running the live loop."""

    host: str
    role: str
    epoch: int
    ts_ns: int
    details: dict | None = None


@dataclass(frozen=True, kw_only=True)
class Halt(_Row):
    """A HALT: active while ``ts_cleared_ns`` is None."""

    _json_fields = ()

    halt_id: int
    reason: str
    created_by: str
    epoch: int | None
    ts_created_ns: int
    cleared_by: str | None
    ts_cleared_ns: int | None

    @property
    def active(self) -> bool:
        """Whether the HALT still stops new orders."""
        return self.ts_cleared_ns is None


@dataclass(frozen=True, kw_only=True)
class Promotion(_Row):
    """A stored promotion record; ``record`` is the JSON text exactly as it was given."""

    _json_fields = ()

    promotion_id: int
    name: str
    stage: str
    code_fingerprint: str
    record: str
    created_by: str
    ts_created_ns: int
    active: bool

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Promotion:
        return super().from_row({**row, "active": bool(row["active"])})

    def record_dict(self) -> dict:
        """Return the record parsed from its JSON text."""
        return json.loads(self.record)


@dataclass(frozen=True, kw_only=True)
class Performance(_Row):
    """Per-sleeve performance; NaN where a metric is undefined (no trades, no losses...).

    Definitions follow ``quantshift.engine.metrics``: a win is a trade with P&L > 0, average
    loss is negative, profit factor is gross profit over gross loss (inf without losses),
    Sharpe is annualised from per-snapshot equity returns with risk-free rate 0.
    """

    _json_fields = ()
    _float_fields = (
        "win_rate_pct", "sharpe", "profit_factor", "avg_win", "avg_loss", "largest_win",
        "largest_loss", "max_drawdown_pct", "current_drawdown_pct",
    )  # fmt: skip

    sleeve: str
    trades: int
    wins: int
    win_rate_pct: float
    pnl: float
    sharpe: float
    profit_factor: float
    avg_win: float
    avg_loss: float
    largest_win: float
    largest_loss: float
    max_drawdown_pct: float
    current_drawdown_pct: float
    periods_per_year: float
    ts_updated_ns: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Performance:
        return super().from_row({**row, **{k: _nan(row[k]) for k in cls._float_fields}})


@dataclass(frozen=True, kw_only=True)
class StoreStatus:
    """What ``live status`` prints: leader, epoch, heartbeats, positions, P&L and any HALT."""

    store: str
    schema_version: int
    fence_epoch: int
    leader: Heartbeat | None
    heartbeats: list[Heartbeat] = field(default_factory=list)
    last_heartbeat_ns: int | None = None
    positions: list[Position] = field(default_factory=list)
    equity: EquitySnapshot | None = None
    realized_pnl: float = 0.0
    day_pnl: float | None = None
    open_orders: int = 0
    halt: Halt | None = None
    performance: list[Performance] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the status as plain dicts and lists (for ``live status --json``)."""
        return dataclasses.asdict(self)
