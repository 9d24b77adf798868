"""The ``quantshift`` command: backtest, sweep, data, strategies and demo.

Human output by default, ``--json`` for scripts; errors name what is wrong and exit with code 2.
Other packages add command groups through the ``quantshift.commands`` entry point group (the
``research`` group comes that way, so the core never imports the drivers built on it).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from quantshift.errors import ConfigError, QuantShiftError

app = typer.Typer(
    help="QuantShift: backtest, sweep and inspect causal numba trading strategies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="List, inspect, validate and import market data.", no_args_is_help=True)
strategies_app = typer.Typer(
    help="List strategies and their parameter spaces.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(strategies_app, name="strategies")


def _add_plugin_commands() -> None:
    """Add the command groups (a Typer app) and single commands (a function) installed packages
    register under the ``quantshift.commands`` entry point group."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="quantshift.commands"):
        try:
            group = entry.load()
        except ImportError as exc:
            print(f"warning: command group '{entry.name}' unavailable: {exc}", file=sys.stderr)
            continue
        if isinstance(group, typer.Typer):
            app.add_typer(group, name=entry.name)
        else:  # a single command (a function), e.g. `quantshift promote`
            app.command(entry.name)(group)


_add_plugin_commands()


def _add_data_commands() -> None:
    """Add ``quantshift data`` commands other packages register under
    ``quantshift.data_commands`` (``data fetch`` comes from the live package's broker clients,
    so the core never touches the network)."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="quantshift.data_commands"):
        try:
            command = entry.load()
        except ImportError as exc:
            print(f"warning: data command '{entry.name}' unavailable: {exc}", file=sys.stderr)
            continue
        data_app.command(entry.name)(command)


_add_data_commands()

DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        "-d",
        help="Data spec: builtin:sp500, "
        "synthetic:symbols=2,bars=1000,seed=1, or a CSV/Parquet path.",
    ),
]
SymbolOpt = Annotated[
    list[str] | None, typer.Option("--symbol", "-s", help="Symbol(s) to use; repeatable.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
DateFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--date-format",
        help="How a file's times are written: a strftime format such as '%d/%m/%Y', 'excel' "
        "(serial days) or epoch-s, epoch-ms, epoch-us, epoch-ns (default: ISO 8601, "
        "YYYYMMDD or epoch times; an ambiguous column is refused).",
    ),
]
CashOpt = Annotated[float, typer.Option(help="Starting cash per symbol.")]
SizeOpt = Annotated[float, typer.Option(help="Fraction of equity per entry (1.0 = all in).")]
FeesOpt = Annotated[float, typer.Option("--fees-bps", help="Commission, basis points of notional.")]
SlipOpt = Annotated[float, typer.Option("--slippage-bps", help="Slippage, basis points per fill.")]
FillOpt = Annotated[str, typer.Option(help="next-open (default) or close.")]
DirectionOpt = Annotated[str, typer.Option(help="long, short or both.")]
SizingOpt = Annotated[str, typer.Option(help="fraction, risk (per-trade risk vs stop) or kelly.")]
RiskOpt = Annotated[
    float, typer.Option("--risk", help="Equity fraction at risk per trade (sizing=risk).")
]
StopsOpt = Annotated[bool, typer.Option("--stops/--no-stops", help="Apply the strategy's stops.")]
WholeOpt = Annotated[
    bool, typer.Option("--whole-units/--fractional-units", help="Trade whole units only.")
]


def main() -> None:
    """Run the CLI, turning QuantShift errors into one clear line and exit code 2."""
    from quantshift.strategies.checks import one_line_warnings, typing_error_line

    one_line_warnings()
    try:
        app()
    except QuantShiftError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        line = typing_error_line(exc)
        if line is None:
            raise
        typer.echo(f"error: {line}", err=True)
        sys.exit(2)


@app.callback()
def _options(
    strategy_path: Annotated[
        list[str] | None,
        typer.Option(
            "--strategy-path",
            help="Load strategies from this file, directory (its *.py), module or reference "
            "(module:STRATEGY, file.py:STRATEGY); repeatable; adds to $QUANTSHIFT_STRATEGY_PATH.",
        ),
    ] = None,
) -> None:
    """QuantShift: backtest, sweep and inspect causal numba trading strategies."""
    if strategy_path:
        from quantshift.strategies import add_strategy_path

        add_strategy_path(strategy_path)


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


def parse_assignments(items: list[str], what: str) -> dict[str, str]:
    """Split ``NAME=VALUE`` items; raise ConfigError naming a malformed or repeated one."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ConfigError(f"{what} '{item}' is not NAME=VALUE")
        if name in out:
            raise ConfigError(
                f"{what} '{name}' is given twice ({name}={out[name]}, {name}={value}); give it once"
            )
        out[name] = value
    return out


def require_at_least(option: str, value: int | None, minimum: int) -> None:
    """Raise ConfigError naming ``option`` if ``value`` is given and below ``minimum``."""
    if value is not None and value < minimum:
        raise ConfigError(f"{option} must be at least {minimum}, got {value}")


def check_output_dir(option: str, path: Path) -> None:
    """Raise ConfigError unless ``path`` is, or can be created as, a writable directory.

    Called before the work, so that a bad path costs nothing and says what is wrong.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: directory {existing} is not writable")


def check_output_file(option: str, path: Path, *, create_parents: bool = False) -> None:
    """Raise ConfigError unless a file can be written at ``path``: it is not a directory and
    its directory exists (or, with ``create_parents``, can be created) and is writable."""
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory; give a file name")
    if not create_parents and not path.parent.is_dir():
        what = "is not a directory" if path.parent.exists() else "does not exist"
        raise ConfigError(f"{option} {path}: directory {path.parent} {what}")
    check_output_dir(option, path.parent)


def plot_paths(text: str, strategy: str, symbols: Sequence[str]) -> list[Path]:
    """Return the PNG file of each symbol for ``--plot PATH``.

    An existing directory, or a path ending in a separator, gets ``STRATEGY.png`` inside it;
    any other path is the file, ``.png`` added when it has no suffix. Several symbols get
    ``_SYMBOL`` after the file's stem.
    """
    plot = Path(text)  # Path drops a trailing separator, so it is read from the text
    if plot.is_dir() or text.endswith(("/", os.sep)):
        plot = plot / f"{strategy}.png"
    elif not plot.suffix:
        plot = plot.with_name(f"{plot.name}.png")
    if len(symbols) == 1:
        return [plot]
    return [plot.with_stem(f"{plot.stem}_{symbol}") for symbol in symbols]


def parse_grid_axis(strategy, name: str, text: str) -> Sequence[float]:
    """Parse ``START:STOP[:STEP]`` (inclusive) or ``A,B,C`` for one parameter.

    A range is returned as a :class:`~quantshift.strategies.grid.GridAxis`, counted but not
    expanded, so an axis of billions of values is refused by the grid's limit, not built.
    """
    from quantshift.strategies.grid import GridAxis

    param = next((p for p in strategy.params if p.name == name), None)
    if param is None:
        strategy.resolve({name: 0})  # raises UnknownNameError listing the parameters
    try:
        if ":" not in text:
            return [float(v) for v in text.split(",")]
        parts = [float(v) for v in text.split(":")]
    except ValueError:
        raise ConfigError(f"grid '{name}={text}': expected START:STOP[:STEP] or A,B,C") from None
    if len(parts) not in (2, 3):
        raise ConfigError(f"grid '{name}={text}': expected START:STOP[:STEP]")
    start, stop = parts[0], parts[1]
    if len(parts) == 3:
        step = parts[2]
    elif param.integer:
        step = 1.0
    else:
        raise ConfigError(f"grid '{name}={text}': '{name}' is not an integer, give a STEP")
    if step <= 0 or stop < start:
        raise ConfigError(f"grid '{name}={text}': need START <= STOP and STEP > 0")
    try:
        return GridAxis(start, stop, step)
    except ConfigError as exc:
        raise ConfigError(f"grid '{name}={text}': {exc}") from None


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


@strategies_app.command("list")
def strategies_list(json_out: JsonOpt = False) -> None:
    """List registered strategies."""
    import quantshift as qs

    rows = [
        {
            "name": s.name,
            "description": s.description,
            "parameters": list(s.param_names),
            "uses_stops": s.uses_stops,
        }
        for s in qs.list_strategies()
    ]
    if json_out:
        typer.echo(json.dumps(rows))
        return
    from rich.table import Table

    from quantshift.report import console

    table = Table(title="strategies", title_justify="left")
    for col in ("name", "parameters", "stops", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            ", ".join(r["parameters"]),
            "yes" if r["uses_stops"] else "no",
            r["description"],
        )
    console().print(table)


@strategies_app.command("show")
def strategies_show(name: str, json_out: JsonOpt = False) -> None:
    """Show a strategy's parameter space: defaults, ranges and constraints."""
    import quantshift as qs

    s = qs.get_strategy(name)
    params = [
        {
            "name": p.name,
            "default": p.default,
            "low": p.low,
            "high": p.high,
            "integer": p.integer,
            "description": p.description,
        }
        for p in s.params
    ]
    info = {
        "name": s.name,
        "description": s.description,
        "parameters": params,
        "constraints": [str(c) for c in s.constraints],
        "uses_stops": s.uses_stops,
        "warmup_bars_at_defaults": s.warmup_bars(),
    }
    if json_out:
        typer.echo(json.dumps(info))
        return
    from rich.table import Table

    from quantshift.report import console

    table = Table(title=f"{s.name}: {s.description}", title_justify="left")
    for col in ("parameter", "default", "range", "type", "meaning"):
        table.add_column(col)
    for p in params:
        table.add_row(
            p["name"],
            f"{p['default']:g}",
            f"{p['low']:g} .. {p['high']:g}",
            "int" if p["integer"] else "float",
            p["description"],
        )
    out = console()
    out.print(table)
    out.print(
        f"constraints: {', '.join(info['constraints']) or 'none'}; warm-up at defaults: "
        f"{info['warmup_bars_at_defaults']} bars; stops: {'yes' if s.uses_stops else 'no'}"
    )


@strategies_app.command("check")
def strategies_check(
    name: Annotated[str, typer.Argument(help="Strategy name (see `quantshift strategies list`).")],
    data: DataOpt = "builtin:sp500",
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE; repeatable.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check that a strategy's signals use past bars only (on copies of each prefix of the
    data); exit 1 if it looks ahead, naming the first bar and output that do."""
    import quantshift as qs
    from quantshift.strategies.causality import check_bars

    strategy = qs.get_strategy(name)
    params = strategy.vector(parse_assignments(param or [], "parameter"))
    symbol, verdict = check_bars(strategy, qs.load_bars(data), params)
    if json_out:
        typer.echo(json.dumps({**verdict.to_dict(), "symbol": symbol}))
    else:
        typer.echo(f"{symbol}: {verdict.summary()}")
    if not verdict.causal:
        raise typer.Exit(1)


@data_app.command("list")
def data_list(json_out: JsonOpt = False) -> None:
    """List built-in data sets and files in the data folder."""
    from quantshift.data import data_dir, list_sources

    sources = list_sources()
    if json_out:
        typer.echo(json.dumps(sources, default=str))
        return
    import pandas as pd

    from quantshift.report import console, frame_table

    frame = pd.DataFrame(sources)
    for col in ("start", "end"):
        frame[col] = frame[col].map(lambda v: v[:10] if isinstance(v, str) else "-")
    frame["symbols"] = frame["symbols"].map(lambda v: ", ".join(v or [])[:40])
    columns = ["name", "kind", "symbols", "start", "end", "bars", "description"]
    console().print(frame_table(frame, f"data sources (data folder: {data_dir()})", columns))


@data_app.command("show")
def data_show(
    spec: str,
    symbol: SymbolOpt = None,
    date_format: DateFormatOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Describe a data set: per symbol its time range, bars, missing bars and prices."""
    from quantshift.data import describe, load_bars

    info = describe(load_bars(spec, symbols=symbol, date_format=date_format))
    if json_out:
        typer.echo(json.dumps(info))
        return
    import pandas as pd

    from quantshift.report import console, frame_table

    title = f"{info['source']}: {info['n_bars']} bars, {info['start']} .. {info['end']}"
    console().print(frame_table(pd.DataFrame(info["symbols"]), title))


@data_app.command("validate")
def data_validate(spec: str, date_format: DateFormatOpt = None, json_out: JsonOpt = False) -> None:
    """Load and validate a data set; exit 2 with the first problem found."""
    from quantshift.data import load_bars

    bars = load_bars(spec, cache=False, date_format=date_format)
    result = {"spec": spec, "valid": True, "bars": bars.n_bars, "symbols": list(bars.symbols)}
    if json_out:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"ok: {spec}: {bars.n_bars} bars, {bars.n_symbols} symbol(s) "
            f"({', '.join(bars.symbols[:10])}{' ...' if bars.n_symbols > 10 else ''})"
        )


@data_app.command("import")
def data_import(
    path: Path,
    name: Annotated[str | None, typer.Option(help="Name in the data folder.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing data set.")] = False,
    date_format: DateFormatOpt = None,
) -> None:
    """Validate a CSV/Parquet file and store it as Parquet (UTC times) in the data folder."""
    from quantshift.data import import_file

    target = import_file(path, name=name, overwrite=overwrite, date_format=date_format)
    typer.echo(f"imported {path} -> {target}")
