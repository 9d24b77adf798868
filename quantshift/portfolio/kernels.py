"""Numba kernels of the decision layer: decide on a bar's close, fill orders, check stops.

Plain ``njit`` (inlined into the cached entry points of ``quantshift.portfolio.loop``). They take
the records of ``quantshift.portfolio.rows``: ``setup`` a PortfolioSetup, ``state`` a
PortfolioArrays (updated in place), ``signals`` a Signals of (n_sleeves, n_symbols) arrays,
``inputs`` a BarInputs (recent closes, regime and sentiment at the decision bar).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from quantshift.engine.records import position_dt
from quantshift.engine.simulate import (
    ACT_LONG,
    ACT_NONE,
    ACT_SHORT,
    check_levels_nb,
    close_position_nb,
    closing_reason_nb,
    enter_decided_nb,
    enter_nb,
    exit_nb,
    open_position_nb,
    stop_level_nb,
    write_open_trade_nb,
)
from quantshift.engine.simulate import decide_nb as signal_action_nb
from quantshift.portfolio.limit_kernels import (
    correlated_holding_nb,
    entry_scale_nb,
    sector_notional_nb,
    sentiment_vetoes_nb,
    window_returns_nb,
)
from quantshift.portfolio.rows import (
    ACTION_ENTRY,
    ACTION_EXIT,
    DAY_NS,
    FILL_DONE,
    FILL_NOTHING,
    FILL_PENDING,
    HALT_DAILY_LOSS,
    HALT_DRAWDOWN,
    HALT_NONE,
    LIMIT_CORRELATION,
    LIMIT_GROSS,
    LIMIT_HEAT,
    LIMIT_NONE,
    LIMIT_POSITION,
    LIMIT_REGIME,
    LIMIT_SECTOR,
    POLICY_FLAT,
    POLICY_NET,
    REASON_CONFLICT,
    REASON_ENTRY,
    VETO_CONFLICT,
    VETO_HALTED,
    VETO_SENTIMENT,
)


@njit
def positions_value_nb(s, positions, marks):
    """Return the signed value of sleeve ``s``'s positions marked at ``marks``."""
    value = 0.0
    for k in range(positions.shape[1]):
        units = positions[s, k].units
        if units != 0.0:
            value += units * marks[k]
    return value


@njit
def sleeve_equity_nb(s, state):
    """Return sleeve ``s``'s cash plus its positions marked at the state's marks."""
    return state.cash[s] + positions_value_nb(s, state.slots, state.marks)


@njit
def portfolio_equity_nb(state):
    """Return the unallocated cash plus every sleeve's equity."""
    total = state.book[0].reserve
    for s in range(state.cash.shape[0]):
        total += sleeve_equity_nb(s, state)
    return total


@njit
def _open_risk_per_unit_nb(position, mark):
    """Loss per unit if the position's binding stop is hit from ``mark``; the whole mark when
    the position has no stop (the price can go to zero)."""
    side = 1.0 if position.units > 0.0 else -1.0
    level = stop_level_nb(position, side) if position.has_levels else math.nan
    if math.isnan(level):
        return mark
    return max(side * (mark - level), 0.0)


@njit
def _update_book_nb(ts_ns, equity, limits, book):
    """Roll the day, raise the peak and trip a circuit breaker (it stays tripped)."""
    day = float(ts_ns // DAY_NS)
    if day != book.day:
        book.day_start_equity = book.last_equity
        book.day = day
    if equity > book.peak_equity:
        book.peak_equity = equity
    book.last_equity = equity
    if book.halt != HALT_NONE:
        return
    daily, drawdown = limits.daily_loss, limits.max_drawdown
    if daily < math.inf and equity <= (1.0 - daily) * book.day_start_equity:
        book.halt = HALT_DAILY_LOSS
    elif drawdown < math.inf and equity <= (1.0 - drawdown) * book.peak_equity:
        book.halt = HALT_DRAWDOWN


@njit
def _resolve_conflicts_nb(
    ts_ns, k, policy, member, positions, exit_reason, enter_side, vetoes, n_vetoes
):
    """Apply the conflict policy to symbol ``k``; return the number of vetoes written."""
    n_sleeves = member.shape[0]
    winner = 0.0
    has_long = has_short = False
    desired = np.zeros(n_sleeves)
    for s in range(n_sleeves):
        if not member[s, k]:
            continue
        units = positions[s, k].units
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
            _veto_nb(vetoes[n_vetoes], ts_ns, s, k, enter_side[s, k], VETO_CONFLICT)
            n_vetoes += 1
            enter_side[s, k] = 0.0
        if positions[s, k].units != 0.0 and exit_reason[s, k] < 0:
            exit_reason[s, k] = REASON_CONFLICT
    return n_vetoes


@njit
def _veto_nb(row, ts_ns, s, k, side, reason):
    row.sleeve = s
    row.symbol = k
    row.side = side
    row.reason = reason
    row.ts_ns = ts_ns


@njit
def _order_nb(row, ts_ns, s, k, action, side, reason, units, price):
    """Write an order with no distances and no cap beyond its units (an exit's shape)."""
    row.sleeve = s
    row.symbol = k
    row.action = action
    row.side = side
    row.reason = reason
    row.units = units
    row.max_units = units
    row.price = price
    row.stop = math.nan
    row.take_profit = math.nan
    row.trail = math.nan
    row.capped_by = LIMIT_NONE
    row.ts_ns = ts_ns


@njit
def decide_nb(ts_ns, close, signals, inputs, setup, state, orders_out, vetoes_out):
    """Decide on one bar's close: return (orders written, vetoes written).

    ``close`` holds each symbol's close at ``ts_ns`` (NaN: no bar, so no decision for it).
    Updates the state's marks and book (day, peak, halt); positions and cash change only when
    orders fill. Each sleeve acts on its signals as the single-symbol simulation would (exits,
    reversals, entries by its direction); the conflict policy then settles symbols the sleeves
    disagree on; a halt vetoes every entry; exits are written first, then entries in sleeve
    then symbol order, each checked and capped by the risk limits left after the exits and the
    entries before it (:func:`_entry_orders_nb`).
    """
    n_sleeves, n_symbols = setup.member.shape
    marks = state.marks
    book = state.book[0]
    for k in range(n_symbols):
        if not math.isnan(close[k]):
            marks[k] = close[k]
    equity = portfolio_equity_nb(state)
    limits = setup.limits[0]
    _update_book_nb(ts_ns, equity, limits, book)
    exit_reason, enter_side = _signal_actions_nb(close, signals, setup, state.slots)
    n_vetoes = 0
    policy = limits.policy
    if policy != POLICY_NET and n_sleeves > 1:
        for k in range(n_symbols):
            if not math.isnan(close[k]):
                n_vetoes = _resolve_conflicts_nb(
                    ts_ns, k, policy, setup.member, state.slots, exit_reason, enter_side,
                    vetoes_out, n_vetoes,
                )  # fmt: skip
    if book.halt != HALT_NONE:
        for s in range(n_sleeves):
            for k in range(n_symbols):
                if enter_side[s, k] != 0.0:
                    _veto_nb(vetoes_out[n_vetoes], ts_ns, s, k, enter_side[s, k], VETO_HALTED)
                    n_vetoes += 1
                    enter_side[s, k] = 0.0
    n_orders = _exit_orders_nb(ts_ns, exit_reason, state, orders_out)
    return _entry_orders_nb(
        ts_ns, equity, close, signals, inputs, enter_side, exit_reason, setup, state, orders_out,
        n_orders, vetoes_out, n_vetoes,
    )  # fmt: skip


@njit
def _signal_actions_nb(close, signals, setup, positions):
    """Return, per (sleeve, symbol), the exit reason (-1: none) and the side to enter (0: none)
    its signals ask for, as the single-symbol simulation would act on them."""
    member = setup.member
    n_sleeves, n_symbols = member.shape
    exit_reason = np.full((n_sleeves, n_symbols), -1, np.int64)
    enter_side = np.zeros((n_sleeves, n_symbols))
    for s in range(n_sleeves):
        direction = setup.sleeve_cfg[s].direction
        for k in range(n_symbols):
            if not member[s, k] or math.isnan(close[k]):
                continue
            units = positions[s, k].units
            act = signal_action_nb(signals.entries[s, k], signals.exits[s, k], units, direction)
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
def _exit_orders_nb(ts_ns, exit_reason, state, orders_out):
    """Write an order closing each position with an exit reason; return how many."""
    positions = state.slots
    n_orders = 0
    for s in range(positions.shape[0]):
        for k in range(positions.shape[1]):
            units = positions[s, k].units
            if units == 0.0 or exit_reason[s, k] < 0:
                continue
            side = -1.0 if units > 0.0 else 1.0
            _order_nb(
                orders_out[n_orders], ts_ns, s, k, ACTION_EXIT, side, exit_reason[s, k],
                abs(units), state.marks[k],
            )  # fmt: skip
            n_orders += 1
    return n_orders


@njit
def _entry_orders_nb(
    ts_ns, equity, close, signals, inputs, enter_side, exit_reason, setup, state, orders_out,
    n_orders, vetoes_out, n_vetoes,
):  # fmt: skip
    """Write the entry orders; return (orders written, vetoes written) in all.

    Each entry, in sleeve then symbol order, is vetoed when its side-aligned news score is
    below the threshold ("sentiment"); then capped by the room heat, position, gross exposure
    (times the regime's exposure scale) and sector limits leave, and by its size multiplier
    (the regime's sleeve allocation times the sentiment cut), a veto naming the binding cap
    when nothing fits; then vetoed when it is too correlated with a holding
    ("max_position_correlation"). Stop and trail distances are scaled by the regime's stop
    scale. The holdings the limits see are the positions left after the exits plus the entries
    before it.
    """
    n_sleeves, n_symbols = enter_side.shape
    positions, marks = state.slots, state.marks
    limits = setup.limits[0]
    # What stays open after the exits sets the heat and exposure the entries may add to.
    heat = gross = 0.0
    notional = np.zeros(n_symbols)
    held_side = np.zeros((n_symbols, 2), np.bool_)  # [k, 0]: held long, [k, 1]: held short
    for s in range(n_sleeves):
        for k in range(n_symbols):
            units = positions[s, k].units
            if units != 0.0 and exit_reason[s, k] < 0:
                held_side[k, 0 if units > 0.0 else 1] = True
                units = abs(units)
                notional[k] += units * marks[k]
                gross += units * marks[k]
                heat += units * _open_risk_per_unit_nb(positions[s, k], marks[k])
    sector = setup.sector
    sector_notional = sector_notional_nb(sector, notional)
    returns = np.empty((0, n_symbols))
    scratch_owner = np.zeros(1, position_dt)
    scratch = scratch_owner[0]
    for s in range(n_sleeves):
        cfg = setup.sleeve_cfg[s]
        sleeve_equity = sleeve_equity_nb(s, state)
        for k in range(n_symbols):
            side = enter_side[s, k]
            if side == 0.0:
                continue
            if sentiment_vetoes_nb(k, side, inputs, limits):
                _veto_nb(vetoes_out[n_vetoes], ts_ns, s, k, side, VETO_SENTIMENT)
                n_vetoes += 1
                continue
            price = close[k]
            regime = inputs.regime[k]
            stop_scale = setup.regime_stop[regime] if regime >= 0 else 1.0
            distance = signals.stop[s, k] * stop_scale
            take_profit = signals.take_profit[s, k]
            trail = signals.trail[s, k] * stop_scale
            # The units as sized on this close: the order's under decision-time sizing; under
            # fill-time sizing the fill sizes the entry again at its own price.
            scratch.units = 0.0
            wanted = enter_nb(
                scratch, side, price, -1, sleeve_equity, math.inf, cfg, state.stats[s],
                distance, take_profit, trail,
            )  # fmt: skip
            stopped = distance > 0.0 and cfg.use_stops
            risk_per_unit = distance if stopped else price * (1.0 + cfg.slippage_rate * side)
            cap = math.inf
            binding = LIMIT_NONE
            if limits.max_heat < math.inf:
                cap = (limits.max_heat * equity - heat) / risk_per_unit
                binding = LIMIT_HEAT
            if limits.max_position < math.inf:
                room = (limits.max_position * equity - notional[k]) / price
                if not room >= cap:
                    cap = room
                    binding = LIMIT_POSITION
            if limits.max_gross < math.inf:
                exposure = setup.regime_exposure[regime] if regime >= 0 else 1.0
                room = (exposure * limits.max_gross * equity - gross) / price
                if not room >= cap:
                    cap = room
                    binding = LIMIT_REGIME if exposure < 1.0 else LIMIT_GROSS
            if limits.max_sector < math.inf:
                room = (limits.max_sector * equity - sector_notional[sector[k]]) / price
                if not room >= cap:
                    cap = room
                    binding = LIMIT_SECTOR
            # A multiplier caps the fill's own sizing too, so it travels as the order's cap.
            scale, scaled_by = entry_scale_nb(s, k, side, inputs, setup)
            if scale < 1.0 and not wanted * scale >= cap:
                cap = wanted * scale
                binding = scaled_by
            if limits.whole_units and cap < math.inf:
                cap = math.floor(cap + 1e-9)
            if not cap > 0.0:
                _veto_nb(vetoes_out[n_vetoes], ts_ns, s, k, side, binding)
                n_vetoes += 1
                continue
            if limits.max_correlation < math.inf:
                if returns.shape[0] == 0:  # the first entry to check reads the window once
                    returns = window_returns_nb(inputs.recent_close, limits.correlation_window)
                if correlated_holding_nb(k, side, held_side, returns, limits):
                    _veto_nb(vetoes_out[n_vetoes], ts_ns, s, k, side, LIMIT_CORRELATION)
                    n_vetoes += 1
                    continue
            units = min(wanted, cap)
            row = orders_out[n_orders]
            _order_nb(row, ts_ns, s, k, ACTION_ENTRY, side, REASON_ENTRY, units, price)
            row.max_units = cap
            row.stop = distance
            row.take_profit = take_profit
            row.trail = trail
            row.capped_by = binding if cap < wanted else LIMIT_NONE
            n_orders += 1
            heat += units * risk_per_unit
            notional[k] += units * price
            gross += units * price
            if sector[k] >= 0:
                sector_notional[sector[k]] += units * price
            held_side[k, 0 if side > 0.0 else 1] = True
    scratch_owner[0].units = 0.0  # keeps the array that owns `scratch` alive until here
    return n_orders, n_vetoes


@njit
def fill_nb(orders, prices, bar, ts_ns, setup, state, executed, fills_out, trades_out, n_trades):
    """Fill ``orders`` in their order at ``prices`` (per symbol, NaN: no bar, order stays
    pending); return the number of trade rows now in ``trades_out``.

    The fill model of the single-symbol simulation, on each (sleeve, symbol) position with its
    sleeve's cash: an exit closes the whole position; an entry into a flat position is sized at
    its fill price against the sleeve's equity (its cash after this bar's earlier fills plus its
    other positions at the marks), at most the order's ``max_units``. Under decision-time
    sizing (the sleeve's ``size_at_decision``) it fills the order's ``units`` instead, cut to
    what ``max_leverage`` allows against that equity at the fill price when a gap makes the
    cash short.

    With records in ``executed`` (``fill_dt``: units, price after slippage, fees per order) a
    broker's reported executions are applied as they are instead: no sizing, no slippage, no
    fee model.
    """
    reported = executed.shape[0] > 0
    cash = state.cash
    for i in range(orders.shape[0]):
        order = orders[i]
        s = order.sleeve
        k = order.symbol
        fill = fills_out[i]
        fill.units = fill.price = fill.fees = 0.0
        fill.bar = 0
        fill.ts_ns = 0
        price = executed[i].price if reported else prices[k]
        if math.isnan(price):
            fill.status = FILL_PENDING
            continue
        fill.status = FILL_NOTHING
        fill.bar = bar
        fill.ts_ns = ts_ns
        position = state.slots[s, k]
        cfg = setup.sleeve_cfg[s]
        stats = state.stats[s]
        position.cash = cash[s]
        if order.action == ACTION_EXIT:
            if position.units != 0.0:
                if reported:
                    n_new = close_position_nb(
                        position, price, executed[i].fees, bar, order.reason, trades_out,
                        n_trades, stats,
                    )  # fmt: skip
                else:
                    n_new = exit_nb(
                        position, price, bar, order.reason, cfg, trades_out, n_trades, stats
                    )
                row = trades_out[n_trades]
                _tag_trade_nb(row, s, k, ts_ns)
                fill.status = FILL_DONE
                fill.units = row.units
                fill.price = row.exit_price
                fill.fees = row.exit_fees
                n_trades = n_new
        elif position.units == 0.0:
            if reported:
                units = executed[i].units
                if units > 0.0:
                    open_position_nb(
                        position, order.side, price, units, executed[i].fees, bar, cfg,
                        order.stop, order.take_profit, order.trail,
                    )  # fmt: skip
            else:
                # The flat position adds nothing: this is the cash plus the sleeve's others.
                equity = cash[s] + positions_value_nb(s, state.slots, state.marks)
                if cfg.size_at_decision:
                    units = enter_decided_nb(
                        position, order.side, price, bar, equity, order.units, cfg,
                        order.stop, order.take_profit, order.trail,
                    )  # fmt: skip
                else:
                    units = enter_nb(
                        position, order.side, price, bar, equity, order.max_units, cfg, stats,
                        order.stop, order.take_profit, order.trail,
                    )  # fmt: skip
            if units > 0.0:
                position.entry_ts_ns = ts_ns
                fill.status = FILL_DONE
                fill.units = units
                fill.price = position.entry_price
                fill.fees = position.entry_fees
        cash[s] = position.cash
        position.cash = 0.0
    return n_trades


@njit
def check_stops_nb(open_, high, low, bar, ts_ns, setup, state, trades_out, n_trades):
    """Exit positions whose stop, trailing stop or take-profit this bar touches (the fill
    model's intrabar rules) and move trailing levels; return the trade rows now written."""
    positions, cash = state.slots, state.cash
    n_sleeves, n_symbols = positions.shape
    for s in range(n_sleeves):
        for k in range(n_symbols):
            position = positions[s, k]
            if position.units == 0.0 or not position.has_levels or math.isnan(open_[k]):
                continue
            position.cash = cash[s]
            before = n_trades
            n_trades = check_levels_nb(
                position, open_[k], high[k], low[k], bar, setup.sleeve_cfg[s], trades_out,
                n_trades, state.stats[s],
            )  # fmt: skip
            cash[s] = position.cash
            position.cash = 0.0
            if n_trades > before:
                _tag_trade_nb(trades_out[before], s, k, ts_ns)
    return n_trades


@njit
def _tag_trade_nb(row, s, k, exit_ts_ns):
    """Say whose trade ``row`` is and when it closed (the fill model knows neither)."""
    row.sleeve = s
    row.symbol = k
    row.exit_ts_ns = exit_ts_ns


@njit
def close_open_positions_nb(state, last_bar, ts_ns, trades_out, n_trades):
    """Report each open position as a trade (reason "open") marked at its symbol's last close
    (row ``last_bar[k]`` of ``ts_ns``); return the trade rows now written."""
    positions, marks = state.slots, state.marks
    for s in range(positions.shape[0]):
        for k in range(positions.shape[1]):
            if positions[s, k].units != 0.0:
                row = trades_out[n_trades]
                write_open_trade_nb(row, positions[s, k], last_bar[k], marks[k])
                _tag_trade_nb(row, s, k, ts_ns[last_bar[k]])
                n_trades += 1
    return n_trades
