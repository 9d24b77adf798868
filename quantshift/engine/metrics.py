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
def drawdown_step_nb(value, peak, max_drawdown):
    """Add one value (equity, wealth) to a running peak and largest fraction fallen from it."""
    if value > peak:
        peak = value
    elif peak > 0.0:
        max_drawdown = max(max_drawdown, 1.0 - value / peak)
    return peak, max_drawdown


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
    peak, max_drawdown = drawdown_step_nb(equity, peak, max_drawdown)
    return return_sum + r, return_sq_sum + r * r, downside_sq, peak, max_drawdown


@njit
def store_path_nb(stats, n, last_equity, return_sum, return_sq_sum, downside_sq, max_drawdown):
    """Write a finished equity path's running sums into ``stats`` (a ``stats_dt`` record)."""
    stats.bars = n
    stats.last_equity = last_equity
    stats.max_drawdown = max_drawdown
    stats.return_sum = return_sum
    stats.return_sq_sum = return_sq_sum
    stats.downside_sq = downside_sq


@njit
def equity_path_nb(equity, initial, stats):
    """Accumulate a per-bar equity curve starting from ``initial`` into ``stats``."""
    last = peak = initial
    return_sum = return_sq_sum = downside_sq = max_drawdown = 0.0
    for t in range(equity.shape[0]):
        return_sum, return_sq_sum, downside_sq, peak, max_drawdown = equity_step_nb(
            equity[t], last, return_sum, return_sq_sum, downside_sq, peak, max_drawdown
        )
        last = equity[t]
    store_path_nb(
        stats, equity.shape[0], last, return_sum, return_sq_sum, downside_sq, max_drawdown
    )


@njit
def curve_metrics_nb(equity, initial, periods_per_year):
    """Return the :data:`EQUITY_METRICS` of a per-bar equity curve starting from ``initial``."""
    stats = new_stats_nb()
    equity_path_nb(equity, initial, stats[0])
    return equity_metrics_nb(stats[0], initial, periods_per_year)


@njit
def pnl_metrics_nb(pnl):
    """Return (:func:`trade_metrics_nb` of closed trades' net P&L, their number of wins)."""
    stats = new_stats_nb()
    for k in range(pnl.shape[0]):
        record_trade_nb(stats[0], pnl[k], 0.0)
    return trade_metrics_nb(stats[0]), stats[0].wins


@njit
def annualisation_nb(periods_per_year):
    """Return the factor that annualises a per-period Sharpe or Sortino ratio."""
    return math.sqrt(periods_per_year)


@njit
def sharpe_nb(mean, std, factor):
    """Return the Sharpe ratio of returns with ``mean`` and sample ``std`` scaled by
    ``factor`` (:func:`annualisation_nb`, or 1 per trade); NaN without spread."""
    return mean / std * factor if std > 0.0 else math.nan


@njit
def sortino_nb(mean, downside_deviation, factor):
    """Return the Sortino ratio (target 0); inf for gains without a down period."""
    if downside_deviation > 0.0:
        return mean / downside_deviation * factor
    return math.inf if mean > 0.0 else math.nan


@njit
def cagr_pct_nb(growth, years):
    """Return the compound annual growth rate (%) of ``growth`` (final over initial) over
    ``years``; -100 once everything is lost, NaN without a time span."""
    if not years > 0.0:
        return math.nan
    return 100.0 * (growth ** (1.0 / years) - 1.0) if growth > 0.0 else -100.0


@njit
def equity_metrics_nb(stats, initial, periods_per_year):
    """Return the :data:`EQUITY_METRICS` of a finished path's ``stats`` as a tuple."""
    nan = math.nan
    n = stats.bars
    if n == 0:
        return nan, nan, nan, nan, nan, nan, nan
    final = stats.last_equity
    growth = final / initial
    mean = stats.return_sum / n
    factor = annualisation_nb(periods_per_year)
    sharpe = volatility = nan
    if n > 1:
        variance = (stats.return_sq_sum - stats.return_sum * mean) / (n - 1)
        std = math.sqrt(max(variance, 0.0))
        volatility = 100.0 * std * factor
        sharpe = sharpe_nb(mean, std, factor)
    return (
        final,
        100.0 * (growth - 1.0),
        cagr_pct_nb(growth, n / periods_per_year),
        sharpe,
        sortino_nb(mean, math.sqrt(stats.downside_sq / n), factor),
        volatility,
        100.0 * stats.max_drawdown,
    )


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
def trade_metrics_nb(stats):
    """Return ``(trades, win_rate_pct, profit_factor, avg_win, avg_loss, largest_win,
    largest_loss)`` of the closed trades in ``stats``; NaN where undefined."""
    nan = math.nan
    closed = stats.closed_trades
    wins = stats.wins
    losses = closed - wins
    if closed == 0:
        return closed, nan, nan, nan, nan, nan, nan
    profit_factor = nan
    if stats.gross_loss > 0.0:
        profit_factor = stats.gross_win / stats.gross_loss
    elif stats.gross_win > 0.0:
        profit_factor = math.inf
    return (
        closed,
        100.0 * wins / closed,
        profit_factor,
        stats.gross_win / wins if wins > 0 else nan,
        -stats.gross_loss / losses if losses > 0 else nan,
        stats.largest_win if wins > 0 else nan,
        stats.largest_loss if losses > 0 else nan,
    )


@njit
def metrics_nb(stats, initial_cash, periods_per_year, out):
    """Write every field of ``out`` (a ``metrics_dt`` record) from the ``stats_dt`` record of
    a finished simulation."""
    (
        out.final_equity,
        out.total_return_pct,
        out.cagr_pct,
        out.sharpe,
        out.sortino,
        out.volatility_pct,
        out.max_drawdown_pct,
    ) = equity_metrics_nb(stats, initial_cash, periods_per_year)
    if stats.bars == 0:
        trades = win_rate = profit_factor = avg_win = avg_loss = math.nan
        largest_win = largest_loss = exposure = math.nan
    else:
        trades, win_rate, profit_factor, avg_win, avg_loss, largest_win, largest_loss = (
            trade_metrics_nb(stats)
        )
        exposure = 100.0 * stats.bars_in_market / stats.bars
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
    """Return :data:`EQUITY_METRICS` of a per-bar equity curve, by the kernel's code.

    The fill loop's own helpers (returns from ``initial``, which is also the first peak) run
    over the curve, for curves the kernel did not produce: a stitched walk-forward, a
    portfolio of several symbols, a live strategy's equity snapshots.
    """
    values = _entry(_curve_metrics_entry)(
        np.ascontiguousarray(equity, dtype=np.float64), float(initial), float(periods_per_year)
    )
    return dict(zip(EQUITY_METRICS, values, strict=True))


def _curve_metrics_entry(equity, initial, periods_per_year):
    return curve_metrics_nb(equity, initial, periods_per_year)


def _pnl_metrics_entry(pnl):
    return pnl_metrics_nb(pnl)


def _entry(template):
    """The cached entry point of ``template`` (imported here: the compiler needs the core's
    digest, whose module imports the strategies, which import this one)."""
    from quantshift.engine.compile import entry_point

    return entry_point(template)


TRADE_METRICS = ("trades", "win_rate_pct", "profit_factor", "avg_win", "avg_loss",
                 "largest_win", "largest_loss")  # fmt: skip
"""The metrics that follow from closed trades' net P&L alone."""


def trade_metrics(pnl: np.ndarray) -> dict:
    """Return :data:`TRADE_METRICS` and ``wins`` of closed trades' net P&L, by the kernel's
    code (a win is P&L > 0; every other trade is a loss)."""
    values, wins = _entry(_pnl_metrics_entry)(np.ascontiguousarray(pnl, dtype=np.float64))
    out = dict(zip(TRADE_METRICS, values, strict=True))
    out["trades"] = int(out["trades"])
    out["wins"] = int(wins)
    return out
