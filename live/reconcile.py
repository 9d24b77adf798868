"""Reconciliation: the broker's view (positions, executed orders) against the store's.

Run at start-up, on takeover and on demand (`live reconcile`); a mismatch is reported, never
silently fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from live.paper import PaperVenue
from live.store import Store

TOLERANCE_UNITS = 1e-9


@dataclass
class ReconcileReport:
    """Differences between the broker and the store; ``ok`` when there are none."""

    broker_positions: dict[str, float]
    store_positions: dict[str, float]
    position_mismatches: dict[str, tuple[float, float]] = field(default_factory=dict)
    orders_missing_in_store: list[str] = field(default_factory=list)
    intents_unresolved: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.position_mismatches or self.orders_missing_in_store or self.intents_unresolved
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "broker_positions": self.broker_positions,
            "store_positions": self.store_positions,
            "position_mismatches": {k: list(v) for k, v in self.position_mismatches.items()},
            "orders_missing_in_store": self.orders_missing_in_store,
            "intents_unresolved": self.intents_unresolved,
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
        return out


def reconcile(config, store: Store) -> ReconcileReport:
    """Compare the paper venue of ``config`` with ``store``."""
    venue = PaperVenue(config.store_url)
    try:
        broker = {k: v for k, v in venue.positions().items() if abs(v) > TOLERANCE_UNITS}
        executed = {o.client_order_id for o in venue.orders()}
    finally:
        venue.close()
    ours: dict[str, float] = {}
    for p in store.positions():
        ours[p.symbol] = ours.get(p.symbol, 0.0) + p.qty
    ours = {k: v for k, v in ours.items() if abs(v) > TOLERANCE_UNITS}
    report = ReconcileReport(broker_positions=broker, store_positions=ours)
    for symbol in sorted(broker.keys() | ours.keys()):
        a, b = broker.get(symbol, 0.0), ours.get(symbol, 0.0)
        if abs(a - b) > TOLERANCE_UNITS * max(1.0, abs(a)):
            report.position_mismatches[symbol] = (a, b)
    recorded = {i.client_order_id for i in store.intents()}
    report.orders_missing_in_store = sorted(executed - recorded)
    report.intents_unresolved = sorted(
        i.client_order_id
        for i in store.intents(open_only=True)
        if i.client_order_id not in executed and i.state != "NEW"
    )
    return report
