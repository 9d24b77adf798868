"""Per-strategy performance from stored trades and equity snapshots, by the backtest's rules.

Trade statistics follow ``quantshift.engine.metrics``; Sharpe and drawdown use its equity_metrics.
"""

from __future__ import annotations

import math

import numpy as np

PERFORMANCE_FIELDS = (
    "trades", "wins", "win_rate_pct", "pnl", "sharpe", "profit_factor", "avg_win", "avg_loss",
    "largest_win", "largest_loss", "max_drawdown_pct", "current_drawdown_pct",
)  # fmt: skip


def compute_performance(pnl: np.ndarray, equity: np.ndarray, periods_per_year: float) -> dict:
    """Return :data:`PERFORMANCE_FIELDS` of one strategy.

    Parameters
    ----------
    pnl : ndarray
        Net P&L of each closed trade (quote currency).
    equity : ndarray
        The strategy's equity snapshots in time order, one per bar; the first is the base the
        first return is measured from.
    periods_per_year : float
        Snapshots per year, to annualise the Sharpe ratio (252 for daily equity bars).

    Returns
    -------
    dict
        Win: P&L > 0 (every other trade counts as a loss, as in the backtest kernel);
        ``avg_loss`` and ``largest_loss`` are negative; ``profit_factor`` is gross profit over
        gross loss (inf with no loss); ``sharpe`` the annualised mean over the sample standard
        deviation of per-snapshot returns; ``max_drawdown_pct`` the largest fall from a running
        peak and ``current_drawdown_pct`` the fall of the last snapshot from the peak, in %.
        NaN where undefined.
    """
    pnl = np.asarray(pnl, dtype=np.float64)
    equity = np.asarray(equity, dtype=np.float64)
    out = dict.fromkeys(PERFORMANCE_FIELDS, math.nan)
    win = pnl > 0.0
    n_trades, n_wins = int(pnl.shape[0]), int(win.sum())
    n_losses = n_trades - n_wins
    gross_win = float(pnl[win].sum())
    gross_loss = -float(pnl[~win].sum())
    out["trades"], out["wins"], out["pnl"] = n_trades, n_wins, float(pnl.sum())
    if n_trades:
        out["win_rate_pct"] = 100.0 * n_wins / n_trades
    if n_wins:
        out["avg_win"] = gross_win / n_wins
        out["largest_win"] = float(pnl[win].max())
    if n_losses:
        out["avg_loss"] = -gross_loss / n_losses
        out["largest_loss"] = float(pnl[~win].min())
    if gross_loss > 0.0:
        out["profit_factor"] = gross_win / gross_loss
    elif gross_win > 0.0:
        out["profit_factor"] = math.inf
    if equity.shape[0] >= 2:
        from quantshift.engine.metrics import equity_metrics  # numba import: only when needed

        metrics = equity_metrics(equity[1:], float(equity[0]), periods_per_year)
        out["sharpe"] = metrics["sharpe"]
        out["max_drawdown_pct"] = metrics["max_drawdown_pct"]
    elif equity.shape[0] == 1:
        out["max_drawdown_pct"] = 0.0
    if equity.shape[0] >= 1:
        peak = float(equity.max())
        out["current_drawdown_pct"] = 100.0 * (1.0 - float(equity[-1]) / peak) if peak > 0 else 0.0
    return out
