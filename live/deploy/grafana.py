"""The Grafana dashboards, written as code: ``python -m live.deploy.grafana`` regenerates the
provisioning JSON under ``live/deploy/grafana/dashboards``; a test checks it is up to date."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DASHBOARDS_DIR = Path(__file__).resolve().parent / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
LEADER = "and on (job, instance) quantshift_live_leader == 1"
"""Appended to a trading series: the leader's figures only (a standby's are stale)."""
NS = "quantshift_live"


@dataclass(frozen=True)
class Panel:
    """One panel: a title, its queries as (PromQL, legend), how to draw it, and its unit."""

    title: str
    queries: tuple[tuple[str, str], ...]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""


TRADING = (
    Panel(
        "Portfolio equity",
        ((f"{NS}_portfolio_value {LEADER}", "{{job}}"),),
        unit="currencyUSD",
        description="Equity of the portfolio at the last closes, as the leader decided it.",
    ),
    Panel(
        "P&L of the day",
        ((f"{NS}_daily_pnl {LEADER}", "{{job}}"),),
        unit="currencyUSD",
    ),
    Panel(
        "Equity per sleeve",
        ((f"{NS}_sleeve_equity {LEADER}", "{{sleeve}}"),),
        unit="currencyUSD",
    ),
    Panel(
        "Sleeve P&L over 24 hours",
        ((f"delta({NS}_sleeve_equity[1d]) {LEADER}", "{{sleeve}}"),),
        kind="bargauge",
        unit="currencyUSD",
    ),
    Panel(
        "Positions",
        ((f"{NS}_position_units != 0 {LEADER}", "{{sleeve}} {{symbol}}"),),
        kind="table",
        description="Open positions (signed units) of each sleeve and symbol.",
    ),
    Panel(
        "Open positions",
        ((f"{NS}_open_positions {LEADER}", "{{job}}"),),
        kind="stat",
    ),
    Panel(
        "Orders by outcome",
        (
            (
                f"sum by (job, outcome) (increase({NS}_orders_total[$__rate_interval]))",
                "{{outcome}}",
            ),
        ),
        description="submitted, filled, rejected, unknown (ambiguous answer), blocked_by_guard.",
    ),
    Panel(
        "Fills and signals per sleeve",
        (
            (
                f'sum by (sleeve) (increase({NS}_orders_total{{outcome="filled"}}[1h]))',
                "{{sleeve}} fills",
            ),
            (f"sum by (sleeve) (increase({NS}_signals_total[1h]))", "{{sleeve}} signals"),
        ),
    ),
    Panel(
        "Drawdown and daily loss against the breakers",
        (
            (f"{NS}_drawdown_pct {LEADER}", "drawdown"),
            (f"{NS}_daily_loss_pct {LEADER}", "daily loss"),
            (f"{NS}_breaker_limit_pct {LEADER}", "limit {{breaker}}"),
        ),
        unit="percent",
        width=24,
    ),
    Panel(
        "Drift from the backtest",
        (
            (f"sum by (job, sleeve) ({NS}_drift_pct {LEADER})", "{{sleeve}} closed trades"),
            (f"{NS}_drift_equity_pct {LEADER}", "portfolio equity"),
        ),
        unit="percent",
        description="Live minus the backtest of the same bars: P&L of the closed trades per "
        "sleeve (percent of the starting cash) and portfolio equity (percent of the "
        "backtest's). `live divergence` attributes it trade by trade.",
    ),
    Panel(
        "Realised slippage against the assumed (bps)",
        (
            *(
                (
                    f"histogram_quantile({q}, sum by (sleeve, le) "
                    f"(increase({NS}_fill_slippage_bps_bucket[1h])))",
                    f"{{{{sleeve}}}} p{round(q * 100)}",
                )
                for q in (0.5, 0.9)
            ),
            (f"max by (job) ({NS}_assumed_slippage_bps)", "assumed"),
        ),
        description="Fills against the open after their decision over the last hour, "
        "positive is worse, against the slippage the backtest assumes.",
    ),
)

OPERATIONS = (
    Panel(
        "Leader",
        ((f"{NS}_leader", "{{instance}}"),),
        kind="stat",
        description="1 on the host holding the lease (LIVE), 0 on the standby.",
    ),
    Panel("Epoch", ((f"{NS}_epoch", "{{instance}}"),), kind="stat"),
    Panel(
        "Failovers (terms won)",
        ((f"sum by (job) (increase({NS}_leader_terms_total[1h]))", "{{job}}"),),
    ),
    Panel(
        "Ready",
        ((f"{NS}_ready", "{{instance}}"), ("up", "scraped {{instance}}")),
        description="Feed warm and store reachable; up is Prometheus's own scrape status.",
    ),
    Panel(
        "Decision latency",
        tuple(
            (
                f"histogram_quantile({q}, sum by (job, le) "
                f"(rate({NS}_cycle_duration_seconds_bucket[$__rate_interval])))",
                f"p{round(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ),
        unit="s",
        description="Bars in to state persisted; the goal is 20 ms.",
    ),
    Panel(
        "Heartbeat age",
        ((f"time() - {NS}_heartbeat_timestamp_seconds", "{{instance}}"),),
        unit="s",
    ),
    Panel("HALT active", ((f"max by (job) ({NS}_halt_active)", "{{job}}"),), kind="stat"),
    Panel(
        "HALTs by reason (24 hours)",
        ((f"sum by (reason) (increase({NS}_halts_total[1d])) > 0", "{{reason}}"),),
        kind="bargauge",
    ),
    Panel(
        "Data age (traded intervals)",
        ((f"{NS}_data_age_intervals {LEADER}", "{{job}}"),),
        width=24,
    ),
)

DASHBOARDS = {
    "quantshift-trading": ("QuantShift live: trading", TRADING),
    "quantshift-operations": ("QuantShift live: operations", OPERATIONS),
}


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    instant = panel.kind in ("table", "stat", "bargauge")
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "instant": instant,
                "range": not instant,
                **({"format": "table"} if panel.kind == "table" else {}),
            }
            for i, (expr, legend) in enumerate(panel.queries)
        ],
    }


def dashboard(uid: str) -> dict:
    """The dashboard ``uid`` as Grafana's provisioning JSON."""
    title, panels = DASHBOARDS[uid]
    out, x, y = [], 0, 0
    for panel_id, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y = 0, y + panel.height
        out.append(_panel(panel, panel_id, x, y))
        x += panel.width
    return {
        "uid": uid,
        "title": title,
        "tags": ["quantshift"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                }
            ]
        },
        "panels": out,
    }


def expressions() -> list[str]:
    """Every PromQL expression of every dashboard."""
    return [expr for _, panels in DASHBOARDS.values() for p in panels for expr, _ in p.queries]


def render(uid: str) -> str:
    """The file text of dashboard ``uid``."""
    return json.dumps(dashboard(uid), indent=2) + "\n"


def write(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    """Write every dashboard's JSON into ``directory``; return the paths."""
    paths = []
    for uid in DASHBOARDS:
        path = Path(directory) / f"{uid}.json"
        path.write_text(render(uid))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write():
        print(f"wrote {written}")
