"""``quantshift data``: list the data sources, describe and validate a data set, and import a
file into the data folder (``data fetch`` comes from the live package)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from quantshift.cli.apps import data_app
from quantshift.cli.options import DateFormatOpt, JsonOpt, SymbolOpt


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
