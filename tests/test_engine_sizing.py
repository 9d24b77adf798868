"""Decision-time sizing (``SimConfig(size_at="decision")``), each case worked out by hand.

Units are fixed from the decision bar's close and the equity then, filled at the next open, and
cut there to what ``max_leverage`` allows when a gap makes the cash short. The scripted strategy
of tests/test_engine_rules.py turns volume into signals (1 entry, 2 exit). backtrader checks the
same rule on real and synthetic data (tests/test_parity_backtrader.py); here a plain loop checks
the portfolio path.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from probe import run_json
from test_engine_rules import check_trade, run
from test_portfolio_parity import (
    SYNTHETIC,
    assert_same_as_backtest,
    parameters,
    replay,
    sim_settings,
)
from test_promotion_record import record as promotion_record

import quantshift as qs
from quantshift.errors import ConfigError
from quantshift.portfolio import (
    PortfolioConfig,
    RiskLimits,
    Sleeve,
    compute_signals,
    portfolio_backtest,
)

REL = 1e-12
CASH = 100_000.0
FEE = 1.0 + 10.0 / 1e4  # fees_bps=10

FLAT = (100.0, 101.0, 99.0, 100.0, 0.0)
SIGNAL = (100.0, 102.0, 99.0, 101.0, 1.0)  # entry decided on a close of 101


def entry_at(open_: float) -> list[tuple]:
    """Entry decided on bar 1's close (101), filled at bar 2's ``open_``; exit at bar 4."""
    return [
        FLAT,
        SIGNAL,
        (open_, max(open_, 104.0), min(open_, 98.0), 103.0, 0.0),
        (103.0, 105.0, 102.0, 104.0, 2.0),
        (106.0, 107.0, 105.0, 106.0, 0.0),
    ]


def cash_of(result) -> np.ndarray:
    """Cash per bar: equity less the position marked at the close."""
    close = result.run.data.close[:, 0]
    return (result.equity.iloc[:, 0] - result.positions.iloc[:, 0] * close).to_numpy()


# ----------------------------------------------------------------- the setting


def test_setting_is_validated_and_reaches_the_kernels():
    assert qs.SimConfig().size_at == "fill"  # the research default stays
    assert qs.SimConfig(size_at="decision").to_record()[0].size_at_decision
    assert not qs.SimConfig().to_record()[0].size_at_decision
    with pytest.raises(ConfigError, match=r"size_at='open' is not allowed; choose one of fill"):
        qs.SimConfig(size_at="open")
    raw = {
        "sleeves": [{"strategy": "ma_crossover", "symbols": ["SP500"], "allocation": 1.0}],
        "sim": {"size_at": "close"},
    }
    with pytest.raises(ConfigError, match=r"portfolio\.toml.*size_at.*fill, decision"):
        PortfolioConfig.from_dict(raw, source="portfolio.toml")
    raw["sim"]["size_at"] = "decision"
    assert PortfolioConfig.from_dict(raw).sim.size_at == "decision"
    # When units are fixed is the fill model's, so portfolio-wide, never one sleeve's.
    raw["sleeves"][0]["settings"] = {"size_at": "fill"}
    with pytest.raises(ConfigError, match=r"settings: unknown key\(s\) size_at"):
        PortfolioConfig.from_dict(raw)


# ----------------------------------------------------------------- hand-computed fills


def test_units_are_fixed_from_the_decision_close_and_fill_after_a_gap_down():
    r = run(entry_at(99.0), fees_bps=10.0, size_at="decision")
    units = CASH / (101.0 * FEE)  # all the equity at the close of 101, fees included
    check_trade(
        r,
        0,
        entry_time=2,
        exit_time=4,
        entry_price=99.0,
        units=units,
        entry_fees=units * 99.0 * 0.001,
        exit_price=106.0,
        pnl=units * 7.0 - units * 99.0 * 0.001 - units * 106.0 * 0.001,
    )
    cash_after = CASH - units * 99.0 * FEE  # the gap down leaves cash over
    assert cash_after > 1900.0
    assert r.equity.iloc[2, 0] == pytest.approx(cash_after + units * 103.0, rel=REL)
    # Sized at the fill, the same bars buy with all the cash at 99.
    fill_sized = run(entry_at(99.0), fees_bps=10.0)
    check_trade(fill_sized, 0, units=CASH / (99.0 * FEE))


def test_a_gap_up_that_makes_the_cash_short_buys_what_the_cash_allows():
    r = run(entry_at(105.0), fees_bps=10.0, size_at="decision")
    decided = CASH / (101.0 * FEE)
    units = CASH / (105.0 * FEE)
    assert units < decided
    check_trade(r, 0, entry_time=2, entry_price=105.0, units=units)
    assert cash_of(r)[2] == pytest.approx(0.0, abs=1e-9)
    assert cash_of(r).min() >= -1e-9


def test_a_gap_up_with_whole_units():
    r = run(entry_at(105.0), fees_bps=10.0, size_at="decision", whole_units=True)
    # 989 units at 101 * 1.001 cost 99988.89; at 105 * 1.001 only 951 fit (952 cost 100059.96).
    check_trade(r, 0, entry_price=105.0, units=951.0)
    assert cash_of(r)[2] == pytest.approx(CASH - 951 * 105.0 * FEE, rel=REL)
    r = run(entry_at(99.0), fees_bps=10.0, size_at="decision", whole_units=True)
    check_trade(r, 0, entry_price=99.0, units=989.0)


def test_a_gap_up_within_the_cash_keeps_the_decided_units():
    r = run(entry_at(105.0), fees_bps=10.0, size_at="decision", size=0.5)
    check_trade(r, 0, entry_price=105.0, units=0.5 * CASH / (101.0 * FEE))
    # With leverage the cap is max_leverage x equity: 1.5 x equity decided, 2 x allowed.
    r = run(entry_at(105.0), size_at="decision", size=1.5, max_leverage=2.0)
    check_trade(r, 0, entry_price=105.0, units=1.5 * CASH / 101.0)
    assert cash_of(r)[2] == pytest.approx(CASH - 1.5 * CASH / 101.0 * 105.0, rel=REL)
    r = run(entry_at(110.0), size_at="decision", size=1.5, max_leverage=1.5)
    check_trade(r, 0, entry_price=110.0, units=1.5 * CASH / 110.0)


def test_slippage_counts_at_the_decision_and_at_the_fill():
    r = run(entry_at(99.0), fees_bps=10.0, slippage_bps=20.0, size_at="decision")
    units = CASH / (101.0 * 1.002 * FEE)
    check_trade(r, 0, entry_price=99.0 * 1.002, units=units, exit_price=106.0 * 0.998)


def test_a_short_is_sized_at_the_decision_and_cut_by_the_leverage_cap():
    r = run(entry_at(99.0), fees_bps=10.0, size_at="decision", direction="short")
    check_trade(r, 0, direction="short", entry_price=99.0, units=CASH / (101.0 * FEE))
    r = run(entry_at(105.0), fees_bps=10.0, size_at="decision", direction="short")
    check_trade(r, 0, direction="short", entry_price=105.0, units=CASH / (105.0 * FEE))


# Stop 4 below the fill: entry at the gap-down open of 99, stop at 95, hit on bar 3.
STOPPED = [
    FLAT,
    SIGNAL,
    (99.0, 100.0, 96.0, 98.0, 0.0),
    (97.0, 98.0, 94.0, 96.0, 0.0),
    (96.0, 97.0, 95.0, 96.0, 0.0),
]


def test_risk_sizing_at_the_decision_and_levels_from_the_fill_price():
    params = {"stop": 4.0}
    # 1% of equity at risk over a 4.0 stop: 250 units, at the decision as at the fill.
    r = run(STOPPED, params, sizing="risk", risk_per_trade=0.01, size_at="decision")
    check_trade(r, 0, entry_price=99.0, units=250.0, exit_price=95.0, exit_reason="stop_loss")
    # 10% at risk wants 2500 units; the leverage cap at the close of 101 gives 990.1 ...
    r = run(STOPPED, params, sizing="risk", risk_per_trade=0.1, size_at="decision")
    check_trade(r, 0, entry_price=99.0, units=CASH / 101.0, exit_price=95.0)
    # ... where the fill-time cap at 99 gives 1010.1.
    r = run(STOPPED, params, sizing="risk", risk_per_trade=0.1)
    check_trade(r, 0, entry_price=99.0, units=CASH / 99.0, exit_price=95.0)


KELLY = [
    (100.0, 101.0, 99.0, 100.0, 1.0),
    (100.0, 111.0, 99.0, 110.0, 2.0),  # entry filled at 100
    (110.0, 111.0, 109.0, 110.0, 0.0),  # exit at 110: +10%
    (100.0, 101.0, 99.0, 100.0, 1.0),
    (100.0, 101.0, 94.0, 95.0, 2.0),  # entry filled at 100
    (95.0, 96.0, 94.0, 95.0, 0.0),  # exit at 95: -5%
    (100.0, 102.0, 99.0, 101.0, 1.0),  # Kelly entry decided on 101
    (99.0, 100.0, 98.0, 99.0, 0.0),  # filled at 99
]


def test_kelly_sizing_at_the_decision():
    r = run(KELLY, sizing="kelly", kelly_min_trades=2, kelly_fraction=0.5, size_at="decision")
    check_trade(r, 0, units=1000.0, return_pct=10.0)
    check_trade(r, 1, units=1100.0, return_pct=-5.0)
    equity = 110_000.0 - 1100.0 * 5.0
    # Win rate 1/2, payoff 10/5 = 2: Kelly 1/2 - (1/2)/2 = 1/4, half of it 1/8 of equity.
    check_trade(r, 2, entry_time=7, entry_price=99.0, units=equity / 8.0 / 101.0)
    fill_sized = run(KELLY, sizing="kelly", kelly_min_trades=2, kelly_fraction=0.5)
    check_trade(fill_sized, 2, units=equity / 8.0 / 99.0)


def test_a_reversal_is_sized_on_the_equity_at_the_decision():
    rows = [
        FLAT,
        (100.0, 101.0, 99.0, 100.0, 1.0),
        (100.0, 104.0, 99.0, 104.0, 2.0),  # long 500 filled at 100; reverse on the close of 104
        (102.0, 103.0, 101.0, 102.0, 0.0),  # sell the long and sell short at 102
    ]
    r = run(rows, size=0.5, direction="both", size_at="decision")
    long_units = 0.5 * CASH / 100.0
    equity = 0.5 * CASH + long_units * 104.0  # cash plus the long at the decision close
    check_trade(r, 0, direction="long", units=long_units, exit_price=102.0, exit_reason="reverse")
    check_trade(r, 1, direction="short", entry_price=102.0, units=0.5 * equity / 104.0)


def test_close_fills_size_the_same_either_way():
    bars = qs.load_bars("builtin:sp500")
    cfg = {"fill": "close", "fees_bps": 10.0, "slippage_bps": 5.0}
    fill = qs.backtest("ma_crossover", bars, size_at="fill", **cfg)
    decision = qs.backtest("ma_crossover", bars, size_at="decision", **cfg)
    np.testing.assert_array_equal(fill.trades["units"], decision.trades["units"])


@pytest.mark.parametrize(
    "spec", ["builtin:sp500", "synthetic:symbols=3,bars=1500,seed=3,gaps=0.02"]
)
def test_cash_never_goes_negative_without_leverage(spec):
    bars = qs.load_bars(spec)
    r = qs.backtest(
        "ma_crossover", bars, {"fast": 5, "slow": 20}, fees_bps=5.0, slippage_bps=2.0,
        size_at="decision",
    )  # fmt: skip
    data = r.run.data
    cash = r.equity.to_numpy() - r.positions.to_numpy() * np.where(data.valid, data.close, np.nan)
    # A symbol's missing bars carry its last values, which the subtraction above cannot use.
    assert np.nanmin(cash) >= -1e-9 * CASH
    # Entries at an open above the decision close are the ones the cash could not pay for.
    gaps_up = 0
    for trade in r.trades.itertuples():
        k = data.symbols.index(trade.symbol)
        row = data.index.get_loc(trade.entry_time)
        decision = np.flatnonzero(data.valid[:row, k])[-1]
        gaps_up += data.open[row, k] > data.close[decision, k]
    assert gaps_up >= 5, "too few gaps up: not exercised"


# ----------------------------------------------------------------- sweeps equal backtests

GRID = {"fast": [5, 10], "slow": [20, 40]}


@pytest.mark.parametrize("size_at", ["fill", "decision"])
def test_sweep_equals_backtest(size_at):
    bars = qs.load_bars("synthetic:symbols=2,bars=800,seed=4,gaps=0.02")
    cfg = {"fees_bps": 5.0, "slippage_bps": 2.0, "whole_units": True, "size_at": size_at}
    table = qs.sweep("ma_crossover", bars, GRID, **cfg)
    curves_table, curves = qs.sweep_equity("ma_crossover", bars, GRID, **cfg)
    other = "decision" if size_at == "fill" else "fill"
    differs = False
    for k, (fast, slow) in enumerate(zip(table["fast"][::2], table["slow"][::2], strict=True)):
        params = {"fast": fast, "slow": slow}
        single = qs.backtest("ma_crossover", bars, params, **cfg)
        rows = table.iloc[2 * k : 2 * k + 2]
        np.testing.assert_array_equal(rows["final_equity"], single.stats["final_equity"])
        np.testing.assert_array_equal(rows["sharpe"], single.stats["sharpe"])
        np.testing.assert_array_equal(
            curves_table.iloc[2 * k : 2 * k + 2]["final_equity"], single.stats["final_equity"]
        )
        np.testing.assert_array_equal(curves[k].T, single.equity.to_numpy())
        twin = qs.backtest("ma_crossover", bars, params, **{**cfg, "size_at": other})
        differs |= not np.array_equal(twin.equity.to_numpy(), single.equity.to_numpy())
    assert differs, "the setting changed nothing: not exercised"


# ----------------------------------------------------------------- portfolios


@pytest.mark.parametrize("name", ["ma_crossover", "rsi_reversion", "breakout_momentum"])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_one_sleeve_sized_at_the_decision_reproduces_the_backtest(name, data):
    strategy = qs.get_strategy(name)
    params = data.draw(parameters(strategy))
    sim = {**data.draw(sim_settings(strategy)), "size_at": "decision"}
    symbol = data.draw(st.sampled_from(SYNTHETIC.symbols))
    assert_same_as_backtest(name, SYNTHETIC, symbol, params, sim)


def plain_loop(config: PortfolioConfig, bars) -> dict:
    """One long-only sleeve of fraction sizing without stops, sized at the decision, written
    as a plain loop: orders decided on a symbol's close (exits, then entries in symbol order)
    fill at its next open, an entry cut to what max_leverage allows against the sleeve's
    equity there (cash plus its other positions at their last closes)."""
    sim = config.sim
    history = compute_signals(config, bars)
    data = history.bars
    fee, slip, size, lev = sim.fees_bps / 1e4, sim.slippage_bps / 1e4, sim.size, sim.max_leverage
    n, m = data.close.shape
    cash = sim.cash
    units = np.zeros(m)
    marks = np.full(m, np.nan)
    entry = {}
    pending, trades, orders, equity = [], [], [], []
    cuts = 0

    def value(skip=-1):
        return sum(units[j] * marks[j] for j in range(m) if j != skip and units[j] != 0.0)

    for t in range(n):
        waiting = []
        for kind, k, decided in pending:
            price = data.open[t, k]
            if math.isnan(price):
                waiting.append((kind, k, decided))
            elif kind == "exit":
                fill = price * (1 - slip)
                fees = units[k] * fill * fee
                cash += units[k] * fill - fees
                price0, units0, fees0, t0 = entry.pop(k)
                pnl = units0 * (fill - price0) - fees0 - fees
                trades.append((k, t0, t, units0, price0, fill, pnl))
                units[k] = 0.0
            else:
                fill = price * (1 + slip)
                allowed = lev * (cash + value(skip=k)) / (fill * (1 + fee))
                got = min(decided, allowed)
                cuts += got < decided
                cash -= got * fill * (1 + fee)
                units[k] = got
                entry[k] = (fill, got, got * fill * fee, t)
        pending = waiting
        has_bar = ~np.isnan(data.close[t])
        marks[has_bar] = data.close[t, has_bar]
        sleeve_equity = cash + value()
        exits, entries = [], []
        for k in np.flatnonzero(has_bar):
            want_in, want_out = history.entries[t, 0, k], history.exits[t, 0, k]
            if want_in and want_out:
                continue
            if want_out and units[k] > 0.0:
                exits.append(("exit", k, units[k]))
            elif want_in and units[k] == 0.0:
                cost = data.close[t, k] * (1 + slip) * (1 + fee)
                decided = min(size * sleeve_equity / cost, lev * sleeve_equity / cost)
                entries.append(("entry", k, decided))
                orders.append((t, k, decided))
        pending += exits + entries
        equity.append(cash + value())
    return {"trades": trades, "orders": orders, "equity": np.array(equity), "cuts": cuts}


def test_portfolio_sized_at_the_decision_equals_a_plain_loop():
    # size = max_leverage: every gap up above the decision close cuts an entry.
    symbols = SYNTHETIC.symbols
    sim = qs.SimConfig(fees_bps=5.0, slippage_bps=2.0, size=0.5, max_leverage=0.5)
    config = PortfolioConfig(
        sleeves=(Sleeve(strategy="ma_crossover", symbols=symbols, allocation=1.0),),
        sim=qs.SimConfig.build(sim, size_at="decision"),
        limits=RiskLimits.none(),
    )
    result = portfolio_backtest(config, SYNTHETIC)
    oracle = plain_loop(config, SYNTHETIC)
    assert oracle["cuts"] >= 5 and len(oracle["trades"]) >= 20
    np.testing.assert_allclose(result.equity.to_numpy(), oracle["equity"], rtol=1e-9)
    entries = result.orders[result.orders["action"] == "entry"]
    np.testing.assert_allclose(entries["units"], [o[2] for o in oracle["orders"]], rtol=1e-9)
    closed = result.trades[result.trades["exit_reason"] != "open"]
    closed = closed.sort_values(["symbol", "entry_time"], kind="stable")
    mine = sorted(oracle["trades"], key=lambda x: (x[0], x[1]))
    assert len(closed) == len(mine)
    index = SYNTHETIC.index
    assert closed["entry_time"].tolist() == [index[x[1]] for x in mine]
    assert closed["exit_time"].tolist() == [index[x[2]] for x in mine]
    for column, i in (("units", 3), ("entry_price", 4), ("exit_price", 5), ("pnl", 6)):
        np.testing.assert_allclose(closed[column], [x[i] for x in mine], rtol=1e-9)
    fill_sized = portfolio_backtest(
        PortfolioConfig(sleeves=config.sleeves, sim=sim, limits=RiskLimits.none()), SYNTHETIC
    )
    assert not np.array_equal(fill_sized.equity.to_numpy(), result.equity.to_numpy())


def test_live_calls_sized_at_the_decision_equal_the_backtest_loop():
    """The entry points a live runner calls (decide, fill_orders) size at the decision too."""
    symbols = list(SYNTHETIC.symbols)
    config = PortfolioConfig(
        sleeves=(
            Sleeve(
                strategy="rsi_reversion",
                symbols=symbols,
                allocation=0.5,
                name="rsi",
                # size = max_leverage: a gap up above the decision close cuts the entry.
                settings={"size": 0.4, "max_leverage": 0.4},
            ),
            Sleeve(
                strategy="ma_crossover",
                symbols=symbols[:2],
                allocation=0.5,
                name="ma",
                settings={"direction": "both", "sizing": "risk", "risk_per_trade": 0.02},
                stop_atr=2.0,
            ),
        ),
        sim=qs.SimConfig(fees_bps=3.0, slippage_bps=2.0, whole_units=True, size_at="decision"),
        limits=RiskLimits(
            max_heat_pct=None,
            max_position_pct=40.0,
            max_gross_exposure_pct=150.0,
            daily_loss_limit_pct=None,
            max_drawdown_pct=None,
        ),
    )
    loop = portfolio_backtest(config, SYNTHETIC)
    live = replay(config, SYNTHETIC)
    assert len(loop.orders) == len(live["orders"]) > 100
    assert (loop.orders["capped_by"] == "max_position").any()
    np.testing.assert_array_equal(
        loop.orders["units"].to_numpy(dtype=float),
        np.array([o.units for o in live["orders"]], dtype=float),
    )
    closed = loop.trades[loop.trades["exit_reason"] != "open"]
    assert len(closed) == len(live["trades"]) > 10
    np.testing.assert_allclose(
        np.sort(closed["pnl"].to_numpy()), np.sort([t.pnl for t in live["trades"]]), rtol=1e-12
    )
    np.testing.assert_allclose(loop.equity.to_numpy(), live["equity"], rtol=1e-12)
    assert loop.final_state == live["state"]
    filled = loop.orders[(loop.orders["action"] == "entry") & (loop.orders["status"] == "filled")]
    assert (filled["fill_units"] <= filled["units"]).all()
    assert (filled["fill_units"] < filled["units"]).any(), "no entry cut at the fill"


# ----------------------------------------------------------------- the promotion record


def test_a_record_knows_which_sizing_its_study_used():
    decision = qs.SimConfig(size_at="decision").to_dict()
    fill = qs.SimConfig().to_dict()
    studied = promotion_record(research_settings=fill)
    assert studied.size_at == "fill"
    assert studied.other_terms(fill) == []
    assert studied.other_terms(decision) == ["size_at 'fill' in the study, 'decision' here"]
    assert promotion_record(research_settings=decision).other_terms(decision) == []
    # A record written before size_at existed holds a study sized at the fill.
    older = promotion_record(research_settings={k: v for k, v in fill.items() if k != "size_at"})
    assert older.size_at == "fill"
    assert older.other_terms(decision) == ["size_at 'fill' in the study, 'decision' here"]
    assert promotion_record().size_at is None and promotion_record().other_terms(decision) == []


# ----------------------------------------------------------------- plain Python

NO_JIT_PROBE = """
import json
import quantshift as qs
from quantshift.portfolio import PortfolioConfig, RiskLimits, Sleeve, portfolio_backtest
bars = qs.load_bars("synthetic:symbols=2,bars=250,seed=4,gaps=0.02")
cfg = qs.SimConfig(fees_bps=2.0, slippage_bps=1.0, size_at="decision", whole_units=True)
single = qs.backtest("rsi_reversion", bars, config=cfg, sizing="risk", risk_per_trade=0.05)
grid = qs.sweep("ma_crossover", bars, {"fast": [3, 5], "slow": [12, 20]}, config=cfg)
config = PortfolioConfig(
    sleeves=(Sleeve(strategy="rsi_reversion", symbols=bars.symbols, allocation=1.0),),
    sim=cfg,
    limits=RiskLimits.none(),
)
r = portfolio_backtest(config, bars)
print(json.dumps({"single": single.trades["units"].tolist(),
                  "sweep": grid["final_equity"].tolist(), "portfolio": r.equity.tolist()}))
"""


def test_plain_python_path_matches_compiled():
    compiled = run_json(NO_JIT_PROBE, NUMBA_DISABLE_JIT=None)
    interpreted = run_json(NO_JIT_PROBE, NUMBA_DISABLE_JIT="1")
    assert len(compiled["single"]) > 3
    for key in compiled:
        np.testing.assert_allclose(interpreted[key], compiled[key], rtol=1e-12, err_msg=key)
