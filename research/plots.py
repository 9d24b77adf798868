"""Every research plot: equity and drawdown of any curve, the walk-forward, the parameter
heatmap, an Optuna search's history or Pareto front, the Monte Carlo fan and the PBO logits.

matplotlib comes through quantshift's lazy, display-aware import; every function returns the
figure and saves it when given a path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from quantshift.engine.plotting import plot_heatmap, pyplot, save_figure
from quantshift.errors import ConfigError


def plot_curve(equity: pd.Series, initial: float, title: str, path: str | Path | None = None):
    """Plot an equity curve over its drawdown from the running peak (the start counts)."""
    plt = pyplot()
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
    return save_figure(fig, path)


def plot_walk_forward(result, path: str | Path | None = None):
    """Stitched out-of-sample equity with test windows shaded, drawdown, and the parameters each
    fold chose (normalised to their range across folds, so several fit on one axis)."""
    plt = pyplot()
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
    return save_figure(fig, path)


def plot_parameter_heatmap(
    ledger_frame: pd.DataFrame, x: str, y: str, metric: str, path: str | Path | None = None
):
    """Mean ``metric`` of completed trials over two parameters (binned when continuous)."""
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
    title = f"{metric} by {x} and {y} ({len(rows)} completed trials)"
    return plot_heatmap(grid, metric, title, path)


def _mid(interval) -> float:
    return float(interval.mid)


def plot_optimization(result, path: str | Path | None = None, *, min_trades: int = 0):
    """Plot a search's history (one objective: each trial and the best so far) or its Pareto
    front (two objectives) from an :class:`~research.optimize.OptimizeResult`.

    A trial with fewer than ``min_trades`` trades is drawn apart and never becomes the best so
    far: the study cannot choose it."""
    if len(result.objectives) > 2:
        raise ConfigError("plot shows one objective's history or a two-objective front")
    plt = pyplot()
    frame = result.ledger.frame
    # A shared ledger may hold other studies (walk-forward folds): plot this one only.
    done = frame[(frame["state"] == "complete") & (frame["study"] == result.study_name)]
    done = done.sort_values("trial")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    if len(result.objectives) == 1:
        values = done["value_0"].to_numpy(dtype=float)
        feasible = done["trades"].to_numpy() >= min_trades
        # fmax/fmin skip NaN: the best so far stays on the last feasible best.
        accumulate = np.fmax if result.directions[0] == "maximize" else np.fmin
        best = accumulate.accumulate(np.where(feasible, values, np.nan))
        ax.scatter(
            done["trial"][feasible], values[feasible], s=12, color="#1f4e79", label="complete trial"
        )
        if not feasible.all():
            ax.scatter(
                done["trial"][~feasible], values[~feasible], s=12, marker="x", color="#9a9a9a",
                label=f"fewer than {min_trades} trades (not eligible)",
            )  # fmt: skip
        ax.step(done["trial"], best, where="post", color="#d62728", label="best eligible so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(result.objectives[0])
        ax.set_title(f"{result.study_name}: optimisation history")
    else:
        x, y = result.objectives
        ax.scatter(done["value_0"], done["value_1"], s=12, color="#9fb4c7", label="trial")
        front = result.pareto.sort_values(x)
        ax.plot(front[x], front[y], "o-", color="#d62728", ms=4, label="Pareto front")
        ax.set_xlabel(f"{x} ({result.directions[0]})")
        ax.set_ylabel(f"{y} ({result.directions[1]})")
        ax.set_title(f"{result.study_name}: Pareto front")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_monte_carlo(result, path: str | Path | None = None):
    """Plot a :class:`~research.montecarlo.MonteCarloResult`: the wealth fan over histograms
    of max drawdown and CAGR (see its ``plot``)."""

    plt = pyplot()
    fig = plt.figure(figsize=(11, 7.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 2])
    ax_fan = fig.add_subplot(grid[0, :])
    steps = np.arange(result.wealth_quantiles.shape[1])
    q = result.wealth_quantiles
    ax_fan.fill_between(steps, q[0], q[4], color="#9ecae1", alpha=0.6, label="5-95%")
    ax_fan.fill_between(steps, q[1], q[3], color="#4292c6", alpha=0.6, label="25-75%")
    ax_fan.plot(steps, q[2], color="#08306b", lw=1.2, label="median")
    ax_fan.plot(steps, result.original_wealth, color="#d62728", lw=1.0, label="original")
    ax_fan.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax_fan.set_xlabel(result.step_unit)
    ax_fan.set_ylabel("wealth (start 1.0)")
    ax_fan.set_title(
        f"Monte Carlo {result.method}: {result.n_paths:,} paths "
        f"(quantiles from {result.fan_paths:,}), seed {result.seed}"
    )
    ax_fan.legend(loc="upper left", fontsize=8)
    if np.isfinite(result.cagr_pct).any():
        second = ("cagr_pct", "CAGR (%)")
    else:
        second = ("final_wealth", "final wealth (no time span for CAGR)")
    for col, (name, label) in enumerate((("max_drawdown_pct", "max drawdown (%)"), second)):
        ax = fig.add_subplot(grid[1, col])
        values = getattr(result, name)
        values = values[np.isfinite(values)]
        ax.set_xlabel(label)
        # Reordering trades keeps their product: CAGR and final wealth are then one value,
        # and a histogram of rounding noise would only mislead.
        if np.ptp(values) <= 1e-9 * max(1.0, abs(float(values.mean()))):
            ax.text(0.5, 0.5, f"{values[0]:.4g} on every path", ha="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ax.hist(values, bins=50, color="#6baed6", edgecolor="white")
        ax.axvline(result.original[name], color="#d62728", lw=1.5, label="original")
        if name == "max_drawdown_pct":
            ax.axvline(result.ruin_drawdown_pct, color="black", lw=1.0, ls=":", label="ruin")
        ax.set_ylabel("paths")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_pbo(result, path: str | Path | None = None):
    """Plot a :class:`~research.stats.PBOResult`: the rank-logit histogram and the in-sample
    vs out-of-sample degradation scatter (built without pyplot: any backend works)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    hist, scatter = fig.subplots(1, 2)
    hist.hist(result.logits, bins=min(50, max(10, result.n_combinations // 20)), color="tab:blue")
    hist.axvline(0.0, color="black", linewidth=1)
    hist.set(
        title=f"Rank logits (PBO = {result.pbo:.3f})",
        xlabel="logit of out-of-sample relative rank",
        ylabel="combinations",
    )
    scatter.scatter(result.is_performance, result.oos_performance, s=8, alpha=0.5)
    if np.isfinite(result.degradation_slope):
        xs = np.linspace(result.is_performance.min(), result.is_performance.max(), 2)
        scatter.plot(xs, result.degradation_intercept + result.degradation_slope * xs, "r-")
    scatter.axhline(0.0, color="black", linewidth=1)
    scatter.set(
        title=(
            f"Degradation (slope {result.degradation_slope:.3f}, "
            f"P[OOS < 0] = {result.prob_oos_loss:.3f})"
        ),
        xlabel="in-sample performance of the selected column",
        ylabel="out-of-sample performance",
    )
    return save_figure(fig, path)
