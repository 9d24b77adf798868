"""Portfolio backtest: the decision layer looped over history with the shared fill model.

One sleeve on one symbol with ``RiskLimits.none()`` trades exactly as ``quantshift.backtest``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quantshift.data.bars import Bars
from quantshift.engine.metrics import equity_metrics, infer_periods_per_year
from quantshift.engine.simulate import (
    TR_DIRECTION,
    TR_ENTRY_FEES,
    TR_ENTRY_PRICE,
    TR_EXIT_FEES,
    TR_EXIT_PRICE,
    TR_EXIT_REASON,
    TR_PNL,
    TR_RETURN_PCT,
    TR_UNITS,
)
from quantshift.errors import DataError
from quantshift.portfolio.config import PortfolioConfig
from quantshift.portfolio.loop import compiled
from quantshift.portfolio.rows import (
    ACTION_ENTRY,
    F_BAR,
    F_FEES,
    F_PRICE,
    F_STATUS,
    F_UNITS,
    FILL_DONE,
    FILL_PENDING,
    HALT_REASONS,
    O_ACTION,
    O_CAPPED_BY,
    O_MAX_UNITS,
    O_PRICE,
    O_REASON,
    O_SIDE,
    O_SLEEVE,
    O_STOP,
    O_SYMBOL,
    O_TAKE_PROFIT,
    O_TRAIL,
    O_UNITS,
    PORTFOLIO_EXIT_REASONS,
    T_ENTRY_TS,
    T_EXIT_TS,
    T_SLEEVE,
    T_SYMBOL,
    V_REASON,
    V_SIDE,
    V_SLEEVE,
    V_SYMBOL,
    VETO_REASONS,
)
from quantshift.portfolio.signals import compute_signals
from quantshift.portfolio.state import PortfolioState

TRADE_COLUMNS = (
    "sleeve",
    "strategy",
    "symbol",
    "direction",
    "entry_time",
    "exit_time",
    "entry_price",
    "exit_price",
    "units",
    "entry_fees",
    "exit_fees",
    "pnl",
    "return_pct",
    "exit_reason",
)


@dataclass(frozen=True, eq=False)
class PortfolioResult:
    """What a portfolio backtest produced.

    Attributes
    ----------
    trades : DataFrame
        One row per trade, in the order they closed; positions still open at the end have
        ``exit_reason == "open"`` and are marked at their symbol's last close.
    equity : Series
        Portfolio equity per bar (currency), after the bar's fills, at its closes.
    sleeve_equity : DataFrame
        Each sleeve's equity per bar (its cash plus its positions).
    positions : DataFrame
        Net units per symbol per bar, summed over sleeves.
    orders : DataFrame
        Every order decided: decision time, the order's fields, and how it filled (``status``
        filled / pending / none, fill time, units, price, fees).
    vetoes : DataFrame
        Entries skipped and why (halted, conflict, a risk limit).
    halts : DataFrame
        When a circuit breaker tripped, and which.
    final_state : PortfolioState
        The state after the last bar (what a live runner would carry on from).
    """

    config: PortfolioConfig
    trades: pd.DataFrame
    equity: pd.Series
    sleeve_equity: pd.DataFrame
    positions: pd.DataFrame
    orders: pd.DataFrame
    vetoes: pd.DataFrame
    halts: pd.DataFrame
    final_state: PortfolioState
    periods_per_year: float

    @property
    def metrics(self) -> dict[str, Any]:
        """Equity-curve metrics (the kernel's definitions) plus closed-trade counts."""
        out: dict[str, Any] = equity_metrics(
            self.equity.to_numpy(), self.config.sim.cash, self.periods_per_year
        )
        closed = self.trades[self.trades["exit_reason"] != "open"]
        out["trades"] = len(closed)
        out["win_rate_pct"] = 100.0 * float((closed["pnl"] > 0).mean()) if len(closed) else math.nan
        out["halts"] = len(self.halts)
        return out


def portfolio_backtest(
    config: PortfolioConfig, bars: Bars | str, *, state: PortfolioState | None = None
) -> PortfolioResult:
    """Run the decision layer over ``bars`` bar by bar with the shared fill model.

    Each bar: orders decided on an earlier close fill at this open (``fill="next-open"``),
    protective levels are checked on this bar's range, :func:`~quantshift.portfolio.decide`'s
    kernel decides on this close, and with ``fill="close"`` its orders fill at once. Signals
    come from each strategy's signal kernel over the whole history (they are causal).

    Parameters
    ----------
    config : PortfolioConfig
    bars : Bars or str
        Bars holding every sleeve's symbols, or a data spec for :func:`quantshift.load_bars`.
    state : PortfolioState, optional
        Start from this state instead of all cash.
    """
    if isinstance(bars, str):
        from quantshift.data import load_bars

        bars = load_bars(bars)
    if not isinstance(bars, Bars):
        raise DataError(f"bars must be a Bars object or a data spec string, got {type(bars)}")
    layout = config.layout()
    history = compute_signals(config, bars)
    data = history.bars
    if data.n_bars == 0:
        raise DataError(f"{data.source}: no bars to backtest")
    start = PortfolioState.initial(config) if state is None else state
    start.check(config)
    arrays = start.arrays()
    (
        equity,
        sleeve_equity,
        net_units,
        orders,
        order_bar,
        fills,
        _,
        vetoes,
        veto_bar,
        trades,
        trade_ids,
        halts,
    ) = compiled("backtest")(
        data.ts_ns,
        data.open,
        data.high,
        data.low,
        data.close,
        history.entries,
        history.exits,
        history.stop_distance,
        history.take_profit_distance,
        history.trail_distance,
        layout.member,
        layout.sleeve_cfg,
        layout.limits,
        layout.whole_units,
        layout.fill_close,
        arrays["slots"],
        arrays["entry_ts_ns"],
        arrays["cash"],
        arrays["stats"],
        arrays["marks"],
        arrays["book"],
    )
    index = data.index
    ts = data.ts_ns
    sleeves = pd.Index(layout.sleeves, name="sleeve")
    symbols = pd.Index(layout.symbols, name="symbol")
    if config.sim.periods_per_year is not None:
        ppy = float(config.sim.periods_per_year)
    else:
        ppy = infer_periods_per_year(ts)
    return PortfolioResult(
        config=config,
        trades=_trades_frame(trades, trade_ids, layout),
        equity=pd.Series(equity, index=index, name="equity"),
        sleeve_equity=pd.DataFrame(sleeve_equity, index=index, columns=sleeves),
        positions=pd.DataFrame(net_units, index=index, columns=symbols),
        orders=_orders_frame(orders, order_bar, fills, ts, layout),
        vetoes=pd.DataFrame(
            {
                "time": pd.to_datetime(ts[veto_bar], unit="ns", utc=True),
                "sleeve": [layout.sleeves[int(s)] for s in vetoes[:, V_SLEEVE]],
                "symbol": [layout.symbols[int(k)] for k in vetoes[:, V_SYMBOL]],
                "side": np.where(vetoes[:, V_SIDE] > 0, "buy", "sell"),
                "reason": [VETO_REASONS[int(r)] for r in vetoes[:, V_REASON]],
            }
        ),
        halts=pd.DataFrame(
            {
                "time": pd.to_datetime(ts[halts[:, 0]], unit="ns", utc=True),
                "reason": [HALT_REASONS[int(c)] for c in halts[:, 1]],
            }
        ),
        final_state=start.replace(int(ts[-1]), arrays),
        periods_per_year=ppy,
    )


def _trades_frame(trades: np.ndarray, ids: np.ndarray, layout) -> pd.DataFrame:
    sleeve = ids[:, T_SLEEVE]
    return pd.DataFrame(
        {
            "sleeve": _names(layout.sleeves, sleeve),
            "strategy": _names(layout.strategies, sleeve),
            "symbol": _names(layout.symbols, ids[:, T_SYMBOL]),
            "direction": np.where(trades[:, TR_DIRECTION] > 0, "long", "short"),
            "entry_time": pd.to_datetime(ids[:, T_ENTRY_TS], unit="ns", utc=True),
            "exit_time": pd.to_datetime(ids[:, T_EXIT_TS], unit="ns", utc=True),
            "entry_price": trades[:, TR_ENTRY_PRICE],
            "exit_price": trades[:, TR_EXIT_PRICE],
            "units": trades[:, TR_UNITS],
            "entry_fees": trades[:, TR_ENTRY_FEES],
            "exit_fees": trades[:, TR_EXIT_FEES],
            "pnl": trades[:, TR_PNL],
            "return_pct": trades[:, TR_RETURN_PCT],
            "exit_reason": _names(PORTFOLIO_EXIT_REASONS, trades[:, TR_EXIT_REASON].astype(int)),
        },
        columns=list(TRADE_COLUMNS),
    )


def _orders_frame(orders, order_bar, fills, ts, layout) -> pd.DataFrame:
    """The TargetOrder fields of every order (``decide`` returns the same records), the
    decision time, and how each filled."""
    sleeve = orders[:, O_SLEEVE].astype(np.int64)
    entry = orders[:, O_ACTION] == ACTION_ENTRY
    exit_reason = np.where(entry, 0, orders[:, O_REASON]).astype(np.int64)
    status = fills[:, F_STATUS]
    done = status == FILL_DONE
    filled_at = np.where(done, fills[:, F_BAR], 0).astype(np.int64)
    capped = np.array([None, *VETO_REASONS[1:]], dtype=object)
    return pd.DataFrame(
        {
            "time": pd.to_datetime(ts[order_bar], unit="ns", utc=True),
            "sleeve": _names(layout.sleeves, sleeve),
            "strategy": _names(layout.strategies, sleeve),
            "symbol": _names(layout.symbols, orders[:, O_SYMBOL].astype(np.int64)),
            "action": np.where(entry, "entry", "exit"),
            "side": np.where(orders[:, O_SIDE] > 0, "buy", "sell"),
            "units": orders[:, O_UNITS],
            "reason": np.where(entry, "entry", _names(PORTFOLIO_EXIT_REASONS, exit_reason)),
            "ts_ns": ts[order_bar],
            "reference_price": orders[:, O_PRICE],
            "stop_distance": orders[:, O_STOP],
            "take_profit_distance": orders[:, O_TAKE_PROFIT],
            "trail_distance": orders[:, O_TRAIL],
            "max_units": orders[:, O_MAX_UNITS],
            "capped_by": capped[orders[:, O_CAPPED_BY].astype(np.int64)],
            "status": np.where(done, "filled", np.where(status == FILL_PENDING, "pending", "none")),
            "fill_time": pd.to_datetime(ts[filled_at], unit="ns", utc=True).where(done),
            "fill_units": np.where(done, fills[:, F_UNITS], np.nan),
            "fill_price": np.where(done, fills[:, F_PRICE], np.nan),
            "fill_fees": np.where(done, fills[:, F_FEES], np.nan),
        }
    )


def _names(names: tuple[str, ...], codes: np.ndarray) -> np.ndarray:
    return np.array(names, dtype=object)[codes]
