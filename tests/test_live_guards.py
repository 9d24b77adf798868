"""Order guards: every guard trips where it should, and a runaway strategy ends in one order."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest

from live.guards import GuardLimits, OrderGuards
from quantshift.errors import ConfigError
from quantshift.tables import Table

DAY_NS = 86_400_000_000_000
NOW_NS = 1_700_000_000_000_000_000
LAST = {"SPY": 100.0, "QQQ": 50.0}


@dataclass(frozen=True)
class Order:
    sleeve: str = "ma"
    symbol: str = "SPY"
    side: str = "buy"
    units: float = 10.0
    price: float = 100.0
    ts_ns: int = NOW_NS - DAY_NS // 2
    is_entry: bool = True


def check(orders, limits=None, positions=None, guards=None):
    guards = guards or OrderGuards(limits or GuardLimits())
    return guards.check(
        orders, last_close=LAST, positions=positions or {}, now_ns=NOW_NS, bar_interval_ns=DAY_NS
    )


def test_a_strategy_emitting_the_same_order_500_times_sends_one_and_halts():
    verdict = check([Order()] * 500)
    assert len(verdict.accepted) == 1 and len(verdict.blocked) == 499
    assert verdict.halt_reason.startswith("guard orders_per_decision: ma sent 2 orders for SPY")


def test_clean_orders_pass():
    verdict = check([Order(), Order(symbol="QQQ", price=50.5, side="sell", is_entry=False)])
    assert len(verdict.accepted) == 2 and verdict.halt_reason is None


@pytest.mark.parametrize(
    ("order", "limits", "positions", "guard"),
    [
        (Order(price=math.nan), None, None, "bad_price"),
        (Order(price=0.0), None, None, "bad_price"),
        (Order(price=-1.0), None, None, "bad_price"),
        (Order(units=-3.0), None, None, "bad_order"),
        (Order(side="hold"), None, None, "bad_order"),
        (Order(symbol="XYZ"), None, None, "bad_price"),  # no last close to check against
        (Order(units=20.0), GuardLimits(max_order_notional=1_999.0), None, "order_notional"),
        (Order(units=5.0), GuardLimits(max_position_units=12.0), {"SPY": 8.0}, "position"),
        (Order(price=106.0), None, None, "price_collar"),
        (Order(ts_ns=NOW_NS - 3 * DAY_NS), None, None, "stale_data"),
    ],
)
def test_each_guard_trips(order, limits, positions, guard):
    verdict = check([order], limits, positions)
    assert not verdict.accepted
    assert verdict.blocked[0].guard == guard
    assert verdict.halt_reason.startswith(f"guard {guard}:")


def test_exits_on_stale_bars_and_reductions_below_the_position_limit_pass():
    stale_exit = Order(ts_ns=NOW_NS - 3 * DAY_NS, is_entry=False, side="sell")
    reduce = Order(side="sell", units=5.0, is_entry=False)
    limits = GuardLimits(max_position_units=12.0)
    verdict = check([stale_exit, replace(reduce, symbol="QQQ", price=50.0)], limits, {"SPY": 20})
    assert len(verdict.accepted) == 2


def test_orders_per_minute_counts_across_cycles_and_forgets_after_a_minute():
    guards = OrderGuards(GuardLimits(max_orders_per_minute=3))
    for k in range(3):
        assert check([Order(ts_ns=NOW_NS - k)], guards=guards).accepted
    verdict = check([Order(ts_ns=NOW_NS - 10)], guards=guards)
    assert verdict.blocked[0].guard == "orders_per_minute"
    later = guards.check(
        [Order(ts_ns=NOW_NS + 61_000_000_000)],
        last_close=LAST,
        positions={},
        now_ns=NOW_NS + 61_000_000_000,
        bar_interval_ns=DAY_NS,
    )
    assert later.accepted


def test_a_tripped_guard_blocks_the_rest_of_the_cycle():
    verdict = check([Order(price=200.0), Order(symbol="QQQ", price=50.0)])
    assert not verdict.accepted and len(verdict.blocked) == 2
    assert verdict.blocked[1].detail == "cycle halted by an earlier guard"


def test_guards_switched_off():
    limits = GuardLimits.from_table(
        Table({"price_collar_pct": "off", "stale_after_intervals": False}, "live.toml", "guards")
    )
    verdict = check([Order(price=130.0, ts_ns=NOW_NS - 9 * DAY_NS)], limits)
    assert verdict.accepted


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"max_orders_per_second": 3}, r"\[guards\] max_orders_per_second: unknown key; allowed"),
        ({"price_collar_pct": -1}, r"\[guards\] guard limit price_collar_pct must be a positive"),
        ({"max_orders_per_minute": True}, r"max_orders_per_minute: must be an integer, got True"),
        ({"max_orders_per_decision": 1.5}, r"max_orders_per_decision: must be an integer"),
        ({"max_order_notional": "lots"}, r"max_order_notional: must be a number, got 'lots'"),
    ],
)
def test_bad_limits_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        GuardLimits.from_table(Table(raw, "live.toml", "guards"))


def test_regression_a_zero_limit_is_refused_not_switched_off():
    with pytest.raises(ConfigError, match="max_orders_per_minute must be a positive"):
        GuardLimits.from_table(Table({"max_orders_per_minute": 0}, "live.toml", "guards"))
