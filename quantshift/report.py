"""Readable terminal reports of backtests and sweeps (rich tables), shared by the CLI and demo.

Numbers carry their units in the column names; nothing here computes a metric.
"""

from __future__ import annotations

import math
import os

import pandas as pd
from rich.console import Console
from rich.table import Table

from quantshift.engine.metrics import METRIC_DESCRIPTIONS
from quantshift.formatting import count, metric, percent


def fmt(name: str, value) -> str:
    """Format a metric value for display (NaN as '-', infinities as 'inf'); percentages
    without their sign, which the metric's name and the column header carry."""
    if isinstance(value, int | float) and not isinstance(value, bool) and name.endswith("_pct"):
        return percent(value, sign=False)
    return metric(name, value)


def backtest_table(result, symbol: str) -> Table:
    """Return a two-column table of one symbol's metrics with their meaning."""
    params = ", ".join(f"{k}={v:g}" for k, v in result.params.items())
    table = Table(title=f"{result.strategy} ({params}) on {symbol}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    for name, value in result.metrics_for(symbol).items():
        table.add_row(name, fmt(name, value), METRIC_DESCRIPTIONS[name])
    return table


def trades_table(trades: pd.DataFrame, last: int) -> Table:
    """Return a table of the last ``last`` trades."""
    shown = trades.tail(last)
    title = f"last {count(len(shown))} of {count(len(trades))} trades"
    table = Table(title=title, title_justify="left")
    for col in (
        "symbol",
        "direction",
        "entry_time",
        "exit_time",
        "entry_price",
        "exit_price",
        "units",
        "pnl",
        "return_pct",
        "exit_reason",
    ):
        table.add_column(col, justify="right" if col not in ("symbol", "exit_reason") else "left")
    for row in shown.itertuples(index=False):
        table.add_row(
            row.symbol,
            row.direction,
            f"{row.entry_time:%Y-%m-%d %H:%M}",
            f"{row.exit_time:%Y-%m-%d %H:%M}",
            f"{row.entry_price:,.4f}",
            f"{row.exit_price:,.4f}",
            f"{row.units:,.4f}",
            f"{row.pnl:,.2f}",
            f"{row.return_pct:,.2f}",
            row.exit_reason,
        )
    return table


# The metrics a ranked sweep table shows after the parameters.
SWEEP_COLUMNS = [
    "sharpe",
    "total_return_pct",
    "cagr_pct",
    "max_drawdown_pct",
    "trades",
    "win_rate_pct",
    "profit_factor",
]

# Short headers that keep their units, so wide tables fit a terminal.
HEADERS = {
    "final_equity": "final equity",
    "total_return_pct": "return %",
    "cagr_pct": "CAGR %",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "volatility_pct": "vol %",
    "max_drawdown_pct": "max DD %",
    "win_rate_pct": "win %",
    "profit_factor": "PF",
    "avg_win": "avg win",
    "avg_loss": "avg loss",
    "largest_win": "best",
    "largest_loss": "worst",
    "exposure_pct": "exposure %",
}


def frame_table(frame: pd.DataFrame, title: str, columns: list[str] | None = None) -> Table:
    """Return a table of a DataFrame's rows (e.g. the top rows of a sweep)."""
    columns = columns or list(frame.columns)
    table = Table(title=title, title_justify="left")
    for col in columns:
        text = not pd.api.types.is_numeric_dtype(frame[col])
        table.add_column(HEADERS.get(col, col), justify="left" if text else "right", no_wrap=text)
    for _, row in frame[columns].iterrows():
        table.add_row(
            *[fmt(c, row[c]) if c in METRIC_DESCRIPTIONS else _plain(row[c]) for c in columns]
        )
    return table


def _plain(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def console(stderr: bool = False) -> Console:
    """Return a console; output to a pipe or file is not squeezed into 80 columns, and a long
    line there (a path, a URL) stays one line for grep and scripts."""
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        width = None if "COLUMNS" in os.environ else 160
        out = Console(stderr=stderr, highlight=False, width=width, soft_wrap=True)
    return out
