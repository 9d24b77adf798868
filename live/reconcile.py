"""Reconciliation: the broker's view (positions, executed orders) against the store's.

The runner compares positions at start-up, on takeover and after each settlement; `live
reconcile` runs the full comparison on demand. A mismatch is reported, never silently fixed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from live.broker import Broker
from live.execution import net_positions, positions_differ, significant
from live.paper import PaperBroker
from live.store import Store


@dataclass
class ReconcileReport:
    """Differences between the broker and the store; ``ok`` when there are none."""

    broker_positions: dict[str, float]
    store_positions: dict[str, float]
    position_mismatches: dict[str, tuple[float, float]] = field(default_factory=dict)
    orders_missing_in_store: list[str] = field(default_factory=list)
    intents_unresolved: list[str] = field(default_factory=list)
    resting_without_position: list[str] = field(default_factory=list)
    """Protective orders resting at the venue whose position is gone (the runner cancels them
    at its next cycle)."""

    @property
    def ok(self) -> bool:
        return not (
            self.position_mismatches
            or self.orders_missing_in_store
            or self.intents_unresolved
            or self.resting_without_position
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "broker_positions": self.broker_positions,
            "store_positions": self.store_positions,
            "position_mismatches": {k: list(v) for k, v in self.position_mismatches.items()},
            "orders_missing_in_store": self.orders_missing_in_store,
            "intents_unresolved": self.intents_unresolved,
            "resting_without_position": self.resting_without_position,
        }

    def lines(self) -> list[str]:
        if self.ok:
            return [f"ok: broker and store agree on {len(self.broker_positions)} symbol(s)"]
        out = []
        for symbol, (broker, store) in self.position_mismatches.items():
            out.append(f"MISMATCH {symbol}: broker {broker:g} units, store {store:g}")
        out += [f"MISSING in store: broker order {c}" for c in self.orders_missing_in_store]
        out += [f"UNRESOLVED intent {c}: not final and unknown to the broker" for c in
                self.intents_unresolved]  # fmt: skip
        out += [f"ORPHAN resting order {c}: its position is gone" for c in
                self.resting_without_position]  # fmt: skip
        return out


def reconcile(config, store: Store, broker: Broker | None = None) -> ReconcileReport:
    """Compare the venue of ``config`` (the paper venue, Alpaca or Coinbase; or ``broker``)
    with ``store``: positions, venue orders the store never recorded, and intents in flight
    that the venue does not know."""
    own = broker is None
    if own:
        broker = _open_broker(config)
    try:
        return _compare(broker, store, since_ns=0 if broker.venue == "paper" else _since())
    finally:
        if own:
            broker.close()


def _compare(broker: Broker, store: Store, since_ns: int) -> ReconcileReport:
    venue = significant(broker.positions())
    ours = significant(net_positions(store.positions()))
    report = ReconcileReport(broker_positions=venue, store_positions=ours)
    report.position_mismatches = positions_differ(venue, ours)
    recorded = {i.client_order_id for i in store.intents()}
    at_venue = {o.client_order_id for o in broker.open_orders()}
    at_venue |= {f.client_order_id for f in broker.fills(since_ns)}
    # An order placed outside QuantShift has no client order id of ours (or none at all).
    report.orders_missing_in_store = sorted(c or "(no client order id)" for c in at_venue
                                            if c not in recorded)  # fmt: skip
    report.intents_unresolved = sorted(
        i.client_order_id
        for i in store.intents(open_only=True)
        if i.state != "NEW" and broker.order(i.client_order_id) is None
    )
    held = {(p.sleeve, p.symbol) for p in store.positions() if abs(p.qty) > 0}
    for order in broker.open_orders():
        intent = store.intent(order.client_order_id)
        protective = intent is not None and (intent.details or {}).get("action") == "protect"
        if protective and (intent.sleeve, intent.symbol) not in held:
            report.resting_without_position.append(order.client_order_id)
    return report


def _open_broker(config) -> Broker:
    if config.broker.kind == "paper":
        # Positions and executions need no prices: a quote is never asked for.
        return PaperBroker(config.store_url, quote=_no_quote, cash=config.portfolio.sim.cash)
    from live.venues import build_broker

    broker = build_broker(config)
    broker.connect()
    return broker


def _no_quote(symbol: str) -> float:
    raise RuntimeError(f"reconciliation asked for a price of {symbol}")


def _since(days: int = 7) -> int:
    """Venue executions looked at: the last week (older ones are in the store already or
    belong to another system's history)."""
    return time.time_ns() - days * 86_400 * 1_000_000_000
