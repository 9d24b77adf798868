"""A backtest result as a study reads it: the metrics and per-bar returns of all symbols
together, per-period Sharpe and moments, periods per year, and the equity figure."""

from __future__ import annotations

import math

import numpy as np

from quantshift.engine.backtest import BacktestResult
from research.stats import return_moments


def _combined(result: BacktestResult) -> dict[str, float]:
    """Metrics of the result: the single symbol's, or the summed equity of several."""
    if len(result.symbols) == 1:
        return result.metrics
    from quantshift.engine.metrics import equity_metrics

    equity = result.equity.sum(axis=1).to_numpy()
    out = equity_metrics(equity, result.config.cash * len(result.symbols), _ppy_of(result))
    out["trades"] = int(result.stats["trades"].sum())
    return out


def _returns(result: BacktestResult) -> np.ndarray:
    """Per-bar returns of all symbols' sleeves together (one symbol: its own returns)."""
    if len(result.symbols) == 1:
        return result.returns().iloc[:, 0].to_numpy()
    equity = result.equity.sum(axis=1).to_numpy()
    initial = result.config.cash * len(result.symbols)
    return equity / np.concatenate(([initial], equity[:-1])) - 1.0


def _per_period(returns: np.ndarray) -> tuple[float, float, float]:
    """Per-period Sharpe, skew and Pearson kurtosis of returns (NaN if they do not vary)."""
    if len(returns) < 3 or np.std(returns) == 0.0:
        return math.nan, math.nan, math.nan
    from research.stats import sharpe_ratio

    skew, kurt = return_moments(returns)
    return sharpe_ratio(returns), skew, kurt


def _ppy_of(result: BacktestResult) -> float:
    from quantshift.engine.metrics import infer_periods_per_year

    if result.config.periods_per_year is not None:
        return float(result.config.periods_per_year)
    return infer_periods_per_year(result.equity.index.asi8)


def _curve_figure(result: BacktestResult, title: str):
    from research.plots import plot_curve

    equity = result.equity.sum(axis=1)
    return plot_curve(equity, result.config.cash * len(result.symbols), title)
