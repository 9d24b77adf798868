"""The fill model's rules (DESIGN.md layer 4) on hand-built bars, each fill worked out by hand.

A scripted strategy turns volume into signals, so every scenario is a table of OHLCV rows:
volume 1 = entry, 2 = exit, 3 = entry and exit together, anything else = no signal. Its
parameters set the stop-loss, take-profit and trailing distances (0 = none).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from numba import njit

from quantshift.data.bars import Bars
from quantshift.engine import backtest
from quantshift.strategies import Param, Strategy

NAN = math.nan
REL = 1e-12


@njit
def _scripted_signal_nb(
    open_, high, low, close, volume, params, entries, exits, stop_dist, take_profit_dist, trail_dist
):
    for t in range(close.shape[0]):
        entries[t] = volume[t] == 1.0 or volume[t] == 3.0
        exits[t] = volume[t] == 2.0 or volume[t] == 3.0
        if params[0] > 0.0:
            stop_dist[t] = params[0]
        if params[1] > 0.0:
            take_profit_dist[t] = params[1]
        if params[2] > 0.0:
            trail_dist[t] = params[2]


SCRIPTED = Strategy(
    name="test_scripted",
    description="Signals read from volume: 1 entry, 2 exit, 3 both.",
    params=(
        Param(name="stop", default=0.0, low=0.0, high=1e6),
        Param(name="take_profit", default=0.0, low=0.0, high=1e6),
        Param(name="trail", default=0.0, low=0.0, high=1e6),
    ),
    signal_nb=_scripted_signal_nb,
    warmup=lambda values: 0,
    uses_stops=True,
)


def make_bars(rows) -> Bars:
    """Bars of one symbol from (open, high, low, close, volume) rows on consecutive days."""
    a = np.array(rows, dtype=np.float64)
    index = pd.date_range("2024-01-01", periods=a.shape[0], freq="D", tz="UTC")
    return Bars(
        ts_ns=index.as_unit("ns").asi8,
        symbols=("TEST",),
        open=a[:, 0],
        high=a[:, 1],
        low=a[:, 2],
        close=a[:, 3],
        volume=a[:, 4],
        source="hand-built",
    )


def run(rows, params=None, **settings):
    return backtest(SCRIPTED, make_bars(rows), params, **settings)


def day(i: int) -> pd.Timestamp:
    return pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=i)


def check_trade(result, k: int, **expected) -> None:
    """Assert fields of trade ``k``: times given as bar numbers, numbers to REL."""
    row = result.trades.iloc[k]
    for key, want in expected.items():
        got = row[key]
        if key in ("entry_time", "exit_time"):
            assert got == day(want), f"trade {k} {key}: {got} != bar {want}"
        elif isinstance(want, str) or key == "bars_held":
            assert got == want, f"trade {k} {key}: {got!r} != {want!r}"
        else:
            assert got == pytest.approx(want, rel=REL, abs=1e-9), f"trade {k} {key}"


FLAT = (100.0, 101.0, 99.0, 100.0, 0.0)
# Entry signal at bar 1, fill bar 2; exit signal at bar 3, fill bar 4.
ROUND_TRIP = [
    FLAT,
    (100.0, 102.0, 99.0, 101.0, 1.0),
    (102.0, 104.0, 101.0, 103.0, 0.0),
    (103.0, 105.0, 102.0, 104.0, 2.0),
    (106.0, 107.0, 105.0, 106.0, 0.0),
]


# ----------------------------------------------------------------- fill timing


def test_next_open_fills_at_the_following_open():
    r = run(ROUND_TRIP)
    # Signal on bar 1's close -> buy at bar 2's open (102) with all 100000: 100000/102 units.
    units = 100_000 / 102
    check_trade(
        r,
        0,
        entry_time=2,
        exit_time=4,
        entry_price=102.0,
        exit_price=106.0,
        units=units,
        pnl=units * 4.0,
        exit_reason="signal",
        bars_held=2,
    )
    # Equity: cash until the fill, then units marked at each close.
    expected = [100_000, 100_000, units * 103, units * 104, units * 106]
    np.testing.assert_allclose(r.equity["TEST"].to_numpy(), expected, rtol=REL)
    assert r.metrics["final_equity"] == pytest.approx(100_000 * 106 / 102, rel=REL)
    np.testing.assert_allclose(r.positions["TEST"].to_numpy(), [0, 0, units, units, 0], rtol=REL)


def test_close_fill_trades_at_the_signal_bars_close():
    r = run(ROUND_TRIP, fill="close")
    units = 100_000 / 101  # bought at bar 1's close, sold at bar 3's close
    check_trade(r, 0, entry_time=1, exit_time=3, entry_price=101.0, exit_price=104.0, units=units)
    assert r.metrics["final_equity"] == pytest.approx(100_000 * 104 / 101, rel=REL)


def test_fees_and_slippage_arithmetic():
    r = run(ROUND_TRIP, fees_bps=10, slippage_bps=5)
    fee, slip = 0.001, 0.0005
    buy = 102 * (1 + slip)  # 102.051: a buy fills 5 bps above the price, a sell 5 bps below
    units = 100_000 / (buy * (1 + fee))  # all the cash, fees included
    entry_fees = units * buy * fee
    sell = 106 * (1 - slip)  # 105.947
    exit_fees = units * sell * fee
    pnl = units * (sell - buy) - entry_fees - exit_fees
    check_trade(
        r,
        0,
        entry_price=buy,
        exit_price=sell,
        units=units,
        entry_fees=entry_fees,
        exit_fees=exit_fees,
        pnl=pnl,
        # Return on the cash committed: notional plus entry fees (= the 100000 here).
        return_pct=100 * pnl / (units * buy + entry_fees),
    )
    assert units * buy + entry_fees == pytest.approx(100_000, rel=REL)
    assert r.metrics["final_equity"] == pytest.approx(100_000 + pnl, rel=REL)
    # Marked at the close while held: nothing left in cash.
    assert r.equity["TEST"].iloc[2] == pytest.approx(units * 103, rel=REL)


# ----------------------------------------------------------------- protective levels

ENTER_AT_100 = [FLAT, (100.0, 101.0, 99.0, 100.0, 1.0)]  # fill at bar 2's open (100), 1000 units


def test_stop_hit_intrabar_fills_at_the_stop():
    rows = [*ENTER_AT_100, FLAT, (99.0, 100.0, 94.0, 96.0, 0.0), FLAT]
    r = run(rows, {"stop": 5.0})
    # Stop at 100 - 5 = 95; bar 3 opens above it (99) and trades down to 94 -> out at 95.
    check_trade(
        r, 0, exit_time=3, exit_price=95.0, units=1000.0, pnl=-5000.0, exit_reason="stop_loss"
    )
    assert len(r.trades) == 1


def test_stop_is_live_on_the_entry_bar():
    rows = [*ENTER_AT_100, (100.0, 101.0, 94.0, 97.0, 0.0), FLAT]
    r = run(rows, {"stop": 5.0})
    # Filled at bar 2's open (100); the same bar's low (94) reaches the stop (95).
    check_trade(r, 0, entry_time=2, exit_time=2, exit_price=95.0, bars_held=0)


def test_gap_through_stop_fills_at_the_open():
    rows = [*ENTER_AT_100, FLAT, (93.0, 94.0, 90.0, 92.0, 0.0), FLAT]
    r = run(rows, {"stop": 5.0})
    # Bar 3 opens at 93, below the 95 stop: nobody could sell at 95, so out at the open.
    check_trade(r, 0, exit_time=3, exit_price=93.0, pnl=-7000.0, exit_reason="stop_loss")


def test_bar_touching_stop_and_target_fills_the_stop():
    rows = [*ENTER_AT_100, FLAT, (100.0, 106.0, 94.0, 100.0, 0.0), FLAT]
    r = run(rows, {"stop": 5.0, "take_profit": 5.0})
    # Levels 95 and 105 both inside bar 3's range; the order within the bar is unknown, so
    # the engine assumes the worse outcome.
    check_trade(r, 0, exit_time=3, exit_price=95.0, exit_reason="stop_loss")


def test_take_profit_intrabar_fills_at_the_level():
    rows = [*ENTER_AT_100, FLAT, (101.0, 106.0, 100.0, 104.0, 0.0), FLAT]
    r = run(rows, {"stop": 5.0, "take_profit": 5.0})
    check_trade(r, 0, exit_time=3, exit_price=105.0, pnl=5000.0, exit_reason="take_profit")


def test_take_profit_gap_fills_at_the_open():
    rows = [*ENTER_AT_100, FLAT, (108.0, 110.0, 107.0, 109.0, 0.0), FLAT]
    r = run(rows, {"stop": 5.0, "take_profit": 5.0})
    # Opens at 108 above the 105 target: the resting sell fills at the (better) open.
    check_trade(r, 0, exit_time=3, exit_price=108.0, pnl=8000.0, exit_reason="take_profit")


def test_open_beyond_the_target_fills_the_target_even_if_the_stop_trades_later():
    rows = [*ENTER_AT_100, FLAT, (106.0, 107.0, 94.0, 95.0, 0.0), FLAT]
    r = run(rows, {"stop": 5.0, "take_profit": 5.0})
    # The open (106) is the bar's first price and already beyond the 105 target: the resting
    # sell fills there, before the bar falls through the stop (backtrader and vectorbt differ).
    check_trade(r, 0, exit_time=3, exit_price=106.0, exit_reason="take_profit")


def test_pending_exit_fills_at_the_open_before_levels_are_checked():
    rows = [*ENTER_AT_100, (100.0, 101.0, 99.0, 100.0, 2.0), (99.0, 100.0, 90.0, 91.0, 0.0), FLAT]
    r = run(rows, {"stop": 5.0})
    # Exit signal at bar 2 -> sold at bar 3's open (99); the position is gone before bar 3
    # reaches the 95 stop (vectorbt, checking stops first, would sell at 95).
    check_trade(r, 0, exit_time=3, exit_price=99.0, exit_reason="signal")


def test_levels_are_distances_from_the_fill_price_after_slippage():
    rows = [*ENTER_AT_100, FLAT, (99.0, 100.0, 90.0, 96.0, 0.0), FLAT]
    r = run(rows, {"stop": 5.0}, slippage_bps=100)
    buy = 100 * 1.01  # 101
    stop = buy - 5.0  # 96, not 95
    check_trade(r, 0, entry_price=buy, exit_price=stop * 0.99, exit_reason="stop_loss")


def test_trailing_stop_follows_highs_and_opens():
    rows = [
        *ENTER_AT_100,
        (100.0, 104.0, 99.0, 103.0, 0.0),  # bar 2: fill at 100; trail 95 holds; best -> 104
        (103.0, 108.0, 101.0, 107.0, 0.0),  # bar 3: trail 99 holds (low 101); best -> 108
        (110.0, 111.0, 104.0, 105.0, 0.0),  # bar 4: open 110 lifts best first -> trail 105 hit
        FLAT,
    ]
    r = run(rows, {"trail": 5.0})
    check_trade(
        r, 0, entry_time=2, exit_time=4, exit_price=105.0, pnl=5000.0, exit_reason="trailing_stop"
    )


def test_fixed_stop_binds_while_tighter_than_the_trail():
    rows = [*ENTER_AT_100, (100.0, 101.0, 97.5, 100.0, 0.0), FLAT]
    # Fixed stop 98 (2 below the fill), trail 95 (5 below the best so far, the fill): the
    # tighter fixed stop binds and names the exit.
    r = run(rows, {"stop": 2.0, "trail": 5.0})
    check_trade(r, 0, exit_time=2, exit_price=98.0, exit_reason="stop_loss")


# ----------------------------------------------------------------- direction


def test_short_position_profits_from_a_fall_and_stops_above():
    rows = [
        *ENTER_AT_100,
        (100.0, 101.0, 95.0, 96.0, 2.0),  # bar 2: short 1000 at 100; exit signal
        (90.0, 91.0, 89.0, 90.0, 0.0),  # bar 3: cover at the open (90)
        (90.0, 91.0, 89.0, 90.0, 1.0),  # bar 4: short again at bar 5's open
        (90.0, 96.0, 89.0, 95.0, 0.0),  # bar 5: stop 95 above the entry, high 96 -> out at 95
        FLAT,
    ]
    r = run(rows, {"stop": 5.0}, direction="short")
    check_trade(
        r,
        0,
        direction="short",
        entry_price=100.0,
        exit_price=90.0,
        units=1000.0,
        pnl=10_000.0,
        exit_reason="signal",
    )
    # Equity 110000 -> 110000/90 units short at 90, stopped at 95.
    units = 110_000 / 90
    check_trade(
        r,
        1,
        direction="short",
        units=units,
        exit_price=95.0,
        pnl=-5 * units,
        exit_reason="stop_loss",
    )
    assert r.metrics["final_equity"] == pytest.approx(110_000 - 5 * units, rel=REL)


def test_both_directions_reverse_on_opposite_signals():
    rows = [
        *ENTER_AT_100,  # long 1000 at bar 2's open (100)
        (100.0, 101.0, 99.0, 100.0, 0.0),
        (100.0, 111.0, 99.0, 110.0, 2.0),  # bar 3: exit signal = go short
        (110.0, 111.0, 109.0, 110.0, 0.0),  # bar 4: sell 1000 at 110, short 110000/110 = 1000
        (105.0, 106.0, 99.0, 100.0, 1.0),  # bar 5: entry signal = go long
        (100.0, 101.0, 99.0, 100.0, 0.0),  # bar 6: cover at 100 (+10000), long 120000/100
        (100.0, 103.0, 99.0, 102.0, 0.0),  # bar 7: end, marked at 102
    ]
    r = run(rows, direction="both")
    check_trade(r, 0, direction="long", exit_time=4, exit_price=110.0, pnl=10_000.0)
    check_trade(r, 0, exit_reason="reverse")
    check_trade(r, 1, direction="short", entry_time=4, units=1000.0, exit_time=6, pnl=10_000.0)
    check_trade(r, 1, exit_reason="reverse")
    check_trade(r, 2, direction="long", entry_time=6, units=1200.0, exit_reason="open")
    check_trade(r, 2, exit_price=102.0, exit_fees=0.0, pnl=2400.0)
    assert r.metrics["trades"] == 2  # the open trade is not a closed trade
    assert r.metrics["final_equity"] == pytest.approx(122_400, rel=REL)


# ----------------------------------------------------------------- sizing


def test_whole_units_round_down_and_leave_cash():
    rows = [FLAT, (30.0, 31.0, 29.0, 30.0, 1.0), (30.0, 31.0, 29.0, 31.0, 0.0)]
    r = run(rows, cash=1000.0, whole_units=True)
    # 1000 / 30 = 33.3 -> 33 shares; 10 stays in cash; marked at 31.
    check_trade(r, 0, units=33.0, exit_reason="open")
    assert r.metrics["final_equity"] == pytest.approx(10 + 33 * 31, rel=REL)


def test_whole_units_survive_float_error_at_exact_multiples():
    rows = [FLAT, (0.1, 0.2, 0.1, 0.1, 1.0), (0.1, 0.2, 0.1, 0.1, 0.0), FLAT]
    # 0.3 / 0.1 is 3 in exact arithmetic but 2.9999999999999996 in floats: still 3 shares.
    r = run(rows, cash=0.3, whole_units=True)
    check_trade(r, 0, units=3.0)


def test_risk_sizing_loses_the_risk_fraction_at_the_stop():
    rows = [*ENTER_AT_100, FLAT, (99.0, 100.0, 94.0, 96.0, 0.0), FLAT]
    r = run(rows, {"stop": 5.0}, sizing="risk", risk_per_trade=0.01)
    # units = 1% of 100000 / 5 = 200; stopped 5 lower: loses 1000 = 1% of equity.
    check_trade(r, 0, units=200.0, pnl=-1000.0, exit_reason="stop_loss")


def test_risk_sizing_is_capped_by_leverage():
    rows = [*ENTER_AT_100, FLAT]
    r = run(rows, {"stop": 0.5}, sizing="risk", risk_per_trade=0.01)
    # 1000 / 0.5 = 2000 units would need 200000; max_leverage 1 caps at 100000/100 = 1000.
    check_trade(r, 0, units=1000.0)


def test_kelly_sizing_starts_after_min_trades():
    rows = [
        FLAT,
        (100.0, 101.0, 99.0, 100.0, 1.0),
        (100.0, 101.0, 99.0, 100.0, 0.0),  # bar 2: trade 1 in at 100
        (100.0, 111.0, 99.0, 110.0, 2.0),
        (110.0, 111.0, 109.0, 110.0, 1.0),  # bar 4: out at 110 (+10%); entry signal
        (100.0, 101.0, 99.0, 100.0, 2.0),  # bar 5: trade 2 in at 100; exit signal
        (95.0, 96.0, 94.0, 95.0, 1.0),  # bar 6: out at 95 (-5%); entry signal
        (100.0, 101.0, 99.0, 100.0, 0.0),  # bar 7: trade 3 in at 100, Kelly-sized
        FLAT,
    ]
    r = run(rows, sizing="kelly", size=0.5, kelly_fraction=0.5, kelly_min_trades=2)
    # Before 2 closed trades: size = half the equity.
    check_trade(r, 0, units=500.0, pnl=5000.0)  # equity 105000
    check_trade(r, 1, units=525.0, pnl=-2625.0)  # equity 102375
    # Kelly from the closed trades: p = 1/2, payoff = 10% / 5% = 2, f* = p - (1 - p) / 2 = 1/4;
    # half-Kelly commits 1/8 of the equity.
    check_trade(r, 2, entry_time=7, units=102_375 / 8 / 100, exit_reason="open")


# ----------------------------------------------------------------- signal edge cases


def test_order_pending_across_a_missing_bar_fills_at_the_next_real_open():
    rows = [
        FLAT,
        (100.0, 101.0, 99.0, 100.0, 1.0),  # entry signal
        (NAN, NAN, NAN, NAN, NAN),  # the symbol has no bar here
        (105.0, 106.0, 104.0, 105.0, 2.0),  # fill at 105, not at a NaN; exit signal
        (NAN, NAN, NAN, NAN, NAN),
        (NAN, NAN, NAN, NAN, NAN),
        (107.0, 108.0, 106.0, 107.0, 0.0),  # exit at 107
    ]
    r = run(rows, {"stop": 50.0})
    # bars_held counts the symbol's own bars (3 and 6 are adjacent once gaps are removed).
    check_trade(r, 0, entry_time=3, exit_time=6, entry_price=105.0, exit_price=107.0, bars_held=1)
    equity = r.equity["TEST"].to_numpy()
    assert np.isfinite(equity).all()
    # A missing bar carries the last equity forward.
    assert equity[4] == equity[5] == equity[3]


def test_entry_signal_on_the_last_bar_does_nothing():
    rows = [FLAT, FLAT, (100.0, 101.0, 99.0, 100.0, 1.0)]
    r = run(rows)
    assert r.trades.empty
    assert r.metrics["final_equity"] == 100_000


def test_close_fill_on_the_last_bar_is_an_open_trade():
    rows = [FLAT, FLAT, (100.0, 101.0, 99.0, 100.0, 1.0)]
    r = run(rows, fill="close")
    check_trade(r, 0, entry_time=2, exit_time=2, exit_reason="open", pnl=0.0)


def test_entries_while_in_position_are_ignored():
    rows = [
        *ENTER_AT_100,
        (100.0, 101.0, 99.0, 100.0, 1.0),  # in position: ignored
        (110.0, 111.0, 109.0, 110.0, 1.0),  # ignored (would have resized at a higher equity)
        (110.0, 111.0, 109.0, 110.0, 0.0),
    ]
    r = run(rows)
    assert len(r.trades) == 1
    check_trade(r, 0, entry_time=2, units=1000.0, exit_reason="open")


def test_conflicting_entry_and_exit_are_ignored():
    rows = [
        FLAT,
        (100.0, 101.0, 99.0, 100.0, 3.0),  # entry and exit together while flat: nothing
        FLAT,
        (100.0, 101.0, 99.0, 100.0, 1.0),  # real entry
        (100.0, 101.0, 99.0, 100.0, 3.0),  # entry and exit together while long: stay long
        (120.0, 121.0, 119.0, 120.0, 0.0),
    ]
    r = run(rows)
    assert len(r.trades) == 1
    check_trade(r, 0, entry_time=4, exit_reason="open", pnl=1000 * 20.0)
    r_both = run(rows, direction="both")
    assert len(r_both.trades) == 1


def test_exit_while_flat_is_ignored():
    rows = [FLAT, (100.0, 101.0, 99.0, 100.0, 2.0), FLAT, FLAT]
    assert run(rows).trades.empty


# ----------------------------------------------------------------- regressions


@njit
def _enter_on_volume_one_nb(
    open_, high, low, close, volume, params, entries, exits, stop_dist, take_profit_dist, trail_dist
):
    for t in range(close.shape[0]):
        entries[t] = volume[t] == 1.0


@njit
def _never_enter_nb(
    open_, high, low, close, volume, params, entries, exits, stop_dist, take_profit_dist, trail_dist
):
    pass


def test_regression_same_named_strategies_in_one_file_get_their_own_kernels():
    # Kernels were cached under the strategy's name and a digest of its file only, so the
    # second of two strategies named alike in one file loaded the first one's machine code
    # from numba's disk cache (and so did an edited notebook strategy in a new session).
    twins = [
        Strategy(
            name="test_twin",
            description="same name, different signals",
            params=SCRIPTED.params,
            signal_nb=signal,
            warmup=lambda values: 0,
        )
        for signal in (_enter_on_volume_one_nb, _never_enter_nb)
    ]
    bars = make_bars(ROUND_TRIP)
    assert len(backtest(twins[0], bars).trades) == 1
    assert backtest(twins[1], bars).trades.empty


def _signal_from_source(level: float):
    """A signal function calling a helper, both compiled from a string (no source file)."""
    namespace = {"njit": njit}
    source = (
        "@njit\n"
        "def helper(x):\n"
        f"    return x == {level!r}\n"
        "@njit\n"
        "def signal(open_, high, low, close, volume, params, entries, exits, stop, tp, trail):\n"
        "    for t in range(close.shape[0]):\n"
        "        entries[t] = helper(volume[t])\n"
    )
    exec(source, namespace)
    return namespace["signal"]


def test_regression_kernels_follow_an_edited_helper_without_a_source_file():
    # A notebook cell has no file, so the kernel digest must cover the code of the numba
    # functions a signal calls, not only the signal's own: here only the helper changes
    # (enter on volume 1, then on volume 7, which never occurs).
    bars = make_bars(ROUND_TRIP)
    results = [
        backtest(
            Strategy(
                name="test_cell",
                description="signal code without a file",
                params=SCRIPTED.params,
                signal_nb=_signal_from_source(level),
                warmup=lambda values: 0,
            ),
            bars,
        )
        for level in (1.0, 7.0)
    ]
    assert len(results[0].trades) == 1
    assert results[1].trades.empty
