"""The daily summary: equity, P&L, trades, per-sleeve numbers and HALTs of one UTC day."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

DAY_NS = 86_400 * 10**9


def summary_due(clock_utc: str, now_ns: int, last_day: str | None) -> str | None:
    """The UTC day ("YYYY-MM-DD") whose summary is due at ``now_ns`` (its ``clock_utc``
    "HH:MM" has passed and it was not written yet), or None."""
    now = datetime.fromtimestamp(now_ns / 1e9, UTC)
    hours, minutes = (int(part) for part in clock_utc.split(":"))
    day = now.strftime("%Y-%m-%d")
    due = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    return day if now >= due and day != last_day else None


def daily_summary(store, runner: str, day: str) -> tuple[str, str]:
    """Return the title and text of ``runner``'s summary for the UTC ``day``, from ``store``."""
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    lo = int(start.timestamp()) * 10**9
    hi = int((start + timedelta(days=1)).timestamp()) * 10**9
    status = store.status()
    trades = [t for t in store.trades() if lo <= t.exit_ts_ns < hi]
    halts = [h for h in store.halts() if lo <= h.ts_created_ns < hi]
    equity = "n/a" if status.equity is None else f"{status.equity.equity:,.2f}"
    lines = [
        f"equity {equity}, day P&L {_money(status.day_pnl)}, "
        f"realized P&L to date {_money(status.realized_pnl)}",
        f"trades closed today {len(trades)}, P&L {_money(sum(t.pnl for t in trades))}; "
        f"open positions {len(status.positions)}, open orders {status.open_orders}",
    ]
    for perf in status.performance:
        today = [t for t in trades if t.sleeve == perf.sleeve]
        lines.append(
            f"sleeve {perf.sleeve}: today {len(today)} trades, P&L "
            f"{_money(sum(t.pnl for t in today))}; to date {perf.trades} trades, "
            f"P&L {_money(perf.pnl)}, win rate {_number(perf.win_rate_pct)}%, "
            f"max drawdown {_number(perf.max_drawdown_pct)}%"
        )
    for halt in halts:
        state = "active" if halt.active else f"cleared by {halt.cleared_by}"
        lines.append(f"HALT by {halt.created_by}: {halt.reason} ({state})")
    if status.halt is not None and status.halt not in halts:
        lines.append(f"HALT still active since earlier: {status.halt.reason}")
    if not halts and status.halt is None:
        lines.append("no HALT")
    return f"{runner} on {day}", "\n".join(lines)


def _money(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+,.2f}"


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"
