"""Order guards: the last check between a decision and the broker, bounding what a bug can do.

A tripped guard blocks the order and asks for a HALT, which only a person clears (`live resume`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from quantshift.errors import ConfigError
from quantshift.tables import Table

GUARDS = (
    "bad_price",
    "bad_order",
    "orders_per_decision",
    "orders_per_minute",
    "order_notional",
    "position",
    "price_collar",
    "stale_data",
)
"""Guard names, as they appear in blocked orders, HALT reasons and metrics."""

_MINUTE_NS = 60_000_000_000


class GuardedOrder(Protocol):
    """What the guards read of an order (the decision layer's order intents have these)."""

    sleeve: str
    symbol: str
    side: str  # "buy" or "sell"
    units: float
    price: float  # the reference price the order was decided at
    ts_ns: int  # the bar the decision was made on
    is_entry: bool


@dataclass(frozen=True, kw_only=True)
class GuardLimits:
    """Limits per runner. Every limit is positive; ``None`` switches that guard off.

    Parameters
    ----------
    max_orders_per_decision : int
        Orders one (sleeve, symbol, bar) decision may send; 1 means a decision is one order.
    max_orders_per_minute : int
        Orders in any 60 s of wall-clock time, over all sleeves.
    max_order_notional : float
        Units x reference price of one order (account currency).
    max_position_units : float
        Absolute units a symbol's position may reach after an order.
    price_collar_pct : float
        Largest distance of an order's reference price from the symbol's last close (%).
    stale_after_intervals : float
        An entry on a bar older than this many bar intervals is refused.
    """

    max_orders_per_decision: int | None = 1
    max_orders_per_minute: int | None = 30
    max_order_notional: float | None = None
    max_position_units: float | None = None
    price_collar_pct: float | None = 5.0
    stale_after_intervals: float | None = 2.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            ):
                raise ConfigError(
                    f"guard limit {f.name} must be a positive number or off, got {value!r}"
                )

    @classmethod
    def from_table(cls, table: Table) -> GuardLimits:
        """Build from a config table; unknown keys and bad values name the file, the table
        and the key. The string "off" (or false) switches a guard off."""
        # `v in ("off", False)` would also switch off a limit of 0 (0 == False).
        off = {k: None for k, v in table.raw.items() if v is False or v == "off"}
        return table.build(cls, **off)


@dataclass(frozen=True)
class Blocked:
    """An order a guard refused, and why."""

    order: Any
    guard: str
    detail: str


@dataclass(frozen=True)
class GuardVerdict:
    """The orders that may go to the broker, the blocked ones, and the HALT reason if any."""

    accepted: tuple[Any, ...]
    blocked: tuple[Blocked, ...]

    @property
    def halt_reason(self) -> str | None:
        """A HALT reason naming the first tripped guard, or None when nothing tripped."""
        if not self.blocked:
            return None
        first = self.blocked[0]
        more = f" (+{len(self.blocked) - 1} more blocked)" if len(self.blocked) > 1 else ""
        return f"guard {first.guard}: {first.detail}{more}"


@dataclass
class OrderGuards:
    """Checks a cycle's orders against :class:`GuardLimits`; remembers recent order times.

    One instance per runner process. After a guard trips the runner should persist a HALT and
    send nothing more: every later order of the same cycle is blocked too (``halted``).
    """

    limits: GuardLimits = field(default_factory=GuardLimits)
    clock: Any = None  # a live.clock.MarketClock: staleness in traded intervals, not wall time
    _sent_ns: deque = field(default_factory=deque, init=False, repr=False)

    def check(
        self,
        orders: Iterable[GuardedOrder],
        *,
        last_close: Mapping[str, float],
        positions: Mapping[str, float],
        now_ns: int,
        bar_interval_ns: int,
    ) -> GuardVerdict:
        """Return which of ``orders`` may be sent now.

        Parameters
        ----------
        orders : iterable of GuardedOrder
            The cycle's orders, in the order they would be sent.
        last_close : mapping
            The last close of each symbol (the collar's anchor).
        positions : mapping
            Current signed units per symbol (before these orders).
        now_ns : int
            Wall-clock time, UTC ns (per-minute window and staleness).
        bar_interval_ns : int
            The runner's bar interval.
        """
        limits = self.limits
        accepted: list[Any] = []
        blocked: list[Blocked] = []
        per_decision: dict[tuple[str, str, int], int] = {}
        position = dict(positions)
        window_start = now_ns - _MINUTE_NS
        while self._sent_ns and self._sent_ns[0] <= window_start:
            self._sent_ns.popleft()
        for order in orders:
            if blocked:
                blocked.append(Blocked(order, blocked[0].guard, "cycle halted by an earlier guard"))
                continue
            problem = self._problem(
                order, limits, per_decision, position, last_close, now_ns, bar_interval_ns
            )
            if problem is not None:
                blocked.append(Blocked(order, *problem))
                continue
            accepted.append(order)
            self._sent_ns.append(now_ns)
            signed = order.units if order.side == "buy" else -order.units
            position[order.symbol] = position.get(order.symbol, 0.0) + signed
        return GuardVerdict(tuple(accepted), tuple(blocked))

    def _problem(self, order, limits, per_decision, position, last_close, now_ns, interval_ns):
        price, units = order.price, order.units
        if not (isinstance(price, int | float) and math.isfinite(price) and price > 0):
            return "bad_price", f"{order.symbol} reference price {price!r}"
        if not (math.isfinite(units) and units > 0) or order.side not in ("buy", "sell"):
            return "bad_order", f"{order.symbol} order {order.side} {units!r} units is malformed"
        key = (order.sleeve, order.symbol, int(order.ts_ns))
        per_decision[key] = per_decision.get(key, 0) + 1
        if limits.max_orders_per_decision and per_decision[key] > limits.max_orders_per_decision:
            return (
                "orders_per_decision",
                f"{order.sleeve} sent {per_decision[key]} orders for {order.symbol} on one "
                f"bar (limit {limits.max_orders_per_decision})",
            )
        if limits.max_orders_per_minute and len(self._sent_ns) >= limits.max_orders_per_minute:
            return "orders_per_minute", f"{len(self._sent_ns)} orders in the last minute"
        notional = units * price
        if limits.max_order_notional and notional > limits.max_order_notional:
            return (
                "order_notional",
                f"{order.symbol} {notional:,.2f} > limit {limits.max_order_notional:,.2f}",
            )
        signed = units if order.side == "buy" else -units
        after = position.get(order.symbol, 0.0) + signed
        if limits.max_position_units and abs(after) > limits.max_position_units + 1e-9:
            return (
                "position",
                f"{order.symbol} position would be {after:g} units "
                f"(limit {limits.max_position_units:g})",
            )
        anchor = last_close.get(order.symbol)
        if anchor is None or not math.isfinite(anchor) or anchor <= 0:
            return "bad_price", f"{order.symbol} has no valid last close ({anchor!r})"
        if limits.price_collar_pct:
            distance_pct = 100.0 * abs(price / anchor - 1.0)
            if distance_pct > limits.price_collar_pct:
                return (
                    "price_collar",
                    f"{order.symbol} price {price:g} is {distance_pct:.2f}% from the last close "
                    f"{anchor:g} (collar {limits.price_collar_pct:g}%)",
                )
        if order.is_entry and limits.stale_after_intervals:
            age = (
                self.clock.intervals_between(int(order.ts_ns), now_ns)
                if self.clock is not None
                else (now_ns - int(order.ts_ns)) / interval_ns
            )
            if age > limits.stale_after_intervals:
                return (
                    "stale_data",
                    f"{order.symbol} entry on a bar {age:.1f} intervals old "
                    f"(limit {limits.stale_after_intervals:g})",
                )
        return None
