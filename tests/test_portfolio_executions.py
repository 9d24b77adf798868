"""Broker executions applied as reported: the same state as the fill model when they agree,
and exactly the reported units, prices and fees when they do not."""

from __future__ import annotations

import dataclasses

import pytest

from quantshift.data import load_bars
from quantshift.portfolio import (
    PortfolioConfig,
    PortfolioState,
    RiskLimits,
    Sleeve,
    apply_executions,
    compute_signals,
    decide,
    fill_orders,
)

BARS = load_bars("builtin:sp500,nasdaq", start="2012-01-01", end="2014-01-01")
CONFIG = PortfolioConfig(
    sleeves=(
        Sleeve(strategy="ma_crossover", symbols=("SP500", "NASDAQ"), allocation=0.5,
               params={"fast": 5, "slow": 20}, name="trend"),
        Sleeve(strategy="rsi_reversion", symbols=("SP500",), allocation=0.5, stop_atr=3.0,
               name="reversion"),
    ),
    limits=RiskLimits.none(),
)  # fmt: skip


def _walk(apply):
    """Decide bar by bar; fill each bar's orders at the next open, through ``apply``."""
    history = compute_signals(CONFIG, BARS)
    state = PortfolioState.initial(CONFIG)
    pending, n_fills = [], 0
    for t in range(BARS.n_bars):
        ts = int(BARS.ts_ns[t])
        state, filled = apply(state, pending, t, ts)
        n_fills += filled
        decision = decide(state, history.at(t), CONFIG)
        state, pending = decision.state, list(decision.orders)
    return state, n_fills


def _model(state, orders, t, ts):
    result = fill_orders(state, orders, BARS.open[t], ts, CONFIG)
    assert not result.pending
    return result.state, len(result.fills)


def _reported(state, orders, t, ts):
    """What a broker would report had it filled exactly as the fill model prices it."""
    model = fill_orders(state, orders, BARS.open[t], ts, CONFIG)
    executions = [(f.order, f.units, f.price, f.fees) for f in model.fills]
    result = apply_executions(state, executions, ts, CONFIG)
    return result.state, len(result.fills)


def test_reported_executions_equal_to_the_model_give_the_model_state():
    model_state, model_fills = _walk(_model)
    reported_state, reported_fills = _walk(_reported)
    assert model_fills > 20 and reported_fills == model_fills
    assert reported_state.to_dict() == model_state.to_dict()


def test_reported_units_prices_and_fees_are_applied_as_they_are():
    history = compute_signals(CONFIG, BARS)
    state = PortfolioState.initial(CONFIG)
    for t in range(BARS.n_bars):
        decision = decide(state, history.at(t), CONFIG)
        entries = [o for o in decision.orders if o.action == "entry"]
        if entries:
            break
        state = decision.state
    order = entries[0]
    cash_before = state.sleeve_cash()[order.sleeve]
    opened = apply_executions(decision.state, [(order, 7.0, 101.5, 0.3)], order.ts_ns + 1, CONFIG)
    (position,) = [p for p in opened.state.positions() if p.symbol == order.symbol]
    sign = 1.0 if order.side == "buy" else -1.0
    assert position.units == sign * 7.0 and position.entry_price == 101.5
    assert opened.state.sleeve_cash()[order.sleeve] == pytest.approx(
        cash_before - sign * 7.0 * 101.5 - 0.3, abs=1e-9
    )
    exit_order = dataclasses.replace(
        order, action="exit", side="sell" if sign > 0 else "buy", reason="signal"
    )
    closed = apply_executions(opened.state, [(exit_order, 7.0, 105.0, 0.25)], order.ts_ns + 2,
                              CONFIG)  # fmt: skip
    (trade,) = closed.trades
    assert trade.pnl == pytest.approx(sign * (105.0 - 101.5) * 7.0 - 0.3 - 0.25, abs=1e-9)
    assert trade.exit_price == 105.0 and trade.units == 7.0
    with pytest.raises(ValueError, match="must close the whole position of 7 units, got 3"):
        apply_executions(opened.state, [(exit_order, 3.0, 105.0, 0.25)], order.ts_ns + 2, CONFIG)
    with pytest.raises(ValueError, match="bad units/price/fees"):
        apply_executions(decision.state, [(order, 7.0, float("nan"), 0.3)], order.ts_ns, CONFIG)
