"""Performance metrics accumulated inside the fill loop, from the equity path and closed trades.

Conventions (checked against empyrical): simple per-bar returns starting from the initial cash,
risk-free rate 0, sample standard deviation for Sharpe, downside deviation over all bars for
Sortino, CAGR over ``n_bars / periods_per_year`` years.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from quantshift.engine.records import METRICS as METRICS  # re-exported: the public name
from quantshift.engine.records import stats_dt

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


@njit
def new_stats_nb():
    """Return zeroed running statistics: a one-element ``stats_dt`` array.

    A function of its own because numba's parallel pass cannot rewrite ``np.zeros`` of a
    structured dtype inside a ``prange`` kernel.
    """
    return np.zeros(1, stats_dt)


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
    """Add one closed trade's net P&L (currency) and return (fraction of capital committed)
    to ``stats`` (a ``stats_dt`` record)."""
    stats.closed_trades += 1.0
    if pnl > 0.0:
        stats.wins += 1.0
        stats.gross_win += pnl
        stats.win_return_sum += ret
        stats.largest_win = max(stats.largest_win, pnl)
    else:
        stats.gross_loss -= pnl
        stats.loss_return_sum += ret
        stats.largest_loss = min(stats.largest_loss, pnl)


@njit
def metrics_nb(stats, initial_cash, periods_per_year, out):
    """Write every field of ``out`` (a ``metrics_dt`` record) from the ``stats_dt`` record of
    a finished simulation."""
    nan = math.nan
    n = stats.bars
    final = total_return = cagr = sharpe = sortino = volatility = max_drawdown = nan
    trades = win_rate = profit_factor = avg_win = avg_loss = largest_win = largest_loss = nan
    exposure = nan
    if n > 0:
        final = stats.last_equity
        mean = stats.return_sum / n
        total_return = 100.0 * (final / initial_cash - 1.0)
        years = n / periods_per_year
        growth = final / initial_cash
        cagr = 100.0 * (growth ** (1.0 / years) - 1.0) if growth > 0.0 else -100.0
        root = math.sqrt(periods_per_year)
        if n > 1:
            variance = (stats.return_sq_sum - stats.return_sum * mean) / (n - 1)
            std = math.sqrt(max(variance, 0.0))
            volatility = 100.0 * std * root
            if std > 0.0:
                sharpe = mean / std * root
        down = math.sqrt(stats.downside_sq / n)
        if down > 0.0:
            sortino = mean / down * root
        elif mean > 0.0:
            sortino = math.inf
        max_drawdown = 100.0 * stats.max_drawdown
        closed = stats.closed_trades
        wins = stats.wins
        losses = closed - wins
        trades = closed
        if closed > 0:
            win_rate = 100.0 * wins / closed
            largest_win = stats.largest_win if wins > 0 else nan
            largest_loss = stats.largest_loss if losses > 0 else nan
            if wins > 0:
                avg_win = stats.gross_win / wins
            if losses > 0:
                avg_loss = -stats.gross_loss / losses
            if stats.gross_loss > 0.0:
                profit_factor = stats.gross_win / stats.gross_loss
            elif stats.gross_win > 0.0:
                profit_factor = math.inf
        exposure = 100.0 * stats.bars_in_market / n
    out.final_equity = final
    out.total_return_pct = total_return
    out.cagr_pct = cagr
    out.sharpe = sharpe
    out.sortino = sortino
    out.volatility_pct = volatility
    out.max_drawdown_pct = max_drawdown
    out.trades = trades
    out.win_rate_pct = win_rate
    out.profit_factor = profit_factor
    out.avg_win = avg_win
    out.avg_loss = avg_loss
    out.largest_win = largest_win
    out.largest_loss = largest_loss
    out.exposure_pct = exposure


def infer_periods_per_year(ts_ns: np.ndarray) -> float:
    """Return bars per year implied by a symbol's own timestamps (252-ish daily, 365 crypto)."""
    if ts_ns.shape[0] < 2:
        return 252.0
    years = (float(ts_ns[-1]) - float(ts_ns[0])) / (365.25 * 86400e9)
    if years <= 0.0:
        return 252.0
    return (ts_ns.shape[0] - 1) / years


EQUITY_METRICS = METRICS[: METRICS.index("max_drawdown_pct") + 1]
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
