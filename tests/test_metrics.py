"""The in-kernel metrics against empyrical and plain pandas on the same equity curve and trades.

Returns are simple per-bar returns of the symbol's own bars, the first one against the initial
cash (``equity[0] / cash - 1``); missing bars are not bars of the symbol.
"""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pandas as pd
import pytest

from quantshift.data import load_bars
from quantshift.data.bars import Bars
from quantshift.engine import METRICS, backtest, sweep

REL = 1e-9
PPY = 252.0
CASH = 100_000.0


@pytest.fixture(scope="module")
def sp500() -> Bars:
    return load_bars("builtin:sp500")


@pytest.fixture(scope="module")
def synthetic() -> Bars:
    # Three symbols with about 1% missing bars each.
    return load_bars("synthetic:symbols=3,bars=1500,seed=21")


def own_equity(result, bars: Bars, symbol: str) -> np.ndarray:
    """The symbol's equity on its own bars (the result carries values over missing bars)."""
    valid = bars.valid[:, bars.column(symbol)]
    return result.equity[symbol].to_numpy()[valid]


def bar_returns(equity: np.ndarray, cash: float) -> np.ndarray:
    return np.diff(equity, prepend=cash) / np.r_[cash, equity[:-1]]


def expected_metrics(equity, trades, positions, cash, ppy) -> dict[str, float]:
    """Every metric from an equity curve, the trades table and positions, without the engine."""
    returns = bar_returns(equity, cash)
    closed = trades[trades["exit_reason"] != "open"]
    pnl = closed["pnl"]
    wins, losses = pnl[pnl > 0], pnl[pnl <= 0]
    nan = math.nan
    if losses.sum() < 0:
        profit_factor = wins.sum() / -losses.sum()
    else:
        profit_factor = math.inf if wins.sum() > 0 else nan
    return {
        "final_equity": equity[-1],
        "total_return_pct": 100 * (equity[-1] / cash - 1),
        "cagr_pct": 100 * empyrical.cagr(returns, annualization=ppy),
        "sharpe": empyrical.sharpe_ratio(returns, annualization=ppy),
        "sortino": empyrical.sortino_ratio(returns, annualization=ppy),
        "volatility_pct": 100 * empyrical.annual_volatility(returns, annualization=ppy),
        "max_drawdown_pct": -100 * empyrical.max_drawdown(returns),
        "trades": len(closed),
        "win_rate_pct": 100 * len(wins) / len(closed) if len(closed) else nan,
        "profit_factor": profit_factor if len(closed) else nan,
        "avg_win": wins.mean() if len(wins) else nan,
        "avg_loss": losses.mean() if len(losses) else nan,
        "largest_win": wins.max() if len(wins) else nan,
        "largest_loss": losses.min() if len(losses) else nan,
        "exposure_pct": 100 * np.count_nonzero(positions) / len(equity),
    }


def assert_metrics(got: dict, want: dict) -> None:
    assert set(got) == set(METRICS)
    for key in METRICS:
        g, w = got[key], want[key]
        if isinstance(w, float) and math.isnan(w):
            assert math.isnan(g), f"{key}: {g} != NaN"
        elif isinstance(w, float) and math.isinf(w):
            assert g == w, f"{key}: {g} != {w}"
        else:
            # abs: a metric that is exactly 0 one way can be 1e-17 the other way.
            assert g == pytest.approx(w, rel=REL, abs=1e-12), f"{key}: {g} != {w}"


def check(result, bars: Bars, symbol: str) -> None:
    valid = bars.valid[:, bars.column(symbol)]
    trades = result.trades[result.trades["symbol"] == symbol]
    want = expected_metrics(
        own_equity(result, bars, symbol),
        trades,
        result.positions[symbol].to_numpy()[valid],
        result.config.cash,
        result.config.periods_per_year,
    )
    assert_metrics(result.metrics_for(symbol), want)


CASES = [
    ("ma_crossover", None, {}),
    ("ma_crossover", {"fast": 10, "slow": 50}, {"direction": "both"}),
    ("rsi_reversion", None, {}),
    ("rsi_reversion", None, {"use_stops": False, "direction": "short"}),
]


@pytest.mark.parametrize(("strategy", "params", "settings"), CASES)
def test_metrics_match_empyrical_and_pandas_on_sp500(sp500, strategy, params, settings):
    r = backtest(
        strategy, sp500, params, fees_bps=10, slippage_bps=5, periods_per_year=PPY, **settings
    )
    assert r.metrics["trades"] > 10
    check(r, sp500, "SP500")


@pytest.mark.parametrize(("strategy", "params", "settings"), CASES[::2])
def test_metrics_per_symbol_with_missing_bars(synthetic, strategy, params, settings):
    r = backtest(strategy, synthetic, params, fees_bps=10, periods_per_year=PPY, **settings)
    assert (~synthetic.valid).any(axis=0).all(), "every symbol should miss some bars"
    for symbol in synthetic.symbols:
        check(r, synthetic, symbol)


def test_exposure_agrees_with_bars_held_in_the_trades_table(sp500):
    r = backtest("rsi_reversion", sp500, fees_bps=10)
    t = r.trades
    # A closed trade holds at the close of its entry bar up to the bar before its exit; an
    # open trade up to the last bar (a stop hit on the entry bar holds for no close at all).
    bars_in_market = t["bars_held"].sum() + (t["exit_reason"] == "open").sum()
    assert r.metrics["exposure_pct"] == pytest.approx(100 * bars_in_market / sp500.n_bars, rel=REL)


def test_periods_per_year_inferred_from_timestamps(sp500):
    r = backtest("ma_crossover", sp500)
    index = sp500.index
    years = (index[-1] - index[0]) / pd.Timedelta(days=365.25)
    ppy = (len(index) - 1) / years  # about 252 for daily stock data
    assert 250 < ppy < 254
    want = expected_metrics(
        own_equity(r, sp500, "SP500"), r.trades, r.positions["SP500"].to_numpy(), CASH, ppy
    )
    assert_metrics(r.metrics, want)


def test_sweep_reports_the_backtest_metrics(synthetic):
    grid = {"fast": [5, 10], "slow": [20, 50]}
    table = sweep("ma_crossover", synthetic, grid, fees_bps=10, slippage_bps=5)
    for _, row in table.iterrows():
        params = {"fast": row["fast"], "slow": row["slow"]}
        r = backtest("ma_crossover", synthetic, params, fees_bps=10, slippage_bps=5)
        got = r.metrics_for(row["symbol"])
        for key in METRICS:
            np.testing.assert_equal(row[key], got[key], err_msg=f"{params} {key}")


# ----------------------------------------------------------------- edge cases


def bars_from_closes(closes, opens=None) -> Bars:
    """Daily bars with the given closes; each open defaults to the close, high/low span both."""
    close = np.asarray(closes, dtype=np.float64)
    open_ = close.copy()
    for i, value in (opens or {}).items():
        open_[i] = value
    index = pd.date_range("2024-01-01", periods=close.shape[0], freq="D", tz="UTC")
    return Bars(
        ts_ns=index.as_unit("ns").asi8,
        symbols=("TEST",),
        open=open_,
        high=np.maximum(open_, close),
        low=np.minimum(open_, close),
        close=close,
        volume=np.ones_like(close),
        source="hand-built",
    )


# ma_crossover(fast=2, slow=5) on these closes: the fast SMA crosses above at bar 5 (entry
# signal, filled at bar 6's open) and under at bar 10 (exit signal, filled at bar 11's open).
CYCLE = [100.0] * 5 + [110.0] * 5 + [90.0] * 5
FAST_SLOW = {"fast": 2, "slow": 5}


def test_no_trades_gives_nan_ratios_and_zero_trades():
    bars = bars_from_closes([100.0] * 30)  # SMAs never cross
    r = backtest("ma_crossover", bars, FAST_SLOW, periods_per_year=PPY)
    m = r.metrics
    assert r.trades.empty
    assert m["trades"] == 0
    assert m["final_equity"] == CASH
    assert m["total_return_pct"] == 0.0
    assert m["cagr_pct"] == 0.0
    assert m["max_drawdown_pct"] == 0.0
    assert m["exposure_pct"] == 0.0
    assert m["volatility_pct"] == 0.0
    # No variation at all: Sharpe and Sortino are undefined, so are all trade statistics.
    for key in ("sharpe", "sortino", "win_rate_pct", "profit_factor", "avg_win", "avg_loss"):
        assert math.isnan(m[key]), key
    for key in ("largest_win", "largest_loss"):
        assert math.isnan(m[key]), key


def test_only_winning_trades_give_infinite_profit_factor():
    # Two round trips (fills at bars 6 -> 11 and 16 -> 26), each bought at 100, sold at 150.
    bars = bars_from_closes(CYCLE * 2, opens={6: 100.0, 11: 150.0, 16: 100.0, 26: 150.0})
    r = backtest("ma_crossover", bars, FAST_SLOW, periods_per_year=PPY)
    assert (r.trades["pnl"] > 0).all() and len(r.trades) == 2
    m = r.metrics
    assert m["profit_factor"] == math.inf
    assert m["win_rate_pct"] == 100.0
    assert math.isnan(m["avg_loss"]) and math.isnan(m["largest_loss"])
    want = expected_metrics(
        own_equity(r, bars, "TEST"), r.trades, r.positions["TEST"].to_numpy(), CASH, PPY
    )
    assert_metrics(m, want)


def test_total_loss():
    # Short 1000 units at 100 (bar 6), buy back at 200 (bar 11): equity exactly 0 after.
    bars = bars_from_closes(CYCLE, opens={6: 100.0, 11: 200.0})
    r = backtest("ma_crossover", bars, FAST_SLOW, direction="short", periods_per_year=PPY)
    m = r.metrics
    assert m["final_equity"] == 0.0
    assert m["total_return_pct"] == -100.0
    assert m["cagr_pct"] == -100.0
    assert m["max_drawdown_pct"] == 100.0
    assert m["trades"] == 1
    assert m["win_rate_pct"] == 0.0
    assert m["profit_factor"] == 0.0
    assert m["avg_loss"] == m["largest_loss"] == -CASH
    assert math.isnan(m["avg_win"]) and math.isnan(m["largest_win"])
    # Once equity is 0 nothing is at stake: the kernel counts later returns as 0, not 0/0.
    equity = own_equity(r, bars, "TEST")
    with np.errstate(invalid="ignore"):
        returns = bar_returns(equity, CASH)
    returns[np.r_[False, equity[:-1] == 0.0]] = 0.0
    assert m["sharpe"] == pytest.approx(empyrical.sharpe_ratio(returns, annualization=PPY), rel=REL)
    assert m["sortino"] == pytest.approx(
        empyrical.sortino_ratio(returns, annualization=PPY), rel=REL
    )
    # No new position once the equity is gone.
    assert len(r.trades) == 1


def test_one_implementation_serves_kernel_equity_live_and_monte_carlo(sp500):
    # Each path used to compute these statistics its own way (numpy passes in equity_metrics,
    # numpy sums in the live store, its own loop in the Monte Carlo kernel); they now run the
    # fill kernel's helpers, so the first three agree exactly.
    from live.store.performance import compute_performance
    from quantshift.engine.metrics import EQUITY_METRICS, equity_metrics, trade_metrics
    from research.montecarlo_nb import path_metrics_nb

    r = backtest("ma_crossover", sp500, {"fast": 10, "slow": 50}, fees_bps=2.0,
                 periods_per_year=PPY)  # fmt: skip
    m = r.metrics
    equity = r.equity.iloc[:, 0].to_numpy()
    curve = equity_metrics(equity, CASH, PPY)
    assert curve == {k: m[k] for k in EQUITY_METRICS}
    pnl = r.trades.loc[r.trades["exit_reason"] != "open", "pnl"].to_numpy()
    trades = trade_metrics(pnl)
    assert m["trades"] == trades["trades"] > 3
    for key in ("win_rate_pct", "profit_factor", "avg_win", "avg_loss", "largest_win",
                "largest_loss"):  # fmt: skip
        assert trades[key] == m[key], key
    live = compute_performance(pnl, np.r_[CASH, equity], PPY)
    for key in ("win_rate_pct", "profit_factor", "avg_win", "largest_loss", "sharpe",
                "max_drawdown_pct"):  # fmt: skip
        assert live[key] == m[key], key
    # Monte Carlo compounds returns (wealth from 1.0) and takes a two-pass deviation, so it
    # agrees to rounding.
    returns = bar_returns(equity, CASH)
    wealth, drawdown, cagr, sharpe = path_metrics_nb(
        returns, len(equity) / PPY, math.sqrt(PPY), np.empty(0)
    )
    assert wealth * CASH == pytest.approx(m["final_equity"], rel=1e-12)
    assert drawdown == pytest.approx(m["max_drawdown_pct"], rel=1e-12)
    assert cagr == pytest.approx(m["cagr_pct"], rel=1e-12)
    assert sharpe == pytest.approx(m["sharpe"], rel=1e-12)
