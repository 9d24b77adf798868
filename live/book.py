"""What the runner writes of a cycle besides orders: trades, positions, equity; and the small
records it passes around (the guards' view of an order, ids of trades, saved orders).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from live.store import Store
from quantshift.portfolio import PortfolioState, TargetOrder


def record_trades(store: Store, trades, epoch: int, periods_per_year: float) -> int:
    """Record closed trades and refresh the performance of the sleeves they belong to."""
    for trade in trades:
        store.record_trade(
            trade_id=trade_id(trade),
            sleeve=trade.sleeve,
            symbol=trade.symbol,
            direction=trade.direction,
            qty=trade.units,
            entry_ts_ns=trade.entry_ts_ns,
            exit_ts_ns=trade.exit_ts_ns,
            entry_price=trade.entry_price,
            exit_price=trade.exit_price,
            pnl=trade.pnl,
            epoch=epoch,
            fees=trade.entry_fees + trade.exit_fees,
            exit_reason=trade.exit_reason,
        )
    for sleeve in dict.fromkeys(t.sleeve for t in trades):
        store.update_performance(sleeve, periods_per_year=periods_per_year)
    return len(trades)


def record_book(
    store: Store, before: PortfolioState, state: PortfolioState, ts: int, epoch: int
) -> None:
    """Write the positions that changed since ``before`` and the equity snapshots of ``ts``."""
    now = {(p.sleeve, p.symbol): p for p in state.positions()}
    before = {(p.sleeve, p.symbol): p for p in before.positions()}
    for key in before.keys() - now.keys():
        store.upsert_position(
            sleeve=key[0], symbol=key[1], qty=0.0, avg_price=None, ts_ns=ts, epoch=epoch
        )
    for key, p in now.items():
        if key not in before or before[key].to_dict() != p.to_dict():
            store.upsert_position(
                sleeve=p.sleeve,
                symbol=p.symbol,
                qty=p.units,
                avg_price=p.entry_price,
                ts_ns=ts,
                epoch=epoch,
                details=p.to_dict(),
            )
    cash = state.sleeve_cash()
    snapshots = {"*": (state.equity_usd, None, None, None)}
    for sleeve, equity in state.sleeve_equity().items():
        snapshots[sleeve] = (equity, cash[sleeve], None, None)
    store.record_equities(ts_ns=ts, epoch=epoch, snapshots=snapshots)


@dataclass(frozen=True)
class Guarded:
    """The fields of a decision's order that the guards read."""

    order: TargetOrder
    sleeve: str
    symbol: str
    side: str
    units: float
    price: float
    ts_ns: int
    is_entry: bool

    @classmethod
    def of(cls, order: TargetOrder) -> Guarded:
        return cls(
            order=order,
            sleeve=order.sleeve,
            symbol=order.symbol,
            side=order.side,
            units=order.units,
            price=order.reference_price,
            ts_ns=order.ts_ns,
            is_entry=order.action == "entry",
        )


def trade_id(trade) -> str:
    """A closed trade's id: sleeve, symbol, entry and exit time (the same after a redo)."""
    key = f"{trade.sleeve}|{trade.symbol}|{trade.entry_ts_ns}|{trade.exit_ts_ns}"
    return "t" + hashlib.sha256(key.encode()).hexdigest()[:32]


def stop_order(trade, ts_ns: int) -> TargetOrder:
    """The exit a protective stop made, as an order (the venue's stop order that filled)."""
    return TargetOrder(
        sleeve=trade.sleeve,
        strategy=trade.strategy,
        symbol=trade.symbol,
        action="exit",
        side="sell" if trade.direction == "long" else "buy",
        units=trade.units,
        reason=trade.exit_reason,
        ts_ns=ts_ns,
        reference_price=trade.exit_price,
    )


def order_from_dict(data: dict[str, Any]) -> TargetOrder:
    """A decision's order as saved in the runner state."""
    values = {k: (math.nan if v is None and k.endswith("distance") else v) for k, v in data.items()}
    if values.get("max_units") is None:
        values["max_units"] = math.inf
    return TargetOrder(**values)


def periods_per_year(market: str, bar_interval_s: int) -> float:
    """Bars a year: daily equity bars trade ~252 sessions, intraday equity bars 6.5 hours of
    each; crypto trades every interval of the year."""
    if market == "crypto":
        return 365 * 86_400 / bar_interval_s
    if bar_interval_s >= 86_400:
        return 252.0
    return 252 * 6.5 * 3600 / bar_interval_s
