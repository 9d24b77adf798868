"""Performance metrics accumulated inside the fill loop, from the equity path and closed trades.

Conventions (checked against empyrical): simple per-bar returns starting from the initial cash,
risk-free rate 0, sample standard deviation for Sharpe, downside deviation over all bars for
Sortino, CAGR over ``n_bars / periods_per_year`` years.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Running statistics of one simulation (float64 vector): closed trades and the equity path,
# accumulated bar by bar inside the fill loop so metrics need no second pass over the bars.
ST_CLOSED = 0
ST_WINS = 1
ST_GROSS_WIN = 2
ST_GROSS_LOSS = 3
ST_LARGEST_WIN = 4
ST_LARGEST_LOSS = 5
ST_WIN_RETURN_SUM = 6
ST_LOSS_RETURN_SUM = 7
ST_BARS_IN_MARKET = 8
ST_BARS = 9
ST_LAST_EQUITY = 10
ST_MAX_DRAWDOWN = 11
ST_RETURN_SUM = 12
ST_RETURN_SQ_SUM = 13
ST_DOWNSIDE_SQ = 14
ST_LEN = 15


METRICS = (
    "final_equity",
    "total_return_pct",
    "cagr_pct",
    "sharpe",
    "sortino",
    "volatility_pct",
    "max_drawdown_pct",
    "trades",
    "win_rate_pct",
    "profit_factor",
    "avg_win",
    "avg_loss",
    "largest_win",
    "largest_loss",
    "exposure_pct",
)
"""Metric names, in the column order of every metrics matrix."""

METRIC_DESCRIPTIONS = {
    "final_equity": "equity at the last bar, open position marked at the close (currency)",
    "total_return_pct": "final equity over initial cash minus one (%)",
    "cagr_pct": "compound annual growth rate (%)",
    "sharpe": "annualised Sharpe ratio of per-bar returns, risk-free rate 0",
    "sortino": "annualised Sortino ratio of per-bar returns, target 0",
    "volatility_pct": "annualised standard deviation of per-bar returns (%)",
    "max_drawdown_pct": "largest fall from a running equity peak (%)",
    "trades": "number of closed trades",
    "win_rate_pct": "closed trades with positive net P&L (%)",
    "profit_factor": "gross profit over gross loss of closed trades",
    "avg_win": "mean net P&L of winning trades (currency)",
    "avg_loss": "mean net P&L of losing trades, negative (currency)",
    "largest_win": "largest net P&L of a closed trade (currency)",
    "largest_loss": "most negative net P&L of a closed trade (currency)",
    "exposure_pct": "bars closing with an open position (%)",
}

N_METRICS = len(METRICS)
M_FINAL_EQUITY = 0
M_TOTAL_RETURN = 1
M_CAGR = 2
M_SHARPE = 3
M_SORTINO = 4
M_VOLATILITY = 5
M_MAX_DRAWDOWN = 6
M_TRADES = 7
M_WIN_RATE = 8
M_PROFIT_FACTOR = 9
M_AVG_WIN = 10
M_AVG_LOSS = 11
M_LARGEST_WIN = 12
M_LARGEST_LOSS = 13
M_EXPOSURE = 14


@njit
def equity_step_nb(equity, last, return_sum, return_sq_sum, downside_sq, peak, max_drawdown):
    """Add one bar's closing equity to the running return and drawdown sums; return them.

    Scalars in and out so the fill loop keeps them in registers (through the stats array this
    cost four times as much). Plain sums suffice: per-bar returns are small and their mean is
    far below their spread, so the variance loses no precision to cancellation.
    """
    r = equity / last - 1.0 if last != 0.0 else 0.0
    if r < 0.0:
        downside_sq += r * r
    if equity > peak:
        peak = equity
    elif peak > 0.0:
        max_drawdown = max(max_drawdown, 1.0 - equity / peak)
    return return_sum + r, return_sq_sum + r * r, downside_sq, peak, max_drawdown


@njit
def record_trade_nb(stats, pnl, ret):
    """Add one closed trade's net P&L (currency) and return (fraction of capital committed)."""
    stats[ST_CLOSED] += 1.0
    if pnl > 0.0:
        stats[ST_WINS] += 1.0
        stats[ST_GROSS_WIN] += pnl
        stats[ST_WIN_RETURN_SUM] += ret
        stats[ST_LARGEST_WIN] = max(stats[ST_LARGEST_WIN], pnl)
    else:
        stats[ST_GROSS_LOSS] -= pnl
        stats[ST_LOSS_RETURN_SUM] += ret
        stats[ST_LARGEST_LOSS] = min(stats[ST_LARGEST_LOSS], pnl)


@njit
def metrics_nb(stats, initial_cash, periods_per_year, out):
    """Fill ``out`` (length N_METRICS) from the statistics of a finished simulation."""
    n = stats[ST_BARS]
    out[:] = math.nan
    if n == 0:
        return
    final = stats[ST_LAST_EQUITY]
    mean = stats[ST_RETURN_SUM] / n
    out[M_FINAL_EQUITY] = final
    out[M_TOTAL_RETURN] = 100.0 * (final / initial_cash - 1.0)
    years = n / periods_per_year
    growth = final / initial_cash
    out[M_CAGR] = 100.0 * (growth ** (1.0 / years) - 1.0) if growth > 0.0 else -100.0
    root = math.sqrt(periods_per_year)
    if n > 1:
        variance = (stats[ST_RETURN_SQ_SUM] - stats[ST_RETURN_SUM] * mean) / (n - 1)
        std = math.sqrt(max(variance, 0.0))
        out[M_VOLATILITY] = 100.0 * std * root
        if std > 0.0:
            out[M_SHARPE] = mean / std * root
    down = math.sqrt(stats[ST_DOWNSIDE_SQ] / n)
    if down > 0.0:
        out[M_SORTINO] = mean / down * root
    elif mean > 0.0:
        out[M_SORTINO] = math.inf
    out[M_MAX_DRAWDOWN] = 100.0 * stats[ST_MAX_DRAWDOWN]
    closed = stats[ST_CLOSED]
    wins = stats[ST_WINS]
    losses = closed - wins
    out[M_TRADES] = closed
    if closed > 0:
        out[M_WIN_RATE] = 100.0 * wins / closed
        out[M_LARGEST_WIN] = stats[ST_LARGEST_WIN] if wins > 0 else math.nan
        out[M_LARGEST_LOSS] = stats[ST_LARGEST_LOSS] if losses > 0 else math.nan
        if wins > 0:
            out[M_AVG_WIN] = stats[ST_GROSS_WIN] / wins
        if losses > 0:
            out[M_AVG_LOSS] = -stats[ST_GROSS_LOSS] / losses
        if stats[ST_GROSS_LOSS] > 0.0:
            out[M_PROFIT_FACTOR] = stats[ST_GROSS_WIN] / stats[ST_GROSS_LOSS]
        elif stats[ST_GROSS_WIN] > 0.0:
            out[M_PROFIT_FACTOR] = math.inf
    out[M_EXPOSURE] = 100.0 * stats[ST_BARS_IN_MARKET] / n


def infer_periods_per_year(ts_ns: np.ndarray) -> float:
    """Return bars per year implied by a symbol's own timestamps (252-ish daily, 365 crypto)."""
    if ts_ns.shape[0] < 2:
        return 252.0
    years = (float(ts_ns[-1]) - float(ts_ns[0])) / (365.25 * 86400e9)
    if years <= 0.0:
        return 252.0
    return (ts_ns.shape[0] - 1) / years


EQUITY_METRICS = (
    "final_equity",
    "total_return_pct",
    "cagr_pct",
    "sharpe",
    "sortino",
    "volatility_pct",
    "max_drawdown_pct",
)
"""The metrics that follow from an equity curve alone (no trade list needed)."""


def equity_metrics(equity: np.ndarray, initial: float, periods_per_year: float) -> dict:
    """Return :data:`EQUITY_METRICS` of a per-bar equity curve, by the kernel's conventions.

    The same definitions as :func:`metrics_nb` (returns from ``initial``, sample standard
    deviation, downside deviation over all bars, CAGR over ``len(equity) / periods_per_year``
    years, the initial capital as the first peak), for curves the kernel did not produce: a
    stitched walk-forward, a portfolio of several symbols.
    """
    equity = np.asarray(equity, dtype=np.float64)
    out = dict.fromkeys(EQUITY_METRICS, math.nan)
    n = equity.shape[0]
    if n == 0:
        return out
    previous = np.concatenate(([initial], equity[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.where(previous != 0.0, equity / previous - 1.0, 0.0)
    final = float(equity[-1])
    growth = final / initial
    root = math.sqrt(periods_per_year)
    mean = float(returns.mean())
    out["final_equity"] = final
    out["total_return_pct"] = 100.0 * (growth - 1.0)
    out["cagr_pct"] = 100.0 * (growth ** (periods_per_year / n) - 1.0) if growth > 0.0 else -100.0
    if n > 1:
        std = float(returns.std(ddof=1))
        out["volatility_pct"] = 100.0 * std * root
        if std > 0.0:
            out["sharpe"] = mean / std * root
    down = math.sqrt(float(np.sum(np.minimum(returns, 0.0) ** 2)) / n)
    if down > 0.0:
        out["sortino"] = mean / down * root
    elif mean > 0.0:
        out["sortino"] = math.inf
    peak = np.maximum.accumulate(np.concatenate(([initial], equity)))[1:]
    out["max_drawdown_pct"] = 100.0 * float(np.max(1.0 - equity / peak))
    return out
