"""The paper venue: an order book in the live store, matched against bars by the shared fill model.

Market orders fill at the next bar's open; stop, limit and trailing-stop orders rest until a bar
reaches their level and fill by the fill model's intrabar rules (``check_levels_nb``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

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
from quantshift.engine.compile import entry_point
from quantshift.engine.records import config_dt, position_dt, stats_dt, trade_dt
from quantshift.engine.simulate import (
    REASON_STOP,
    REASON_TAKE_PROFIT,
    REASON_TRAILING,
    check_levels_nb,
    exit_nb,
)

VENUE = "paper"
_LEG_OF_REASON = {
    REASON_STOP: "stop",
    REASON_TRAILING: "trailing_stop",
    REASON_TAKE_PROFIT: "limit",
}


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


@dataclass(frozen=True)
class LevelsMatch:
    """What one bar did to a group of resting exit orders: the leg that filled (``"stop"``,
    ``"limit"``, ``"trailing_stop"``; None if none), its price after slippage and its fee, and
    the best price a trailing stop follows after the bar."""

    leg: str | None
    price: float
    fee: float
    best_price: float | None


def market_fill(side: str, qty: float, price: float, cfg) -> tuple[float, float]:
    """The fill model's price and fee of a market order of ``qty`` on ``side`` at ``price``
    before slippage (the order closes the position on its other side: a buy pays the slippage
    up, a sell down). ``cfg`` is a ``config_dt`` record. A simulated venue (the paper broker,
    the tests' fake venues) fills at what this returns."""
    position = np.zeros(1, position_dt)
    position[0].units = (-1.0 if side == "buy" else 1.0) * qty
    position[0].entry_price = price
    trades = np.zeros(1, trade_dt)
    entry_point(_exit_entry)(position[0], price, cfg, trades, np.zeros(1, stats_dt)[0])
    return float(trades[0].exit_price), float(trades[0].exit_fees)


def match_levels(
    side: str, qty: float, open_: float, high: float, low: float, cfg, *,
    stop_price: float | None = None, limit_price: float | None = None,
    trail_amount: float | None = None, best_price: float | None = None,
) -> LevelsMatch:  # fmt: skip
    """Match resting exit orders (``side`` closes a position on the other side; at most one
    leg of each kind, one OCO group) against one bar with the fill model's intrabar rules
    (``check_levels_nb``): a gap through a level fills at the open, a touched level at the
    level, a bar reaching a stop and a target fills the stop, a trailing stop follows the best
    price. ``cfg`` is a ``config_dt`` record (its fee and slippage rates apply). A simulated
    venue (the paper broker, the tests' fake venues) executes what this returns."""
    position = np.zeros(1, position_dt)
    p = position[0]
    p.units = (1.0 if side == "sell" else -1.0) * qty
    nan = math.nan
    p.stop_price = nan if stop_price is None else stop_price
    p.take_profit_price = nan if limit_price is None else limit_price
    p.trail_distance = nan if trail_amount is None else trail_amount
    p.best_price = p.entry_price = open_  # the trade's P&L is not the venue's concern
    if trail_amount is not None and best_price is not None:
        p.best_price = best_price
    p.has_levels = True
    trades, stats = np.zeros(1, trade_dt), np.zeros(1, stats_dt)
    if not entry_point(_check_levels_entry)(p, open_, high, low, cfg, trades, stats[0]):
        best = None if trail_amount is None else float(p.best_price)
        return LevelsMatch(None, math.nan, 0.0, best)
    trade = trades[0]
    return LevelsMatch(_LEG_OF_REASON[int(trade.exit_reason)], float(trade.exit_price),
                       float(trade.exit_fees), None)  # fmt: skip


# Cached entry points (quantshift.engine.compile.entry_point): a runner's first fill must not
# wait for these kernels to compile.
def _exit_entry(position, price, cfg, trades, stats):
    exit_nb(position, price, 0, 0, cfg, trades, 0, stats)


def _check_levels_entry(position, open_, high, low, cfg, trades, stats):
    return check_levels_nb(position, open_, high, low, 0, cfg, trades, 0, stats)


def warm_fills() -> None:
    """Load (or compile) the paper venue's fill kernels before its first fill."""
    cfg = np.zeros(1, config_dt)[0]
    market_fill("buy", 1.0, 100.0, cfg)
    match_levels("sell", 1.0, 100.0, 101.0, 99.0, cfg, stop_price=95.0, limit_price=110.0)


class PaperVenue:
    """The paper venue's executions, in the live store's database (its own connection).

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

    def order(self, client_order_id: str) -> VenueOrder | None:
        """Look an execution up by client order id."""
        with self._db.read("read paper order") as tx:
            row = tx.one("SELECT * FROM paper_orders WHERE client_order_id = ?", (client_order_id,))
        return None if row is None else _execution(row)

    def orders(self) -> list[VenueOrder]:
        """Every executed order, in fill time order."""
        with self._db.read("read paper orders") as tx:
            rows = tx.all("SELECT * FROM paper_orders ORDER BY ts_fill_ns, ts_created_ns")
        return [_execution(r) for r in rows]

    def positions(self) -> dict[str, float]:
        """Net units per symbol, from every execution (what reconciliation compares)."""
        out: dict[str, float] = {}
        for o in self.orders():
            out[o.symbol] = out.get(o.symbol, 0.0) + (o.qty if o.side == "buy" else -o.qty)
        return out


def _execution(row) -> VenueOrder:
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
    """The paper venue behind the broker contract, priced by the shared fill model.

    Market orders fill at the next bar's open (``open_bar``), moved by ``slippage_rate``
    against the order, with a ``fee_rate`` commission; resting orders fill on a bar's range
    (``trade_bar``) as the backtest fills protective levels: a gap through a level fills at
    the open, a touched level at the level, a bar touching both a stop and a target of one
    OCO group fills the stop. With ``quote`` (a wall-clock paper account, no bars) market
    orders fill at once at the quote.
    """

    venue = VENUE
    capabilities = frozenset({"market", "limit", "stop", "trailing_stop", "oco"})
    supports_resting_protection = True

    def __init__(
        self,
        url: str,
        *,
        cash: float,
        quote: Callable[[str], float] | None = None,
        fee_rate: float = 0.0,
        slippage_rate: float = 0.0,
    ) -> None:
        self._venue = PaperVenue(url)
        self._db = self._venue._db
        self._quote = quote
        self._cash = float(cash)
        self._cfg = np.zeros(1, config_dt)
        self._cfg[0].fee_rate = float(fee_rate)
        self._cfg[0].slippage_rate = float(slippage_rate)
        self._marks: dict[str, float] = {}
        self._bar_ns: int | None = None  # the bar opened last: an order sent now waits for the next

    def close(self) -> None:
        self._venue.close()

    # ------------------------------------------------------------------ the account
    def connect(self) -> Account:
        return self.account()

    def account(self) -> Account:
        cash = self._cash
        for o in self._venue.orders():
            cash -= (o.qty if o.side == "buy" else -o.qty) * o.price + o.fee
        value = sum(units * self._mark(s) for s, units in self.positions().items())
        return Account(cash=cash, equity=cash + value, buying_power=max(cash, 0.0))

    def _mark(self, symbol: str) -> float:
        return self._marks[symbol] if self._quote is None else float(self._quote(symbol))

    def positions(self) -> dict[str, float]:
        return {s: u for s, u in self._venue.positions().items() if abs(u) > 1e-12}

    # ------------------------------------------------------------------ orders
    def submit(self, request: OrderRequest) -> BrokerOrder:
        if request.take_profit_price or request.stop_loss_price:
            raise BrokerRejectedError(
                VENUE, f"order {request.client_order_id}: no bracket legs; send an OCO group"
            )
        known = self.order(request.client_order_id)
        if known is not None:
            with self._db.write(f"paper resubmit {request.client_order_id}", None) as tx:
                tx.run("UPDATE paper_book SET submits = submits + 1 WHERE client_order_id = ?",
                       (request.client_order_id,))  # fmt: skip
                tx.run("UPDATE paper_orders SET submits = submits + 1 WHERE client_order_id = ?",
                       (request.client_order_id,))  # fmt: skip
            return known
        if request.oco_group is not None and self._group_done(request.oco_group):
            raise BrokerRejectedError(
                VENUE, f"order {request.client_order_id}: OCO group {request.oco_group} is done"
            )
        now = time.time_ns()
        best = request.trail_from_price if request.order_type == "trailing_stop" else None
        with self._db.write(f"paper order {request.client_order_id}", None) as tx:
            tx.run(
                "INSERT INTO paper_book (client_order_id, symbol, side, qty, order_type, "
                "stop_price, limit_price, trail_amount, best_price, oco_group, status, submits, "
                "ts_created_ns, ts_updated_ns, sent_in_bar_ns) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
                (request.client_order_id, request.symbol, request.side, float(request.qty),
                 request.order_type, request.stop_price, request.limit_price,
                 request.trail_amount, best, request.oco_group, OrderStatus.OPEN, now, now,
                 self._bar_ns),
            )  # fmt: skip
        if request.order_type == "market" and self._quote is not None:
            price = float(self._quote(request.symbol))
            if not (math.isfinite(price) and price > 0):
                self._set_status(request.client_order_id, OrderStatus.REJECTED)
                raise BrokerRejectedError(VENUE, f"no price for {request.symbol!r}")
            self._fill_market(request.client_order_id, price, now)
        return self.order(request.client_order_id)

    def order(self, client_order_id: str) -> BrokerOrder | None:
        with self._db.read("read paper book") as tx:
            row = tx.one(
                "SELECT b.*, o.price AS fill_price, o.fee AS fill_fee, o.ts_fill_ns "
                "FROM paper_book b LEFT JOIN paper_orders o "
                "ON o.client_order_id = b.client_order_id WHERE b.client_order_id = ?",
                (client_order_id,),
            )
        return None if row is None else _broker_order(row)

    def cancel(self, client_order_id: str) -> BrokerOrder | None:
        with self._db.write(f"paper cancel {client_order_id}", None) as tx:
            tx.run(
                "UPDATE paper_book SET status = ?, ts_updated_ns = ? "
                "WHERE client_order_id = ? AND status = ?",
                (OrderStatus.CANCELLED, time.time_ns(), client_order_id, OrderStatus.OPEN),
            )
        return self.order(client_order_id)

    def open_orders(self) -> list[BrokerOrder]:
        return [_broker_order(r) for r in self._open_rows()]

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

    # ------------------------------------------------------------------ the simulated market
    def open_bar(self, ts_ns: int, opens: Mapping[str, float]) -> None:
        """Fill the market orders waiting for this open, in the order they were sent: those sent
        before this bar opened (a runner redoing a bar opens it again; what its predecessor sent
        in that bar waits for the next open)."""
        self._marks.update({s: p for s, p in opens.items() if math.isfinite(p)})
        self._bar_ns = ts_ns
        for row in self._open_rows():
            price = opens.get(row["symbol"], math.nan)
            sent_in = row["sent_in_bar_ns"]
            if sent_in is not None and ts_ns <= sent_in:
                continue
            if row["order_type"] == "market" and math.isfinite(price):
                self._fill_market(row["client_order_id"], price, ts_ns)

    def trade_bar(self, ts_ns: int, ranges: Mapping[str, tuple[float, float, float]]) -> None:
        """Execute the resting orders this bar's range reaches, one OCO group at a time, with
        the fill model's intrabar rules; trailing stops follow the bar's best price."""
        groups: dict[str, list[dict]] = {}
        for row in self._open_rows():
            if row["order_type"] != "market" and row["symbol"] in ranges:
                groups.setdefault(row["oco_group"] or row["client_order_id"], []).append(row)
        for legs in groups.values():
            open_, high, low = ranges[legs[0]["symbol"]]
            if math.isfinite(open_):
                self._match(legs, float(open_), float(high), float(low), ts_ns)

    def _match(self, legs: list[dict], open_: float, high: float, low: float, ts_ns: int) -> None:
        by_leg = {row["order_type"]: row for row in legs}
        qty = max(float(r["qty"]) for r in legs)
        stop, limit, trailing = (by_leg.get(k) for k in ("stop", "limit", "trailing_stop"))
        done = match_levels(
            legs[0]["side"], qty, open_, high, low, self._cfg[0],
            stop_price=None if stop is None else stop["stop_price"],
            limit_price=None if limit is None else limit["limit_price"],
            trail_amount=None if trailing is None else trailing["trail_amount"],
            best_price=None if trailing is None else trailing["best_price"],
        )  # fmt: skip
        if done.leg is None:
            if trailing is not None and done.best_price != trailing["best_price"]:
                with self._db.write("paper trail", None) as tx:
                    tx.run("UPDATE paper_book SET best_price = ?, ts_updated_ns = ? "
                           "WHERE client_order_id = ?",
                           (done.best_price, ts_ns, trailing["client_order_id"]))  # fmt: skip
            return
        filled = by_leg[done.leg]
        # The modelled position is the largest leg; a smaller leg pays its share of the fee.
        fee = done.fee * float(filled["qty"]) / qty
        self._execute(filled, done.price, fee, ts_ns, cancel_group=True)

    def _fill_market(self, client_order_id: str, price: float, ts_ns: int) -> None:
        """Fill a market order at ``price`` before slippage, priced by the fill model (an order
        is the exit of the position on its other side)."""
        with self._db.read("read paper order") as tx:
            row = tx.one("SELECT * FROM paper_book WHERE client_order_id = ?", (client_order_id,))
        fill_price, fee = market_fill(row["side"], float(row["qty"]), price, self._cfg[0])
        self._execute(row, fill_price, fee, ts_ns)

    def _execute(self, row, price: float, fee: float, ts_ns: int, cancel_group=False) -> None:
        cid, now = row["client_order_id"], time.time_ns()
        with self._db.write(f"paper fill {cid}", None) as tx:
            if not tx.run(
                "UPDATE paper_book SET status = ?, ts_updated_ns = ? "
                "WHERE client_order_id = ? AND status = ?",
                (OrderStatus.FILLED, now, cid, OrderStatus.OPEN),
            ):
                return  # cancelled meanwhile: nothing executes
            tx.run(
                "INSERT INTO paper_orders (client_order_id, symbol, side, qty, price, fee, "
                "ts_fill_ns, submits, ts_created_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, row["symbol"], row["side"], float(row["qty"]), price, fee, int(ts_ns),
                 int(row["submits"]), now),
            )  # fmt: skip
            if cancel_group and row["oco_group"] is not None:
                tx.run(
                    "UPDATE paper_book SET status = ?, ts_updated_ns = ? "
                    "WHERE oco_group = ? AND status = ?",
                    (OrderStatus.CANCELLED, now, row["oco_group"], OrderStatus.OPEN),
                )

    def _group_done(self, group: str) -> bool:
        with self._db.read("read paper oco group") as tx:
            return tx.one("SELECT 1 AS x FROM paper_book WHERE oco_group = ? AND status = ?",
                          (group, OrderStatus.FILLED)) is not None  # fmt: skip

    def _open_rows(self) -> list[dict]:
        with self._db.read("read paper book") as tx:
            return tx.all(
                "SELECT * FROM paper_book WHERE status = ? ORDER BY ts_created_ns, client_order_id",
                (OrderStatus.OPEN,),
            )

    def _set_status(self, client_order_id: str, status: str) -> None:
        with self._db.write(f"paper order {client_order_id}", None) as tx:
            tx.run("UPDATE paper_book SET status = ? WHERE client_order_id = ?",
                   (status, client_order_id))  # fmt: skip


def _broker_order(row) -> BrokerOrder:
    filled = row["status"] == OrderStatus.FILLED
    price = row.get("fill_price")
    return BrokerOrder(
        client_order_id=row["client_order_id"],
        venue_order_id=row["client_order_id"],
        symbol=row["symbol"],
        side=row["side"],
        qty=float(row["qty"]),
        order_type=row["order_type"],
        status=row["status"],
        filled_qty=float(row["qty"]) if filled else 0.0,
        avg_fill_price=float(price) if filled and price is not None else None,
        fees=float(row.get("fill_fee") or 0.0) if filled else 0.0,
        ts_updated_ns=int(row.get("ts_fill_ns") or row["ts_updated_ns"]),
        stop_price=row["stop_price"],
        limit_price=row["limit_price"],
        trail_amount=row["trail_amount"],
        trail_best_price=row["best_price"],
        oco_group=row["oco_group"],
    )
