"""`quantshift promote RUN_ID --stage paper|live` and `quantshift promotions list|show|rollback`.

Registered as quantshift command plugins; a failed gate prints every check and exits with 1.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

STORE_ENV = "QUANTSHIFT_STORE_URL"

promotions_app = typer.Typer(
    help="List, show and roll back promotion records in the live store.", no_args_is_help=True
)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store", help=f"Live store URL (sqlite:///... or postgresql://...); default ${STORE_ENV}."
    ),
]
UriOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI (default: the local store)."),
]
StageOpt = Annotated[str, typer.Option("--stage", help="paper or live.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _store_url(store: str | None) -> str:
    url = store or os.environ.get(STORE_ENV)
    if not url:
        raise typer.BadParameter(f"give --store URL or set {STORE_ENV}", param_hint="--store")
    return url


def _tracker(tracking_uri: str | None):
    from research.tracking import Tracker

    return Tracker(tracking_uri)


def promote_command(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of the study (research report).")],
    stage: StageOpt = "paper",
    store: StoreOpt = None,
    tracking_uri: UriOpt = None,
    name: Annotated[
        str | None,
        typer.Option(help="Record name a live sleeve refers to (default: the study's name)."),
    ] = None,
    allocation: Annotated[
        float | None,
        typer.Option(help="Capital fraction in (0, 1] (default 1, the sleeve's, or the paper's)."),
    ] = None,
    sleeve: Annotated[
        str | None,
        typer.Option(
            help="The sleeve of an overlay study to promote (its record pins the regime model "
            "version the study ran with; default name SPEC.SLEEVE)."
        ),
    ] = None,
    gate: Annotated[
        Path | None,
        typer.Option(help="Gate thresholds TOML (paper and live tables); default built in."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Publish despite a failed gate (loud, recorded).")
    ] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why (required with --force; kept with the record).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Gate a research run for STAGE and, if it passes, publish its parameters: the record goes
    to the live store (runners adopt it) and the MLflow Model Registry (alias STAGE)."""
    from quantshift.promotion import load_gate_config
    from research.promote import promote

    if force and not reason:
        raise typer.BadParameter("--force needs --reason: a forced promotion is recorded")
    url = _store_url(store)
    tracker = _tracker(tracking_uri)
    try:
        outcome = promote(
            run_id,
            stage,
            store_url=url,
            tracker=tracker,
            name=name,
            allocation=allocation,
            gate=load_gate_config(gate),
            force=force,
            reason=reason or "",
            sleeve=sleeve,
        )
    finally:
        tracker.close()
    if json_out:
        typer.echo(json.dumps(outcome.to_dict(), default=str))
    else:
        from quantshift.report import console

        out = console()
        if force and not outcome.gate.passed:
            out.print(
                "[bold red]WARNING: --force publishes a record whose gate FAILED; "
                f"recorded with reason: {reason}[/]"
            )
        for line in outcome.lines():
            style = "red" if "FAIL" in line else ("green" if "PASS" in line else None)
            out.print(line, style=style, highlight=False, markup=False)  # "[pbo]" is text
    if not outcome.promoted:
        raise typer.Exit(1)


@promotions_app.command("list")
def list_command(
    name: Annotated[str | None, typer.Argument(help="Only this record name.")] = None,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every stored record, oldest first; * marks the active one of each (name, stage)."""
    from quantshift.formatting import number, table
    from research.promote import history

    rows = history(name, store_url=_store_url(store))
    if json_out:
        typer.echo(json.dumps([_row(p) for p in rows], default=str))
        return
    if not rows:
        typer.echo("no promotion records" + (f" named {name!r}" if name else ""))
        return
    rows_shown = []
    for p in rows:
        r = p.record
        params = ", ".join(f"{k}={number(v)}" for k, v in r.params.items())
        rows_shown.append(
            [
                "*" if p.active else "",
                str(p.promotion_id),
                r.name,
                r.stage,
                r.record_id,
                f"{r.strategy}({params})",
                _when(p.ts_created_ns),
                p.created_by,
                "FORCED" if r.forced else "passed",
            ]
        )
    headers = ["active", "id", "name", "stage", "record", "parameters", "created", "by", "gate"]
    for line in table(headers, rows_shown, right=(1,)):
        typer.echo(line)


@promotions_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="Record name.")],
    stage: StageOpt = "paper",
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The active record of NAME at STAGE: parameters, evidence, gate checks, history."""
    from research.promote import show

    active, events = show(name, stage, store_url=_store_url(store))
    if json_out:
        typer.echo(json.dumps({**_row(active), "events": events}, default=str))
        return
    r = active.record
    for line in r.summary_lines():
        typer.echo(line)
    for label, section in (
        ("in sample", r.in_sample),
        ("out of sample", r.out_of_sample),
        ("statistics", r.statistics),
        ("paper record", r.paper_record),
    ):
        if section:
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in section.items())
            typer.echo(f"  {label}: {shown}")
    for gate in r.gates:
        for line in gate.lines():
            typer.echo("  " + line)
    for e in events:
        typer.echo(f"  event: {e['action']} by {e['created_by']} at {_when(e['ts_ns'])}: "
                   f"{e['reason']}")  # fmt: skip


@promotions_app.command("rollback")
def rollback_command(
    name: Annotated[str, typer.Argument(help="Record name.")],
    stage: StageOpt = "paper",
    store: StoreOpt = None,
    tracking_uri: UriOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make the previous record of NAME at STAGE active again (runners adopt it at their next
    cycle boundary; the registry alias moves with it)."""
    from research.promote import rollback

    tracker = _tracker(tracking_uri)
    try:
        before, after = rollback(name, stage, store_url=_store_url(store), tracker=tracker)
    finally:
        tracker.close()
    if json_out:
        typer.echo(json.dumps({"from": _row(before), "to": _row(after)}, default=str))
        return
    typer.echo(
        f"rolled back {name} ({stage}): {before.record.record_id} -> {after.record.record_id} "
        f"(promotion id {after.promotion_id}); runners adopt it at their next cycle"
    )


def _row(p) -> dict:
    return {
        "promotion_id": p.promotion_id,
        "active": p.active,
        "created_by": p.created_by,
        "ts_created_ns": p.ts_created_ns,
        "record": p.record.to_dict(),
    }


def _when(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _fmt(value) -> str:
    from quantshift.formatting import number

    return number(value)
