"""Numba kernels of the decision layer: decide on a bar's close, fill orders, check stops.

Plain ``njit`` (inlined into the cached entry points of ``quantshift.portfolio.loop``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from quantshift.engine.config import CFG_DIRECTION, CFG_SLIPPAGE_RATE, CFG_USE_STOPS
from quantshift.engine.simulate import (
    ACT_LONG,
    ACT_NONE,
    ACT_SHORT,
    S_CASH,
    S_ENTRY_FEES,
    S_ENTRY_PRICE,
    S_HAS_LEVELS,
    S_LEN,
    S_POSITION,
    TR_EXIT_FEES,
    TR_EXIT_PRICE,
    TR_UNITS,
    check_levels_nb,
    close_position_nb,
    closing_reason_nb,
    enter_nb,
    exit_nb,
    open_position_nb,
    stop_level_nb,
)
from quantshift.engine.simulate import decide_nb as signal_action_nb
from quantshift.portfolio.rows import (
    ACTION_ENTRY,
    ACTION_EXIT,
    B_DAY,
    B_DAY_START_EQUITY,
    B_HALT,
    B_LAST_EQUITY,
    B_PEAK_EQUITY,
    B_RESERVE,
    DAY_NS,
    F_BAR,
    F_FEES,
    F_PRICE,
    F_STATUS,
    F_UNITS,
    FILL_DONE,
    FILL_NOTHING,
    FILL_PENDING,
    HALT_DAILY_LOSS,
    HALT_DRAWDOWN,
    HALT_NONE,
    L_DAILY_LOSS,
    L_DRAWDOWN,
    L_GROSS,
    L_HEAT,
    L_POLICY,
    L_POSITION,
    LIMIT_GROSS,
    LIMIT_HEAT,
    LIMIT_NONE,
    LIMIT_POSITION,
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
    POLICY_FLAT,
    POLICY_NET,
    REASON_CONFLICT,
    REASON_ENTRY,
    T_ENTRY_TS,
    T_EXIT_TS,
    T_SLEEVE,
    T_SYMBOL,
    V_REASON,
    V_SIDE,
    V_SLEEVE,
    V_SYMBOL,
    VETO_CONFLICT,
    VETO_HALTED,
)


@njit
def positions_value_nb(s, slots, marks):
    """Return the signed value of sleeve ``s``'s positions marked at ``marks``."""
    value = 0.0
    for k in range(slots.shape[1]):
        units = slots[s, k, S_POSITION]
        if units != 0.0:
            value += units * marks[k]
    return value


@njit
def sleeve_equity_nb(s, cash, slots, marks):
    """Return sleeve ``s``'s cash plus its positions marked at ``marks``."""
    return cash[s] + positions_value_nb(s, slots, marks)


@njit
def portfolio_equity_nb(cash, slots, marks, book):
    """Return the unallocated cash plus every sleeve's equity."""
    total = book[B_RESERVE]
    for s in range(cash.shape[0]):
        total += sleeve_equity_nb(s, cash, slots, marks)
    return total


@njit
def _open_risk_per_unit_nb(slot, mark):
    """Loss per unit if the position's binding stop is hit from ``mark``; the whole mark when
    the position has no stop (the price can go to zero)."""
    side = 1.0 if slot[S_POSITION] > 0.0 else -1.0
    level = stop_level_nb(slot, side) if slot[S_HAS_LEVELS] != 0.0 else math.nan
    if math.isnan(level):
        return mark
    return max(side * (mark - level), 0.0)


@njit
def _update_book_nb(ts_ns, equity, limits, book):
    """Roll the day, raise the peak and trip a circuit breaker (it stays tripped)."""
    day = float(ts_ns // DAY_NS)
    if day != book[B_DAY]:
        book[B_DAY_START_EQUITY] = book[B_LAST_EQUITY]
        book[B_DAY] = day
    if equity > book[B_PEAK_EQUITY]:
        book[B_PEAK_EQUITY] = equity
    book[B_LAST_EQUITY] = equity
    if book[B_HALT] != HALT_NONE:
        return
    daily, drawdown = limits[L_DAILY_LOSS], limits[L_DRAWDOWN]
    if daily < math.inf and equity <= (1.0 - daily) * book[B_DAY_START_EQUITY]:
        book[B_HALT] = HALT_DAILY_LOSS
    elif drawdown < math.inf and equity <= (1.0 - drawdown) * book[B_PEAK_EQUITY]:
        book[B_HALT] = HALT_DRAWDOWN


@njit
def _resolve_conflicts_nb(k, policy, member, slots, exit_reason, enter_side, vetoes, n_vetoes):
    """Apply the conflict policy to symbol ``k``; return the number of vetoes written."""
    n_sleeves = member.shape[0]
    winner = 0.0
    has_long = has_short = False
    desired = np.zeros(n_sleeves)
    for s in range(n_sleeves):
        if not member[s, k]:
            continue
        units = slots[s, k, S_POSITION]
        if enter_side[s, k] != 0.0:
            desired[s] = enter_side[s, k]
        elif exit_reason[s, k] < 0 and units != 0.0:
            desired[s] = 1.0 if units > 0.0 else -1.0
        if winner == 0.0:
            winner = desired[s]
        has_long = has_long or desired[s] > 0.0
        has_short = has_short or desired[s] < 0.0
    if not (has_long and has_short):
        return n_vetoes
    for s in range(n_sleeves):
        loses = desired[s] != 0.0 if policy == POLICY_FLAT else desired[s] == -winner
        if not loses:
            continue
        if enter_side[s, k] != 0.0:
            n_vetoes = _veto_nb(vetoes, n_vetoes, s, k, enter_side[s, k], VETO_CONFLICT)
            enter_side[s, k] = 0.0
        if slots[s, k, S_POSITION] != 0.0 and exit_reason[s, k] < 0:
            exit_reason[s, k] = REASON_CONFLICT
    return n_vetoes


@njit
def _veto_nb(vetoes, n_vetoes, s, k, side, reason):
    row = vetoes[n_vetoes]
    row[V_SLEEVE] = s
    row[V_SYMBOL] = k
    row[V_SIDE] = side
    row[V_REASON] = reason
    return n_vetoes + 1


@njit
def _order_nb(
    row, s, k, action, side, reason, units, max_units, price, stop, target, trail, capped
):
    row[O_SLEEVE] = s
    row[O_SYMBOL] = k
    row[O_ACTION] = action
    row[O_SIDE] = side
    row[O_REASON] = reason
    row[O_UNITS] = units
    row[O_MAX_UNITS] = max_units
    row[O_PRICE] = price
    row[O_STOP] = stop
    row[O_TAKE_PROFIT] = target
    row[O_TRAIL] = trail
    row[O_CAPPED_BY] = capped


@njit
def decide_nb(
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
    orders_out,
    vetoes_out,
):
    """Decide on one bar's close: return (orders written, vetoes written).

    ``close`` holds each symbol's close at ``ts_ns`` (NaN: no bar, so no decision for it); the
    signal arrays are (n_sleeves, n_symbols). Updates ``marks`` and ``book`` (day, peak, halt);
    positions and cash change only when orders fill. Each sleeve acts on its signals as the
    single-symbol simulation would (exits, reversals, entries by its direction); the conflict
    policy then settles symbols the sleeves disagree on; a halt vetoes every entry; exits are
    written first, then entries in sleeve then symbol order, each capped by the risk limits left
    after the exits and the entries before it.
    """
    n_sleeves, n_symbols = member.shape
    for k in range(n_symbols):
        if not math.isnan(close[k]):
            marks[k] = close[k]
    equity = portfolio_equity_nb(cash, slots, marks, book)
    _update_book_nb(ts_ns, equity, limits, book)
    exit_reason, enter_side = _signal_actions_nb(close, entries, exits, member, sleeve_cfg, slots)
    n_vetoes = 0
    policy = int(limits[L_POLICY])
    if policy != POLICY_NET and n_sleeves > 1:
        for k in range(n_symbols):
            if not math.isnan(close[k]):
                n_vetoes = _resolve_conflicts_nb(
                    k, policy, member, slots, exit_reason, enter_side, vetoes_out, n_vetoes
                )
    if book[B_HALT] != HALT_NONE:
        for s in range(n_sleeves):
            for k in range(n_symbols):
                if enter_side[s, k] != 0.0:
                    n_vetoes = _veto_nb(vetoes_out, n_vetoes, s, k, enter_side[s, k], VETO_HALTED)
                    enter_side[s, k] = 0.0
    n_orders = _exit_orders_nb(exit_reason, slots, marks, orders_out)
    return _entry_orders_nb(
        equity,
        close,
        stop,
        take_profit,
        trail,
        enter_side,
        exit_reason,
        sleeve_cfg,
        limits,
        whole_units,
        slots,
        cash,
        stats,
        marks,
        orders_out,
        n_orders,
        vetoes_out,
        n_vetoes,
    )


@njit
def _signal_actions_nb(close, entries, exits, member, sleeve_cfg, slots):
    """Return, per (sleeve, symbol), the exit reason (-1: none) and the side to enter (0: none)
    its signals ask for, as the single-symbol simulation would act on them."""
    n_sleeves, n_symbols = member.shape
    exit_reason = np.full((n_sleeves, n_symbols), -1, np.int64)
    enter_side = np.zeros((n_sleeves, n_symbols))
    for s in range(n_sleeves):
        direction = int(sleeve_cfg[s, CFG_DIRECTION])
        for k in range(n_symbols):
            if not member[s, k] or math.isnan(close[k]):
                continue
            units = slots[s, k, S_POSITION]
            act = signal_action_nb(entries[s, k], exits[s, k], units, direction)
            if act == ACT_NONE:
                continue
            # An exit, or an entry against the position, closes it first.
            exit_reason[s, k] = closing_reason_nb(act, units)
            if act == ACT_LONG:
                enter_side[s, k] = 1.0
            elif act == ACT_SHORT:
                enter_side[s, k] = -1.0
    return exit_reason, enter_side


@njit
def _exit_orders_nb(exit_reason, slots, marks, orders_out):
    """Write an order closing each position with an exit reason; return how many."""
    n_orders = 0
    for s in range(slots.shape[0]):
        for k in range(slots.shape[1]):
            units = slots[s, k, S_POSITION]
            if units == 0.0 or exit_reason[s, k] < 0:
                continue
            _order_nb(
                orders_out[n_orders],
                s,
                k,
                ACTION_EXIT,
                -1.0 if units > 0.0 else 1.0,
                exit_reason[s, k],
                abs(units),
                abs(units),
                marks[k],
                math.nan,
                math.nan,
                math.nan,
                LIMIT_NONE,
            )
            n_orders += 1
    return n_orders


@njit
def _entry_orders_nb(
    equity,
    close,
    stop,
    take_profit,
    trail,
    enter_side,
    exit_reason,
    sleeve_cfg,
    limits,
    whole_units,
    slots,
    cash,
    stats,
    marks,
    orders_out,
    n_orders,
    vetoes_out,
    n_vetoes,
):
    """Write the entry orders, each capped by the room the risk limits leave (a veto when
    none); return (orders written, vetoes written) in all."""
    n_sleeves, n_symbols = enter_side.shape
    # What stays open after the exits sets the heat and exposure the entries may add to.
    heat = gross = 0.0
    notional = np.zeros(n_symbols)
    for s in range(n_sleeves):
        for k in range(n_symbols):
            units = abs(slots[s, k, S_POSITION])
            if units != 0.0 and exit_reason[s, k] < 0:
                notional[k] += units * marks[k]
                gross += units * marks[k]
                heat += units * _open_risk_per_unit_nb(slots[s, k], marks[k])
    scratch = np.zeros(S_LEN)
    for s in range(n_sleeves):
        cfg = sleeve_cfg[s]
        sleeve_equity = sleeve_equity_nb(s, cash, slots, marks)
        for k in range(n_symbols):
            side = enter_side[s, k]
            if side == 0.0:
                continue
            price = close[k]
            distance = stop[s, k]
            # The fill sizes the entry again at its own price; this is the estimate here.
            scratch[S_POSITION] = 0.0
            wanted = enter_nb(
                scratch,
                side,
                price,
                -1,
                sleeve_equity,
                math.inf,
                cfg,
                stats[s],
                distance,
                take_profit[s, k],
                trail[s, k],
            )
            stopped = distance > 0.0 and cfg[CFG_USE_STOPS] != 0.0
            risk_per_unit = distance if stopped else price * (1.0 + cfg[CFG_SLIPPAGE_RATE] * side)
            cap = math.inf
            binding = LIMIT_NONE
            if limits[L_HEAT] < math.inf:
                cap = (limits[L_HEAT] * equity - heat) / risk_per_unit
                binding = LIMIT_HEAT
            if limits[L_POSITION] < math.inf:
                room = (limits[L_POSITION] * equity - notional[k]) / price
                if not room >= cap:
                    cap = room
                    binding = LIMIT_POSITION
            if limits[L_GROSS] < math.inf:
                room = (limits[L_GROSS] * equity - gross) / price
                if not room >= cap:
                    cap = room
                    binding = LIMIT_GROSS
            if whole_units and cap < math.inf:
                cap = math.floor(cap + 1e-9)
            if not cap > 0.0:
                n_vetoes = _veto_nb(vetoes_out, n_vetoes, s, k, side, binding)
                continue
            units = min(wanted, cap)
            _order_nb(
                orders_out[n_orders],
                s,
                k,
                ACTION_ENTRY,
                side,
                REASON_ENTRY,
                units,
                cap,
                price,
                distance,
                take_profit[s, k],
                trail[s, k],
                binding if cap < wanted else LIMIT_NONE,
            )
            n_orders += 1
            heat += units * risk_per_unit
            notional[k] += units * price
            gross += units * price
    return n_orders, n_vetoes


@njit
def fill_nb(
    orders,
    n_orders,
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
    fills_out,
    trades_out,
    trade_ids_out,
    n_trades,
):
    """Fill ``orders`` in their order at ``prices`` (per symbol, NaN: no bar, order stays
    pending); return the number of trade rows now in ``trades_out``.

    The fill model of the single-symbol simulation, on each (sleeve, symbol) position with its
    sleeve's cash: an exit closes the whole position; an entry into a flat position is sized at
    its fill price against the sleeve's equity (its cash after this bar's earlier fills plus its
    other positions at ``marks``), at most the order's ``max_units``.

    With rows in ``executed`` (units, price after slippage, fees per order) a broker's reported
    executions are applied as they are instead: no sizing, no slippage, no fee model.
    """
    reported = executed.shape[0] > 0
    for i in range(n_orders):
        order = orders[i]
        s = int(order[O_SLEEVE])
        k = int(order[O_SYMBOL])
        fill = fills_out[i]
        fill[:] = 0.0
        price = executed[i, 1] if reported else prices[k]
        if math.isnan(price):
            fill[F_STATUS] = FILL_PENDING
            continue
        fill[F_STATUS] = FILL_NOTHING
        fill[F_BAR] = bar
        slot = slots[s, k]
        slot[S_CASH] = cash[s]
        if order[O_ACTION] == ACTION_EXIT:
            if slot[S_POSITION] != 0.0:
                opened_ns = entry_ts[s, k]
                reason = int(order[O_REASON])
                if reported:
                    n_new = close_position_nb(
                        slot, price, executed[i, 2], bar, reason, trades_out, n_trades, stats[s]
                    )
                else:
                    n_new = exit_nb(
                        slot, price, bar, reason, sleeve_cfg[s], trades_out, n_trades, stats[s]
                    )
                row = trades_out[n_trades]
                fill[F_STATUS] = FILL_DONE
                fill[F_UNITS] = row[TR_UNITS]
                fill[F_PRICE] = row[TR_EXIT_PRICE]
                fill[F_FEES] = row[TR_EXIT_FEES]
                trade_id_nb(trade_ids_out[n_trades], s, k, opened_ns, ts_ns)
                n_trades = n_new
        elif slot[S_POSITION] == 0.0:
            if reported:
                units = executed[i, 0]
                if units > 0.0:
                    open_position_nb(
                        slot, order[O_SIDE], price, units, executed[i, 2], bar, sleeve_cfg[s],
                        order[O_STOP], order[O_TAKE_PROFIT], order[O_TRAIL],
                    )  # fmt: skip
            else:
                # The flat slot adds nothing: this is the cash plus the sleeve's other positions.
                equity = cash[s] + positions_value_nb(s, slots, marks)
                units = enter_nb(
                    slot,
                    order[O_SIDE],
                    price,
                    bar,
                    equity,
                    order[O_MAX_UNITS],
                    sleeve_cfg[s],
                    stats[s],
                    order[O_STOP],
                    order[O_TAKE_PROFIT],
                    order[O_TRAIL],
                )
            if units > 0.0:
                entry_ts[s, k] = ts_ns
                fill[F_STATUS] = FILL_DONE
                fill[F_UNITS] = units
                fill[F_PRICE] = slot[S_ENTRY_PRICE]
                fill[F_FEES] = slot[S_ENTRY_FEES]
        cash[s] = slot[S_CASH]
        slot[S_CASH] = 0.0
    return n_trades


@njit
def check_stops_nb(
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
    trades_out,
    trade_ids_out,
    n_trades,
):
    """Exit positions whose stop, trailing stop or take-profit this bar touches (the fill
    model's intrabar rules) and move trailing levels; return the trade rows now written."""
    n_sleeves, n_symbols = slots.shape[0], slots.shape[1]
    for s in range(n_sleeves):
        for k in range(n_symbols):
            slot = slots[s, k]
            if slot[S_POSITION] == 0.0 or slot[S_HAS_LEVELS] == 0.0 or math.isnan(open_[k]):
                continue
            slot[S_CASH] = cash[s]
            before = n_trades
            opened_ns = entry_ts[s, k]
            n_trades = check_levels_nb(
                slot, open_[k], high[k], low[k], bar, sleeve_cfg[s], trades_out, n_trades, stats[s]
            )
            cash[s] = slot[S_CASH]
            slot[S_CASH] = 0.0
            if n_trades > before:
                trade_id_nb(trade_ids_out[before], s, k, opened_ns, ts_ns)
    return n_trades


@njit
def trade_id_nb(row, s, k, entry_ns, exit_ns):
    row[T_SLEEVE] = s
    row[T_SYMBOL] = k
    row[T_ENTRY_TS] = entry_ns
    row[T_EXIT_TS] = exit_ns
