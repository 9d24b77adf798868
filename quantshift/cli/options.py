"""What the commands share: option types, and the parsing and checking of option values before
any work (``NAME=VALUE`` items, grid axes, output paths); errors name the option."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from quantshift.errors import ConfigError

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
