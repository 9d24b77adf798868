"""The portfolio backtest loop, and the cached entry points a live runner calls bar by bar.

Both run the kernels of ``quantshift.portfolio.kernels``: one decision layer, one fill model.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numba import njit

from quantshift.engine.compile import compile_template
from quantshift.engine.records import Signals, trade_dt
from quantshift.portfolio.kernels import (
    check_stops_nb,
    close_open_positions_nb,
    decide_nb,
    fill_nb,
    portfolio_equity_nb,
    sleeve_equity_nb,
)
from quantshift.portfolio.rows import (
    FILL_PENDING,
    BarInputs,
    fill_dt,
    halt_dt,
    order_dt,
    veto_dt,
)
from quantshift.provenance import package_digest


@njit
def _room_nb(buffer, needed):
    """Return ``buffer``, or a copy with at least ``needed`` rows (doubling) when it is short."""
    if buffer.shape[0] >= needed:
        return buffer
    bigger = np.empty(max(needed, 2 * buffer.shape[0]), buffer.dtype)
    bigger[: buffer.shape[0]] = buffer
    return bigger


def decide_template(ts_ns, close, signals, inputs, setup, state):
    n_slots = setup.member.size
    orders = np.empty(2 * n_slots, order_dt)
    vetoes = np.empty(n_slots, veto_dt)
    n_orders, n_vetoes = decide_nb(ts_ns, close, signals, inputs, setup, state, orders, vetoes)
    return orders[:n_orders], vetoes[:n_vetoes]


def fill_template(orders, prices, bar, ts_ns, setup, state, executed):
    n = orders.shape[0]
    fills = np.empty(n, fill_dt)
    trades = np.empty(max(n, 1), trade_dt)
    n_trades = fill_nb(orders, prices, bar, ts_ns, setup, state, executed, fills, trades, 0)
    return fills, trades[:n_trades]


def check_stops_template(open_, high, low, bar, ts_ns, setup, state):
    trades = np.empty(setup.member.size, trade_dt)
    n_trades = check_stops_nb(open_, high, low, bar, ts_ns, setup, state, trades, 0)
    return trades[:n_trades]


def backtest_template(ts_ns, open_, high, low, close, signals, regime, sentiment, setup, state):
    n_bars, n_symbols = close.shape
    n_sleeves = setup.member.shape[0]
    n_slots = n_sleeves * n_symbols
    positions = state.slots
    equity = np.empty(n_bars)
    sleeve_equity = np.empty((n_bars, n_sleeves))
    net_units = np.zeros((n_bars, n_symbols))
    orders = np.empty(max(16, n_slots), order_dt)
    fills = np.empty(orders.shape[0], fill_dt)
    n_orders = 0
    vetoes = np.empty(16, veto_dt)
    n_vetoes = 0
    trades = np.empty(max(16, n_slots), trade_dt)
    n_trades = 0
    halts = np.empty(2, halt_dt)
    n_halts = 0
    pending = np.zeros(orders.shape[0], np.int64)
    n_pending = 0
    bar_orders = np.empty(2 * n_slots, order_dt)
    bar_vetoes = np.empty(n_slots, veto_dt)
    no_executions = np.empty(0, fill_dt)  # the fill model prices every fill
    # Without a regime / sentiment history (zero rows), every bar is unknown / without news.
    no_regime = np.full(n_symbols, -1, np.int64)
    no_sentiment = np.full(n_symbols, np.nan)
    history_rows = setup.limits[0].history_rows

    for t in range(n_bars):
        trades = _room_nb(trades, n_trades + 3 * n_slots)
        # 1. Orders decided on an earlier close fill at this bar's open (a symbol without a
        # bar keeps its orders for its next bar).
        if n_pending > 0:
            waiting = orders[pending[:n_pending]]
            filled = np.empty(n_pending, fill_dt)
            n_trades = fill_nb(
                waiting, open_[t], t, ts_ns[t], setup, state, no_executions, filled, trades,
                n_trades,
            )  # fmt: skip
            kept = 0
            for j in range(n_pending):
                fills[pending[j]] = filled[j]
                if filled[j].status == FILL_PENDING:
                    pending[kept] = pending[j]
                    kept += 1
            n_pending = kept
        # 2. Protective levels on this bar's range.
        n_trades = check_stops_nb(
            open_[t], high[t], low[t], t, ts_ns[t], setup, state, trades, n_trades
        )
        # 3. The decision on this bar's close.
        halted = state.book[0].halt
        bar_signals = Signals(
            signals.entries[t], signals.exits[t], signals.stop[t], signals.take_profit[t],
            signals.trail[t],
        )  # fmt: skip
        bar_inputs = BarInputs(
            close[max(0, t + 1 - history_rows) : t + 1],
            regime[t] if regime.shape[0] > 0 else no_regime,
            sentiment[t] if sentiment.shape[0] > 0 else no_sentiment,
        )
        n_new, n_new_vetoes = decide_nb(
            ts_ns[t], close[t], bar_signals, bar_inputs, setup, state, bar_orders, bar_vetoes
        )
        if state.book[0].halt != halted:
            halts = _room_nb(halts, n_halts + 1)
            halts[n_halts].ts_ns = ts_ns[t]
            halts[n_halts].reason = state.book[0].halt
            n_halts += 1
        vetoes = _room_nb(vetoes, n_vetoes + n_new_vetoes)
        vetoes[n_vetoes : n_vetoes + n_new_vetoes] = bar_vetoes[:n_new_vetoes]
        n_vetoes += n_new_vetoes
        orders = _room_nb(orders, n_orders + n_new)
        fills = _room_nb(fills, orders.shape[0])
        orders[n_orders : n_orders + n_new] = bar_orders[:n_new]
        # 4. Fill at this close, or wait for the next open.
        if setup.fill_close:
            n_trades = fill_nb(
                bar_orders[:n_new], close[t], t, ts_ns[t], setup, state, no_executions,
                fills[n_orders : n_orders + n_new], trades, n_trades,
            )  # fmt: skip
        else:
            if pending.shape[0] < n_pending + n_new:
                grown = np.zeros(2 * (n_pending + n_new), np.int64)
                grown[:n_pending] = pending[:n_pending]
                pending = grown
            for j in range(n_new):
                pending[n_pending] = n_orders + j
                n_pending += 1
        n_orders += n_new
        # 5. Mark to market.
        equity[t] = portfolio_equity_nb(state)
        for s in range(n_sleeves):
            sleeve_equity[t, s] = sleeve_equity_nb(s, state)
            for k in range(n_symbols):
                net_units[t, k] += positions[s, k].units

    # Positions still open are reported as trades marked at their symbol's last close.
    last_bar = np.full(n_symbols, -1, np.int64)
    for t in range(n_bars):
        for k in range(n_symbols):
            if not math.isnan(close[t, k]):
                last_bar[k] = t
    trades = _room_nb(trades, n_trades + n_slots)
    n_trades = close_open_positions_nb(state, last_bar, ts_ns, trades, n_trades)
    return (
        equity,
        sleeve_equity,
        net_units,
        orders[:n_orders],
        fills[:n_orders],
        vetoes[:n_vetoes],
        trades[:n_trades],
        halts[:n_halts],
    )


@cache
def compiled(kind: str):
    """Return the cached compiled entry point ``kind`` ("decide", "fill", "check_stops",
    "backtest").

    Its name carries a digest of the package so numba's cache, which only watches this file,
    never serves machine code built from older fill-model sources.
    """
    name = f"portfolio_{kind}__{package_digest().hex()[:12]}"
    return compile_template(_TEMPLATES[kind], globals(), name, cache=True)


_TEMPLATES = {
    "decide": decide_template,
    "fill": fill_template,
    "check_stops": check_stops_template,
    "backtest": backtest_template,
}
