"""sweep_equity keeps every parameter set's equity curve: it must equal the recording backtest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import quantshift as qs


@pytest.mark.parametrize(
    ("strategy", "spec"),
    [
        ("ma_crossover", "synthetic:symbols=1,bars=400,seed=5"),
        ("breakout_momentum", "synthetic:symbols=3,bars=400,seed=6,gaps=0.05"),
    ],
)
def test_equity_and_metrics_equal_backtest(strategy, spec):
    bars = qs.load_bars(spec)
    strat = qs.get_strategy(strategy)
    sets = [strat.defaults(), {p.name: p.default for p in strat.params}]
    table, equity = qs.sweep_equity(strategy, bars, sets, fees_bps=5)
    assert equity.shape == (2, bars.n_symbols, bars.n_bars)
    assert np.isfinite(equity).all()
    result = qs.backtest(strategy, bars, sets[0], fees_bps=5)
    np.testing.assert_array_equal(equity[0], result.equity.to_numpy().T)
    swept = qs.sweep(strategy, bars, sets, fees_bps=5)
    np.testing.assert_array_equal(
        table[list(qs.METRICS)].to_numpy(), swept[list(qs.METRICS)].to_numpy()
    )


def test_code_fingerprint_changes_with_the_strategy_and_names_the_commit():
    a = qs.code_fingerprint("ma_crossover")
    b = qs.code_fingerprint("rsi_reversion")
    assert a["version"] == qs.__version__
    assert len(a["strategy_hash"]) == 64
    assert a["strategy_hash"] != b["strategy_hash"]
    assert a == qs.code_fingerprint("ma_crossover")
    if (Path(qs.__file__).resolve().parents[1] / ".git").exists():
        assert len(a["git_commit"]) == 40 and isinstance(a["git_dirty"], bool)
    else:
        assert a["git_commit"] is None and a["git_dirty"] is None


@pytest.mark.parametrize("strategy", ["ma_crossover", "rsi_reversion", "breakout_momentum"])
def test_equity_metrics_match_the_kernel(strategy):
    from quantshift.engine.metrics import EQUITY_METRICS, equity_metrics

    bars = qs.load_bars("builtin:sp500").between("2010-01-01", "2014-01-01")
    result = qs.backtest(strategy, bars, fees_bps=2)
    ppy = 252.0
    got = equity_metrics(result.equity.iloc[:, 0].to_numpy(), result.config.cash, ppy)
    want = qs.backtest(strategy, bars, fees_bps=2, periods_per_year=ppy).metrics
    for name in EQUITY_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name


def test_backtest_returns_give_the_kernel_sharpe():
    result = qs.backtest("rsi_reversion", "builtin:sp500", fees_bps=2, periods_per_year=252)
    returns = result.returns().iloc[:, 0].to_numpy()
    assert returns.shape == (len(result.equity),)
    sharpe = returns.mean() / returns.std(ddof=1) * np.sqrt(252)
    assert sharpe == pytest.approx(result.metrics["sharpe"], rel=1e-9)
