"""Public results build their pandas views when first read; metrics come from the kernel at once.

Oracle: the same frames built eagerly before (the parity suites pin their content); here, that a
frame is absent until read, then equal on every read.
"""

from __future__ import annotations

import quantshift as qs
from quantshift.portfolio import PortfolioConfig, Sleeve, portfolio_backtest

BARS = qs.load_bars("synthetic:symbols=3,bars=400,seed=8,gaps=0.02")
FRAMES = ("stats", "trades", "equity", "positions")


def test_backtest_builds_frames_only_when_read():
    result = qs.backtest("ma_crossover", BARS, fees_bps=2.0)
    per_symbol = {s: result.metrics_for(s) for s in BARS.symbols}
    assert not any(name in vars(result) for name in FRAMES)
    assert per_symbol[BARS.symbols[1]]["trades"] > 0
    assert result.stats.loc[BARS.symbols[1], "sharpe"] == per_symbol[BARS.symbols[1]]["sharpe"]
    trades = result.trades
    assert "trades" in vars(result) and result.trades is trades
    assert "equity" not in vars(result)
    assert int(result.stats["trades"].sum()) == int((trades["exit_reason"] != "open").sum())


def test_portfolio_backtest_builds_frames_only_when_read():
    config = PortfolioConfig(
        sleeves=(Sleeve(strategy="rsi_reversion", symbols=list(BARS.symbols), allocation=1.0),)
    )
    result = portfolio_backtest(config, BARS)
    metrics = result.metrics
    frames = ("trades", "equity", "orders", "vetoes", "halts", "positions", "sleeve_equity")
    assert not any(name in vars(result) for name in frames)
    closed = result.trades[result.trades["exit_reason"] != "open"]
    assert metrics["trades"] == len(closed) > 0
    assert metrics["final_equity"] == result.equity.iloc[-1]
