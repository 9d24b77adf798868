"""The portfolio backtest loop, and the cached entry points a live runner calls bar by bar.

Both run the kernels of ``quantshift.portfolio.kernels``: one decision layer, one fill model.
"""

from __future__ import annotations

import math
import types
from functools import cache

import numpy as np
from numba import njit

from quantshift.engine.simulate import S_POSITION, TR_LEN, write_open_trade_nb
from quantshift.portfolio.kernels import (
    check_stops_nb,
    decide_nb,
    fill_nb,
    portfolio_equity_nb,
    sleeve_equity_nb,
    trade_id_nb,
)
from quantshift.portfolio.rows import (
    B_HALT,
    F_LEN,
    F_STATUS,
    FILL_PENDING,
    O_LEN,
    T_LEN,
    V_LEN,
)
from quantshift.provenance import package_digest


@njit
def _room_nb(buffer, needed):
    """Return ``buffer``, or a copy with at least ``needed`` rows (doubling) when it is short."""
    if buffer.shape[0] >= needed:
        return buffer
    bigger = np.zeros((max(needed, 2 * buffer.shape[0]), buffer.shape[1]), buffer.dtype)
    bigger[: buffer.shape[0]] = buffer
    return bigger


def decide_template(
    ts_ns,
    close,
    entries,
    exits,
    stop,
    take_profit,
    trail,
    member,
    sleeve_cfg,
    limits,
    whole_units,
    slots,
    cash,
    stats,
    marks,
    book,
):
    n_slots = member.shape[0] * member.shape[1]
    orders = np.zeros((2 * n_slots, O_LEN))
    vetoes = np.zeros((n_slots, V_LEN))
    n_orders, n_vetoes = decide_nb(
        ts_ns,
        close,
        entries,
        exits,
        stop,
        take_profit,
        trail,
        member,
        sleeve_cfg,
        limits,
        whole_units,
        slots,
        cash,
        stats,
        marks,
        book,
        orders,
        vetoes,
    )
    return orders[:n_orders], vetoes[:n_vetoes]


def fill_template(
    orders, prices, bar, ts_ns, sleeve_cfg, slots, entry_ts, cash, stats, marks, executed
):
    n = orders.shape[0]
    fills = np.zeros((n, F_LEN))
    trades = np.zeros((max(n, 1), TR_LEN))
    trade_ids = np.zeros((max(n, 1), T_LEN), np.int64)
    n_trades = fill_nb(
        orders,
        n,
        prices,
        bar,
        ts_ns,
        sleeve_cfg,
        slots,
        entry_ts,
        cash,
        stats,
        marks,
        executed,
        fills,
        trades,
        trade_ids,
        0,
    )
    return fills, trades[:n_trades], trade_ids[:n_trades]


def check_stops_template(open_, high, low, bar, ts_ns, sleeve_cfg, slots, entry_ts, cash, stats):
    n_slots = slots.shape[0] * slots.shape[1]
    trades = np.zeros((n_slots, TR_LEN))
    trade_ids = np.zeros((n_slots, T_LEN), np.int64)
    n_trades = check_stops_nb(
        open_,
        high,
        low,
        bar,
        ts_ns,
        sleeve_cfg,
        slots,
        entry_ts,
        cash,
        stats,
        trades,
        trade_ids,
        0,
    )
    return trades[:n_trades], trade_ids[:n_trades]


def backtest_template(
    ts_ns,
    open_,
    high,
    low,
    close,
    entries,
    exits,
    stop,
    take_profit,
    trail,
    member,
    sleeve_cfg,
    limits,
    whole_units,
    fill_close,
    slots,
    entry_ts,
    cash,
    stats,
    marks,
    book,
):
    n_bars, n_symbols = close.shape
    n_sleeves = member.shape[0]
    n_slots = n_sleeves * n_symbols
    equity = np.empty(n_bars)
    sleeve_equity = np.empty((n_bars, n_sleeves))
    net_units = np.zeros((n_bars, n_symbols))
    orders = np.zeros((max(16, n_slots), O_LEN))
    order_bar = np.zeros((orders.shape[0], 1), np.int64)
    fills = np.zeros((orders.shape[0], F_LEN))
    n_orders = 0
    vetoes = np.zeros((16, V_LEN))
    veto_bar = np.zeros((16, 1), np.int64)
    n_vetoes = 0
    trades = np.zeros((max(16, n_slots), TR_LEN))
    trade_ids = np.zeros((trades.shape[0], T_LEN), np.int64)
    n_trades = 0
    halts = np.zeros((2, 2), np.int64)
    n_halts = 0
    pending = np.zeros(orders.shape[0], np.int64)
    n_pending = 0
    bar_orders = np.zeros((2 * n_slots, O_LEN))
    bar_vetoes = np.zeros((n_slots, V_LEN))
    bar_fills = np.zeros((2 * n_slots, F_LEN))
    model_fills = np.zeros((0, 3))  # no broker executions: the fill model prices every fill

    for t in range(n_bars):
        trades = _room_nb(trades, n_trades + 3 * n_slots)
        trade_ids = _room_nb(trade_ids, trades.shape[0])
        # 1. Orders decided on an earlier close fill at this bar's open (a symbol without a
        # bar keeps its orders for its next bar).
        if n_pending > 0:
            waiting = orders[pending[:n_pending]]
            filled = np.zeros((n_pending, F_LEN))
            n_trades = fill_nb(
                waiting,
                n_pending,
                open_[t],
                t,
                ts_ns[t],
                sleeve_cfg,
                slots,
                entry_ts,
                cash,
                stats,
                marks,
                model_fills,
                filled,
                trades,
                trade_ids,
                n_trades,
            )
            kept = 0
            for j in range(n_pending):
                fills[pending[j]] = filled[j]
                if filled[j, F_STATUS] == FILL_PENDING:
                    pending[kept] = pending[j]
                    kept += 1
            n_pending = kept
        # 2. Protective levels on this bar's range.
        n_trades = check_stops_nb(
            open_[t],
            high[t],
            low[t],
            t,
            ts_ns[t],
            sleeve_cfg,
            slots,
            entry_ts,
            cash,
            stats,
            trades,
            trade_ids,
            n_trades,
        )
        # 3. The decision on this bar's close.
        halted = book[B_HALT]
        n_new, n_new_vetoes = decide_nb(
            ts_ns[t],
            close[t],
            entries[t],
            exits[t],
            stop[t],
            take_profit[t],
            trail[t],
            member,
            sleeve_cfg,
            limits,
            whole_units,
            slots,
            cash,
            stats,
            marks,
            book,
            bar_orders,
            bar_vetoes,
        )
        if book[B_HALT] != halted:
            halts = _room_nb(halts, n_halts + 1)
            halts[n_halts, 0] = t
            halts[n_halts, 1] = int(book[B_HALT])
            n_halts += 1
        vetoes = _room_nb(vetoes, n_vetoes + n_new_vetoes)
        veto_bar = _room_nb(veto_bar, vetoes.shape[0])
        vetoes[n_vetoes : n_vetoes + n_new_vetoes] = bar_vetoes[:n_new_vetoes]
        veto_bar[n_vetoes : n_vetoes + n_new_vetoes, 0] = t
        n_vetoes += n_new_vetoes
        orders = _room_nb(orders, n_orders + n_new)
        order_bar = _room_nb(order_bar, orders.shape[0])
        fills = _room_nb(fills, orders.shape[0])
        orders[n_orders : n_orders + n_new] = bar_orders[:n_new]
        order_bar[n_orders : n_orders + n_new, 0] = t
        # 4. Fill at this close, or wait for the next open.
        if fill_close:
            n_trades = fill_nb(
                bar_orders,
                n_new,
                close[t],
                t,
                ts_ns[t],
                sleeve_cfg,
                slots,
                entry_ts,
                cash,
                stats,
                marks,
                model_fills,
                bar_fills,
                trades,
                trade_ids,
                n_trades,
            )
            fills[n_orders : n_orders + n_new] = bar_fills[:n_new]
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
        equity[t] = portfolio_equity_nb(cash, slots, marks, book)
        for s in range(n_sleeves):
            sleeve_equity[t, s] = sleeve_equity_nb(s, cash, slots, marks)
            for k in range(n_symbols):
                net_units[t, k] += slots[s, k, S_POSITION]

    # Positions still open are reported as trades marked at their symbol's last close.
    last_bar = np.full(n_symbols, -1, np.int64)
    for t in range(n_bars):
        for k in range(n_symbols):
            if not math.isnan(close[t, k]):
                last_bar[k] = t
    trades = _room_nb(trades, n_trades + n_slots)
    trade_ids = _room_nb(trade_ids, trades.shape[0])
    for s in range(n_sleeves):
        for k in range(n_symbols):
            if slots[s, k, S_POSITION] != 0.0:
                write_open_trade_nb(trades[n_trades], slots[s, k], last_bar[k], marks[k])
                trade_id_nb(trade_ids[n_trades], s, k, entry_ts[s, k], ts_ns[last_bar[k]])
                n_trades += 1
    return (
        equity,
        sleeve_equity,
        net_units,
        orders[:n_orders],
        order_bar[:n_orders, 0],
        fills[:n_orders],
        pending[:n_pending],
        vetoes[:n_vetoes],
        veto_bar[:n_vetoes, 0],
        trades[:n_trades],
        trade_ids[:n_trades],
        halts[:n_halts],
    )


@cache
def compiled(kind: str):
    """Return the cached compiled entry point ``kind`` ("decide", "fill", "check_stops",
    "backtest").

    Its name carries a digest of the package so numba's cache, which only watches this file,
    never serves machine code built from older fill-model sources.
    """
    template = _TEMPLATES[kind]
    name = f"portfolio_{kind}__{package_digest().hex()[:12]}"
    fn = types.FunctionType(template.__code__, globals(), name)
    fn.__qualname__ = name
    return njit(cache=True)(fn)


_TEMPLATES = {
    "decide": decide_template,
    "fill": fill_template,
    "check_stops": check_stops_template,
    "backtest": backtest_template,
}
