"""Plots of backtest results: equity with trades marked, and drawdown underneath.

matplotlib is imported lazily, with the non-interactive Agg backend when no display is set.
"""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """Return ``matplotlib.pyplot``, imported on first use, on the non-interactive Agg backend
    when no display is set (so plots save from servers and tests)."""
    import matplotlib

    if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_equity(result, symbol: str | None = None, path: str | Path | None = None):
    """Plot one symbol's equity curve (entries and exits marked) over its drawdown.

    Parameters
    ----------
    result : BacktestResult
    symbol : str, optional
        Which symbol; required when the backtest has several.
    path : str or Path, optional
        Save the figure there (format from the suffix, e.g. ``.png``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if symbol is None:
        if len(result.symbols) != 1:
            raise ValueError(f"name one symbol to plot: {', '.join(result.symbols)}")
        symbol = result.symbols[0]
    plt = pyplot()
    equity = result.equity[symbol]
    drawdown = result.drawdown_pct()[symbol]
    trades = result.trades[result.trades["symbol"] == symbol]
    fig, (ax_eq, ax_dd) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax_eq.plot(equity.index, equity.to_numpy(), lw=1.2, color="#1f4e79", label="equity")
    ax_eq.axhline(result.config.cash, color="grey", lw=0.8, ls="--", label="initial cash")
    closed = trades[trades["exit_reason"] != "open"]
    if len(trades):
        ax_eq.scatter(
            trades["entry_time"],
            equity.reindex(trades["entry_time"]).to_numpy(),
            marker="^",
            color="#2ca02c",
            s=18,
            label="entry",
            zorder=3,
        )
    if len(closed):
        ax_eq.scatter(
            closed["exit_time"],
            equity.reindex(closed["exit_time"]).to_numpy(),
            marker="v",
            color="#d62728",
            s=18,
            label="exit",
            zorder=3,
        )
    m = result.metrics_for(symbol)
    params = ", ".join(f"{k}={v:g}" for k, v in result.params.items())
    ax_eq.set_title(
        f"{result.strategy} on {symbol} ({params})\n"
        f"return {m['total_return_pct']:.1f}%, CAGR {m['cagr_pct']:.2f}%, "
        f"Sharpe {m['sharpe']:.2f}, max drawdown {m['max_drawdown_pct']:.1f}%, "
        f"{m['trades']} closed trades",
        fontsize=10,
    )
    ax_eq.set_ylabel("equity")
    ax_eq.legend(loc="upper left", fontsize=8)
    ax_eq.grid(alpha=0.3)
    ax_dd.fill_between(drawdown.index, -drawdown.to_numpy(), 0.0, color="#d62728", alpha=0.4)
    ax_dd.set_ylabel("drawdown %")
    ax_dd.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_sweep_heatmap(
    table, x: str, y: str, metric: str = "sharpe", path: str | Path | None = None
):
    """Plot a sweep metric over two parameters as a heatmap (mean over other parameters)."""
    grid = table.pivot_table(index=y, columns=x, values=metric, aggfunc="mean")
    return plot_heatmap(grid, metric, f"{metric} by {x} and {y}", path)


def plot_heatmap(grid, metric: str, title: str, path: str | Path | None = None):
    """Plot ``grid``, a DataFrame of ``metric`` whose index and columns are two parameters'
    values (named for the parameters), as a heatmap with at most 20 labels per axis."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    image = ax.imshow(grid.to_numpy(dtype=float), origin="lower", aspect="auto", cmap="RdYlGn")
    for axis, values in ((ax.xaxis, grid.columns), (ax.yaxis, grid.index)):
        ticks = range(0, len(values), max(1, -(-len(values) // 20)))
        axis.set_ticks(ticks, [f"{values[i]:g}" for i in ticks])
    ax.tick_params(axis="x", labelrotation=90)
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_xlabel(grid.columns.name)
    ax.set_ylabel(grid.index.name)
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path: str | Path | None, dpi: int = 110):
    """Save ``fig`` to ``path`` (format from the suffix; folders created) unless path is None;
    return the figure."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig
