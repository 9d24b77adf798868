"""The paper broker's venue: an order book beside the store that executes what it is sent once.

Prices come from the shared fill model (the runner computes them as the backtest does); the venue
remembers each client order id, so a resubmission after a crash is answered with the first fill.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from live.broker import (
    Account,
    Broker,
    BrokerFill,
    BrokerOrder,
    BrokerRejectedError,
    OrderRequest,
    OrderStatus,
)
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


class PaperBroker(Broker):
    """The paper venue behind the broker contract: market orders fill at once at ``quote`` of
    the symbol (moved by ``slippage_rate`` against the order) with a ``fee_rate`` commission.

    The runner's replay prices each fill with the shared fill model and calls the venue
    directly; this adapter is how the paper venue passes the same contract suite as Alpaca
    and Coinbase, and how a wall-clock paper runner would be driven.
    """

    venue = VENUE
    capabilities = frozenset({"market"})

    def __init__(
        self,
        url: str,
        *,
        quote: Callable[[str], float],
        cash: float,
        fee_rate: float = 0.0,
        slippage_rate: float = 0.0,
    ) -> None:
        self._venue = PaperVenue(url)
        self._quote = quote
        self._cash = float(cash)
        self._fee_rate = float(fee_rate)
        self._slippage_rate = float(slippage_rate)

    def close(self) -> None:
        self._venue.close()

    def connect(self) -> Account:
        return self.account()

    def account(self) -> Account:
        cash = self._cash
        for o in self._venue.orders():
            cash -= (o.qty if o.side == "buy" else -o.qty) * o.price + o.fee
        value = sum(units * self._quote(s) for s, units in self.positions().items())
        return Account(cash=cash, equity=cash + value, buying_power=max(cash, 0.0))

    def positions(self) -> dict[str, float]:
        return {s: u for s, u in self._venue.positions().items() if abs(u) > 1e-12}

    def submit(self, request: OrderRequest) -> BrokerOrder:
        if request.order_type != "market" or request.take_profit_price or request.stop_loss_price:
            raise BrokerRejectedError(
                VENUE, f"order {request.client_order_id}: only market orders are supported"
            )
        known = self._venue.order(request.client_order_id)
        if known is not None:
            return _broker_order(known)
        price = float(self._quote(request.symbol))
        if not (math.isfinite(price) and price > 0):
            raise BrokerRejectedError(VENUE, f"no price for {request.symbol!r}")
        sign = 1.0 if request.side == "buy" else -1.0
        fill_price = price * (1.0 + sign * self._slippage_rate)
        executed = self._venue.submit(
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            qty=float(request.qty),
            price=fill_price,
            fee=float(request.qty) * fill_price * self._fee_rate,
            ts_fill_ns=time.time_ns(),
        )
        return _broker_order(executed)

    def order(self, client_order_id: str) -> BrokerOrder | None:
        found = self._venue.order(client_order_id)
        return None if found is None else _broker_order(found)

    def cancel(self, client_order_id: str) -> BrokerOrder | None:
        return self.order(client_order_id)  # market orders are final the moment they exist

    def open_orders(self) -> list[BrokerOrder]:
        return []

    def fills(self, since_ns: int = 0) -> list[BrokerFill]:
        return [
            BrokerFill(
                fill_id=o.client_order_id,
                client_order_id=o.client_order_id,
                symbol=o.symbol,
                side=o.side,
                qty=o.qty,
                price=o.price,
                fee=o.fee,
                ts_fill_ns=o.ts_fill_ns,
            )
            for o in self._venue.orders()
            if o.ts_fill_ns >= since_ns
        ]


def _broker_order(order: VenueOrder) -> BrokerOrder:
    return BrokerOrder(
        client_order_id=order.client_order_id,
        venue_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        qty=order.qty,
        order_type="market",
        status=OrderStatus.FILLED,
        filled_qty=order.qty,
        avg_fill_price=order.price,
        fees=order.fee,
        ts_updated_ns=order.ts_fill_ns,
    )
