"""The data the status page shows: ``live status`` plus open orders, recent trades and the equity
curve with its drawdown, as one JSON-ready dict (served at ``/api/status``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from live.status import gather_status
from live.store.performance import compute_performance

RECENT_TRADES = 20
CHART_POINTS = 500  # more points than a page is wide add bytes, not information


def dashboard_status(cfg, store) -> dict[str, Any]:
    """Return what the status page shows: :func:`live.status.gather_status` (same arguments)
    plus more of the store.

    Returns
    -------
    dict
        The status plus ``open_order_list`` (intents not yet final),
        ``trades_total``, ``recent_trades`` (the latest :data:`RECENT_TRADES`, newest first),
        ``equity_chart`` (``ts_ns``, ``equity``, ``drawdown_pct`` thinned to at most
        :data:`CHART_POINTS`) and ``drawdown`` (``max_pct`` and ``current_pct`` of the
        portfolio, by the same rules as the per-sleeve performance). NaN and infinities
        are None: JSON has no NaN, and a browser's ``JSON.parse`` rejects Python's.
    """
    info = gather_status(cfg, store)
    info["open_order_list"] = [
        {k: getattr(i, k) for k in ("client_order_id", "sleeve", "symbol", "side", "qty",
                                    "order_type", "state", "bar_ts_ns")}
        for i in store.intents(open_only=True)
    ]  # fmt: skip
    trades = store.trades()
    info["trades_total"] = len(trades)
    info["recent_trades"] = [t.to_dict() for t in reversed(trades[-RECENT_TRADES:])]
    curve = store.equity_curve()
    equity = np.array([s.equity for s in curve], dtype=np.float64)
    ts_ns = np.array([s.ts_ns for s in curve], dtype=np.int64)
    # Only the drawdowns are used, which do not depend on the annualisation.
    performance = compute_performance(np.empty(0), equity, periods_per_year=252.0)
    info["drawdown"] = {
        "max_pct": performance["max_drawdown_pct"],
        "current_pct": performance["current_drawdown_pct"],
    }
    info["equity_chart"] = _chart(ts_ns, equity)
    return _json_safe(info)


def _chart(ts_ns: np.ndarray, equity: np.ndarray) -> dict[str, list]:
    if equity.size == 0:
        return {"ts_ns": [], "equity": [], "drawdown_pct": []}
    peak = np.maximum.accumulate(equity)
    drawdown_pct = np.where(peak > 0, 100.0 * (1.0 - equity / peak), 0.0)
    # Thin evenly but always keep the last point: it is the value the page prints.
    keep = np.unique(np.linspace(0, equity.size - 1, min(equity.size, CHART_POINTS)).astype(int))
    return {
        "ts_ns": ts_ns[keep].tolist(),
        "equity": equity[keep].tolist(),
        "drawdown_pct": drawdown_pct[keep].tolist(),
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
