"""A position's protective exits on Coinbase Advanced as one venue order per OCO group.

Coinbase puts a hold on the base currency of every open sell, so a stop and a target of one
position cannot rest as two orders; its trigger bracket (a limit with a stop trigger) is the one
order in which only one of two exits can ever fill. So the legs the runner sends for one
``oco_group`` (stop, target, trailing stop) become one order: a bracket for a stop and a target,
a stop-limit for a stop alone, a GTC limit for a target alone. Coinbase has no trailing stop: the
trailing leg is the group's stop level while it is the tighter one, and the adapter moves it as
the market makes a new best price (``follow``). A change to a group (a leg added, moved or
cancelled, a trailing level that moved) cancels the resting order and, unless it filled first,
sends the next one under a new deterministic client order id (Coinbase edits only plain limit
orders, and a second order would need a second hold).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from live.broker import (
    BrokerAmbiguousError,
    BrokerError,
    BrokerOrder,
    BrokerRejectedError,
    OrderRequest,
    OrderStatus,
    binding_stop,
    trailing_level,
)
from live.coinbase import parse
from live.coinbase.transport import VENUE

logger = logging.getLogger(__name__)

KINDS = ("stop", "limit", "trailing_stop")
"""A group's legs: the fixed stop, the target (take-profit) and the trailing stop."""
# When a trigger bracket's stop triggers, Coinbase places a stop-limit 5% beyond the trigger
# (lower for a sell, higher for a buy): the worst price the stop leg of a bracket fills at.
PREFIX_LEN = 16
"""Characters of each leg's client order id kept in an incarnation's id, with its last one
(``"qs"`` and 14 hex digits of its OCO group's SHA-256, which no two groups of an account share,
and the leg's letter: ``live.broker.leg_id``)."""
MAX_ID_LEN = 128
"""The longest client order id Coinbase takes."""
_ABSENT = "x"


@dataclass
class Group:
    """The legs of one position's protection and the venue order resting for them now."""

    key: str
    symbol: str
    side: str
    qty: float
    ids: dict[str, str] = field(default_factory=dict)
    """Client order id (or, rebuilt from the venue, its prefix) of each leg, by kind."""
    stop: float | None = None
    target: float | None = None
    trail: float | None = None
    best: float | None = None
    version: int = 0
    sent: tuple | None = None
    """``levels()`` of the order resting for the group."""
    filled: bool = False
    """The group's order filled: the position is closed, nothing of the group moves again."""
    current: str | None = None
    """Client order id of the venue order resting for the group (None: none yet)."""
    ended: dict[str, BrokerOrder] = field(default_factory=dict)
    """Final views of legs that left the group (cancelled, or the group filled)."""

    # ------------------------------------------------------------------ levels
    @property
    def sign(self) -> float:
        """+1 when the legs sell (they protect a long), -1 when they buy."""
        return 1.0 if self.side == "sell" else -1.0

    def trailing_level(self) -> float | None:
        return trailing_level(self.side, self.best, self.trail)

    def stop_level(self) -> tuple[float | None, str | None]:
        """The binding stop level and the leg it belongs to (``live.broker.binding_stop``)."""
        trailing = self.trailing_level() if "trailing_stop" in self.ids else None
        return binding_stop(self.side, self.stop if "stop" in self.ids else None, trailing)

    def levels(self) -> tuple:
        """What the group's order rests at: its stop level and its target."""
        return self.stop_level()[0], (self.target if "limit" in self.ids else None)

    def follow(self, price: float) -> bool:
        """A trailing leg follows a better price; True if its best moved."""
        if "trailing_stop" not in self.ids or self.best is None:
            return False
        if self.sign * (price - self.best) > 0:
            self.best = price
            return True
        return False

    # ------------------------------------------------------------------ the venue order
    def configuration(self, stop_limit_slippage_bps: float) -> dict:
        """The ``order_configuration`` of the order resting for the legs now."""
        level, _ = self.stop_level()
        target = self.target if "limit" in self.ids else None
        size = parse.decimal_text(self.qty)
        if level is not None and target is not None:
            return {"trigger_bracket_gtc": {
                "base_size": size, "limit_price": parse.decimal_text(target),
                "stop_trigger_price": parse.decimal_text(level),
            }}  # fmt: skip
        if level is not None:
            worst = level * (1.0 - self.sign * stop_limit_slippage_bps / 1e4)
            return {"stop_limit_stop_limit_gtc": {
                "base_size": size, "stop_price": parse.decimal_text(level),
                "limit_price": parse.decimal_text(worst),
                "stop_direction": "STOP_DIRECTION_STOP_DOWN" if self.sign > 0
                else "STOP_DIRECTION_STOP_UP",
            }}  # fmt: skip
        return {"limit_limit_gtc": {"base_size": size, "limit_price": parse.decimal_text(target),
                                    "post_only": False}}  # fmt: skip

    def venue_id(self) -> str:
        """The client order id of the next incarnation: each leg's client order id, the levels
        a fresh process needs to go on (fixed stop, trail, best price) and the version. Where
        that is longer than Coinbase's 128 characters (three legs), each leg by its prefix."""
        numbers = [_number_text(v) for v in (self.stop, self.trail, self.best)]
        for keep in (None, PREFIX_LEN):
            ids = [_short(self.ids.get(k, _ABSENT)) if keep else self.ids.get(k, _ABSENT)
                   for k in KINDS]  # fmt: skip
            text = "-".join([*ids, *numbers, str(self.version)])
            if len(text) <= MAX_ID_LEN:
                break
        return text

    def learn(self, client_order_id: str) -> None:
        """A leg known by its prefix (rebuilt from the venue) is now known by its whole id."""
        kind = self.kind_of(client_order_id)
        if kind is not None:
            self.ids[kind] = client_order_id

    def holds(self, client_order_id: str) -> bool:
        """Whether ``client_order_id`` is one of this group's legs now."""
        return any(_same(client_order_id, cid) for cid in self.ids.values())

    def kind_of(self, client_order_id: str) -> str | None:
        for kind, cid in self.ids.items():
            if _same(client_order_id, cid):
                return kind
        return None

    # ------------------------------------------------------------------ what a leg looks like
    def filled_leg(self, order: BrokerOrder) -> str:
        """Which leg an execution of the group's order was: the target when it filled nearer
        the target than the stop level (a limit fills at its price or better, a triggered stop
        at or past its level, each give or take the market's slippage), else the binding stop."""
        target = self.target if "limit" in self.ids else None
        price = order.avg_fill_price
        level, stop_kind = self.stop_level()
        if stop_kind is None:
            return "limit"
        if target is None or price is None:
            return stop_kind
        return "limit" if abs(price - target) < abs(price - level) else stop_kind

    def view(self, client_order_id: str, order: BrokerOrder | None) -> BrokerOrder:
        """Leg ``client_order_id`` as the broker contract reports it, from the group's venue
        order ``order`` (the one that carried the leg last)."""
        kind = self.kind_of(client_order_id)
        ended = self.ended.get(client_order_id)
        if ended is not None:
            return ended
        status, filled, price, fees = OrderStatus.OPEN, 0.0, None, 0.0
        if order is not None:
            status = order.status
            if order.filled_qty > 0:
                mine = self.filled_leg(order) == kind
                filled = order.filled_qty if mine else 0.0
                price, fees = (order.avg_fill_price, order.fees) if mine else (None, 0.0)
                if not mine:
                    status = OrderStatus.CANCELLED
                elif status != OrderStatus.FILLED and order.is_final:
                    status = OrderStatus.CANCELLED  # a part filled, the rest was cancelled
        level = {"stop": self.stop, "trailing_stop": self.trailing_level()}.get(kind)
        return BrokerOrder(
            client_order_id=client_order_id,
            venue_order_id=order.venue_order_id if order is not None else "",
            symbol=self.symbol,
            side=self.side,
            qty=self.qty,
            order_type=kind or "stop",
            status=status,
            filled_qty=filled,
            avg_fill_price=price,
            fees=fees,
            ts_updated_ns=order.ts_updated_ns if order is not None else 0,
            stop_price=level,
            limit_price=self.target if kind == "limit" else None,
            trail_amount=self.trail if kind == "trailing_stop" else None,
            trail_best_price=self.best if kind == "trailing_stop" else None,
            oco_group=self.key,
        )

    def end(self, client_order_id: str, order: BrokerOrder | None) -> BrokerOrder:
        """Take leg ``client_order_id`` out of the group; return its final view."""
        final = self.view(client_order_id, order)
        if not final.is_final:
            final = replace(final, status=OrderStatus.CANCELLED)
        self.ended[client_order_id] = final
        kind = self.kind_of(client_order_id)
        if kind is not None and (order is None or order.filled_qty == 0):
            del self.ids[kind]  # a filled group keeps its legs: they say which one filled
        return final


def group_of_request(request: OrderRequest) -> Group:
    return Group(key=request.oco_group, symbol=request.symbol, side=request.side,
                 qty=float(request.qty))  # fmt: skip


def add_leg(group: Group, request: OrderRequest) -> None:
    """Put ``request`` (a stop, limit or trailing-stop leg of the group) into ``group``."""
    kind = request.order_type
    group.ids[kind] = request.client_order_id
    if kind == "stop":
        group.stop = float(request.stop_price)
    elif kind == "limit":
        group.target = float(request.limit_price)
    else:
        group.trail = float(request.trail_amount)
        if request.trail_from_price is None:
            raise ValueError(
                f"coinbase: order {request.client_order_id}: a trailing stop needs "
                "trail_from_price (Coinbase has none of its own; the adapter follows the price)"
            )
        group.best = float(request.trail_from_price)
    group.qty = float(request.qty)


def is_group_id(client_order_id: str) -> bool:
    """Whether ``client_order_id`` has the shape of a group's order id (seven parts, the last
    its version; a venue's own UUID has five)."""
    parts = client_order_id.split("-")
    return len(parts) == 7 and parts[6].isdigit()


def decode(client_order_id: str, order: BrokerOrder) -> Group | None:
    """Rebuild a group from the client order id and configuration of one of its venue orders
    (a fresh process after a restart); None if the order is not a group's."""
    if not is_group_id(client_order_id):
        return None
    parts = client_order_id.split("-")
    try:
        stop, trail, best = (_text_number(p) for p in parts[3:6])
    except ValueError:
        return None
    ids = {k: p for k, p in zip(KINDS, parts[:3], strict=True) if p != _ABSENT}
    if not ids:
        return None
    group = Group(key=f"coinbase-{'-'.join(parts[:3])}", symbol=order.symbol, side=order.side,
                  qty=order.qty, ids=ids, stop=stop, trail=trail, best=best,
                  version=int(parts[6]), current=client_order_id)  # fmt: skip
    if "limit" in ids:
        group.target = order.limit_price
    group.sent = group.levels()
    return group


def _short(client_order_id: str) -> str:
    """A leg's id as a venue order carries it when the whole ids do not fit: its group's
    prefix and its leg's letter (the legs of one group share the group's id)."""
    if len(client_order_id) <= PREFIX_LEN + 1:
        return client_order_id
    return client_order_id[:PREFIX_LEN] + client_order_id[-1]


def _same(asked: str, known: str) -> bool:
    """One leg's id, whole or as the prefix and letter a venue order carries."""
    return _short(asked) == _short(known)


def _number_text(value: float | None) -> str:
    if value is None:
        return _ABSENT
    return parse.decimal_text(value).replace(".", "p")


def _text_number(text: str) -> float | None:
    if text == _ABSENT:
        return None
    value = float(text.replace("p", "."))
    if not math.isfinite(value):
        raise ValueError(text)
    return value


class ProtectiveGroups:
    """The groups of one adapter, kept in memory and rebuilt from the venue's orders.

    Parameters
    ----------
    create : callable
        ``create(client_order_id, symbol, side, configuration) -> BrokerOrder``: send one order
        (a known id is adopted).
    cancel : callable
        ``cancel(client_order_id) -> BrokerOrder | None``: cancel one venue order; its final
        state.
    lookup : callable
        ``lookup(client_order_id) -> BrokerOrder | None``: one venue order by client order id.
    stop_limit_slippage_bps : float
        How far beyond its stop level a lone stop-limit's limit price is.
    """

    def __init__(
        self,
        create: Callable[[str, str, str, dict], BrokerOrder],
        cancel: Callable[[str], BrokerOrder | None],
        lookup: Callable[[str], BrokerOrder | None],
        stop_limit_slippage_bps: float,
    ) -> None:
        self._create, self._cancel, self._lookup = create, cancel, lookup
        self.slippage_bps = stop_limit_slippage_bps
        self.groups: dict[str, Group] = {}

    # ------------------------------------------------------------------ finding
    def find(self, client_order_id: str) -> Group | None:
        """The group leg ``client_order_id`` belongs (or belonged) to, among those known."""
        for group in self.groups.values():
            if group.holds(client_order_id) or client_order_id in group.ended:
                return group
        return None

    def adopt(self, venue_id: str, order: BrokerOrder) -> Group | None:
        """Know the group of venue order ``order`` (client order id ``venue_id``), found at the
        venue by a fresh process; None if it is not a group's. The newest version wins."""
        group = decode(venue_id, order)
        if group is None:
            return None
        for known in self.groups.values():
            if any(known.holds(cid) for cid in group.ids.values()):
                if group.version > known.version:
                    known.current, known.version = group.current, group.version
                return known
        self.groups[group.key] = group
        return group

    def view(self, client_order_id: str) -> BrokerOrder | None:
        group = self.find(client_order_id)
        if group is None:
            return None
        group.learn(client_order_id)
        return group.view(client_order_id, self._current(group))

    def _current(self, group: Group) -> BrokerOrder | None:
        return None if group.current is None else self._lookup(group.current)

    # ------------------------------------------------------------------ changing a group
    def add(self, request: OrderRequest) -> BrokerOrder:
        """Add a leg; a leg the group has (or had) is adopted as it is.

        Raises
        ------
        BrokerRejectedError
            The group's order filled already: the position it protected is closed.
        """
        cid = request.client_order_id
        group = self.find(cid) or self.groups.get(request.oco_group)
        if group is not None and (group.holds(cid) or cid in group.ended):
            return group.view(cid, self._current(group))
        if group is None:
            group = self.groups.setdefault(request.oco_group, group_of_request(request))
        elif self._cancel_current(group):
            done = "filled already" if group.filled else "did not cancel in time"
            raise BrokerRejectedError(VENUE, f"order {cid}: OCO group {request.oco_group}'s "
                                      f"resting order {done}")  # fmt: skip
        add_leg(group, request)
        return group.view(cid, self._send(group))

    def cancel(self, client_order_id: str) -> BrokerOrder | None:
        """Take a leg out of its group: the group's order is cancelled and, unless it filled
        first (the leg's final view then says which leg filled), sent again without it."""
        group, view = self._open_for_change(client_order_id)
        if group is None:
            return view
        view = group.end(client_order_id, None)
        self._send(group)
        return view

    def replace(self, client_order_id: str, request: OrderRequest) -> BrokerOrder | None:
        """Swap leg ``client_order_id`` for ``request`` of the same group with one venue change;
        if the group's order filled first, the old leg's final view and nothing is sent."""
        group, view = self._open_for_change(client_order_id)
        if group is None:
            return view
        group.end(client_order_id, None)
        add_leg(group, request)
        return group.view(request.client_order_id, self._send(group))

    def _open_for_change(self, client_order_id: str) -> tuple[Group | None, BrokerOrder | None]:
        """Cancel the order resting for the group of leg ``client_order_id`` so the group can
        change: ``(group, None)`` once it is cancelled; ``(None, view)`` when the leg is unknown
        (no view), has left its group, or the order filled (or would not cancel) first."""
        group = self.find(client_order_id)
        if group is None:
            return None, None
        if client_order_id in group.ended:
            return None, group.ended[client_order_id]
        if self._cancel_current(group):
            current = self._current(group)
            return None, group.end(client_order_id, current) if group.filled else group.view(
                client_order_id, current)  # fmt: skip
        return group, None

    def follow(self, prices: dict[str, float], side: str | None = None) -> int:
        """Trailing legs (of groups on ``side``, or all) follow ``prices`` (a price each symbol
        traded at); a group whose resting order is not at its levels (the stop moved, or a
        change before did not go through) is sent again. Returns how many were sent.

        A venue error is logged, not raised: the group is tried again at the next call (its
        resting order, if any, keeps its last level meanwhile)."""
        moved = 0
        for group in list(self.groups.values()):
            if side is not None and group.side != side:
                continue
            price = prices.get(group.symbol)
            if group.filled or not group.ids or price is None or not math.isfinite(price):
                continue
            group.follow(price)
            if group.current is not None and group.sent == group.levels():
                continue
            try:
                if self._cancel_current(group):
                    continue  # filled at the old level (the settlement closes it) or busy
                self._send(group)
                moved += 1
            except BrokerError as exc:
                logger.warning("coinbase: OCO group %s not moved (%s); trying again next bar",
                               group.key, exc)  # fmt: skip
        return moved

    def _cancel_current(self, group: Group) -> bool:
        """Cancel the group's resting order; True if it is still in the way: it filled (it
        stays current, so the legs report that fill) or its cancel did not land in time."""
        if group.current is None:
            return False
        final = self._cancel(group.current)
        if final is not None and final.filled_qty > 0:
            # Filled in part, the rest is cancelled now: nothing of the group rests again (the
            # runner's settlement sends the rest at market, as for any triggered stop).
            logger.info("coinbase: OCO group %s filled %.10g of %.10g before its change",
                        group.key, final.filled_qty, final.qty)  # fmt: skip
            group.filled = True
            return True
        if final is not None and not final.is_final:
            logger.warning("coinbase: OCO group %s: its order did not cancel in time",
                           group.key)  # fmt: skip
            return True
        group.current = None
        return False

    def _send(self, group: Group) -> BrokerOrder | None:
        """Send the group's next order (nothing when no leg is left)."""
        if not group.ids:
            return None
        group.version += 1
        cid = group.venue_id()
        configuration = group.configuration(self.slippage_bps)
        group.current, group.sent = cid, group.levels()  # an ambiguous answer may have landed
        try:
            return self._create(cid, group.symbol, group.side, configuration)
        except BrokerRejectedError:
            group.current = None
            raise
        except BrokerAmbiguousError:
            if self._lookup(cid) is None:
                group.current = None  # it never landed: ``follow`` sends it at the next bar
            raise
