"""Orders through the venue (paper, Alpaca, Coinbase): send decisions as market orders, apply
what the venue executed.

Intent first (committed), then the venue; an ambiguous answer leaves the intent UNKNOWN until a
lookup by client order id resolves it. Fills are applied as reported, never re-priced.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from live.broker import (
    Broker,
    BrokerAmbiguousError,
    BrokerOrder,
    BrokerRateLimitedError,
    BrokerRejectedError,
    OrderRequest,
    OrderStatus,
)
from live.failpoints import failpoint
from live.store import Store, client_order_id
from live.store.records import TERMINAL_STATES, OrderState
from quantshift.portfolio import FillResult, PortfolioState, TargetOrder, apply_executions

log = logging.getLogger("quantshift.live")

_TOLERANCE = 1e-9
PROTECTIVE = -1
"""``halt_exempt`` of an exit that protection made (a stop level the bar crossed, the rest of a
protective order the venue filled in part): it goes out during a HALT."""
UNITS_TOLERANCE = 1e-6
"""Units below which a position difference is rounding (venues keep fractional shares and
coins to 6-9 decimals, and quantities travel as decimal text)."""


@dataclass
class WorkingOrder:
    """A decision at the venue until it is done: the client order ids sent for it (a follow-up
    id carries what a venue cancelled of an exit), and what the finished ones executed."""

    order: TargetOrder
    halt_exempt: int | None
    units: float
    client_order_ids: list[str] = field(default_factory=list)
    filled: float = 0.0
    notional: float = 0.0
    fees: float = 0.0
    price: float = 0.0  # the last finished order's average fill price, as the venue said it

    @property
    def average_price(self) -> float:
        """The average fill price (the venue's own, unrounded, when one order filled it)."""
        if len(self.client_order_ids) == 1:
            return self.price
        return self.notional / self.filled

    def to_dict(self) -> dict[str, Any]:
        return {
            "order": self.order.to_dict(),
            "halt_exempt": self.halt_exempt,
            "venue": {
                "units": self.units,
                "client_order_ids": list(self.client_order_ids),
                "filled": self.filled,
                "notional": self.notional,
                "fees": self.fees,
                "price": self.price,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], order: TargetOrder) -> WorkingOrder:
        venue = data["venue"]
        return cls(
            order=order,
            halt_exempt=data["halt_exempt"],
            units=float(venue["units"]),
            client_order_ids=list(venue["client_order_ids"]),
            filled=float(venue["filled"]),
            notional=float(venue["notional"]),
            fees=float(venue["fees"]),
            price=float(venue.get("price", 0.0)),
        )


@dataclass
class Settled:
    """What a settlement did: the state after the executions, the trades they closed, the
    orders still at the venue, and how many orders finished."""

    result: FillResult
    working: list[WorkingOrder]
    finished: int


class VenueExecution:
    """Send decisions to ``broker`` and settle them into the portfolio state."""

    def __init__(
        self,
        broker: Broker,
        store: Store,
        *,
        time_in_force: str = "day",
        before_send: Callable[[], object] | None = None,
    ) -> None:
        self.broker = broker
        self.store = store
        self.time_in_force = time_in_force
        self.before_send = before_send
        """Called after the intents are committed and right before anything goes to the venue
        (the runner's leadership check: raising there leaves the intents SUBMITTING, which a
        successor resolves by looking the order up, as after a crash at that point)."""

    # ------------------------------------------------------------------ sending
    def send(
        self, order: TargetOrder, units: float, epoch: int, *, halt_exempt, during_halt: bool
    ) -> WorkingOrder | None:
        """Send ``units`` of ``order`` as a market order; None if the venue refused it. Entry
        units are rounded down to the venue's quantity step (exits sell what the venue filled)."""
        if order.action == "entry":
            step = self.broker.quantity_step(order.symbol)
            if step > 0:
                # 6.0 / 1e-9 is 5999999999.999999 in floats: floor with a margin of that
                # rounding, then drop the float noise of n * step (whole units reach the venue
                # whole, not as 5.999999999).
                steps = units / step
                units = round(math.floor(steps + max(1e-9, steps * 1e-14)) * step, 12)
            if units <= 0:
                log.warning("%s: below the venue's quantity step %g; not sent", order.key, step)
                return None
        working = WorkingOrder(order=order, halt_exempt=halt_exempt, units=float(units))
        cid = self._send(working, float(units), order.ts_ns, epoch, during_halt)
        return None if cid is None else working

    def send_rest(self, working: WorkingOrder, units: float, bar_ts_ns: int, epoch: int,
                  during_halt: bool) -> bool:  # fmt: skip
        """Send ``units`` more of an exit whose earlier orders (``working.client_order_ids``)
        executed ``working.filled``: a market order under the next ``exit-restN`` id; False if
        the venue refused it."""
        attempt = len(working.client_order_ids)
        return self._send(working, units, bar_ts_ns, epoch, during_halt, attempt) is not None

    def _send(self, working, units, bar_ts_ns, epoch, during_halt, attempt=0) -> str | None:
        order = working.order
        action = order.action if attempt == 0 else f"{order.action}-rest{attempt}"
        cid = decision_id(order.sleeve, action, order.symbol, bar_ts_ns, order.side)
        request = OrderRequest(
            client_order_id=cid,
            symbol=order.symbol,
            side=order.side,
            qty=units,
            time_in_force=self.time_in_force,
        )
        details = {"action": order.action, "reason": order.reason, "attempt": attempt}
        working.client_order_ids.append(cid)
        if self.place(request, order.sleeve, bar_ts_ns, epoch, during_halt, details):
            return cid
        working.client_order_ids.pop()
        return None

    def place(
        self,
        request: OrderRequest,
        sleeve: str,
        bar_ts_ns: int,
        epoch: int,
        during_halt: bool,
        details: dict[str, Any],
    ) -> bool:
        """The one intent-first protocol, for every order the runner sends: commit the intent,
        then call the venue; False if the venue refused it. An ambiguous answer leaves the
        intent UNKNOWN for a lookup; an intent already past SUBMITTING (a redo) is not sent
        again, and SUBMITTING (a crash between the commit and the answer) is: the venue adopts
        a known id."""
        return self._place([(request, details)], sleeve, bar_ts_ns, epoch, during_halt,
                           lambda sent: [self.broker.submit(sent[0])])  # fmt: skip

    def place_protection(
        self,
        legs: list[tuple[OrderRequest, dict[str, Any]]],
        sleeve: str,
        bar_ts_ns: int,
        epoch: int,
    ) -> bool:
        """``place`` for one position's protective legs (request and intent details each): every
        intent is committed, then the legs go to the venue in one ``submit_protection`` call
        (during a HALT too: protection only ever closes a position)."""
        return self._place(legs, sleeve, bar_ts_ns, epoch, True, self.broker.submit_protection)

    def _place(self, orders, sleeve, bar_ts_ns, epoch, during_halt, send) -> bool:
        pending = []
        for request, details in orders:
            cid = request.client_order_id
            intent = self.store.record_intent(
                sleeve=sleeve,
                symbol=request.symbol,
                side=request.side,
                qty=request.qty,
                bar_ts_ns=bar_ts_ns,
                venue=self.broker.venue,
                epoch=epoch,
                client_order_id=cid,
                order_type=request.order_type,
                limit_price=request.limit_price,
                stop_price=request.stop_price,
                details=details,
            )
            failpoint("after_intent")
            if intent.state == OrderState.NEW:
                self.store.transition(
                    cid, "SUBMITTING", epoch=epoch, expected_state="NEW", during_halt=during_halt
                )
            elif intent.state != OrderState.SUBMITTING:
                continue
            pending.append(request)
        if not pending:
            return True
        cids = [r.client_order_id for r in pending]
        if self.before_send is not None:
            self.before_send()
        try:
            answers = send(pending)
        except BrokerAmbiguousError as exc:
            for cid in cids:
                log.warning("order %s: no definite answer (%s); resolving by lookup", cid, exc)
                self.store.transition(cid, "UNKNOWN", epoch=epoch, reason=str(exc)[:200])
            return True
        except (BrokerRejectedError, BrokerRateLimitedError) as exc:
            for cid in cids:
                log.error("order %s refused: %s", cid, exc, extra={"client_order_id": cid})
                self.store.transition(cid, "REJECTED", epoch=epoch, reason=str(exc)[:200])
            return False
        for cid, answer in zip(cids, answers, strict=True):
            failpoint("after_submit")  # once per order the venue took, as when sent one by one
            self._acknowledge(cid, answer, epoch)
        return True

    def _acknowledge(self, cid: str, answer: BrokerOrder, epoch: int) -> None:
        intent = self.store.intent(cid)
        if intent.state in (OrderState.SUBMITTING, OrderState.UNKNOWN):
            self.store.transition(
                cid,
                "ACKED",
                epoch=epoch,
                broker_order_id=answer.venue_order_id,
                broker_status=answer.status,
            )

    # ------------------------------------------------------------------ settling
    def settle(
        self,
        working: list[WorkingOrder],
        state: PortfolioState,
        ts_ns: int,
        epoch: int,
        portfolio,
        *,
        during_halt: bool,
        resend_exits: bool = True,
    ) -> Settled:
        """Look every working order up, record its fills, and apply the finished ones. An exit
        the venue cancelled in part is sent again for the rest (unless ``resend_exits`` is
        False: a person's HALT cancelled it)."""
        if not working:
            return Settled(FillResult(state=state, fills=(), trades=(), pending=()), [], 0)
        since = min(o.order.ts_ns for o in working) - 86_400 * 10**9
        by_cid = {}
        for fill in self.broker.fills(since):
            by_cid.setdefault(fill.client_order_id, []).append(fill)
        done, still = [], []
        held = {(p.sleeve, p.symbol): abs(p.units) for p in state.positions()}
        for item in working:
            cid = item.client_order_ids[-1]
            for fill in by_cid.get(cid, []):
                self.store.record_fill(
                    venue=self.broker.venue, fill_id=fill.fill_id, client_order_id=cid,
                    qty=fill.qty, price=fill.price, fee=fill.fee, ts_fill_ns=fill.ts_fill_ns,
                    epoch=epoch,
                )  # fmt: skip
            found = self.broker.order(cid)
            if found is None:
                self._lost(cid, epoch)
            elif not found.is_final:
                if found.status != OrderStatus.OPEN or self.store.intent(cid).state in (
                    OrderState.UNKNOWN,
                    OrderState.SUBMITTING,
                ):
                    self._acknowledge(cid, found, epoch)
                still.append(item)
                continue
            else:
                self._finish(cid, found, epoch)
                item.filled += found.filled_qty
                item.notional += found.filled_qty * (found.avg_fill_price or 0.0)
                item.price = found.avg_fill_price or 0.0
                item.fees += found.fees
            if item.order.action == "exit" and resend_exits:
                rest = held.get((item.order.sleeve, item.order.symbol), 0.0) - item.filled
                if rest > _TOLERANCE * max(1.0, item.units):
                    # The venue cancelled part of an exit (or never got it): send the rest.
                    if self.send_rest(item, rest, ts_ns, epoch, during_halt):
                        still.append(item)
                        continue
                    log.error("exit %s: %g units still held after a refusal", cid, rest)
                    continue
            if item.filled > _TOLERANCE:
                done.append(item)
        executions = [(i.order, i.filled, i.average_price, i.fees) for i in done]
        return Settled(apply_executions(state, executions, ts_ns, portfolio), still, len(done))

    def _finish(self, cid: str, found: BrokerOrder, epoch: int) -> None:
        intent = self.store.intent(cid)
        if intent.state in TERMINAL_STATES:
            return
        if found.status == OrderStatus.FILLED:
            if intent.state != OrderState.FILLED:
                log.warning("order %s is filled at the venue but its fills are missing", cid)
            return
        to = "REJECTED" if found.status == OrderStatus.REJECTED else "CANCELLED"
        self.store.transition(cid, to, epoch=epoch, reason=f"venue: {found.status}")

    def _lost(self, cid: str, epoch: int) -> None:
        """The venue has no order with this id: it never arrived (an ambiguous answer was a
        refusal after all). Record that; the caller decides what the decision still needs."""
        intent = self.store.intent(cid)
        if intent.state not in TERMINAL_STATES:
            log.warning("order %s never reached the venue", cid, extra={"client_order_id": cid})
            self.store.transition(cid, "CANCELLED", epoch=epoch, reason="not at the venue")


def decision_id(sleeve: str, purpose: str, symbol: str, ts_ns: int, side: str) -> str:
    """The one client order id derivation of the runner: (sleeve and purpose, symbol, time,
    side). ``purpose`` is the decision's action ("entry", "exit", "exit-rest1" for the rest of
    a partly cancelled exit) or a position's protection ("protect": its OCO group, whose time is
    the entry's fill time; each leg's id is ``live.broker.leg_id`` of the group)."""
    return client_order_id(f"{sleeve}/{purpose}", symbol, ts_ns, side)


def order_id(order: TargetOrder) -> str:
    """The client order id of a decision's first order at the venue."""
    return decision_id(order.sleeve, order.action, order.symbol, order.ts_ns, order.side)


def net_positions(positions) -> dict[str, float]:
    """Net units per symbol of the store's or the state's positions, summed over sleeves."""
    out: dict[str, float] = {}
    for p in positions:
        units = getattr(p, "units", None)
        out[p.symbol] = out.get(p.symbol, 0.0) + (p.qty if units is None else units)
    return out


def significant(units: dict[str, float]) -> dict[str, float]:
    """The symbols holding more than rounding (``UNITS_TOLERANCE``)."""
    return {k: v for k, v in units.items() if abs(v) > UNITS_TOLERANCE}


def positions_differ(broker: dict[str, float], ours: dict[str, float]) -> dict[str, tuple]:
    """Symbols whose units differ between the venue and us: {symbol: (venue, ours)}."""
    out = {}
    for symbol in sorted(broker.keys() | ours.keys()):
        a, b = broker.get(symbol, 0.0), ours.get(symbol, 0.0)
        if not math.isclose(a, b, rel_tol=1e-9, abs_tol=UNITS_TOLERANCE):
            out[symbol] = (a, b)
    return out
