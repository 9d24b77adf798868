"""A trailing stop beside a stop or a target, as the one closing order Alpaca takes for a
position's shares.

Alpaca's OCO order takes a limit and a stop leg, never a trailing leg, so a position whose
protection is a trailing stop and a fixed stop (and/or a target) rests as: an OCO order whose
stop leg is at the tighter of the fixed stop and the trailing level (with a target), or a
single stop order at that level (without). As the market makes a new best price the trailing
level follows it, and where it becomes the tighter level the stop is moved there with one
PATCH (``replace_order_by_id``; never loosened), as ``live.coinbase.groups`` does for Coinbase.

The fill model checks a bar's levels from the best price before the bar, moves the best to a
better open before it checks the bar's range, and to the bar's best price after
(``quantshift.engine.simulate.check_levels_nb``): so the stop follows the open (``open_bar``)
and the bar's high or low (``trade_bar``), and a stop moved that way fills where the fill
model's does. A fill of the stop is the leg whose level it rested at when it filled (``at``):
the fixed stop on a tie, as the fill model names the exit.

Each order the group sends carries what a fresh process needs to go on in its client order id
(``venue_id``): the group, the leg its stop rests for, the fixed stop, the trail, the best
price and a version (the OCO's stop leg gets such an id at its first move; Alpaca ignores a
client order id given for a leg). A restarted adapter finds the group among the venue's orders
by its prefix (``recover``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from alpaca.common.exceptions import APIError
from alpaca.trading import requests as sdk_requests
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest

from live.alpaca.parse import VENUE, order_from_model
from live.broker import (
    GROUP_CODE,
    LEG_CODES,
    BrokerError,
    BrokerOrder,
    BrokerRejectedError,
    OrderRequest,
    OrderStatus,
    binding_stop,
    leg_id,
    trailing_level,
    venue_answer,
)

log = logging.getLogger(__name__)

STOP_KINDS = ("stop", "trailing_stop")
"""The legs the one stop order of a group carries (whichever level is the tighter)."""
_ABSENT = "x"


def prefix(key: str) -> str:
    """The start of the client order id of every order a folded group ``key`` sends (never a
    ``leg_of`` id: it goes on after the group's letter)."""
    return f"{key}{GROUP_CODE}-"


def decode(client_order_id: str) -> dict | None:
    """What a folded group's order id says (``TrailGroup.venue_id``); None for another id."""
    head, _, rest = client_order_id.partition(f"{GROUP_CODE}-")
    parts = rest.split("-")
    if not rest or len(parts) != 5 or not head.startswith("qs") or not parts[4].isdigit():
        return None
    at = next((k for k in STOP_KINDS if LEG_CODES[k] == parts[0]), None)
    try:
        stop, trail, best = (None if p == _ABSENT else float(p.replace("em", "e-"))
                             for p in parts[1:4])  # fmt: skip
    except ValueError:
        return None
    if at is None or trail is None or best is None:
        return None
    return {"key": head, "at": at, "stop": stop, "trail": trail, "best": best,
            "version": int(parts[4])}  # fmt: skip


def owner(client_order_id: str, kind: str) -> str | None:
    """The leg id a fill of a folded group's order of type ``kind`` is ours under (the
    target for its limit, else the leg its stop rested for); None for another id."""
    found = decode(client_order_id)
    if found is None:
        return None
    return leg_id(found["key"], "limit" if kind == "limit" else found["at"])


def needs_folding(requests: list[OrderRequest]) -> bool:
    """Whether a position's legs are a trailing stop beside a stop or a target (one Alpaca
    order only with the trailing level folded into its stop)."""
    kinds = {r.order_type for r in requests}
    return "trailing_stop" in kinds and len(kinds) > 1


@dataclass
class TrailGroup:
    """One position's legs and the venue order that carries them."""

    key: str
    """The OCO group (``leg_of(client_order_id)[0]``)."""
    symbol: str
    side: str
    qty: float
    stop: float | None
    target: float | None
    trail: float
    best: float
    level: float = math.nan
    """The stop level the venue order rests at now."""
    at: str = "stop"
    """The leg that level belongs to: ``stop`` or ``trailing_stop``."""
    stop_order_id: str = ""
    """The venue order id of the order (or OCO leg) resting at ``level``."""
    version: int = 0
    carrier: str = ""
    """Client order id of the first order sent (an OCO's parent carries the target)."""
    done: bool = False
    """The stop order is final (filled or cancelled): nothing is moved again."""

    @property
    def sign(self) -> float:
        """+1 when the legs sell (they protect a long), -1 when they buy."""
        return 1.0 if self.side == "sell" else -1.0

    def trailing_level(self) -> float:
        return trailing_level(self.side, self.best, self.trail)

    def binding(self) -> tuple[float, str]:
        """The tighter of the fixed and the trailing stop and its leg
        (``live.broker.binding_stop``)."""
        return binding_stop(self.side, self.stop, self.trailing_level())

    def kinds(self) -> list[str]:
        """The group's legs."""
        return ["trailing_stop", *(["stop"] if self.stop is not None else []),
                *(["limit"] if self.target is not None else [])]  # fmt: skip

    def venue_id(self, version: int) -> str:
        """The client order id of the group's order of ``version`` at its binding level."""
        _, at = self.binding()
        numbers = [
            _ABSENT if v is None else repr(float(v)).replace("e-", "em")
            for v in (self.stop, self.trail, self.best)
        ]  # "-" separates the fields
        return prefix(self.key) + "-".join([LEG_CODES[at], *numbers, str(version)])

    def stop_request(self) -> OrderRequest:
        """The group's first order (or the OCO's stop leg) at the binding level."""
        level, _ = self.binding()
        self.carrier = self.venue_id(0)
        return OrderRequest(client_order_id=self.carrier, symbol=self.symbol, side=self.side,
                            qty=self.qty, order_type="stop", stop_price=level,
                            time_in_force="gtc")  # fmt: skip

    def view(self, kind: str, client_order_id: str, stop_order: BrokerOrder) -> BrokerOrder:
        """Leg ``kind`` (stop or trailing stop) as the broker contract reports it, from the
        venue's stop order: a fill is the leg the order rested for (``at``); the other leg
        then reports cancelled, as an OCO sibling does."""
        status, filled = stop_order.status, stop_order.filled_qty
        price, fees = stop_order.avg_fill_price, stop_order.fees
        if filled > 0 and kind != self.at:
            status, filled, price, fees = OrderStatus.CANCELLED, 0.0, None, 0.0
        elif filled > 0 and status != OrderStatus.FILLED and stop_order.is_final:
            status = OrderStatus.CANCELLED  # a part filled, the rest was cancelled
        trailing = kind == "trailing_stop"
        return replace(
            stop_order, client_order_id=client_order_id, order_type=kind, status=status,
            filled_qty=filled, avg_fill_price=price, fees=fees,
            stop_price=self.trailing_level() if trailing else self.stop,
            limit_price=None, trail_amount=self.trail if trailing else None,
            trail_best_price=self.best if trailing else None, oco_group=self.key,
        )  # fmt: skip


def from_orders(key: str, orders: list) -> TrailGroup | None:
    """Group ``key`` rebuilt from the venue's orders (alpaca-py ``Order``s, nested: an OCO's
    legs under it) by their client order ids: the newest says the levels, the first (version
    0) is the order that carries the target; None if the group has none."""
    tops = [o for o in orders if o.client_order_id.startswith(prefix(key))]
    ours = [(o, decode(o.client_order_id)) for top in tops for o in (top, *(top.legs or []))]
    ours = [(o, d) for o, d in ours if d is not None and d["key"] == key]
    carrier = next((o for o, d in ours if d["version"] == 0 and any(o is t for t in tops)), None)
    if carrier is None:
        return None
    newest, found = max(ours, key=lambda pair: pair[1]["version"])
    if newest is carrier and carrier.legs:  # an OCO never moved: its stop leg rests
        newest = next((leg for leg in carrier.legs if _kind(leg) == "stop"), carrier)
    first, stop_order = order_from_model(carrier), order_from_model(newest)
    group = TrailGroup(
        key=key, symbol=first.symbol, side=first.side, qty=first.qty, stop=found["stop"],
        target=first.limit_price if first.order_type == "limit" else None,
        trail=found["trail"], best=found["best"], version=found["version"],
        carrier=first.client_order_id, stop_order_id=stop_order.venue_order_id,
        done=stop_order.is_final,
    )  # fmt: skip
    group.level, group.at = group.binding()
    return group


def _kind(order) -> str:
    kind = order.type or order.order_type
    return str(getattr(kind, "value", kind))


def group_of(requests: list[OrderRequest], key: str) -> TrailGroup:
    """The group of a position's legs (``needs_folding``).

    Raises
    ------
    ValueError
        If the trailing stop has no ``trail_from_price``: Alpaca follows no price for a stop
        order, so the adapter needs the best price to trail from.
    """
    by_kind = {r.order_type: r for r in requests}
    trailing = by_kind["trailing_stop"]
    if trailing.trail_from_price is None:
        raise ValueError(
            f"order {trailing.client_order_id}: a trailing stop beside a stop or a target needs "
            "trail_from_price (the adapter follows the price for it)"
        )
    return TrailGroup(
        key=key, symbol=trailing.symbol, side=trailing.side, qty=float(trailing.qty),
        stop=by_kind["stop"].stop_price if "stop" in by_kind else None,
        target=by_kind["limit"].limit_price if "limit" in by_kind else None,
        trail=float(trailing.trail_amount), best=float(trailing.trail_from_price),
    )  # fmt: skip


class TrailGroups:
    """The folded groups of one adapter, kept in memory and rebuilt from the venue's orders.

    Parameters
    ----------
    broker : AlpacaBroker
        The adapter: its SDK client and its policy for one call (``_call``).
    remember : callable
        ``remember(venue_order_id, client_order_id)``: fills of that venue order are that leg's.
    """

    def __init__(self, broker, remember: Callable[[str, str], None]) -> None:
        self._broker, self._remember = broker, remember
        self.groups: dict[str, TrailGroup] = {}

    # ------------------------------------------------------------------ the venue
    def recover(self, key: str) -> TrailGroup | None:
        """Group ``key`` from its orders at the venue (a fresh process: their ids say what it
        needs, ``decode``); None if it has none."""
        trading = self._broker._trading
        query = GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500, nested=True)
        found = self._broker._call("orders", lambda: trading.get_orders(query))
        with venue_answer(VENUE, f"orders of {key}"):
            group = from_orders(key, found)
        if group is not None:
            self.groups[key] = group
            self._remember(group.stop_order_id, leg_id(key, group.at))
        return group

    def _lookup(self, venue_order_id: str) -> BrokerOrder | None:
        trading = self._broker._trading
        what = f"order id {venue_order_id}"
        found = self._broker._found(what, lambda: trading.get_order_by_id(venue_order_id))
        if found is None:
            return None
        with venue_answer(VENUE, what):
            return order_from_model(found)

    def _patch(self, venue_order_id: str, what: str, patch, cid: str) -> BrokerOrder | None:
        """One PATCH of a resting order under the new client order id ``cid``: the
        replacement; None if the order is final (filled before the PATCH landed)."""
        trading = self._broker._trading
        try:
            placed = self._broker._call(
                what, lambda: trading.replace_order_by_id(venue_order_id, patch), submit=True
            )
        except APIError as exc:
            if exc.status_code == 422:
                existing = self._broker._order_model(cid)  # a PATCH that landed before (a redo)
                if existing is not None:
                    with venue_answer(VENUE, what):
                        return order_from_model(existing)
                ended = self._lookup(venue_order_id)
                if ended is not None and ended.is_final:
                    return None
            raise BrokerRejectedError(
                VENUE, f"{what}: HTTP {exc.status_code} {_message(exc)}"
            ) from None
        with venue_answer(VENUE, what, sends=True):
            return order_from_model(placed)

    # ------------------------------------------------------------------ the groups
    def rested(self, group: TrailGroup, stop_order: BrokerOrder) -> None:
        """``stop_order`` now rests for ``group`` at its binding level."""
        group.level, group.at = group.binding()
        group.stop_order_id = stop_order.venue_order_id
        self._remember(stop_order.venue_order_id, leg_id(group.key, group.at))
        self.groups[group.key] = group

    def stop_order(self, group: TrailGroup) -> BrokerOrder | None:
        found = self._lookup(group.stop_order_id)
        if found is not None and found.is_final:
            group.done = True
        return found

    def follow(self, prices: dict[str, float], side: str | None = None) -> int:
        """The trailing levels of groups (on ``side``, or all) follow ``prices``; a stop order
        whose binding level tightened is moved there. Returns how many were moved.

        A venue error is logged, not raised: the stop is moved at the next call (it keeps its
        last level meanwhile, never a looser one)."""
        moved = 0
        for group in list(self.groups.values()):
            price = prices.get(group.symbol)
            if (group.done or (side is not None and group.side != side) or price is None
                    or not math.isfinite(price)):  # fmt: skip
                continue
            if group.sign * (price - group.best) > 0:
                group.best = price
            level, _ = group.binding()
            if group.sign * (level - group.level) <= 0:
                continue  # never loosened; a leg changes only where the level tightens
            try:
                moved += self._move(group, level)
            except BrokerError as exc:
                log.warning("alpaca: stop of OCO group %s not moved to %.10g (%s); trying again "
                            "next bar", group.key, level, exc)  # fmt: skip
        return moved

    def _move(self, group: TrailGroup, level: float) -> int:
        current = self.stop_order(group)
        if current is None or group.done:
            return 0  # filled at its old level (the settlement closes it) or cancelled
        cid = group.venue_id(group.version + 1)  # deterministic: a redo adopts it
        patch = sdk_requests.ReplaceOrderRequest(stop_price=level, client_order_id=cid)
        placed = self._patch(current.venue_order_id, f"move {group.key} stop", patch, cid)
        if placed is None:  # it filled (or was cancelled) before the PATCH landed
            group.done = True
            return 0
        group.version += 1
        self.rested(group, placed)
        return 1


def _message(exc: APIError) -> str:
    from live.alpaca.client import _venue_message  # the adapter's (it imports this module)

    return _venue_message(exc)
