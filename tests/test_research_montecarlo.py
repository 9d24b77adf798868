"""Monte Carlo robustness: exact enumeration golden test, resampling statistics, arch parity.

Oracles: plain-Python enumeration of every trade order, closed-form expectations, numpy
recomputation of path metrics, and arch's Politis-White block length.
"""

from __future__ import annotations

import itertools
import math

import matplotlib
import numba
import numpy as np
import pytest
from scipy import stats

import quantshift as qs
from quantshift.errors import ConfigError, DataError
from research.montecarlo import (
    FAN_SAMPLE_PATHS,
    MonteCarloResult,
    monte_carlo,
    optimal_block_length,
    trade_equity_returns,
)

GOLDEN_TRADES = [0.10, -0.20, 0.05, -0.10, 0.30]


def _ar1(phi: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 0.01, n)
    x = np.empty(n)
    x[0] = noise[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    return x


def _oracle_max_drawdown(order) -> float:
    """Plain loop: largest fall from the running peak, the start (1.0) being the first peak."""
    wealth = peak = 1.0
    worst = 0.0
    for r in order:
        wealth *= 1.0 + r
        peak = max(peak, wealth)
        worst = max(worst, 1.0 - wealth / peak)
    return worst


def _sp500_returns() -> np.ndarray:
    close = qs.load_bars("builtin:sp500").close[:, 0]
    return close[1:] / close[:-1] - 1.0


def test_golden_every_order_of_five_trades():
    result = monte_carlo(trade_returns=GOLDEN_TRADES, method="permutations", ruin_drawdown_pct=25.0)
    orders = list(itertools.permutations(GOLDEN_TRADES))
    assert result.n_paths == len(orders) == 120
    assert np.all(np.round(result.final_wealth, 5) == 1.08108)
    assert result.max_drawdown_pct.min() == pytest.approx(20.0, abs=1e-9)
    assert result.max_drawdown_pct.max() == pytest.approx(28.0, abs=1e-9)
    assert result.summary()["prob_ruin"] == 0.4
    oracle = sorted(100.0 * _oracle_max_drawdown(o) for o in orders)
    np.testing.assert_allclose(np.sort(result.max_drawdown_pct), oracle, rtol=0, atol=1e-12)
    assert sum(d >= 25.0 for d in oracle) / len(oracle) == 0.4


def test_reshuffle_converges_to_the_enumerated_distribution():
    exact = np.round(
        [100.0 * _oracle_max_drawdown(o) for o in itertools.permutations(GOLDEN_TRADES)], 9
    )
    levels, exact_counts = np.unique(exact, return_counts=True)
    n_paths = 20_000
    result = monte_carlo(
        trade_returns=GOLDEN_TRADES, n_paths=n_paths, seed=7, ruin_drawdown_pct=25.0
    )
    drawn = np.round(result.max_drawdown_pct, 9)
    assert set(np.unique(drawn)) <= set(levels)
    drawn_counts = np.array([(drawn == level).sum() for level in levels])
    expected = exact_counts / exact_counts.sum() * n_paths
    assert stats.chisquare(drawn_counts, expected).pvalue > 1e-3
    # 0.4 within four standard errors of a share from 20,000 paths.
    assert abs(result.summary()["prob_ruin"] - 0.4) < 4 * math.sqrt(0.24 / n_paths)


@pytest.mark.parametrize(
    ("method", "data"),
    [("reshuffle", "trades"), ("bootstrap", "trades"), ("bootstrap", "bars"), ("block", "bars")],
)
def test_same_seed_same_paths_other_seed_other_paths(method, data):
    rng = np.random.default_rng(3)
    kwargs = (
        {"trade_returns": rng.normal(0.01, 0.05, 60)}
        if data == "trades"
        else {"returns": _ar1(0.3, 400, 4)}
    )
    first = monte_carlo(method=method, n_paths=300, seed=11, **kwargs)
    again = monte_carlo(method=method, n_paths=300, seed=11, **kwargs)
    other = monte_carlo(method=method, n_paths=300, seed=12, **kwargs)
    for name in ("final_wealth", "max_drawdown_pct", "sharpe"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    np.testing.assert_array_equal(first.wealth_quantiles, again.wealth_quantiles)
    assert not np.array_equal(first.max_drawdown_pct, other.max_drawdown_pct)


def test_results_do_not_depend_on_the_number_of_threads():
    returns = _ar1(0.4, 500, 9)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = monte_carlo(returns=returns, method="block", n_paths=1_000, seed=3)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = monte_carlo(returns=returns, method="block", n_paths=1_000, seed=3)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one.final_wealth, two.final_wealth)
    np.testing.assert_array_equal(one.max_drawdown_pct, two.max_drawdown_pct)
    np.testing.assert_array_equal(one.wealth_quantiles, two.wealth_quantiles)


def test_bootstrap_mean_final_wealth_matches_the_expectation():
    trades = np.random.default_rng(5).normal(0.004, 0.04, 40)
    result = monte_carlo(trade_returns=trades, method="bootstrap", n_paths=40_000, seed=1)
    # Draws are iid, so E[prod(1 + r*)] = prod(E[1 + r*]) = (1 + mean)^n.
    expected = (1.0 + trades.mean()) ** trades.size
    standard_error = result.final_wealth.std(ddof=1) / math.sqrt(result.n_paths)
    assert abs(result.final_wealth.mean() - expected) < 4.0 * standard_error


def test_block_bootstrap_keeps_autocorrelation_that_iid_bootstrap_destroys():
    returns = _ar1(0.6, 2_000, 21)

    def mean_lag1_autocorrelation(method):
        result = monte_carlo(returns=returns, method=method, n_paths=200, seed=2, keep_paths=True)
        path_returns = result.paths[:, 1:] / result.paths[:, :-1] - 1.0
        return np.mean([np.corrcoef(p[:-1], p[1:])[0, 1] for p in path_returns])

    original = np.corrcoef(returns[:-1], returns[1:])[0, 1]
    block = mean_lag1_autocorrelation("block")
    iid = mean_lag1_autocorrelation("bootstrap")
    assert abs(iid) < 0.05
    assert block > 0.4
    assert abs(block - original) < abs(iid - original) / 3


def _arch_block_length(x) -> float:
    from arch.bootstrap import optimal_block_length as arch_optimal_block_length

    return float(arch_optimal_block_length(x)["stationary"].iloc[0])


@pytest.mark.parametrize(
    ("phi", "n", "seed"), [(0.0, 500, 1), (0.0, 3_000, 2), (0.5, 1_000, 3), (0.9, 2_500, 4)]
)
def test_optimal_block_length_equals_arch(phi, n, seed):
    x = _ar1(phi, n, seed)
    assert optimal_block_length(x) == pytest.approx(_arch_block_length(x), rel=1e-6)


def test_optimal_block_length_equals_arch_on_sp500_returns():
    returns = _sp500_returns()
    assert optimal_block_length(returns) == pytest.approx(_arch_block_length(returns), rel=1e-6)


def test_block_method_defaults_to_the_optimal_block_length():
    returns = _ar1(0.7, 1_500, 6)
    result = monte_carlo(returns=returns, method="block", n_paths=50)
    assert result.block_length == pytest.approx(optimal_block_length(returns))
    assert (
        monte_carlo(returns=returns, method="block", n_paths=50, block_length=0.3).block_length
        == 1.0
    )


def test_path_metrics_match_a_numpy_recomputation():
    returns = _ar1(0.2, 300, 8) + 0.0005
    result = monte_carlo(
        returns=returns, method="block", n_paths=64, seed=5, keep_paths=True, periods_per_year=252
    )
    wealth = result.paths
    assert wealth.shape == (64, 301)
    assert np.all(wealth[:, 0] == 1.0)
    path_returns = wealth[:, 1:] / wealth[:, :-1] - 1.0
    peak = np.maximum.accumulate(wealth, axis=1)
    np.testing.assert_allclose(result.final_wealth, wealth[:, -1], rtol=1e-12)
    np.testing.assert_allclose(
        result.max_drawdown_pct, 100.0 * (1.0 - wealth / peak).max(axis=1), rtol=1e-9
    )
    np.testing.assert_allclose(
        result.cagr_pct, 100.0 * (wealth[:, -1] ** (252 / 300) - 1.0), rtol=1e-9
    )
    sharpe = path_returns.mean(axis=1) / path_returns.std(axis=1, ddof=1) * math.sqrt(252)
    np.testing.assert_allclose(result.sharpe, sharpe, rtol=1e-7)
    assert result.sharpe_unit.startswith("annualised")


def test_trade_cagr_needs_years_and_sharpe_is_per_trade():
    trades = np.array(GOLDEN_TRADES)
    without = monte_carlo(trade_returns=trades, n_paths=100)
    assert np.all(np.isnan(without.cagr_pct))
    assert math.isnan(without.summary()["cagr_pct_low"])
    with_years = monte_carlo(trade_returns=trades, n_paths=100, years=2.0)
    np.testing.assert_allclose(with_years.cagr_pct, 100.0 * (1.08108**0.5 - 1.0), rtol=1e-12)
    # A permutation keeps the set of trades, so the per-trade Sharpe is that of the trades.
    np.testing.assert_allclose(with_years.sharpe, trades.mean() / trades.std(ddof=1), rtol=1e-12)
    assert with_years.sharpe_unit == "per trade"


def test_summary_frame_and_default_memory():
    rng = np.random.default_rng(4)
    trades = rng.normal(0.002, 0.05, 200)
    result = monte_carlo(trade_returns=trades, n_paths=2_000, seed=9, years=4.0)
    assert isinstance(result, MonteCarloResult)
    assert result.paths is None
    assert result.fan_paths == FAN_SAMPLE_PATHS
    assert result.wealth_quantiles.shape == (5, 201)
    assert np.all(np.diff(result.wealth_quantiles, axis=0) >= 0)
    summary = result.summary()
    frame = result.to_frame()
    assert list(frame.columns) == ["final_wealth", "max_drawdown_pct", "cagr_pct", "sharpe"]
    assert len(frame) == 2_000
    assert summary["prob_loss"] == pytest.approx(np.mean(frame["final_wealth"] < 1.0))
    assert summary["prob_ruin"] == pytest.approx(np.mean(frame["max_drawdown_pct"] >= 50.0))
    assert summary["max_drawdown_pct_p50"] <= summary["max_drawdown_pct_p95"]
    assert summary["max_drawdown_pct_p95"] <= summary["max_drawdown_pct_p99"]
    assert summary["cagr_pct_low"] < summary["cagr_pct_high"]
    assert summary["original_final_wealth"] == pytest.approx(np.prod(1.0 + trades))
    assert summary["original_max_drawdown_pct"] == pytest.approx(
        100.0 * _oracle_max_drawdown(trades)
    )
    assert summary["final_wealth_p50"] == pytest.approx(np.prod(1.0 + trades))


def test_plot_draws_fan_and_histograms(tmp_path):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = monte_carlo(returns=_ar1(0.1, 300, 2) + 0.0003, method="block", n_paths=400)
    target = tmp_path / "mc.png"
    fig = result.plot(target)
    assert target.stat().st_size > 10_000
    assert len(fig.axes) == 3
    assert fig.axes[1].get_xlabel() == "max drawdown (%)"
    assert fig.axes[2].get_xlabel() == "CAGR (%)"
    plt.close(fig)
    # A reshuffle's CAGR is one value: written out, not binned.
    shuffled = monte_carlo(trade_returns=GOLDEN_TRADES, n_paths=200, years=1.0)
    fig = shuffled.plot()
    texts = [t.get_text() for t in fig.axes[2].texts]
    assert texts == [f"{100.0 * (1.08108 - 1.0):.4g} on every path"]
    plt.close(fig)


def test_trade_equity_returns_compound_to_the_equity_curve():
    result = qs.backtest("rsi_reversion", "builtin:sp500", fees_bps=5, slippage_bps=2)
    fractions = trade_equity_returns(result)
    closed = result.trades[result.trades["exit_reason"] != "open"]
    assert len(fractions) == len(closed) > 20
    last_exit_equity = result.equity["SP500"].loc[closed["exit_time"].iloc[-1]]
    assert np.prod(1.0 + fractions) == pytest.approx(last_exit_equity / result.config.cash)
    assert len(trade_equity_returns(result, include_open=True)) == len(result.trades)


def test_trade_equity_returns_several_symbols_with_gaps():
    bars = qs.load_bars("synthetic:symbols=3,bars=700,seed=4,gaps=0.03")
    result = qs.backtest("ma_crossover", bars, fees_bps=5)
    for symbol in result.symbols:
        fractions = trade_equity_returns(result, symbol=symbol)
        trades = result.trades[result.trades["symbol"] == symbol]
        closed = trades[trades["exit_reason"] != "open"]
        final = result.equity[symbol].loc[closed["exit_time"].iloc[-1]]
        assert np.prod(1.0 + fractions) == pytest.approx(final / result.config.cash)
    merged = trade_equity_returns(result)
    closed = result.trades[result.trades["exit_reason"] != "open"]
    assert len(merged) == len(closed)
    per_symbol = np.concatenate([trade_equity_returns(result, symbol=s) for s in result.symbols])
    np.testing.assert_allclose(np.sort(merged), np.sort(per_symbol))
    with pytest.raises(ConfigError, match="'NOPE' not in the backtest"):
        trade_equity_returns(result, symbol="NOPE")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"trade_returns": []}, DataError, "trade_returns is empty"),
        (
            {"trade_returns": [0.1, np.nan]},
            DataError,
            "NaN or infinite values, first at position 1",
        ),
        ({"trade_returns": [0.1, -1.0]}, DataError, "position 1"),
        ({"returns": [0.01, -1.5], "method": "bootstrap"}, DataError, "above -1"),
        ({"trade_returns": [0.1], "n_paths": 0}, ConfigError, "n_paths must be a positive"),
        ({"trade_returns": [0.1], "method": "shuffle"}, ConfigError, "unknown method 'shuffle'"),
        ({"trade_returns": [0.1], "returns": [0.1]}, ConfigError, "exactly one"),
        ({"returns": [0.1, 0.2]}, ConfigError, "reorders trades"),
        ({"trade_returns": [0.1], "method": "block"}, ConfigError, "per-bar returns"),
        ({"trade_returns": [0.1] * 10, "method": "permutations"}, ConfigError, "at most 9"),
        ({"trade_returns": [0.1], "seed": -1}, ConfigError, "seed must be"),
        ({"trade_returns": [0.1], "confidence": 1.0}, ConfigError, "confidence"),
        ({"trade_returns": [0.1], "years": 0.0}, ConfigError, "years must be positive"),
        ({"returns": [0.01] * 20, "method": "block", "block_length": -2}, ConfigError, "block_len"),
        ({"returns": [0.01] * 20, "method": "block"}, DataError, "constant"),
        ({"returns": [0.01, 0.02] * 4, "method": "block"}, DataError, "at least 11"),
    ],
)
def test_bad_inputs_are_rejected_with_a_clear_message(kwargs, error, message):
    with pytest.raises(error, match=message):
        monte_carlo(**kwargs)
