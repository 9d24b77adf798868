"""The paper broker's venue: an order book beside the store that executes what it is sent once.

Prices come from the shared fill model (the runner computes them as the backtest does); the venue
remembers each client order id, so a resubmission after a crash is answered with the first fill.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from live.store.db import Database, parse_url
from live.store.migrate import migrate

VENUE = "paper"


@dataclass(frozen=True, kw_only=True)
class VenueOrder:
    """An order the venue executed: what it filled, at what price and fee, and how many times
    it was submitted (more than once means a resubmission after a crash was adopted)."""

    client_order_id: str
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    ts_fill_ns: int
    submits: int


class PaperVenue:
    """The paper broker's order book, in the live store's database (its own connection).

    Parameters
    ----------
    url : str
        The store URL (``sqlite:///...`` or ``postgresql://...``).
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self._db = Database(parse_url(url), timeout_s=timeout_s)
        migrate(self._db)

    def close(self) -> None:
        self._db.close()

    def submit(
        self,
        *,
        client_order_id: str,
        symbol: str,
        side: str,
        qty: float,
        price: float,
        fee: float,
        ts_fill_ns: int,
    ) -> VenueOrder:
        """Execute a market order at ``price`` (after slippage) with ``fee``; a client order id
        seen before returns the first execution unchanged (and counts the submit)."""
        if side not in ("buy", "sell") or not (math.isfinite(qty) and qty > 0):
            raise ValueError(f"paper venue: malformed order {client_order_id}: {side} {qty}")
        now = time.time_ns()
        with self._db.write(f"paper order {client_order_id}", None) as tx:
            tx.run(
                "INSERT INTO paper_orders (client_order_id, symbol, side, qty, price, fee, "
                "ts_fill_ns, submits, ts_created_ns) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (client_order_id) DO UPDATE SET submits = paper_orders.submits + 1",
                (client_order_id, symbol, side, float(qty), float(price), float(fee),
                 int(ts_fill_ns), now),
            )  # fmt: skip
            row = tx.one("SELECT * FROM paper_orders WHERE client_order_id = ?", (client_order_id,))
        return _order(row)

    def order(self, client_order_id: str) -> VenueOrder | None:
        """Look an order up by client order id (how an ambiguous answer is resolved)."""
        with self._db.read("read paper order") as tx:
            row = tx.one("SELECT * FROM paper_orders WHERE client_order_id = ?", (client_order_id,))
        return None if row is None else _order(row)

    def orders(self) -> list[VenueOrder]:
        """Every executed order, in fill time order."""
        with self._db.read("read paper orders") as tx:
            rows = tx.all("SELECT * FROM paper_orders ORDER BY ts_fill_ns, ts_created_ns")
        return [_order(r) for r in rows]

    def positions(self) -> dict[str, float]:
        """Net units per symbol, from every execution (what reconciliation compares)."""
        out: dict[str, float] = {}
        for o in self.orders():
            out[o.symbol] = out.get(o.symbol, 0.0) + (o.qty if o.side == "buy" else -o.qty)
        return out


def _order(row) -> VenueOrder:
    return VenueOrder(
        client_order_id=row["client_order_id"],
        symbol=row["symbol"],
        side=row["side"],
        qty=float(row["qty"]),
        price=float(row["price"]),
        fee=float(row["fee"]),
        ts_fill_ns=int(row["ts_fill_ns"]),
        submits=int(row["submits"]),
    )
