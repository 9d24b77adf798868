"""The fill model: one symbol's signals in, fills, trade records and an equity curve out.

Shared by backtests, sweeps and the paper broker. Plain ``njit`` (no cache): it is inlined into
the cached per-strategy kernels of ``quantshift.engine.fused``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from quantshift.engine.config import (
    DIRECTION_BOTH,
    DIRECTION_LONG,
    DIRECTION_SHORT,
    FILL_NEXT_OPEN,
    SIZING_KELLY,
    SIZING_RISK,
)
from quantshift.engine.metrics import equity_step_nb, record_trade_nb
from quantshift.engine.records import position_dt

EXIT_REASONS = ("signal", "stop_loss", "take_profit", "trailing_stop", "reverse", "open")
REASON_SIGNAL = 0
REASON_STOP = 1
REASON_TAKE_PROFIT = 2
REASON_TRAILING = 3
REASON_REVERSE = 4
REASON_OPEN = 5

ACT_NONE = 0
ACT_EXIT = 1
ACT_LONG = 2
ACT_SHORT = 3


@njit
def decide_nb(entry, exit_, position, direction):
    """Return the action a bar's signals ask for, given the open position (signed units)."""
    if entry and exit_:
        return ACT_NONE
    if direction == DIRECTION_LONG:
        if entry and position == 0.0:
            return ACT_LONG
        if exit_ and position > 0.0:
            return ACT_EXIT
    elif direction == DIRECTION_SHORT:
        if entry and position == 0.0:
            return ACT_SHORT
        if exit_ and position < 0.0:
            return ACT_EXIT
    elif direction == DIRECTION_BOTH:
        if entry and position <= 0.0:
            return ACT_LONG
        if exit_ and position >= 0.0:
            return ACT_SHORT
    return ACT_NONE


@njit
def closing_reason_nb(act, position):
    """Return why ``act`` closes the open ``position`` (signed units): REASON_SIGNAL for an
    exit, REASON_REVERSE for an entry against it; -1 when it leaves the position open."""
    if position != 0.0 and (act == ACT_EXIT or (act == ACT_LONG) == (position < 0.0)):
        return REASON_SIGNAL if act == ACT_EXIT else REASON_REVERSE
    return -1


@njit
def entry_fraction_nb(cfg, stats):
    """Return the equity fraction an entry commits under fraction or Kelly sizing."""
    if cfg.sizing == SIZING_KELLY and stats.closed_trades >= cfg.kelly_min_trades:
        wins = stats.wins
        losses = stats.closed_trades - wins
        if wins == 0.0:
            return 0.0
        if losses == 0.0:
            return cfg.max_leverage
        win_rate = wins / stats.closed_trades
        payoff = (stats.win_return_sum / wins) / (-stats.loss_return_sum / losses)
        kelly = win_rate - (1.0 - win_rate) / payoff
        return min(max(cfg.kelly_fraction * kelly, 0.0), cfg.max_leverage)
    return cfg.size_fraction


@njit
def simulate_nb(bars, signals, cfg, out):
    """Simulate one symbol bar by bar; return the number of trade rows written.

    ``bars`` is a SymbolBars, ``signals`` a Signals, ``cfg`` a ``config_dt`` record and ``out``
    a SimOutputs. Rules (DESIGN.md layer 4): a signal on bar t fills at bar t+1's open
    ("next-open") or at bar t's close ("close"). A position's stop-loss, take-profit and trailing
    stop are checked from the bar it was entered on (after the entry fill): first a gap through a
    level fills at the open, then the bar's low/high are compared with the levels and a bar
    touching both the stop and the target fills at the stop (the worse one). The trailing level
    follows the best price seen since entry (the entry fill, then each bar's open and, after the
    check, its high/low). Levels are distances from the entry fill price read at the signal bar.
    Entries are sized at the fill, or at the decision with ``cfg.size_at_decision`` (SimConfig
    ``size_at``): units from the signal bar's close and the equity then, cut at the fill to
    what ``max_leverage`` allows at the fill price. Fees and slippage apply to every fill.
    Statistics for the metrics accumulate in ``out.stats`` as the bars pass. ``out.trades``
    may have zero rows (sweeps): then nothing else is recorded and ``out.equity``/
    ``out.position`` may be empty. An open position at the end is reported as a trade with
    reason "open", marked at the last close, and is not in the closed-trade stats.
    """
    open_, high, low, close = bars.open, bars.high, bars.low, bars.close
    entries, exits = signals.entries, signals.exits
    trades_out = out.trades
    n = close.shape[0]
    direction = cfg.direction
    next_open = cfg.fill_at == FILL_NEXT_OPEN
    record = trades_out.shape[0] > 0
    stats = out.stats[0]  # zeroed by the caller
    held = np.zeros(1, position_dt)  # owns `state` below: used again after the loop
    state = held[0]
    state.cash = cfg.cash
    pending = ACT_NONE
    pending_bar = -1
    pending_units = math.nan
    n_trades = 0
    last_equity = peak = cfg.cash
    return_sum = return_sq_sum = downside_sq = max_drawdown = 0.0
    bars_in_market = 0

    for t in range(n):
        # 1. Orders decided on the previous close fill at this open.
        if pending != ACT_NONE:
            n_trades = _execute_nb(
                state, pending, open_[t], t, pending_bar, pending_units, cfg, signals, trades_out,
                n_trades, stats,
            )  # fmt: skip
            pending = ACT_NONE
        # 2. Protective levels, checked on the bar's range.
        if state.units != 0.0 and state.has_levels:
            n_trades = check_levels_nb(
                state, open_[t], high[t], low[t], t, cfg, trades_out, n_trades, stats
            )
        # 3. This bar's signals, decided on its close.
        act = decide_nb(entries[t], exits[t], state.units, direction)
        if act != ACT_NONE:
            units = math.nan  # sized at the fill
            if cfg.size_at_decision and act != ACT_EXIT:
                side = 1.0 if act == ACT_LONG else -1.0
                equity = state.cash + state.units * close[t]
                units = decision_units_nb(cfg, stats, side, close[t], equity, signals.stop[t])
            if not next_open:
                n_trades = _execute_nb(
                    state, act, close[t], t, t, units, cfg, signals, trades_out, n_trades, stats
                )
            elif t + 1 < n:
                pending = act
                pending_bar = t
                pending_units = units
        position = state.units
        equity = state.cash + position * close[t]
        return_sum, return_sq_sum, downside_sq, peak, max_drawdown = equity_step_nb(
            equity, last_equity, return_sum, return_sq_sum, downside_sq, peak, max_drawdown
        )
        last_equity = equity
        if position != 0.0:
            bars_in_market += 1
        if record:
            out.equity[t] = equity
            out.position[t] = position

    stats.bars = n
    stats.bars_in_market = bars_in_market
    stats.last_equity = last_equity
    stats.max_drawdown = max_drawdown
    stats.return_sum = return_sum
    stats.return_sq_sum = return_sq_sum
    stats.downside_sq = downside_sq
    if held[0].units != 0.0 and record:
        write_open_trade_nb(trades_out[n_trades], held[0], n - 1, close[n - 1])
        n_trades += 1
    return n_trades


@njit
def write_open_trade_nb(row, state, bar, price):
    """Write the open position as a trade with reason "open" into ``row``, marked at ``price``
    with no exit fees: what the equity curve already counts."""
    pnl, ret = _pnl_nb(state, price, 0.0)
    _write_trade_nb(row, state, bar, price, 0.0, pnl, ret, REASON_OPEN)


@njit
def _execute_nb(
    state, act, price, bar, signal_bar, units, cfg, signals, trades_out, n_trades, stats
):
    """Fill a signal action at ``price``: close (or reverse) the position, then maybe enter
    with ``units`` fixed at the decision (NaN: sized here, at the fill)."""
    reason = closing_reason_nb(act, state.units)
    if reason >= 0:
        n_trades = exit_nb(state, price, bar, reason, cfg, trades_out, n_trades, stats)
    if act == ACT_EXIT or state.units != 0.0:
        return n_trades
    side = 1.0 if act == ACT_LONG else -1.0
    stop = signals.stop[signal_bar]
    take_profit = signals.take_profit[signal_bar]
    trail = signals.trail[signal_bar]
    if math.isnan(units):
        enter_nb(
            state, side, price, bar, state.cash, math.inf, cfg, stats, stop, take_profit, trail
        )
    else:
        enter_decided_nb(state, side, price, bar, state.cash, units, cfg, stop, take_profit, trail)
    return n_trades


@njit
def enter_nb(
    state,
    side,
    price,
    bar,
    equity,
    max_units,
    cfg,
    stats,
    stop_distance,
    tp_distance,
    trail_distance,
):
    """Open a ``side`` (+1 long, -1 short) position on the flat ``state`` at ``price`` (before
    slippage), sized against ``equity`` and at most ``max_units``; return the units (0: none).

    Cash comes out of ``state.cash``; the levels are distances from the entry fill price.
    The portfolio layer passes a sleeve's equity and its risk limits' cap; a single-symbol
    simulation passes its cash and no cap.
    """
    exec_price = price * (1.0 + cfg.slippage_rate * side)
    units = min(_entry_units_nb(cfg, stats, equity, exec_price, stop_distance), max_units)
    _open_units_nb(
        state, side, exec_price, units, bar, cfg, stop_distance, tp_distance, trail_distance
    )
    return units


@njit
def decision_units_nb(cfg, stats, side, price, equity, stop_distance):
    """Return the units a ``side`` entry decided at ``price`` (the decision bar's close) names
    under decision-time sizing: sized as if it filled there, against ``equity`` then."""
    return _entry_units_nb(
        cfg, stats, equity, price * (1.0 + cfg.slippage_rate * side), stop_distance
    )


@njit
def enter_decided_nb(
    state, side, price, bar, equity, units, cfg, stop_distance, tp_distance, trail_distance
):
    """Open ``units`` decided before the fill (:func:`decision_units_nb`) on the flat
    ``state`` at ``price`` (before slippage); return the units bought or sold (0: none).

    When a gap makes the cash short the units are cut to what ``max_leverage`` allows against
    ``equity`` at this fill price (fees included), rounded down to whole units if asked.
    """
    exec_price = price * (1.0 + cfg.slippage_rate * side)
    affordable = _whole_nb(cfg, _leverage_cap_nb(cfg, equity, exec_price))
    units = min(units, affordable)
    _open_units_nb(
        state, side, exec_price, units, bar, cfg, stop_distance, tp_distance, trail_distance
    )
    return units


@njit
def _open_units_nb(
    state, side, exec_price, units, bar, cfg, stop_distance, tp_distance, trail_distance
):
    """Open ``units`` (if any) at ``exec_price`` paying the fee model's fees."""
    if units > 0.0:
        fees = units * exec_price * cfg.fee_rate
        open_position_nb(
            state, side, exec_price, units, fees, bar, cfg, stop_distance, tp_distance,
            trail_distance,
        )  # fmt: skip


@njit
def open_position_nb(
    state, side, exec_price, units, fees, bar, cfg, stop_distance, tp_distance, trail_distance
):
    """Open ``units`` on the flat ``state`` at ``exec_price`` (after slippage) paying ``fees``:
    what the fill model decided, or what a broker reported it executed."""
    state.cash -= side * units * exec_price + fees
    state.units = side * units
    state.entry_bar = bar
    state.entry_price = exec_price
    state.entry_fees = fees
    _set_levels_nb(
        state,
        cfg.use_stops,
        side,
        exec_price,
        stop_distance,
        tp_distance,
        trail_distance,
    )


@njit
def check_levels_nb(state, open_, high, low, bar, cfg, trades_out, n_trades, stats):
    """Exit at a stop, trailing stop or take-profit touched on this bar; update the trail."""
    side = 1.0 if state.units > 0.0 else -1.0
    tp_level = state.take_profit_price
    stop_now = stop_level_nb(state, side)
    if not math.isnan(stop_now) and side * (open_ - stop_now) <= 0.0:
        return exit_nb(
            state, open_, bar, _stop_reason_nb(state, side), cfg, trades_out, n_trades, stats
        )
    if not math.isnan(tp_level) and side * (open_ - tp_level) >= 0.0:
        return exit_nb(state, open_, bar, REASON_TAKE_PROFIT, cfg, trades_out, n_trades, stats)
    trailing = not math.isnan(state.trail_distance)
    if trailing and side * (open_ - state.best_price) > 0.0:
        state.best_price = open_
    stop_now = stop_level_nb(state, side)
    adverse = low if side > 0.0 else high
    favourable = high if side > 0.0 else low
    if not math.isnan(stop_now) and side * (adverse - stop_now) <= 0.0:
        return exit_nb(
            state, stop_now, bar, _stop_reason_nb(state, side), cfg, trades_out, n_trades, stats
        )
    if not math.isnan(tp_level) and side * (favourable - tp_level) >= 0.0:
        return exit_nb(state, tp_level, bar, REASON_TAKE_PROFIT, cfg, trades_out, n_trades, stats)
    if trailing and side * (favourable - state.best_price) > 0.0:
        state.best_price = favourable
    return n_trades


@njit
def exit_nb(state, price, bar, reason, cfg, trades_out, n_trades, stats):
    """Close the whole position at ``price`` (before slippage); book the trade."""
    position = state.units
    side = 1.0 if position > 0.0 else -1.0
    exec_price = price * (1.0 - cfg.slippage_rate * side)
    fees = abs(position) * exec_price * cfg.fee_rate
    return close_position_nb(state, exec_price, fees, bar, reason, trades_out, n_trades, stats)


@njit
def close_position_nb(state, exec_price, fees, bar, reason, trades_out, n_trades, stats):
    """Close the whole position at ``exec_price`` (after slippage) paying ``fees``; book the
    trade: what the fill model decided, or what a broker reported it executed."""
    position = state.units
    state.cash += position * exec_price - fees
    pnl, ret = _pnl_nb(state, exec_price, fees)
    record_trade_nb(stats, pnl, ret)
    if trades_out.shape[0] > 0:
        _write_trade_nb(trades_out[n_trades], state, bar, exec_price, fees, pnl, ret, reason)
        n_trades += 1
    state.units = 0.0
    return n_trades


@njit
def _pnl_nb(state, exit_price, exit_fees):
    """Net P&L (currency) and return (fraction of entry notional plus entry fees) of closing
    the open position at ``exit_price`` (after slippage) with ``exit_fees``."""
    position = state.units
    units = abs(position)
    side = 1.0 if position > 0.0 else -1.0
    entry_price = state.entry_price
    pnl = side * (exit_price - entry_price) * units - state.entry_fees - exit_fees
    return pnl, pnl / (entry_price * units + state.entry_fees)


@njit
def _write_trade_nb(row, state, exit_bar, exit_price, exit_fees, pnl, ret, reason):
    position = state.units
    row.direction = 1 if position > 0.0 else -1
    row.entry_bar = state.entry_bar
    row.exit_bar = exit_bar
    row.entry_ts_ns = state.entry_ts_ns
    row.units = abs(position)
    row.entry_price = state.entry_price
    row.exit_price = exit_price
    row.entry_fees = state.entry_fees
    row.exit_fees = exit_fees
    row.pnl = pnl
    row.return_pct = 100.0 * ret
    row.exit_reason = reason


@njit
def _entry_units_nb(cfg, stats, equity, exec_price, stop_distance):
    """Units to buy or sell short at ``exec_price`` with ``equity`` (the position is flat)."""
    max_units = _leverage_cap_nb(cfg, equity, exec_price)
    if max_units == 0.0:
        return 0.0
    cost_per_unit = exec_price * (1.0 + cfg.fee_rate)
    if cfg.sizing == SIZING_RISK:
        if not stop_distance > 0.0:
            return 0.0
        units = min(cfg.risk_per_trade * equity / stop_distance, max_units)
    else:
        units = min(entry_fraction_nb(cfg, stats) * equity / cost_per_unit, max_units)
    return _whole_nb(cfg, units)


@njit
def _leverage_cap_nb(cfg, equity, exec_price):
    """Most units ``max_leverage`` x ``equity`` buys at ``exec_price``, fees included."""
    if equity <= 0.0 or not exec_price > 0.0:
        return 0.0
    return cfg.max_leverage * equity / (exec_price * (1.0 + cfg.fee_rate))


@njit
def _whole_nb(cfg, units):
    """``units`` rounded down to a whole number when the config asks for whole units."""
    if cfg.whole_units:
        # The epsilon keeps 10.0 from flooring to 9 when division leaves 9.999999999999998.
        return math.floor(units + 1e-9)
    return units


@njit
def _set_levels_nb(state, use_stops, side, entry_price, stop_distance, tp_distance, trail_distance):
    """Set the protective levels of a new position from the signal bar's distances."""
    nan = math.nan
    has_stop = use_stops and stop_distance > 0.0
    has_target = use_stops and tp_distance > 0.0
    has_trail = use_stops and trail_distance > 0.0
    state.stop_price = entry_price - side * stop_distance if has_stop else nan
    state.take_profit_price = entry_price + side * tp_distance if has_target else nan
    state.trail_distance = trail_distance if has_trail else nan
    state.best_price = entry_price
    state.has_levels = has_stop or has_target or has_trail


@njit
def stop_level_nb(state, side):
    """Return the binding protective level: the tighter of the fixed and the trailing stop."""
    stop_level = state.stop_price
    if math.isnan(state.trail_distance):
        return stop_level
    trailing = state.best_price - side * state.trail_distance
    if math.isnan(stop_level):
        return trailing
    return max(stop_level, trailing) if side > 0.0 else min(stop_level, trailing)


@njit
def _stop_reason_nb(state, side):
    if math.isnan(state.trail_distance):
        return REASON_STOP
    trailing = state.best_price - side * state.trail_distance
    if math.isnan(state.stop_price) or side * (trailing - state.stop_price) > 0.0:
        return REASON_TRAILING
    return REASON_STOP
