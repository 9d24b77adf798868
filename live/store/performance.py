"""Per-sleeve performance from stored trades and equity snapshots, by the backtest's rules.

Trade statistics, Sharpe and drawdown come from ``quantshift.engine.metrics``' helpers.
"""

from __future__ import annotations

import math

import numpy as np

PERFORMANCE_FIELDS = (
    "trades", "wins", "win_rate_pct", "pnl", "sharpe", "profit_factor", "avg_win", "avg_loss",
    "largest_win", "largest_loss", "max_drawdown_pct", "current_drawdown_pct",
)  # fmt: skip


def compute_performance(pnl: np.ndarray, equity: np.ndarray, periods_per_year: float) -> dict:
    """Return :data:`PERFORMANCE_FIELDS` of one sleeve.

    Parameters
    ----------
    pnl : ndarray
        Net P&L of each closed trade (quote currency).
    equity : ndarray
        The sleeve's equity snapshots in time order, one per bar; the first is the base the
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
    # The engine's metric helpers (a numba import, so only when needed).
    from quantshift.engine.metrics import equity_metrics, trade_metrics

    pnl = np.asarray(pnl, dtype=np.float64)
    equity = np.asarray(equity, dtype=np.float64)
    out = dict.fromkeys(PERFORMANCE_FIELDS, math.nan)
    out.update(trade_metrics(pnl))
    out["pnl"] = float(pnl.sum())
    if equity.shape[0] >= 2:
        metrics = equity_metrics(equity[1:], float(equity[0]), periods_per_year)
        out["sharpe"] = metrics["sharpe"]
        out["max_drawdown_pct"] = metrics["max_drawdown_pct"]
    elif equity.shape[0] == 1:
        out["max_drawdown_pct"] = 0.0
    if equity.shape[0] >= 1:
        peak = float(equity.max())
        out["current_drawdown_pct"] = 100.0 * (1.0 - float(equity[-1]) / peak) if peak > 0 else 0.0
    return out
