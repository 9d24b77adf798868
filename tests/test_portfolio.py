"""The decision layer's rules on hand-built bars: conflicts, risk limits, halts, purity, state.

A scripted strategy reads its signals from volume bits (channel c: bit 2c entry, bit 2c+1
exit), so each scenario is a table of prices and codes whose outcome is worked out by hand.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from numba import njit
from probe import run_json

import quantshift as qs
from quantshift.data.bars import Bars
from quantshift.indicators import atr_nb
from quantshift.portfolio import (
    PortfolioConfig,
    PortfolioState,
    RiskLimits,
    Sleeve,
    check_stops,
    compute_signals,
    decide,
    fill_orders,
    flatten_orders,
    portfolio_backtest,
    warm_kernels,
)

NONE = RiskLimits.none()


@njit
def _channel_signal_nb(
    open_, high, low, close, volume, params, entries, exits, stop_dist, take_profit_dist, trail_dist
):
    shift = 2 * int(params[0])
    for t in range(close.shape[0]):
        code = int(volume[t])
        entries[t] = (code >> shift) & 1 == 1
        exits[t] = (code >> (shift + 1)) & 1 == 1
        if params[1] > 0.0:
            stop_dist[t] = params[1]


SCRIPTED = qs.Strategy(
    name="test_portfolio_channels",
    description="Signals from volume bits: channel c enters on bit 2c, exits on bit 2c+1.",
    params=(
        qs.Param(name="channel", default=0, low=0, high=3, integer=True),
        qs.Param(name="stop", default=0.0, low=0.0, high=1e6),
    ),
    signal_nb=_channel_signal_nb,
    warmup=lambda values: 0,
    uses_stops=True,
)
ENTER, EXIT = 1, 2  # channel 0's codes; channel 1's are 4 and 8


def make_bars(closes, codes, lows=None) -> Bars:
    """Daily bars: open = high = close unless ``lows`` says otherwise; volume = signal code."""
    close = np.asarray(closes, dtype=np.float64).reshape(len(closes), -1)
    code = np.asarray(codes, dtype=np.float64).reshape(close.shape)
    low = close if lows is None else np.asarray(lows, dtype=np.float64).reshape(close.shape)
    index = pd.date_range("2024-01-01", periods=close.shape[0], freq="D", tz="UTC")
    return Bars(
        ts_ns=index.as_unit("ns").asi8,
        symbols=tuple("ABCD"[: close.shape[1]]),
        open=close,
        high=close,
        low=low,
        close=close,
        volume=code,
        source="hand-built",
    )


def sleeve(name, symbols, allocation=1.0, channel=0, stop=0.0, **settings) -> Sleeve:
    return Sleeve(
        strategy=SCRIPTED,
        name=name,
        symbols=tuple(symbols),
        allocation=allocation,
        params={"channel": channel, "stop": stop},
        settings=settings,
    )


def config(*sleeves, limits=NONE, conflict="net", **sim) -> PortfolioConfig:
    return PortfolioConfig(
        sleeves=sleeves, sim=qs.SimConfig(fill="close", **sim), limits=limits, conflict=conflict
    )


# Conflicts ----------------------------------------------------------------------------------

# Day 1: the long sleeve enters. Day 3: the short sleeve wants in while the long one holds.
CONFLICT_BARS = make_bars([100, 100, 100, 100, 100], [0, ENTER, 0, 4, 0])


def _conflict_run(policy, short_first=False):
    long_ = sleeve("long", "A", 0.5, channel=0, direction="long")
    short = sleeve("short", "A", 0.5, channel=1, direction="short")
    order = (short, long_) if short_first else (long_, short)
    return portfolio_backtest(config(*order, conflict=policy), CONFLICT_BARS)


def _held(result, name):
    return [(p.sleeve, p.units) for p in result.final_state.positions() if p.sleeve == name]


def test_net_policy_keeps_both_sleeves_and_the_broker_holds_their_net():
    result = _conflict_run("net")
    assert _held(result, "long") == [("long", 500.0)]
    assert _held(result, "short") == [("short", -500.0)]
    assert result.positions["A"].tolist() == [0.0, 500.0, 500.0, 0.0, 0.0]
    assert result.vetoes.empty


def test_priority_policy_lets_the_first_sleeve_decide():
    kept = _conflict_run("priority")
    assert _held(kept, "long") == [("long", 500.0)] and _held(kept, "short") == []
    assert kept.vetoes[["sleeve", "side", "reason"]].values.tolist() == [
        ["short", "sell", "conflict"]
    ]
    # With the short sleeve first, its entry wins and the long position is closed.
    swapped = _conflict_run("priority", short_first=True)
    assert _held(swapped, "short") == [("short", -500.0)] and _held(swapped, "long") == []
    closed = swapped.trades[swapped.trades["exit_reason"] != "open"]
    assert closed[["sleeve", "exit_reason"]].values.tolist() == [["long", "conflict"]]
    assert swapped.vetoes.empty


def test_flat_policy_closes_every_side_while_sleeves_disagree():
    result = _conflict_run("flat")
    assert result.final_state.positions() == []
    assert result.trades[["sleeve", "exit_reason"]].values.tolist() == [["long", "conflict"]]
    assert result.vetoes[["sleeve", "reason"]].values.tolist() == [["short", "conflict"]]


def test_sleeves_that_agree_are_no_conflict():
    both_long = (sleeve("a", "A", 0.5), sleeve("b", "A", 0.5))
    for policy in ("priority", "flat"):
        result = portfolio_backtest(config(*both_long, conflict=policy), CONFLICT_BARS)
        assert [p.units for p in result.final_state.positions()] == [500.0, 500.0]


# Risk limits --------------------------------------------------------------------------------

FOUR_ENTRIES = make_bars([[100.0] * 4] * 3, [[0] * 4, [ENTER] * 4, [0] * 4])


def test_heat_cap_reduces_then_skips_entries():
    """Risk 4% of 100,000 against a stop 5 away is 800 units; heat 10% fits two whole
    entries, half of the third (reduced) and none of the fourth (skipped)."""
    heat = RiskLimits(**{**NONE.__dict__, "max_heat_pct": 10.0})
    run = config(
        sleeve("risk", "ABCD", stop=5.0, sizing="risk", risk_per_trade=0.04, max_leverage=10.0),
        limits=heat,
    )
    result = portfolio_backtest(run, FOUR_ENTRIES)
    orders = result.orders.set_index("symbol")
    assert orders["units"].tolist() == [800.0, 800.0, 400.0]
    assert orders["capped_by"].isna().tolist() == [True, True, False]
    assert orders.loc["C", "capped_by"] == "max_heat"
    assert orders["fill_units"].tolist() == [800.0, 800.0, 400.0]
    assert result.vetoes[["symbol", "reason"]].values.tolist() == [["D", "max_heat"]]
    open_risk = sum(abs(p.units) * (100.0 - p.stop_price) for p in result.final_state.positions())
    assert open_risk == pytest.approx(0.10 * result.equity.iloc[-1], rel=1e-12)


def test_position_and_gross_exposure_caps_bind():
    """Half of equity per entry is capped at 30% per symbol; gross 70% leaves 10% for C."""
    caps = RiskLimits(**{**NONE.__dict__, "max_position_pct": 30.0, "max_gross_exposure_pct": 70.0})
    result = portfolio_backtest(config(sleeve("half", "ABCD", size=0.5), limits=caps), FOUR_ENTRIES)
    orders = result.orders.set_index("symbol")
    np.testing.assert_allclose(orders["fill_units"], [300.0, 300.0, 100.0], rtol=1e-12)
    assert orders["capped_by"].tolist() == ["max_position", "max_position", "max_gross_exposure"]
    assert result.vetoes[["symbol", "reason"]].values.tolist() == [["D", "max_gross_exposure"]]
    notional = result.positions.iloc[-1] * 100.0
    assert notional.max() <= 0.30 * result.equity.iloc[-1] * (1 + 1e-12)
    assert notional.sum() == pytest.approx(0.70 * result.equity.iloc[-1], rel=1e-12)


def test_a_sleeve_without_stops_counts_its_whole_notional_as_heat():
    heat = RiskLimits(**{**NONE.__dict__, "max_heat_pct": 10.0})
    result = portfolio_backtest(config(sleeve("plain", "A"), limits=heat), FOUR_ENTRIES)
    assert result.orders["fill_units"].tolist() == pytest.approx([100.0])  # 10% of 100,000


def test_daily_loss_limit_halts_entries_but_exits_still_fill():
    """A falls 10% on day 2: the day's loss passes 5%, so B's entries on days 2 and 4 are
    vetoed, while A's exit signal on day 3 still closes the position."""
    closes = [[100, 50], [100, 50], [90, 50], [91, 50], [92, 50]]
    codes = [[0, 0], [ENTER, 0], [0, ENTER], [EXIT, 0], [0, ENTER]]
    limits = RiskLimits(**{**NONE.__dict__, "daily_loss_limit_pct": 5.0})
    result = portfolio_backtest(config(sleeve("s", "AB"), limits=limits), make_bars(closes, codes))
    assert result.halts["reason"].tolist() == ["daily_loss_limit"]
    assert result.halts["time"].tolist() == [result.equity.index[2]]
    assert result.vetoes[["symbol", "reason"]].values.tolist() == [["B", "halted"]] * 2
    assert result.trades[["symbol", "exit_reason"]].values.tolist() == [["A", "signal"]]
    assert result.final_state.halted and result.final_state.halt_reason == "daily_loss_limit"
    assert result.final_state.positions() == []


def test_drawdown_breaker_halts_entries_and_stops_still_fill():
    """A loses 4% a day (under the 5% daily limit) until it is 15% under its peak; B's entry
    is then vetoed, and A's stop at 70 still exits it when the low reaches 65."""
    a = [100, 100, 96, 92.16, 88.47, 84.93, 81.53, 80, 75]
    closes = [[x, 10.0] for x in a]
    lows = [[x, 10.0] for x in a[:-1]] + [[65.0, 10.0]]
    codes = [[0, 0], [ENTER, 0], *[[0, 0]] * 4, [0, ENTER], [0, ENTER], [0, 0]]
    limits = RiskLimits(**{**NONE.__dict__, "daily_loss_limit_pct": 5.0, "max_drawdown_pct": 15.0})
    run = config(sleeve("s", "AB", stop=30.0), limits=limits)
    result = portfolio_backtest(run, make_bars(closes, codes, lows))
    assert result.halts["reason"].tolist() == ["max_drawdown"]
    assert result.halts["time"].tolist() == [result.equity.index[5]]  # 84.93: -15.07%
    assert result.vetoes["reason"].tolist() == ["halted", "halted"]
    trades = result.trades
    assert trades[["symbol", "exit_reason", "exit_price"]].values.tolist() == [
        ["A", "stop_loss", 70.0]
    ]


def test_a_person_halts_and_resumes():
    run = config(sleeve("s", "ABCD"))
    bar = compute_signals(run, FOUR_ENTRIES).at(1)
    halted = PortfolioState.initial(run).halt("order guard: 500 orders in a minute")
    decision = decide(halted, bar, run)
    assert decision.orders == () and {v.reason for v in decision.vetoes} == {"halted"}
    assert decision.halt_reason == "order guard: 500 orders in a minute"
    assert not decision.halted_now
    restored = PortfolioState.from_dict(decision.state.to_dict(), run)
    assert restored.halt_reason == decision.halt_reason
    resumed = decide(restored.resumed(), bar, run)
    assert len(resumed.orders) == 4 and not resumed.state.halted and not resumed.vetoes


# Purity and state ---------------------------------------------------------------------------

SYNTHETIC = qs.load_bars("synthetic:symbols=3,bars=400,seed=9,gaps=0.02")


def _mixed_config(limits=None) -> PortfolioConfig:
    symbols = list(SYNTHETIC.symbols)
    return PortfolioConfig(
        sleeves=(
            Sleeve(strategy="rsi_reversion", symbols=symbols, allocation=0.5),
            Sleeve(
                strategy="ma_crossover",
                symbols=symbols[:2],
                allocation=0.5,
                settings={"sizing": "risk", "direction": "both"},
                stop_atr=2.0,
            ),
        ),
        sim=qs.SimConfig(fees_bps=2.0),
        limits=limits or RiskLimits(),
    )


def test_decide_is_pure():
    run = _mixed_config()
    # A bar the full run decides orders on, after a bar with none (so nothing waits to fill).
    decided = set(portfolio_backtest(run, SYNTHETIC).orders["ts_ns"])
    t = next(
        t
        for t in range(200, SYNTHETIC.n_bars)
        if SYNTHETIC.ts_ns[t] in decided and SYNTHETIC.ts_ns[t - 1] not in decided
    )
    middle = portfolio_backtest(run, SYNTHETIC[:t]).final_state
    assert middle.positions()
    before = {name: array.copy() for name, array in middle.arrays()._asdict().items()}
    bar = compute_signals(run, SYNTHETIC).at(t)
    first, second = decide(middle, bar, run), decide(middle, bar, run)
    assert first.orders, "the bar should trade"
    assert [o.to_dict() for o in first.orders] == [o.to_dict() for o in second.orders]
    assert first.vetoes == second.vetoes
    assert first.state == second.state and first.state is not middle
    for name, array in before.items():
        for field in array.dtype.names or (None,):  # records: field by field, NaN equal NaN
            np.testing.assert_array_equal(
                getattr(middle, name)[field] if field else getattr(middle, name),
                array[field] if field else array,
                f"{name}.{field}",
            )
    with pytest.raises(ValueError, match="read-only"):
        middle.cash[0] = 0.0


def test_state_round_trips_through_json():
    run = _mixed_config(RiskLimits(max_drawdown_pct=5.0))
    state = portfolio_backtest(run, SYNTHETIC).final_state
    assert state.positions() and not state.halted
    tripped = portfolio_backtest(_mixed_config(RiskLimits(max_drawdown_pct=2.0)), SYNTHETIC)
    assert tripped.final_state.halt_reason == "max_drawdown"
    for halted in (tripped.final_state, state.halt("max_drawdown")):
        data = json.loads(json.dumps(halted.to_dict(), allow_nan=False))
        assert PortfolioState.from_dict(data, run) == halted
        np.testing.assert_array_equal(PortfolioState.from_dict(data, run).book, halted.book)
    data = json.loads(json.dumps(state.to_dict(), allow_nan=False))
    restored = PortfolioState.from_dict(data, run)
    assert restored == state
    for name, array in state.arrays()._asdict().items():
        assert array.dtype == getattr(restored.arrays(), name).dtype
    assert restored.sleeve_cash() == state.sleeve_cash()
    assert restored.positions() == state.positions()
    # The restored state decides exactly as the original.
    later = qs.load_bars("synthetic:symbols=3,bars=420,seed=9,gaps=0.02")
    bar = compute_signals(run, later).at(-1)
    assert decide(restored, bar, run).state == decide(state, bar, run).state
    with pytest.raises(qs.ConfigError, match="sleeve 'other'"):
        PortfolioState.from_dict(
            {**data, "sleeves": {"other": data["sleeves"]["rsi_reversion"]}}, run
        )
    with pytest.raises(qs.ConfigError, match="version"):
        PortfolioState.from_dict({**data, "version": 99}, run)
    with pytest.raises(qs.ConfigError, match="symbols"):
        decide(state, bar, PortfolioConfig(sleeves=(sleeve("x", "A"),)))


def test_flatten_closes_every_position():
    run = _mixed_config(NONE)
    state = portfolio_backtest(run, SYNTHETIC).final_state
    orders = flatten_orders(state, int(SYNTHETIC.ts_ns[-1]), run)
    assert len(orders) == len(state.positions()) > 0
    done = fill_orders(state, orders, state.marks, int(SYNTHETIC.ts_ns[-1]), run)
    assert done.state.positions() == [] and not done.pending
    assert {t.exit_reason for t in done.trades} == {"flatten"}
    # Flat at the marks, with no slippage, equity is unchanged but for the exit fees.
    fees = sum(f.fees for f in done.fills)
    assert fees > 0
    assert done.state.equity_usd == pytest.approx(state.equity_usd - fees, rel=1e-12)


def test_stop_atr_sizes_and_protects_a_strategy_without_stops():
    run = _mixed_config(NONE)
    result = portfolio_backtest(run, SYNTHETIC)
    entries = result.orders[
        (result.orders["sleeve"] == "ma_crossover") & (result.orders["action"] == "entry")
    ]
    assert len(entries) > 3
    symbol = SYNTHETIC.symbols[0]
    rows = np.flatnonzero(SYNTHETIC.valid[:, 0])
    h, lo, c = (
        np.ascontiguousarray(getattr(SYNTHETIC, f)[rows, 0]) for f in ("high", "low", "close")
    )
    atr = pd.Series(2.0 * atr_nb(h, lo, c, 14), index=SYNTHETIC.ts_ns[rows])
    mine = entries[entries["symbol"] == symbol]
    np.testing.assert_array_equal(
        mine["stop_distance"].to_numpy(), atr.loc[mine["ts_ns"]].to_numpy()
    )
    # Risk sizing: 1% of the sleeve's equity (at the fill; here at the decision) at the stop.
    filled = mine[mine["status"] == "filled"]
    risk = filled["fill_units"] * filled["stop_distance"]
    decided = pd.to_datetime(filled["ts_ns"], unit="ns", utc=True)
    equity = result.sleeve_equity["ma_crossover"].loc[decided].to_numpy()
    np.testing.assert_allclose(risk / equity, 0.01, rtol=0.05)
    assert "stop_loss" in set(
        result.trades[result.trades["sleeve"] == "ma_crossover"]["exit_reason"]
    )


# Configuration ------------------------------------------------------------------------------

GOOD = {
    "sleeves": [
        {
            "strategy": "ma_crossover",
            "symbols": ["SP500"],
            "allocation": 0.33,
            "params": {"fast": 10},
        },
        {"strategy": "rsi_reversion", "symbols": ["SP500"], "allocation": 0.33},
        {
            "name": "bb",
            "strategy": "bollinger_bounce",
            "symbols": ["SP500"],
            "allocation": 0.34,
            "settings": {"sizing": "risk"},
        },
    ],
    "sim": {"cash": 1_000_000, "fees_bps": 1.0},
    "limits": {"max_heat_pct": 8, "max_drawdown_pct": None},
    "conflict": "priority",
}


def test_config_round_trips_through_a_dict():
    built = PortfolioConfig.from_dict(GOOD, source="live.toml")
    assert [s.name for s in built.sleeves] == ["ma_crossover", "rsi_reversion", "bb"]
    assert built.limits.max_drawdown_pct == math.inf and built.limits.max_heat_pct == 8
    assert built.sleeves[0].params["slow"] == 20.0  # defaults filled in
    assert PortfolioConfig.from_dict(built.to_dict()) == built
    assert built.warmup_bars() == 20


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"risk": {}}, r"live.toml: risk: unknown section; allowed: conflict, limits, regimes"),
        ({"sim": {"fee_bps": 1}}, r"live.toml: \[sim\] fee_bps: unknown key; allowed: cash"),
        ({"limits": {"max_heat": 5}}, r"live.toml: \[limits\] max_heat: unknown key; allowed"),
        ({"limits": {"max_heat_pct": -1}}, r"live.toml: \[limits\] max_heat_pct=-1"),
        ({"limits": {"daily_loss_limit_pct": 150}}, r"\[limits\] daily_loss_limit_pct=150"),
        ({"limits": {"max_heat_pct": "5"}}, r"\[limits\] max_heat_pct: must be a number"),
        ({"sim": {"whole_units": 1}}, r"\[sim\] whole_units: must be true or false, got 1"),
        ({"sim": {"fill": "open"}}, r"\[sim\] fill: must be one of next-open, close"),
        ({"conflict": "vote"}, r"live.toml: conflict: must be one of net, priority, flat"),
        ({"sleeves": []}, r"sleeves: must be a non-empty list"),
    ],
)
def test_bad_portfolio_keys_are_refused(change, expected):
    with pytest.raises(qs.ConfigError, match=expected):
        PortfolioConfig.from_dict({**GOOD, **change}, source="live.toml")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"colour": "red"}, r"live.toml: \[sleeves\[1\]\] colour: unknown key; allowed: alloc"),
        ({"strategy": "nope"}, r"\[sleeves\[1\]\] sleeve 'nope': strategy: unknown strategy"),
        ({"allocation": None}, r"\[sleeves\[1\]\] allocation: must be a number, got None"),
        ({"params": {"speed": 3}}, r"params: strategy 'rsi_reversion' has no parameter 'speed'"),
        ({"params": {"rsi_window": 1}}, r"params: .*'rsi_window'=1 outside"),
        ({"allocation": 0}, r"allocation=0 must be in \(0, 1\]"),
        ({"allocation": 0.5}, r"allocation values sum to 1.17, more than 1"),
        ({"symbols": []}, r"symbols must be a non-empty list"),
        ({"settings": {"fill": "close"}}, r"settings: unknown key\(s\) fill"),
        ({"settings": {"size": 7}}, r"settings: size=7 must be between"),
        ({"name": "bb"}, r"name 'bb' is used twice"),
        ({"stop_atr": -2}, r"stop_atr=-2 must be a positive number"),
    ],
)
def test_bad_sleeve_keys_are_refused(change, expected):
    sleeves = [dict(s) for s in GOOD["sleeves"]]
    sleeves[1].update(change)
    with pytest.raises(qs.ConfigError, match=expected):
        PortfolioConfig.from_dict({**GOOD, "sleeves": sleeves}, source="live.toml")


def test_risk_sizing_without_stops_needs_stop_atr():
    with pytest.raises(qs.ConfigError, match="set stop_atr"):
        Sleeve(
            strategy="ma_crossover", symbols=("A",), allocation=1.0, settings={"sizing": "risk"}
        ).sim_config(qs.SimConfig())
    fine = Sleeve(strategy="ma_crossover", symbols=("A",), allocation=1.0, stop_atr=2.0)
    assert fine.sim_config(qs.SimConfig(sizing="risk")).sizing == "risk"


# Plain Python -------------------------------------------------------------------------------

NO_JIT_PROBE = """
import dataclasses
import json
import quantshift as qs
from quantshift.portfolio import PortfolioConfig, RiskLimits, Sleeve, portfolio_backtest
bars = qs.load_bars("synthetic:symbols=2,bars=250,seed=4,gaps=0.02")
config = PortfolioConfig(
    sleeves=(
        Sleeve(strategy="rsi_reversion", symbols=bars.symbols, allocation=0.5),
        Sleeve(strategy="ma_crossover", symbols=bars.symbols[:1], allocation=0.5,
               settings={"direction": "both"}),
    ),
    sim=qs.SimConfig(fees_bps=2.0, slippage_bps=1.0),
    limits=RiskLimits(max_heat_pct=5.0, max_position_pct=40.0),
    conflict="priority",
)
r = portfolio_backtest(config, bars)
print(json.dumps({"equity": r.equity.tolist(), "pnl": r.trades["pnl"].tolist(),
                  "vetoes": r.vetoes["reason"].tolist(), "orders": len(r.orders)}))
"""


def test_plain_python_path_matches_compiled():
    compiled = run_json(NO_JIT_PROBE, NUMBA_DISABLE_JIT=None)
    interpreted = run_json(NO_JIT_PROBE, NUMBA_DISABLE_JIT="1")
    assert compiled["orders"] == interpreted["orders"] > 5
    assert compiled["vetoes"] == interpreted["vetoes"]
    np.testing.assert_allclose(interpreted["equity"], compiled["equity"], rtol=1e-12)
    np.testing.assert_allclose(interpreted["pnl"], compiled["pnl"], rtol=1e-12)


def _with_ma_params(config: PortfolioConfig, **params) -> PortfolioConfig:
    sleeves = tuple(
        dataclasses.replace(s, params=params) if s.strategy_name == "ma_crossover" else s
        for s in config.sleeves
    )
    return dataclasses.replace(config, sleeves=sleeves)


def test_a_switch_takes_the_other_parameters_signals_from_its_bar_on():
    """What `live divergence` replays for a sleeve that adopted a promotion record mid-run."""
    base, other = _mixed_config(), _with_ma_params(_mixed_config(), fast=4, slow=15)
    ts = SYNTHETIC.ts_ns
    plain = portfolio_backtest(base, SYNTHETIC).trades
    # A switch to the same parameters changes nothing; a switch at the first bar is the other
    # configuration's backtest.
    same = portfolio_backtest(base, SYNTHETIC, switches=[(int(ts[200]), base)]).trades
    pd.testing.assert_frame_equal(same, plain)
    whole = portfolio_backtest(base, SYNTHETIC, switches=[(int(ts[0]), other)]).trades
    pd.testing.assert_frame_equal(whole, portfolio_backtest(other, SYNTHETIC).trades)
    # Mid-run: the trades entered before the switch are the base's, and the backtest differs
    # from both (the new parameters decide from bar 200 on).
    mid = portfolio_backtest(base, SYNTHETIC, switches=[(int(ts[200]), other)]).trades
    cut = pd.Timestamp(int(ts[200]), tz="UTC")
    before = plain[plain["exit_time"] < cut].reset_index(drop=True)
    pd.testing.assert_frame_equal(mid[mid["exit_time"] < cut].reset_index(drop=True), before)
    assert not mid.equals(plain) and not mid.equals(whole)


def test_a_switch_cannot_change_sleeves_symbols_or_allocations():
    base = _mixed_config()
    first, second = base.sleeves
    moved = dataclasses.replace(
        base,
        sleeves=(dataclasses.replace(first, allocation=0.6),
                 dataclasses.replace(second, allocation=0.4)),
    )  # fmt: skip
    with pytest.raises(qs.ConfigError, match="only strategy parameters can change"):
        portfolio_backtest(base, SYNTHETIC, switches=[(int(SYNTHETIC.ts_ns[100]), moved)])


def test_warm_kernels_compiles_what_a_bar_of_the_backtest_then_uses():
    """A runner warms up before its first cycle: the kernels a real bar then runs must be the
    ones warmed (the same types), not new compilations."""
    from quantshift.portfolio.loop import compiled

    config = _mixed_config()
    assert warm_kernels(config, SYNTHETIC) >= 0.0
    kinds = ("decide", "fill", "check_stops")
    warmed = {kind: len(compiled(kind).overloads) for kind in kinds}
    assert all(warmed.values()), warmed
    history = compute_signals(config, SYNTHETIC)
    state = PortfolioState.initial(config)
    for t in range(60, 120):
        signals = history.at(t)
        state = fill_orders(state, [], SYNTHETIC.open[t], signals.ts_ns, config).state
        state = check_stops(state, SYNTHETIC.open[t], SYNTHETIC.high[t], SYNTHETIC.low[t],
                            signals.ts_ns, config).state  # fmt: skip
        decision = decide(state, signals, config)
        state = decision.state
    assert {kind: len(compiled(kind).overloads) for kind in kinds} == warmed
