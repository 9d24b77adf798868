"""``quantshift strategies``: list the registered strategies, show one's parameter space, and
check that its signals use past bars only."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from quantshift.cli.apps import strategies_app
from quantshift.cli.options import DataOpt, JsonOpt, parse_assignments


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
