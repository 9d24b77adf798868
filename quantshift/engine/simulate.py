"""The fill model: one symbol's signals in, fills, trade records and an equity curve out.

Shared by backtests, sweeps and the paper broker. Plain ``njit`` (no cache): it is inlined into
the cached per-strategy kernels of ``quantshift.engine.fused``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from quantshift.engine.config import (
    CFG_CASH,
    CFG_DIRECTION,
    CFG_FEE_RATE,
    CFG_FILL,
    CFG_KELLY_FRACTION,
    CFG_KELLY_MIN_TRADES,
    CFG_MAX_LEVERAGE,
    CFG_RISK,
    CFG_SIZE,
    CFG_SIZING,
    CFG_SLIPPAGE_RATE,
    CFG_USE_STOPS,
    CFG_WHOLE_UNITS,
    DIRECTION_BOTH,
    DIRECTION_LONG,
    DIRECTION_SHORT,
    FILL_NEXT_OPEN,
    SIZING_KELLY,
    SIZING_RISK,
)
from quantshift.engine.metrics import (
    ST_BARS,
    ST_BARS_IN_MARKET,
    ST_CLOSED,
    ST_DOWNSIDE_SQ,
    ST_LAST_EQUITY,
    ST_LOSS_RETURN_SUM,
    ST_MAX_DRAWDOWN,
    ST_RETURN_SQ_SUM,
    ST_RETURN_SUM,
    ST_WIN_RETURN_SUM,
    ST_WINS,
    equity_step_nb,
    record_trade_nb,
)

# Trade record columns (float64 matrix, one row per trade).
TR_ENTRY_BAR = 0
TR_EXIT_BAR = 1
TR_DIRECTION = 2
TR_UNITS = 3
TR_ENTRY_PRICE = 4
TR_EXIT_PRICE = 5
TR_ENTRY_FEES = 6
TR_EXIT_FEES = 7
TR_PNL = 8
TR_RETURN_PCT = 9
TR_EXIT_REASON = 10
TR_LEN = 11

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
    if cfg[CFG_SIZING] == SIZING_KELLY and stats[ST_CLOSED] >= cfg[CFG_KELLY_MIN_TRADES]:
        wins = stats[ST_WINS]
        losses = stats[ST_CLOSED] - wins
        if wins == 0.0:
            return 0.0
        if losses == 0.0:
            return cfg[CFG_MAX_LEVERAGE]
        win_rate = wins / stats[ST_CLOSED]
        payoff = (stats[ST_WIN_RETURN_SUM] / wins) / (-stats[ST_LOSS_RETURN_SUM] / losses)
        kelly = win_rate - (1.0 - win_rate) / payoff
        return min(max(cfg[CFG_KELLY_FRACTION] * kelly, 0.0), cfg[CFG_MAX_LEVERAGE])
    return cfg[CFG_SIZE]


# Position state of one symbol (float64 vector, so helpers can update it in place).
S_CASH = 0
S_POSITION = 1
S_ENTRY_BAR = 2
S_ENTRY_PRICE = 3
S_ENTRY_FEES = 4
S_STOP = 5
S_TAKE_PROFIT = 6
S_TRAIL = 7
S_BEST = 8
S_HAS_LEVELS = 9
S_LEN = 10


@njit
def simulate_nb(
    open_,
    high,
    low,
    close,
    entries,
    exits,
    stop_dist,
    tp_dist,
    trail_dist,
    cfg,
    equity_out,
    position_out,
    trades_out,
    stats_out,
):
    """Simulate one symbol bar by bar; return the number of trade rows written.

    Rules (DESIGN.md layer 4): a signal on bar t fills at bar t+1's open ("next-open") or at bar
    t's close ("close"). A position's stop-loss, take-profit and trailing stop are checked from
    the bar it was entered on (after the entry fill): first a gap through a level fills at the
    open, then the bar's low/high are compared with the levels and a bar touching both the stop
    and the target fills at the stop (the worse one). The trailing level follows the best price
    seen since entry (the entry fill, then each bar's open and, after the check, its high/low).
    Levels are distances from the entry fill price read at the signal bar. Fees and slippage
    apply to every fill. Statistics for the metrics accumulate in ``stats_out`` as the bars
    pass. ``trades_out`` may have zero rows (sweeps): then nothing else is recorded and
    ``equity_out``/``position_out`` may be empty. An open position at the end is reported as a
    trade with reason "open", marked at the last close, and is not in the closed-trade stats.
    """
    n = close.shape[0]
    direction = int(cfg[CFG_DIRECTION])
    next_open = cfg[CFG_FILL] == FILL_NEXT_OPEN
    record = trades_out.shape[0] > 0
    stats_out[:] = 0.0
    state = np.zeros(S_LEN)
    state[S_CASH] = cfg[CFG_CASH]
    pending = ACT_NONE
    pending_bar = -1
    n_trades = 0
    last_equity = peak = cfg[CFG_CASH]
    return_sum = return_sq_sum = downside_sq = max_drawdown = 0.0
    bars_in_market = 0

    for t in range(n):
        # 1. Orders decided on the previous close fill at this open.
        if pending != ACT_NONE:
            n_trades = _execute_nb(
                state,
                pending,
                open_[t],
                t,
                pending_bar,
                cfg,
                stop_dist,
                tp_dist,
                trail_dist,
                trades_out,
                n_trades,
                stats_out,
            )
            pending = ACT_NONE
        # 2. Protective levels, checked on the bar's range.
        if state[S_POSITION] != 0.0 and state[S_HAS_LEVELS] != 0.0:
            n_trades = check_levels_nb(
                state, open_[t], high[t], low[t], t, cfg, trades_out, n_trades, stats_out
            )
        # 3. This bar's signals, decided on its close.
        act = decide_nb(entries[t], exits[t], state[S_POSITION], direction)
        if act != ACT_NONE:
            if not next_open:
                n_trades = _execute_nb(
                    state,
                    act,
                    close[t],
                    t,
                    t,
                    cfg,
                    stop_dist,
                    tp_dist,
                    trail_dist,
                    trades_out,
                    n_trades,
                    stats_out,
                )
            elif t + 1 < n:
                pending = act
                pending_bar = t
        position = state[S_POSITION]
        equity = state[S_CASH] + position * close[t]
        return_sum, return_sq_sum, downside_sq, peak, max_drawdown = equity_step_nb(
            equity, last_equity, return_sum, return_sq_sum, downside_sq, peak, max_drawdown
        )
        last_equity = equity
        if position != 0.0:
            bars_in_market += 1
        if record:
            equity_out[t] = equity
            position_out[t] = position

    stats_out[ST_BARS] = n
    stats_out[ST_BARS_IN_MARKET] = bars_in_market
    stats_out[ST_LAST_EQUITY] = last_equity
    stats_out[ST_MAX_DRAWDOWN] = max_drawdown
    stats_out[ST_RETURN_SUM] = return_sum
    stats_out[ST_RETURN_SQ_SUM] = return_sq_sum
    stats_out[ST_DOWNSIDE_SQ] = downside_sq
    position = state[S_POSITION]
    if position != 0.0 and record:
        write_open_trade_nb(trades_out[n_trades], state, n - 1, close[n - 1])
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
    state,
    act,
    price,
    bar,
    signal_bar,
    cfg,
    stop_dist,
    tp_dist,
    trail_dist,
    trades_out,
    n_trades,
    stats,
):
    """Fill a signal action at ``price``: close (or reverse) the position, then maybe enter."""
    reason = closing_reason_nb(act, state[S_POSITION])
    if reason >= 0:
        n_trades = exit_nb(state, price, bar, reason, cfg, trades_out, n_trades, stats)
    if act == ACT_EXIT or state[S_POSITION] != 0.0:
        return n_trades
    enter_nb(
        state,
        1.0 if act == ACT_LONG else -1.0,
        price,
        bar,
        state[S_CASH],
        math.inf,
        cfg,
        stats,
        stop_dist[signal_bar],
        tp_dist[signal_bar],
        trail_dist[signal_bar],
    )
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

    Cash comes out of ``state[S_CASH]``; the levels are distances from the entry fill price.
    The portfolio layer passes a sleeve's equity and its risk limits' cap; a single-symbol
    simulation passes its cash and no cap.
    """
    exec_price = price * (1.0 + cfg[CFG_SLIPPAGE_RATE] * side)
    units = min(_entry_units_nb(cfg, stats, equity, exec_price, stop_distance), max_units)
    if units > 0.0:
        fees = units * exec_price * cfg[CFG_FEE_RATE]
        open_position_nb(
            state, side, exec_price, units, fees, bar, cfg, stop_distance, tp_distance,
            trail_distance,
        )  # fmt: skip
    return units


@njit
def open_position_nb(
    state, side, exec_price, units, fees, bar, cfg, stop_distance, tp_distance, trail_distance
):
    """Open ``units`` on the flat ``state`` at ``exec_price`` (after slippage) paying ``fees``:
    what the fill model decided, or what a broker reported it executed."""
    state[S_CASH] -= side * units * exec_price + fees
    state[S_POSITION] = side * units
    state[S_ENTRY_BAR] = bar
    state[S_ENTRY_PRICE] = exec_price
    state[S_ENTRY_FEES] = fees
    _set_levels_nb(
        state,
        cfg[CFG_USE_STOPS] != 0.0,
        side,
        exec_price,
        stop_distance,
        tp_distance,
        trail_distance,
    )


@njit
def check_levels_nb(state, open_, high, low, bar, cfg, trades_out, n_trades, stats):
    """Exit at a stop, trailing stop or take-profit touched on this bar; update the trail."""
    side = 1.0 if state[S_POSITION] > 0.0 else -1.0
    tp_level = state[S_TAKE_PROFIT]
    stop_now = stop_level_nb(state, side)
    if not math.isnan(stop_now) and side * (open_ - stop_now) <= 0.0:
        return exit_nb(
            state, open_, bar, _stop_reason_nb(state, side), cfg, trades_out, n_trades, stats
        )
    if not math.isnan(tp_level) and side * (open_ - tp_level) >= 0.0:
        return exit_nb(state, open_, bar, REASON_TAKE_PROFIT, cfg, trades_out, n_trades, stats)
    trailing = not math.isnan(state[S_TRAIL])
    if trailing and side * (open_ - state[S_BEST]) > 0.0:
        state[S_BEST] = open_
    stop_now = stop_level_nb(state, side)
    adverse = low if side > 0.0 else high
    favourable = high if side > 0.0 else low
    if not math.isnan(stop_now) and side * (adverse - stop_now) <= 0.0:
        return exit_nb(
            state, stop_now, bar, _stop_reason_nb(state, side), cfg, trades_out, n_trades, stats
        )
    if not math.isnan(tp_level) and side * (favourable - tp_level) >= 0.0:
        return exit_nb(state, tp_level, bar, REASON_TAKE_PROFIT, cfg, trades_out, n_trades, stats)
    if trailing and side * (favourable - state[S_BEST]) > 0.0:
        state[S_BEST] = favourable
    return n_trades


@njit
def exit_nb(state, price, bar, reason, cfg, trades_out, n_trades, stats):
    """Close the whole position at ``price`` (before slippage); book the trade."""
    position = state[S_POSITION]
    side = 1.0 if position > 0.0 else -1.0
    exec_price = price * (1.0 - cfg[CFG_SLIPPAGE_RATE] * side)
    fees = abs(position) * exec_price * cfg[CFG_FEE_RATE]
    return close_position_nb(state, exec_price, fees, bar, reason, trades_out, n_trades, stats)


@njit
def close_position_nb(state, exec_price, fees, bar, reason, trades_out, n_trades, stats):
    """Close the whole position at ``exec_price`` (after slippage) paying ``fees``; book the
    trade: what the fill model decided, or what a broker reported it executed."""
    position = state[S_POSITION]
    state[S_CASH] += position * exec_price - fees
    pnl, ret = _pnl_nb(state, exec_price, fees)
    record_trade_nb(stats, pnl, ret)
    if trades_out.shape[0] > 0:
        _write_trade_nb(trades_out[n_trades], state, bar, exec_price, fees, pnl, ret, reason)
        n_trades += 1
    state[S_POSITION] = 0.0
    return n_trades


@njit
def _pnl_nb(state, exit_price, exit_fees):
    """Net P&L (currency) and return (fraction of entry notional plus entry fees) of closing
    the open position at ``exit_price`` (after slippage) with ``exit_fees``."""
    position = state[S_POSITION]
    units = abs(position)
    side = 1.0 if position > 0.0 else -1.0
    entry_price = state[S_ENTRY_PRICE]
    pnl = side * (exit_price - entry_price) * units - state[S_ENTRY_FEES] - exit_fees
    return pnl, pnl / (entry_price * units + state[S_ENTRY_FEES])


@njit
def _write_trade_nb(row, state, exit_bar, exit_price, exit_fees, pnl, ret, reason):
    position = state[S_POSITION]
    units = abs(position)
    row[TR_ENTRY_BAR] = state[S_ENTRY_BAR]
    row[TR_EXIT_BAR] = exit_bar
    row[TR_DIRECTION] = 1.0 if position > 0.0 else -1.0
    row[TR_UNITS] = units
    row[TR_ENTRY_PRICE] = state[S_ENTRY_PRICE]
    row[TR_EXIT_PRICE] = exit_price
    row[TR_ENTRY_FEES] = state[S_ENTRY_FEES]
    row[TR_EXIT_FEES] = exit_fees
    row[TR_PNL] = pnl
    row[TR_RETURN_PCT] = 100.0 * ret
    row[TR_EXIT_REASON] = reason


@njit
def _entry_units_nb(cfg, stats, equity, exec_price, stop_distance):
    """Units to buy or sell short at ``exec_price`` with ``equity`` (the position is flat)."""
    if equity <= 0.0 or not exec_price > 0.0:
        return 0.0
    cost_per_unit = exec_price * (1.0 + cfg[CFG_FEE_RATE])
    max_units = cfg[CFG_MAX_LEVERAGE] * equity / cost_per_unit
    if cfg[CFG_SIZING] == SIZING_RISK:
        if not stop_distance > 0.0:
            return 0.0
        units = min(cfg[CFG_RISK] * equity / stop_distance, max_units)
    else:
        units = min(entry_fraction_nb(cfg, stats) * equity / cost_per_unit, max_units)
    if cfg[CFG_WHOLE_UNITS] != 0.0:
        # The epsilon keeps 10.0 from flooring to 9 when division leaves 9.999999999999998.
        units = math.floor(units + 1e-9)
    return units


@njit
def _set_levels_nb(state, use_stops, side, entry_price, stop_distance, tp_distance, trail_distance):
    """Set the protective levels of a new position from the signal bar's distances."""
    nan = math.nan
    has_stop = use_stops and stop_distance > 0.0
    has_target = use_stops and tp_distance > 0.0
    has_trail = use_stops and trail_distance > 0.0
    state[S_STOP] = entry_price - side * stop_distance if has_stop else nan
    state[S_TAKE_PROFIT] = entry_price + side * tp_distance if has_target else nan
    state[S_TRAIL] = trail_distance if has_trail else nan
    state[S_BEST] = entry_price
    state[S_HAS_LEVELS] = 1.0 if has_stop or has_target or has_trail else 0.0


@njit
def stop_level_nb(state, side):
    """Return the binding protective level: the tighter of the fixed and the trailing stop."""
    stop_level = state[S_STOP]
    if math.isnan(state[S_TRAIL]):
        return stop_level
    trailing = state[S_BEST] - side * state[S_TRAIL]
    if math.isnan(stop_level):
        return trailing
    return max(stop_level, trailing) if side > 0.0 else min(stop_level, trailing)


@njit
def _stop_reason_nb(state, side):
    if math.isnan(state[S_TRAIL]):
        return REASON_STOP
    trailing = state[S_BEST] - side * state[S_TRAIL]
    if math.isnan(state[S_STOP]) or side * (trailing - state[S_STOP]) > 0.0:
        return REASON_TRAILING
    return REASON_STOP
