"""Protective exits resting at the venue: a position's stop, target and trailing stop as orders.

When an entry fills, its levels go to the venue as one OCO group keyed by deterministic client
order ids (so a redo or a new leader finds them instead of sending twice); the venue's fill of a
leg closes the position; a strategy exit cancels the group first; reconciliation re-protects a
naked position and cancels a resting order whose position is gone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from live.broker import (
    Broker,
    BrokerOrder,
    OrderRequest,
    OrderStatus,
    leg_id,
    trailing_level,
)
from live.execution import _TOLERANCE, PROTECTIVE, VenueExecution, WorkingOrder, decision_id
from live.failpoints import failpoint
from live.store import Store
from live.store.records import TERMINAL_STATES
from quantshift.portfolio import (
    PortfolioState,
    Position,
    TargetOrder,
    apply_executions,
    check_stops,
)
from quantshift.portfolio.decide import FillResult

log = logging.getLogger("quantshift.live")

LEGS = ("stop", "limit", "trailing_stop")
"""A position's protective legs: its stop-loss, take-profit and trailing stop."""
_REASON = {"stop": "stop_loss", "limit": "take_profit", "trailing_stop": "trailing_stop"}


@dataclass(frozen=True)
class Leg:
    """One protective order of one position."""

    position: Position
    kind: str  # one of LEGS
    request: OrderRequest


def group_id(position: Position) -> str:
    """The OCO group of a position's protection: (sleeve, symbol, entry time, closing side)."""
    return decision_id(position.sleeve, "protect", position.symbol, position.entry_ts_ns,
                       _closing_side(position))  # fmt: skip


def legs_of(position: Position) -> list[Leg]:
    """The resting orders that protect ``position`` (none without levels)."""
    side, group = _closing_side(position), group_id(position)
    common = {"symbol": position.symbol, "side": side, "qty": abs(position.units),
              "oco_group": group, "time_in_force": "gtc"}  # fmt: skip
    out = []
    for kind in LEGS:
        cid = leg_id(group, kind)
        if kind == "stop" and position.stop_price is not None:
            request = OrderRequest(client_order_id=cid, order_type="stop",
                                   stop_price=position.stop_price, **common)  # fmt: skip
        elif kind == "limit" and position.take_profit_price is not None:
            request = OrderRequest(client_order_id=cid, order_type="limit",
                                   limit_price=position.take_profit_price, **common)  # fmt: skip
        elif kind == "trailing_stop" and position.trail_distance is not None:
            request = OrderRequest(
                client_order_id=cid, order_type="trailing_stop",
                trail_amount=position.trail_distance, trail_from_price=position.best_price,
                **common,
            )  # fmt: skip
        else:
            continue
        out.append(Leg(position, kind, request))
    return out


def _closing_side(position: Position) -> str:
    return "sell" if position.units > 0 else "buy"


def _exit_order(position: Position, strategy: str, kind: str, ts_ns: int, price: float):
    return TargetOrder(
        sleeve=position.sleeve,
        strategy=strategy,
        symbol=position.symbol,
        action="exit",
        side=_closing_side(position),
        units=abs(position.units),
        reason=_REASON[kind],
        ts_ns=ts_ns,
        reference_price=price,
    )


class RestingProtection:
    """Keep every position's protection resting at ``broker`` and settle what it executed.

    ``metrics`` counts re-protections, orphan cancels and market fallbacks
    (``record_protection``). A leg the venue fills in parts closes its position once it has
    filled it all (as an exit's market orders do); where the rest of it stops resting (cancelled
    by the venue, or before a strategy exit), the rest goes out at market as a working exit
    handed to ``on_working`` (the runner's working orders), and the position closes at the
    average of both.
    """

    def __init__(self, broker: Broker, store: Store, metrics=None, before_send=None,
                 on_working=None) -> None:  # fmt: skip
        self.broker, self.store, self.metrics = broker, store, metrics
        self.execution = VenueExecution(broker, store, before_send=before_send)
        self.on_working = on_working

    # ------------------------------------------------------------------ placing
    def protect(self, state: PortfolioState, epoch: int, fresh=frozenset()) -> int:
        """Send every missing leg of every open position; return how many went out. A leg
        missing for a position not in ``fresh`` ((sleeve, symbol) entered this cycle) is a
        re-protection: logged and counted."""
        sent = 0
        for position in state.positions():
            missing = []
            for leg in legs_of(position):
                intent = self.store.intent(leg.request.client_order_id)
                if intent is not None and intent.state not in ("NEW", "SUBMITTING"):
                    continue
                if (position.sleeve, position.symbol) not in fresh and intent is None:
                    log.warning(
                        "reconcile: %s %s has no %s resting at the venue; protecting it now",
                        position.sleeve, position.symbol, leg.kind,
                        extra={"sleeve": position.sleeve, "symbol": position.symbol},
                    )  # fmt: skip
                    self._count("reprotected", position.sleeve)
                missing.append(leg)
            if missing and self._send(missing, epoch):
                sent += len(missing)
        return sent

    def _send(self, legs: list[Leg], epoch: int) -> bool:
        orders = [
            (leg.request, {
                "action": "protect",
                "leg": leg.kind,
                "reason": _REASON[leg.kind],
                "oco_group": leg.request.oco_group,
                "trail_amount": leg.request.trail_amount,
            })
            for leg in legs
        ]  # fmt: skip
        position = legs[0].position
        # Protection goes out during a HALT too: it only ever closes a position.
        return self.execution.place_protection(orders, position.sleeve, position.entry_ts_ns,
                                               epoch)  # fmt: skip

    # ------------------------------------------------------------------ settling
    def settle(self, state: PortfolioState, portfolio, ts_ns: int, epoch: int) -> FillResult:
        """Apply the legs the venue executed: each closes its position (the OCO group's other
        legs are cancelled by the venue); trailing levels follow what the venue reports."""
        executions, best = [], {}
        layout = portfolio.layout()
        for position in state.positions():
            filled = part = None
            for leg in legs_of(position):  # every leg is brought up to date, siblings too
                found = self._resolve(leg, epoch)
                if found is None:
                    continue
                if found.status == OrderStatus.FILLED and filled is None:
                    filled = leg, found
                elif found.is_final and found.filled_qty > 0:
                    part = leg, found  # filled in part, the rest no longer rests
                elif leg.kind == "trailing_stop" and found.trail_best_price is not None:
                    best[(position.sleeve, position.symbol)] = found.trail_best_price
            if filled is None and part is None:
                continue
            leg, found = filled or part
            strategy = layout.strategies[layout.sleeves.index(position.sleeve)]
            order = _exit_order(position, strategy, leg.kind, ts_ns, found.avg_fill_price)
            if filled is not None:
                executions.append((order, found.filled_qty, found.avg_fill_price, found.fees))
            else:
                self._exit_rest(position, leg, found, order, epoch)
        return apply_executions(_with_best_prices(state, layout, best), executions, ts_ns,
                                portfolio)  # fmt: skip

    def _resolve(self, leg: Leg, epoch: int) -> BrokerOrder | None:
        """Look a leg up at the venue and bring its intent (and fill) up to date."""
        cid = leg.request.client_order_id
        intent = self.store.intent(cid)
        if intent is None:
            return None
        found = self.broker.order(cid)
        if found is None:
            if intent.state not in TERMINAL_STATES and intent.state != "NEW":
                self.store.transition(cid, "CANCELLED", epoch=epoch, reason="not at the venue")
            return None
        self._record_fills(intent, found, epoch)
        ended = found.is_final and found.status != OrderStatus.FILLED
        if ended and self.store.intent(cid).state not in TERMINAL_STATES:
            to = "REJECTED" if found.status == OrderStatus.REJECTED else "CANCELLED"
            self.store.transition(cid, to, epoch=epoch, reason=f"venue: {found.status}")
        return found

    def _record_fills(self, intent, found: BrokerOrder, epoch: int) -> None:
        """Record what the venue executed of a leg since it was last looked at: the growth of
        its cumulative quantity, value and fees (a leg may fill in parts). A leg filled at
        once is one fill under its client order id, each part of one filled in parts one
        under its id and the quantity filled by then (a redo records nothing twice)."""
        cid = intent.client_order_id
        new = found.filled_qty - intent.filled_qty
        if found.avg_fill_price is None or new <= _TOLERANCE * max(1.0, found.qty):
            return
        before = self.store.fills(cid)
        value = found.filled_qty * found.avg_fill_price - sum(f.qty * f.price for f in before)
        fee = found.fees - sum(f.fee for f in before)
        whole = not before and found.status == OrderStatus.FILLED
        self.store.record_fill(
            venue=self.broker.venue, fill_id=cid if whole else f"{cid}@{found.filled_qty!r}",
            client_order_id=cid, qty=new, price=value / new, fee=max(fee, 0.0),
            ts_fill_ns=found.ts_updated_ns, epoch=epoch,
        )  # fmt: skip
        if found.status != OrderStatus.FILLED:
            log.warning(
                "%s %s of %s: the venue filled %.10g of %.10g units (%s); the position "
                "closes once it has filled all of it", found.order_type, cid, intent.symbol,
                found.filled_qty, found.qty,
                "the rest rests" if not found.is_final else "the rest goes out at market",
                extra={"client_order_id": cid, "sleeve": intent.sleeve, "symbol": intent.symbol},
            )  # fmt: skip

    def _exit_rest(self, position: Position, leg: Leg, found: BrokerOrder, order: TargetOrder,
                   epoch: int) -> None:  # fmt: skip
        """Send the rest of a position whose leg ``found`` filled in part and rests no more:
        ``order`` (the exit) at market for the units the leg left, as a working exit that
        already holds the leg's execution (closing the position at the average of both)."""
        if self.on_working is None or self.store.intent(_rest_id(position)) is not None:
            return  # no one to hand it to (a lookup), or handed off before (a redo)
        filled, price = found.filled_qty, found.avg_fill_price
        working = WorkingOrder(
            order=order, halt_exempt=PROTECTIVE, units=abs(position.units),
            client_order_ids=[leg.request.client_order_id], filled=filled,
            notional=filled * price, fees=found.fees, price=price,
        )  # fmt: skip
        rest = abs(position.units) - filled
        # Under the position's entry time: one id per position, whichever cycle sends it.
        if self.execution.send_rest(working, rest, position.entry_ts_ns, epoch, True):
            log.warning(
                "%s %s: %s %s filled %.10g of %.10g units and rests no more; the rest goes out "
                "at market", position.sleeve, position.symbol, leg.kind,
                leg.request.client_order_id, filled, abs(position.units),
                extra={"sleeve": position.sleeve, "symbol": position.symbol},
            )  # fmt: skip
            self.on_working(working)
        else:
            log.error("%s %s: %.10g units left unprotected after the venue refused their exit",
                      position.sleeve, position.symbol, rest)  # fmt: skip

    def unsettled(self, state: PortfolioState) -> dict[str, float]:
        """Units per symbol that legs the venue filled have moved and ``state`` does not know
        yet (a crash between the fill and its settlement): what reconciliation adds to ours."""
        out: dict[str, float] = {}
        for position in state.positions():
            for leg in legs_of(position):
                if self.store.intent(leg.request.client_order_id) is None:
                    continue
                found = self.broker.order(leg.request.client_order_id)
                if found is not None and found.filled_qty > 0:  # in part: only that part
                    sold = min(found.filled_qty, abs(position.units))
                    out[position.symbol] = out.get(position.symbol, 0.0) - math.copysign(
                        sold, position.units)  # fmt: skip
                    break
        return out

    # ------------------------------------------------------------------ exits and orphans
    def release(self, position: Position, epoch: int, exit_order: TargetOrder | None = None
                ) -> bool:  # fmt: skip
        """Cancel a position's protection before a strategy exit; False if a leg filled first
        (the race: the position is already closed at the venue, so no exit may be sent). A leg
        that had filled in part (then or before) leaves the rest: ``exit_order`` goes out for
        it at once (or, without one, at the next settlement), and False is returned too."""
        for leg in legs_of(position):
            cid = leg.request.client_order_id
            if self.store.intent(cid) is None:
                continue
            done = self.broker.cancel(cid)
            failpoint("after_cancel")
            if done is not None and done.filled_qty > 0:
                if done.status == OrderStatus.FILLED or exit_order is None:
                    log.warning("%s of %s %s filled before its cancel; no exit sent", leg.kind,
                                position.sleeve, position.symbol)  # fmt: skip
                    return False  # the settlement applies the fill and resolves every leg
                found = self._resolve(leg, epoch) or done
                self._exit_rest(position, leg, found, exit_order, epoch)
                return False
            self._resolve(leg, epoch)
        return True

    def stranded(self, before: PortfolioState, after: PortfolioState, bars, t: int,
                 portfolio, epoch: int, refused: set) -> set[tuple[str, str]]:  # fmt: skip
        """(sleeve, symbol) of the positions whose stop bar ``t`` went through while their
        protection still rests unfilled at a venue where that can happen
        (``Broker.triggered_stops_may_rest``: a Coinbase stop-limit a gap took past its limit).
        ``before`` is the state the bar's levels were checked from (the fill model's
        ``check_stops``), ``after`` the state once the venue's executions of the bar were
        settled; ``refused`` the positions of ``after`` whose protection the venue refused
        (``refused``: the runner watches those). Their protection is cancelled (logged and
        counted as ``market_fallback``) and the runner exits them at market, so no position
        stays open past its stop for more than one cycle. A stop that had filled in part sends
        its rest itself (``release``), and one that filled in full before its cancel is left to
        the next settlement."""
        if not self.broker.triggered_stops_may_rest:
            return set()
        held = {(p.sleeve, p.symbol): p for p in after.positions()
                if (p.sleeve, p.symbol) not in refused}  # fmt: skip
        ts_ns = int(bars.ts_ns[t])
        hit = check_stops(before, bars.open[t], bars.high[t], bars.low[t], ts_ns, portfolio, t)
        out = set()
        for trade in hit.trades:
            position = held.get((trade.sleeve, trade.symbol))
            if position is None or trade.exit_reason == _REASON["limit"]:
                continue  # the venue filled it, or a target only touched (not a triggered stop)
            kind = next(k for k, reason in _REASON.items() if reason == trade.exit_reason)
            order = _exit_order(position, trade.strategy, kind, ts_ns, trade.exit_price)
            handed = self.store.intent(_rest_id(position)) is not None
            released = self.release(position, epoch, order)  # False: filled, in part or all
            if not released and (handed or self.store.intent(_rest_id(position)) is None):
                continue  # filled in full before its cancel, or its rest went out before
            log.warning(
                "%s %s: the bar went through its %s at %.6g (fill model: %.6g) and the order "
                "still rests (unfilled or in part) at %s; cancelled, exiting at market",
                position.sleeve, position.symbol, trade.exit_reason, _level(position, trade),
                trade.exit_price, self.broker.venue,
                extra={"sleeve": position.sleeve, "symbol": position.symbol, "cycle": ts_ns},
            )  # fmt: skip
            self._count("market_fallback", position.sleeve)
            if released:  # else the rest of a part the stop sold is at the venue already
                out.add((position.sleeve, position.symbol))
        return out

    def refused(self, state: PortfolioState) -> set[tuple[str, str]]:
        """(sleeve, symbol) of the positions whose protection the venue refused (e.g. legs it
        cannot rest as one order): the runner watches their levels instead."""
        out = set()
        for position in state.positions():
            for leg in legs_of(position):
                intent = self.store.intent(leg.request.client_order_id)
                if intent is not None and intent.state == "REJECTED":
                    out.add((position.sleeve, position.symbol))
                    break
        return out

    def cancel_orphans(self, state: PortfolioState, epoch: int) -> int:
        """Cancel resting orders of ours whose position is gone (logged and counted)."""
        wanted = {leg.request.client_order_id for p in state.positions() for leg in legs_of(p)}
        cancelled = 0
        for order in self.broker.open_orders():
            if order.oco_group is None or order.client_order_id in wanted:
                continue
            intent = self.store.intent(order.client_order_id)
            if intent is None or (intent.details or {}).get("action") != "protect":
                continue
            cid = order.client_order_id
            log.warning("reconcile: %s rests at the venue without its position; cancelling",
                        cid, extra={"client_order_id": cid})  # fmt: skip
            self.broker.cancel(order.client_order_id)
            if self.store.intent(order.client_order_id).state not in TERMINAL_STATES:
                self.store.transition(order.client_order_id, "CANCELLED", epoch=epoch,
                                      reason="orphan: no position")  # fmt: skip
            self._count("orphan_cancelled", intent.sleeve)
            cancelled += 1
        return cancelled

    def _count(self, outcome: str, sleeve: str) -> None:
        if self.metrics is not None:
            self.metrics.record_protection(sleeve, outcome)


def _rest_id(position: Position) -> str:
    """The client order id of the market order that sells what a partly filled leg left
    (``VenueExecution.send_rest`` under the position's entry time: one per position)."""
    return decision_id(position.sleeve, "exit-rest1", position.symbol, position.entry_ts_ns,
                       _closing_side(position))  # fmt: skip


def _level(position: Position, trade) -> float:
    """The stop level a stop exit of ``position`` went through (for the log)."""
    if trade.exit_reason == _REASON["stop"] or position.trail_distance is None:
        return position.stop_price
    return trailing_level(_closing_side(position), position.best_price, position.trail_distance)


def _with_best_prices(state: PortfolioState, layout, best: dict) -> PortfolioState:
    """``state`` with the trailing stops' best prices the venue reports (a venue's trailing
    stop follows the market itself; the state follows the venue)."""
    if not best:
        return state
    arrays = state.arrays()
    for (sleeve, symbol), price in best.items():
        arrays.slots[layout.sleeves.index(sleeve), layout.symbols.index(symbol)].best_price = price
    return state.replace(None, arrays)
