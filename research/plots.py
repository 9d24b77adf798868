"""Research plots: walk-forward curve with its folds, equity and drawdown of any curve.

matplotlib comes through quantshift's lazy, display-aware import; every function returns the figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from quantshift.engine.plotting import _pyplot


def plot_curve(equity: pd.Series, initial: float, title: str, path: str | Path | None = None):
    """Plot an equity curve over its drawdown from the running peak (the start counts)."""
    plt = _pyplot()
    peak = np.maximum(equity.cummax().to_numpy(), initial)
    drawdown_pct = 100.0 * (1.0 - equity.to_numpy() / peak)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot(equity.index, equity.to_numpy(), color="tab:blue", lw=1.2)
    top.axhline(initial, color="grey", lw=0.8, ls="--")
    top.set_ylabel("equity")
    top.set_title(title)
    bottom.fill_between(equity.index, -drawdown_pct, 0.0, color="tab:red", alpha=0.4)
    bottom.set_ylabel("drawdown %")
    fig.tight_layout()
    return _save(fig, path)


def plot_walk_forward(result, path: str | Path | None = None):
    """Stitched out-of-sample equity with test windows shaded, drawdown, and the parameters each
    fold chose (normalised to their range across folds, so several fit on one axis)."""
    plt = _pyplot()
    equity = result.equity
    fig, (top, middle, bottom) = plt.subplots(
        3, 1, figsize=(11, 8), sharex=True, gridspec_kw={"height_ratios": [3, 1, 1.4]}
    )
    top.plot(equity.index, equity.to_numpy(), color="tab:blue", lw=1.2, label="out of sample")
    top.axhline(result.initial_capital, color="grey", lw=0.8, ls="--")
    for k, row in result.folds.iterrows():
        if k % 2 == 0:
            top.axvspan(row["test_start"], row["test_end"], color="tab:grey", alpha=0.12)
    metrics = result.metrics
    top.set_title(
        f"{result.strategy} walk-forward ({len(result.folds)} folds, {result.method}, "
        f"{result.objective}): OOS Sharpe {metrics['sharpe']:.2f}, "
        f"CAGR {metrics['cagr_pct']:.1f}%, max DD {metrics['max_drawdown_pct']:.1f}%"
    )
    top.set_ylabel("equity")
    peak = np.maximum(equity.cummax().to_numpy(), result.initial_capital)
    middle.fill_between(
        equity.index, -100.0 * (1.0 - equity.to_numpy() / peak), 0.0, color="tab:red", alpha=0.4
    )
    middle.set_ylabel("drawdown %")
    names = list(result.stability.index)
    for name in names:
        values = result.folds[name].astype(float)
        span = values.max() - values.min()
        scaled = (values - values.min()) / span if span > 0 else values * 0 + 0.5
        bottom.step(result.folds["test_start"], scaled, where="post", label=name)
    bottom.set_ylabel("chosen (scaled)")
    bottom.set_ylim(-0.05, 1.05)
    if names:
        bottom.legend(loc="upper left", fontsize=8, ncol=min(len(names), 4))
    fig.tight_layout()
    return _save(fig, path)


def plot_parameter_heatmap(
    ledger_frame: pd.DataFrame, x: str, y: str, metric: str, path: str | Path | None = None
):
    """Mean ``metric`` of completed trials over two parameters (binned when continuous)."""
    plt = _pyplot()
    rows = ledger_frame[ledger_frame["state"] == "complete"]
    if rows.empty:
        raise ValueError("no completed trials to plot")
    cut = {}
    for name in (x, y):
        values = rows[name]
        cut[name] = values if values.nunique() <= 30 else pd.cut(values, 20).map(_mid)
    grid = pd.DataFrame({x: cut[x], y: cut[y], metric: rows[metric]}).pivot_table(
        index=y, columns=x, values=metric, aggfunc="mean", observed=True
    )
    fig, ax = plt.subplots(figsize=(9, 6))
    image = ax.imshow(grid.to_numpy(dtype=float), origin="lower", aspect="auto", cmap="RdYlGn")
    ax.set_xticks(range(len(grid.columns)), [f"{v:g}" for v in grid.columns], rotation=90)
    ax.set_yticks(range(len(grid.index)), [f"{v:g}" for v in grid.index])
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{metric} by {x} and {y} ({len(rows)} completed trials)")
    fig.tight_layout()
    return _save(fig, path)


def _mid(interval) -> float:
    return float(interval.mid)


def _save(fig, path):
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig
