"""The ``quantshift`` Typer app, its ``data`` and ``strategies`` groups, the commands installed
packages add through entry points, the global options, and :func:`main`, the console script."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from quantshift.errors import QuantShiftError

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
