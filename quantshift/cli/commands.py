"""The top-level commands: ``init`` (a project of your own), ``backtest`` (one parameter set),
``sweep`` (a parameter grid in one pass, ranked) and ``demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from quantshift.cli.apps import app
from quantshift.cli.options import (
    CashOpt,
    DataOpt,
    DirectionOpt,
    FeesOpt,
    FillOpt,
    JsonOpt,
    RiskOpt,
    SizeOpt,
    SizingOpt,
    SlipOpt,
    StopsOpt,
    SymbolOpt,
    WholeOpt,
    check_output_dir,
    check_output_file,
    parse_assignments,
    parse_grid_axis,
    plot_paths,
    require_at_least,
)
from quantshift.errors import ConfigError


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="The new project's directory (new or empty).")],
) -> None:
    """Lay out a project of your own: strategies/, experiments/, live/, data/, pyproject.toml."""
    from quantshift.project import init_project

    written = init_project(directory)
    typer.echo(f"created project in {directory}: {', '.join(written)}")
    typer.echo(f"next: cd {directory} && quantshift strategies check donchian_breakout")


def _settings(cash, size, fees_bps, slippage_bps, fill, direction, sizing, risk, stops, whole):
    return dict(
        cash=cash,
        size=size,
        fees_bps=fees_bps,
        slippage_bps=slippage_bps,
        fill=fill,
        direction=direction,
        sizing=sizing,
        risk_per_trade=risk,
        use_stops=stops,
        whole_units=whole,
    )


@app.command()
def backtest(
    strategy: Annotated[
        str, typer.Argument(help="Strategy name (see `quantshift strategies list`).")
    ],
    data: DataOpt = "builtin:sp500",
    symbol: SymbolOpt = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE; repeatable.")
    ] = None,
    cash: CashOpt = 100_000.0,
    size: SizeOpt = 1.0,
    fees_bps: FeesOpt = 0.0,
    slippage_bps: SlipOpt = 0.0,
    fill: FillOpt = "next-open",
    direction: DirectionOpt = "long",
    sizing: SizingOpt = "fraction",
    risk: RiskOpt = 0.01,
    stops: StopsOpt = True,
    whole_units: WholeOpt = False,
    plot: Annotated[
        str | None,
        typer.Option(
            help="Write an equity/drawdown plot (PNG) to this file, or into this directory "
            "(existing, or written DIR/) as STRATEGY.png; several symbols get _SYMBOL after "
            "the name.",
        ),
    ] = None,
    trades: Annotated[int, typer.Option(help="How many recent trades to list.")] = 10,
    json_out: JsonOpt = False,
) -> None:
    """Backtest one parameter set and print its metrics and recent trades."""
    import quantshift as qs

    require_at_least("--trades", trades, 0)
    if plot is not None:
        check_output_file("--plot", plot_paths(plot, strategy, ["-"])[0], create_parents=True)
    result = qs.backtest(
        strategy,
        data,
        parse_assignments(param or [], "parameter"),
        symbol=symbol,
        **_settings(
            cash, size, fees_bps, slippage_bps, fill, direction, sizing, risk, stops, whole_units
        ),
    )
    written = []
    if plot is not None:
        for sym, target in zip(
            result.symbols, plot_paths(plot, result.strategy, result.symbols), strict=True
        ):
            result.plot(target, symbol=sym)
            written.append(target)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), default=str))
        return
    from quantshift.report import backtest_table, console, trades_table

    out = console()
    for sym in result.symbols:
        out.print(backtest_table(result, sym))
    if len(result.trades) and trades > 0:
        out.print(trades_table(result.trades, trades))
    for target in written:
        out.print(f"plot written to {target}")


@app.command()
def sweep(
    strategy: Annotated[str, typer.Argument(help="Strategy name.")],
    grid: Annotated[
        list[str],
        typer.Option(
            "--grid", "-g", help="NAME=START:STOP[:STEP] (inclusive) or NAME=A,B,C; repeatable."
        ),
    ],
    data: DataOpt = "builtin:sp500",
    symbol: SymbolOpt = None,
    top: Annotated[int, typer.Option(help="Rows to show, best first.")] = 10,
    max_sets: Annotated[
        int | None,
        typer.Option(
            help="Refuse a grid of more parameter sets than this (default "
            "$QUANTSHIFT_MAX_GRID_SETS or 1,000,000)."
        ),
    ] = None,
    rank_by: Annotated[str, typer.Option(help="Metric to rank by (descending).")] = "sharpe",
    cash: CashOpt = 100_000.0,
    size: SizeOpt = 1.0,
    fees_bps: FeesOpt = 0.0,
    slippage_bps: SlipOpt = 0.0,
    fill: FillOpt = "next-open",
    direction: DirectionOpt = "long",
    sizing: SizingOpt = "fraction",
    risk: RiskOpt = 0.01,
    stops: StopsOpt = True,
    whole_units: WholeOpt = False,
    csv: Annotated[Path | None, typer.Option(help="Write the full table to this CSV.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a parameter grid in one parallel pass and rank the results."""
    import quantshift as qs
    from quantshift.engine.metrics import METRICS
    from quantshift.engine.sweep import sweep_tags

    if rank_by not in METRICS:
        raise ConfigError(f"--rank-by {rank_by!r} is not a metric; metrics: {', '.join(METRICS)}")
    require_at_least("--top", top, 1)
    require_at_least("--max-sets", max_sets, 1)
    if csv is not None:
        check_output_file("--csv", csv)
    strat = qs.get_strategy(strategy)
    axes = {
        name: parse_grid_axis(strat, name, text)
        for name, text in parse_assignments(grid, "grid").items()
    }
    settings = _settings(
        cash, size, fees_bps, slippage_bps, fill, direction, sizing, risk, stops, whole_units
    )
    grid_sets = strat.parameter_grid(axes, max_sets=max_sets)
    with sweep_tags(source="cli-sweep"):  # for the trial recorders (research's registry)
        table = qs.sweep(strat, data, grid_sets, symbol=symbol, progress=not json_out, **settings)
    if csv is not None:
        table.to_csv(csv, index=False)
    ranked = table.sort_values(rank_by, ascending=False, na_position="last")
    if json_out:
        rows = json.loads(ranked.head(top).to_json(orient="records"))
        typer.echo(
            json.dumps(
                {"strategy": strat.name, "evaluated": len(table), "rank_by": rank_by, "top": rows}
            )
        )
        return
    from quantshift.formatting import count
    from quantshift.report import SWEEP_COLUMNS, console, frame_table

    columns = [*strat.param_names, "symbol", *SWEEP_COLUMNS]
    out = console()
    out.print(
        frame_table(
            ranked.head(top),
            f"{strat.name}: top {min(top, len(table))} of {count(len(table))} by {rank_by} "
            "(in-sample)",
            columns,
        )
    )
    if csv is not None:
        out.print(f"full table written to {csv}")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write plots.")] = Path(
        "out/demo"
    ),
    data: DataOpt = "builtin:sp500",
    json_out: JsonOpt = False,
) -> None:
    """Run the seed strategies and a parameter sweep on real S&P 500 data; write plots."""
    from quantshift.demo import run_demo

    check_output_dir("--out", out_dir)
    summary = run_demo(data=data, out_dir=out_dir, quiet=json_out)
    if json_out:
        typer.echo(json.dumps(summary, default=str))
