"""The portfolio backtest against the single-strategy backtest, and against its own live calls.

One sleeve on one symbol with no risk limits must trade exactly as ``qs.backtest``; a portfolio
driven bar by bar through ``decide``/``fill_orders``/``check_stops`` must equal the loop.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import quantshift as qs
from quantshift.portfolio import (
    REGIMES,
    PortfolioConfig,
    PortfolioState,
    RegimeOverlay,
    RegimeRule,
    RiskLimits,
    SectorMap,
    SentimentFilter,
    Sleeve,
    check_stops,
    compute_signals,
    decide,
    fill_orders,
    portfolio_backtest,
)

SP500 = qs.load_bars("builtin:sp500")
SYNTHETIC = qs.load_bars("synthetic:symbols=3,bars=700,seed=5,gaps=0.03")
STRATEGIES = [s.name for s in qs.list_strategies()]
EXACT_COLUMNS = (
    "entry_price",
    "exit_price",
    "units",
    "entry_fees",
    "exit_fees",
    "pnl",
    "return_pct",
)


def single_sleeve(strategy, symbol, params=None, **sim) -> PortfolioConfig:
    return PortfolioConfig(
        sleeves=(
            Sleeve(strategy=strategy, symbols=(symbol,), allocation=1.0, params=params or {}),
        ),
        sim=qs.SimConfig(**sim),
        limits=RiskLimits.none(),
    )


def assert_same_as_backtest(strategy, bars, symbol, params, sim) -> int:
    """Assert the portfolio backtest equals qs.backtest bit for bit; return the trade count."""
    portfolio = portfolio_backtest(single_sleeve(strategy, symbol, params, **sim), bars)
    single = qs.backtest(strategy, bars, params, symbol=symbol, **sim)
    mine, theirs = portfolio.trades, single.trades
    assert len(mine) == len(theirs)
    for column in ("entry_time", "exit_time"):
        np.testing.assert_array_equal(mine[column].to_numpy(), theirs[column].to_numpy())
    assert mine["direction"].tolist() == theirs["direction"].astype(str).tolist()
    assert mine["exit_reason"].tolist() == theirs["exit_reason"].astype(str).tolist()
    for column in EXACT_COLUMNS:
        np.testing.assert_array_equal(mine[column].to_numpy(), theirs[column].to_numpy(), column)
    np.testing.assert_array_equal(portfolio.equity.to_numpy(), single.equity[symbol].to_numpy())
    np.testing.assert_array_equal(
        portfolio.positions[symbol].to_numpy(), single.positions[symbol].to_numpy()
    )
    assert portfolio.halts.empty and portfolio.vetoes.empty
    return len(mine)


@st.composite
def parameters(draw, strategy):
    values = {}
    for p in strategy.params:
        if p.integer:
            values[p.name] = draw(st.integers(int(p.low), int(min(p.high, 60))))
        else:
            values[p.name] = draw(st.floats(p.low, p.high, allow_nan=False))
    assume(all(c.holds(values) for c in strategy.constraints))
    return values


@st.composite
def sim_settings(draw, strategy):
    # Kelly is included: the sleeve keeps the same closed-trade statistics the kernel does.
    sizings = ["fraction", "kelly"] + (["risk"] if strategy.uses_stops else [])
    return {
        "fees_bps": draw(st.sampled_from([0.0, 2.5, 10.0])),
        "slippage_bps": draw(st.sampled_from([0.0, 1.0, 5.0])),
        "fill": draw(st.sampled_from(["next-open", "close"])),
        "direction": draw(st.sampled_from(["long", "short", "both"])),
        "sizing": draw(st.sampled_from(sizings)),
        "size": draw(st.sampled_from([0.5, 1.0])),
        "risk_per_trade": draw(st.sampled_from([0.01, 0.05])),
        "kelly_min_trades": 3,
        "max_leverage": draw(st.sampled_from([1.0, 2.0])),
        "whole_units": draw(st.booleans()),
        "use_stops": draw(st.booleans()),
    }


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize(
    "sim",
    [
        {},
        {"fill": "close", "direction": "both", "fees_bps": 5.0, "slippage_bps": 3.0},
        {"direction": "short", "sizing": "kelly", "kelly_min_trades": 5, "fees_bps": 1.0},
    ],
    ids=["defaults", "close-both-costs", "short-kelly"],
)
def test_one_sleeve_reproduces_the_backtest_on_sp500(name, sim):
    assert assert_same_as_backtest(name, SP500, "SP500", None, sim) > 0


@pytest.mark.parametrize("name", [s.name for s in qs.list_strategies() if s.uses_stops])
def test_risk_sizing_reproduces_the_backtest_on_sp500(name):
    sim = {"sizing": "risk", "risk_per_trade": 0.02, "direction": "both", "whole_units": True}
    n_trades = assert_same_as_backtest(name, SP500, "SP500", None, sim)
    # A strategy with only a trailing distance gives risk sizing nothing to size against.
    sleeve = single_sleeve(name, "SP500").sleeves[0]
    sets_stops = np.isfinite(compute_signals(single_sleeve(name, "SP500"), SP500).stop_distance)
    assert (n_trades > 0) == bool(sets_stops.any()), sleeve.name


@pytest.mark.parametrize("name", STRATEGIES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_one_sleeve_reproduces_the_backtest_with_gaps(name, data):
    strategy = qs.get_strategy(name)
    params = data.draw(parameters(strategy))
    sim = data.draw(sim_settings(strategy))
    symbol = data.draw(st.sampled_from(SYNTHETIC.symbols))
    assert_same_as_backtest(name, SYNTHETIC, symbol, params, sim)


@pytest.mark.parametrize("name", STRATEGIES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_one_sleeve_reproduces_the_backtest_on_sp500_any_settings(name, data):
    strategy = qs.get_strategy(name)
    params = data.draw(parameters(strategy))
    assert_same_as_backtest(name, SP500, "SP500", params, data.draw(sim_settings(strategy)))


def test_sleeves_split_the_capital_as_declared():
    """Three sleeves at 33/33/34 percent, two on the same symbol: with the "net" policy and no
    limits each sleeve's book is the single backtest of its strategy with its share of cash."""
    symbols = SYNTHETIC.symbols
    sleeves = (
        Sleeve(strategy="ma_crossover", symbols=(symbols[0],), allocation=0.33, name="a"),
        Sleeve(strategy="rsi_reversion", symbols=(symbols[0],), allocation=0.33, name="b"),
        Sleeve(strategy="breakout_momentum", symbols=(symbols[1],), allocation=0.34, name="c"),
    )
    sim = qs.SimConfig(cash=90_000.0, fees_bps=2.0, direction="both")
    config = PortfolioConfig(sleeves=sleeves, sim=sim, limits=RiskLimits.none())
    expected = {"a": 29_700.0, "b": 29_700.0, "c": 30_600.0}
    assert PortfolioState.initial(config).sleeve_cash() == pytest.approx(expected, rel=1e-15)
    result = portfolio_backtest(config, SYNTHETIC)
    total = pd.Series(0.0, index=result.equity.index)
    for sleeve in sleeves:
        cash = sleeve.allocation * sim.cash
        (symbol,) = sleeve.symbols
        single = qs.backtest(sleeve.strategy, SYNTHETIC, symbol=symbol, config=sim, cash=cash)
        # qs.backtest drops the times its symbol lacks; the sleeve carries its book over them.
        own = result.sleeve_equity[sleeve.name].reindex(single.equity.index)
        np.testing.assert_array_equal(own.to_numpy(), single.equity[symbol].to_numpy())
        mine = result.trades[result.trades["sleeve"] == sleeve.name]
        assert len(mine) == len(single.trades) > 0
        np.testing.assert_array_equal(mine["pnl"].to_numpy(), single.trades["pnl"].to_numpy())
        total += result.sleeve_equity[sleeve.name]
    np.testing.assert_allclose(result.equity.to_numpy(), total.to_numpy(), rtol=1e-12)
    assert result.final_state.reserve_cash == pytest.approx(0.0, abs=1e-6)


def replay(config: PortfolioConfig, bars, regime=None, sentiment=None) -> dict:
    """Drive the portfolio bar by bar through the public calls, as a live runner with the
    paper broker would: fill waiting orders at the open, check stops, decide, (fill at close).
    ``regime`` (Series) and ``sentiment`` (DataFrame) on the bars' times are handed to each
    decision as a live runner would: the bar's label, and its scores by symbol."""
    history = compute_signals(config, bars)
    data = history.bars
    state = PortfolioState.initial(config)
    pending, orders, trades, vetoes, halts, equity = [], [], [], [], [], []
    fill_close = config.sim.fill == "close"
    for t in range(data.n_bars):
        ts = int(data.ts_ns[t])
        if pending:
            done = fill_orders(state, pending, data.open[t], ts, config, bar=t)
            state, pending = done.state, list(done.pending)
            trades += done.trades
        stopped = check_stops(state, data.open[t], data.high[t], data.low[t], ts, config, bar=t)
        state = stopped.state
        trades += stopped.trades
        inputs = {}
        if regime is not None:
            inputs["regime"] = int(regime.at[data.index[t]])
        if sentiment is not None:
            inputs["sentiment"] = sentiment.loc[data.index[t]].dropna().to_dict()
        decision = decide(state, history.at(t), config, **inputs)
        state = decision.state
        orders += decision.orders
        vetoes += decision.vetoes
        if decision.halted_now:
            halts.append((ts, decision.halt_reason))
        if fill_close:
            done = fill_orders(state, decision.orders, data.close[t], ts, config, bar=t)
            state = done.state
            trades += done.trades
        else:
            pending += decision.orders
        equity.append(state.equity_usd)
    return {
        "state": state,
        "orders": orders,
        "trades": trades,
        "vetoes": vetoes,
        "halts": halts,
        "equity": np.array(equity),
    }


@pytest.mark.parametrize(
    ("fill", "conflict", "limits"),
    [
        ("next-open", "priority", RiskLimits(max_heat_pct=6.0, max_position_pct=30.0)),
        ("close", "flat", RiskLimits()),
        ("close", "net", RiskLimits(daily_loss_limit_pct=3.3)),
        ("next-open", "net", RiskLimits(max_drawdown_pct=6.0, max_gross_exposure_pct=80.0)),
    ],
    ids=["caps-priority", "defaults-flat", "daily-loss", "drawdown-gross"],
)
def test_live_calls_bar_by_bar_equal_the_backtest_loop(fill, conflict, limits):
    assert_live_calls_equal_the_loop(three_sleeves(fill, conflict, limits))


def three_sleeves(fill, conflict, limits, **overlay) -> PortfolioConfig:
    symbols = list(SYNTHETIC.symbols)
    return PortfolioConfig(
        sleeves=(
            Sleeve(strategy="rsi_reversion", symbols=symbols, allocation=0.4, name="rsi"),
            Sleeve(
                strategy="ma_crossover",
                symbols=symbols[:2],
                allocation=0.3,
                name="ma",
                settings={"direction": "both", "sizing": "risk", "risk_per_trade": 0.02},
                stop_atr=2.0,
            ),
            Sleeve(
                strategy="bollinger_bounce",
                symbols=symbols[1:],
                allocation=0.3,
                settings={"direction": "short", "size": 0.3},
            ),
        ),
        sim=qs.SimConfig(fill=fill, fees_bps=3.0, slippage_bps=2.0, whole_units=True),
        limits=limits,
        conflict=conflict,
        **overlay,
    )


@pytest.mark.parametrize("fill", ["next-open", "close"])
def test_live_calls_with_the_overlay_equal_the_backtest_loop(fill):
    """Correlation and sector limits, regime labels and news scores: the live decision call
    fed the bar's inputs gives the backtest's orders, vetoes and trades."""
    limits = RiskLimits(
        max_heat_pct=6.0,
        max_position_correlation=0.2,
        correlation_window_bars=20,
        max_sector_exposure_pct=35.0,
    )
    symbols = SYNTHETIC.symbols
    overlay = {
        "sectors": SectorMap({symbols[0]: "a", symbols[1]: "a", symbols[2]: "b"}),
        "regimes": RegimeOverlay(
            dict(RegimeOverlay.legacy(None, "rsi", "bollinger_bounce").rules)
            | {"bull_trending": RegimeRule(allocation={"ma": 0.0}, stop_scale=0.5)}
        ),
        "sentiment": SentimentFilter(min_score=-0.4, size_scaling=0.6),
    }
    rng = np.random.default_rng(8)
    index = SYNTHETIC.index
    regime = pd.Series(rng.integers(-1, len(REGIMES), len(index)), index=index)
    scores = rng.uniform(-1.0, 1.0, (len(index), len(symbols)))
    scores[rng.random(scores.shape) < 0.6] = np.nan
    sentiment = pd.DataFrame(scores, index=index, columns=list(symbols))
    config = three_sleeves(fill, "priority", limits, **overlay)
    loop = assert_live_calls_equal_the_loop(config, regime=regime, sentiment=sentiment)
    reasons = set(loop.vetoes["reason"]) | set(loop.orders["capped_by"].dropna())
    assert reasons >= {"max_position_correlation", "max_sector_exposure", "regime", "sentiment"}


def assert_live_calls_equal_the_loop(config, **inputs):
    """Assert the portfolio backtest equals :func:`replay` order for order; return it."""
    loop = portfolio_backtest(config, SYNTHETIC, **inputs)
    live = replay(config, SYNTHETIC, **inputs)
    assert len(loop.orders) == len(live["orders"]) > 0
    assert len(loop.orders) + len(loop.vetoes) > 100
    for column in ("sleeve", "symbol", "action", "side", "reason", "ts_ns", "capped_by"):
        mine = [None if pd.isna(x) else x for x in loop.orders[column]]
        assert mine == [getattr(o, column) for o in live["orders"]], column
    for column in ("units", "max_units", "reference_price", "stop_distance"):
        np.testing.assert_array_equal(
            loop.orders[column].to_numpy(dtype=float),
            np.array([getattr(o, column) for o in live["orders"]], dtype=float),
        )
    closed = loop.trades[loop.trades["exit_reason"] != "open"]
    assert len(closed) == len(live["trades"])
    key = ["sleeve", "symbol", "exit_time", "entry_time"]
    closed = closed.sort_values(key, kind="stable")
    live_trades = pd.DataFrame([t.__dict__ for t in live["trades"]])
    live_trades["exit_time"] = pd.to_datetime(live_trades["exit_ts_ns"], unit="ns", utc=True)
    live_trades["entry_time"] = pd.to_datetime(live_trades["entry_ts_ns"], unit="ns", utc=True)
    live_trades = live_trades.sort_values(key, kind="stable")
    for column in ("pnl", "units", "entry_price", "exit_price", "exit_fees"):
        np.testing.assert_array_equal(closed[column].to_numpy(), live_trades[column].to_numpy())
    assert closed["exit_reason"].tolist() == live_trades["exit_reason"].tolist()
    assert len(loop.vetoes) == len(live["vetoes"])
    assert loop.vetoes["reason"].tolist() == [v.reason for v in live["vetoes"]]
    assert loop.halts["reason"].tolist() == [reason for _, reason in live["halts"]]
    np.testing.assert_allclose(loop.equity.to_numpy(), live["equity"], rtol=1e-12)
    assert loop.final_state == live["state"]
    return loop
