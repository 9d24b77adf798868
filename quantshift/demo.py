"""The quickstart demo: seed strategies and an MA-crossover sweep on real S&P 500 data.

Runs on embedded defaults only (no services, keys or network) and writes its plots to a folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from quantshift.data import load_bars
from quantshift.engine import backtest, sweep
from quantshift.engine.plotting import plot_sweep_heatmap, pyplot
from quantshift.report import SWEEP_COLUMNS, console, frame_table
from quantshift.strategies import list_strategies

DEMO_COSTS = {"fees_bps": 1.0, "slippage_bps": 2.0}
DEMO_GRID = {"fast": range(2, 51), "slow": range(10, 201, 2)}


def run_demo(
    data: str = "builtin:sp500", out_dir: str | Path = "out/demo", quiet: bool = False
) -> dict[str, Any]:
    """Backtest every registered strategy, sweep MA crossover, print a report, write plots.

    Returns
    -------
    dict
        The numbers shown: per-strategy metrics, the sweep's best rows and the plot paths.
    """
    import pandas as pd

    out = console()
    show = (lambda *a: None) if quiet else out.print
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bars = load_bars(data)
    if bars.n_symbols != 1:
        bars = bars.select(bars.symbols[0])
    symbol = bars.symbols[0]
    first, last = bars.index[0], bars.index[-1]
    show(
        f"[bold]QuantShift demo[/bold]: {bars.n_bars:,} daily bars of {symbol} "
        f"({first:%Y-%m-%d} .. {last:%Y-%m-%d}) from {bars.source}; costs "
        f"{DEMO_COSTS['fees_bps']:g} bps fees + {DEMO_COSTS['slippage_bps']:g} bps slippage, "
        "fills at the next bar's open, all-in sizing."
    )

    rows, plots = [], {}
    close = bars.close[:, 0]
    hold = close[-1] / bars.open[1, 0] - 1.0
    hold_dd = 1.0 - np.min(close / np.maximum.accumulate(close))
    for strat in list_strategies():
        started = time.perf_counter()
        result = backtest(strat, bars, **DEMO_COSTS)
        m = result.metrics
        rows.append({"strategy": strat.name, **m, "seconds": time.perf_counter() - started})
        plots[strat.name] = str(out_dir / f"{strat.name}.png")
        fig = result.plot(plots[strat.name])
        pyplot().close(fig)
    table = pd.DataFrame(rows)
    show(
        frame_table(
            table,
            "seed strategies, default parameters",
            [
                "strategy",
                "trades",
                "total_return_pct",
                "cagr_pct",
                "sharpe",
                "sortino",
                "max_drawdown_pct",
                "win_rate_pct",
                "profit_factor",
                "exposure_pct",
            ],
        )
    )
    show(
        f"for reference, buy and hold: total return {100 * hold:.1f}%, "
        f"max drawdown {100 * hold_dd:.1f}%"
    )

    started = time.perf_counter()
    grid = sweep("ma_crossover", bars, DEMO_GRID, progress=not quiet, **DEMO_COSTS)
    sweep_seconds = time.perf_counter() - started
    ranked = grid.sort_values("sharpe", ascending=False)
    show(
        frame_table(
            ranked.head(10),
            f"ma_crossover sweep: top 10 of {len(grid):,} parameter "
            f"sets by Sharpe ({sweep_seconds:.2f} s)",
            ["fast", "slow", *SWEEP_COLUMNS],
        )
    )
    best = ranked.iloc[0]
    best_params = {"fast": int(best["fast"]), "slow": int(best["slow"])}
    best_result = backtest("ma_crossover", bars, best_params, **DEMO_COSTS)
    plots["ma_crossover_best"] = str(out_dir / "ma_crossover_best.png")
    pyplot().close(best_result.plot(plots["ma_crossover_best"]))
    plots["ma_crossover_sweep"] = str(out_dir / "ma_crossover_sweep_sharpe.png")
    pyplot().close(plot_sweep_heatmap(grid, "fast", "slow", "sharpe", plots["ma_crossover_sweep"]))
    show(
        f"the best of {len(grid):,} in-sample sets is an optimistic estimate: judge it out of "
        "sample (walk-forward) and with the deflated Sharpe ratio before trusting it."
    )
    show("plots: " + ", ".join(plots.values()))
    return {
        "data": {
            "source": bars.source,
            "symbol": symbol,
            "bars": bars.n_bars,
            "first": first.isoformat(),
            "last": last.isoformat(),
        },
        "costs": DEMO_COSTS,
        "strategies": rows,
        "buy_and_hold": {"total_return_pct": 100 * hold, "max_drawdown_pct": 100 * hold_dd},
        "sweep": {
            "strategy": "ma_crossover",
            "evaluated": len(grid),
            "seconds": sweep_seconds,
            "best": {
                **best_params,
                **{
                    k: float(best[k])
                    for k in ("sharpe", "total_return_pct", "max_drawdown_pct", "trades")
                },
            },
        },
        "plots": plots,
    }
