"""The ``live`` command: run the runner, show its status, halt and resume trading, reconcile.

Every command reads the same config file; errors print one line naming what is wrong (exit 2).
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from quantshift.errors import ConfigError, QuantShiftError

app = typer.Typer(
    help="QuantShift live runner: paper and live trading with the code research validated.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The runner's config (TOML).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who (default: user@host).")]


def main() -> None:
    """Run the CLI, turning QuantShift errors into one clear line and exit code 2."""
    try:
        app()
    except QuantShiftError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _who(by: str | None) -> str:
    return by or f"{getpass.getuser()}@{socket.gethostname()}"


def _open_store(config_path: Path):
    from live.config import load_config
    from live.store import Store

    config = load_config(config_path)
    # These commands act on the runner's store: creating an empty one would report on (or
    # halt) a store no runner uses.
    return config, Store.open(config.store_url, create=False)


@app.command()
def run(
    config: ConfigOpt,
    max_bars: Annotated[
        int | None, typer.Option(help="Stop after this many bars (default: the whole replay).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the runner: standby until it holds the lease, then one cycle per closed bar."""
    from live.config import load_config
    from live.logs import configure
    from live.runner import Runner
    from quantshift.cli import require_at_least

    require_at_least("--max-bars", max_bars, 1)
    configure()
    cfg = load_config(config)
    started = time.perf_counter()
    summary = Runner(cfg, max_bars=max_bars).run()
    elapsed = time.perf_counter() - started
    info = {
        "runner": cfg.name,
        "bars": summary.bars,
        "orders": summary.orders,
        "trades": summary.trades,
        "epochs": summary.epochs,
        "ended": summary.ended,
        "elapsed_s": round(elapsed, 3),
        "bars_per_s": round(summary.bars / elapsed, 1) if elapsed > 0 else None,
    }
    if json_out:
        typer.echo(json.dumps(info))
    elif summary.bars == 0 and summary.ended == "replay finished":
        typer.echo(_finished_replay(cfg))
    else:
        from quantshift.formatting import count, number
        from quantshift.formatting import elapsed as took

        typer.echo(
            f"{cfg.name}: {count(summary.bars)} bars, {count(summary.orders)} orders, "
            f"{count(summary.trades)} trades in {took(elapsed)} "
            f"({number(info['bars_per_s'])} bars/s); {summary.ended}"
        )


def _finished_replay(cfg) -> str:
    """What a rerun of a finished replay says: nothing left, and how to replay again."""
    from live.status import utc_time
    from live.store import Store
    from quantshift.urls import mask_secrets

    with Store.open(cfg.store_url, create=False) as store:
        saved = store.load_runner_state(cfg.name)
    last = "-" if saved is None else utc_time(saved["bar_ts_ns"])
    return (
        f"{cfg.name}: 0 bars to run: the replay has finished (last bar {last} UTC, stored in "
        f"{mask_secrets(cfg.store_url)}); use a new store ([store] url) or delete that one "
        "to replay again"
    )


@app.command()
def reconcile(config: ConfigOpt, json_out: JsonOpt = False) -> None:
    """Compare the broker's positions and orders with the store; exit 1 on a mismatch."""
    from live.reconcile import reconcile as check

    cfg, store = _open_store(config)
    with store:
        report = check(cfg, store)
    if json_out:
        typer.echo(json.dumps(report.to_dict()))
    else:
        for line in report.lines():
            typer.echo(line)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def divergence(
    config: ConfigOpt,
    since: Annotated[
        str | None, typer.Option(help="Compare trades entered from this date (UTC) on.")
    ] = None,
    json_out: JsonOpt = False,
    plot: Annotated[
        Path | None, typer.Option(help="Write a figure: equity and the P&L difference by cause.")
    ] = None,
    max_drift_pct: Annotated[
        float, typer.Option("--max-drift-pct", help="Exit 1 when |live - backtest P&L| is more "
                            "than this share of the starting cash (percent).")
    ] = 1.0,
) -> None:  # fmt: skip
    """Rebuild the backtest on the bars the runner decided on and compare it with the venue's
    trades: missing and extra trades, prices, slippage, fees and the P&L by cause."""
    from live.divergence import divergence as compare
    from live.divergence import plot as draw

    if not max_drift_pct >= 0:
        raise ConfigError(f"--max-drift-pct must be >= 0, got {max_drift_pct}")
    since_ns = None
    if since is not None:
        try:
            since_ns = int(pd_timestamp(since).value)
        except ValueError:
            raise ConfigError(f"--since {since!r} is not a date (use YYYY-MM-DD)") from None
    cfg, store = _open_store(config)
    with store:
        report = compare(cfg, store, since_ns=since_ns)
    if plot is not None:
        draw(report, plot)
    if json_out:
        typer.echo(json.dumps(report.to_dict() | {"max_drift_pct": max_drift_pct}))
    else:
        for line in report.lines():
            typer.echo(line)
        if plot is not None:
            typer.echo(f"figure: {plot}")
    if abs(report.drift_pct) > max_drift_pct:
        if not json_out:
            typer.echo(
                f"drift {report.drift_pct:+.3f}% is beyond --max-drift-pct {max_drift_pct:g}"
            )
        raise typer.Exit(1)


def pd_timestamp(text: str):
    """A date or time as a UTC timestamp (naive input is read as UTC)."""
    import pandas as pd

    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@app.command()
def status(config: ConfigOpt, json_out: JsonOpt = False) -> None:
    """Show the leader, its epoch and last heartbeat, positions, P&L and any HALT."""
    from live.status import gather_status

    cfg, store = _open_store(config)
    with store:
        info = gather_status(cfg, store)
    if json_out:
        typer.echo(json.dumps(info, default=str))
        return
    _print_status(info)


@app.command()
def halt(
    config: ConfigOpt,
    reason: Annotated[str, typer.Option(help="Why (kept in the store's history).")] = "manual",
    flatten: Annotated[
        bool, typer.Option("--flatten", help="Also close every position at the next cycle.")
    ] = False,
    by: ByOpt = None,
) -> None:
    """Stop new orders at once (the kill switch); with --flatten, close positions too."""
    from live.status import halt_trading

    _, store = _open_store(config)
    with store:
        active = halt_trading(store, reason, flatten=flatten, by=_who(by))
    typer.echo(
        f"HALT active since {_iso(active.ts_created_ns)}: {active.reason} (by {active.created_by})"
    )


@app.command()
def resume(config: ConfigOpt, by: ByOpt = None) -> None:
    """Clear the HALT (a person's decision); the runner trades again at its next cycle."""
    _, store = _open_store(config)
    with store:
        cleared = store.resume(by=_who(by))
    if cleared is None:
        typer.echo("nothing to resume: no HALT is active")
    else:
        typer.echo(f"resumed: cleared HALT '{cleared.reason}' (by {_who(by)})")


@app.command("install-units")
def install_units(
    target: Annotated[Path, typer.Option(help="Where to write the units.")] = Path(
        "/etc/systemd/system"
    ),
    user: Annotated[str, typer.Option(help="The account the services run as.")] = "quantshift",
    group: Annotated[str | None, typer.Option(help="Their group (default: the user's).")] = None,
    config_dir: Annotated[
        Path, typer.Option(help="Runner configs NAME.toml and key files NAME.env.")
    ] = Path("/etc/quantshift"),
    data_dir: Annotated[
        Path, typer.Option(help="The one directory the services may write.")
    ] = Path("/var/lib/quantshift"),
    root: Annotated[
        Path | None, typer.Option(help="The project checkout (default: this one).")
    ] = None,
    bin_dir: Annotated[
        Path | None, typer.Option(help="Where `live` and `quantshift` are (default: this venv).")
    ] = None,
) -> None:
    """Write the systemd units (runner, nightly data fetch, research jobs) for this host."""
    from live.systemd import default_settings, user_exists
    from live.systemd import install_units as write_units

    settings = default_settings(
        root=root, bin_dir=bin_dir, config_dir=config_dir, data_dir=data_dir, user=user,
        group=group,
    )  # fmt: skip
    for path in write_units(target, settings):
        typer.echo(f"wrote {path}")
    if not user_exists(settings.user):
        typer.echo(f"note: user {settings.user!r} does not exist yet: useradd --system {user}")
    typer.echo(
        f"next: install -d -o {settings.user} -m 700 {settings.data_dir}; put NAME.toml (and "
        f"NAME.env, mode 600) in {settings.config_dir}; systemctl daemon-reload; "
        "systemctl enable --now quantshift-live@NAME.service quantshift-data-fetch.timer"
    )


@app.command()
def dashboard(
    config: ConfigOpt,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
    refresh_s: Annotated[
        float, typer.Option("--refresh-s", help="Seconds between the page's refreshes.")
    ] = 3.0,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Allow a non-loopback --host: the page has no login and serves plain HTTP.",
        ),
    ] = False,
) -> None:
    """Serve a status page over the store; its kill switch needs QUANTSHIFT_DASHBOARD_TOKEN."""
    from live.dashboard.server import TOKEN_ENV, make_server, token_from_environment

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be within 0 and 65535, got {port}")
    if not 0.5 <= refresh_s <= 3600:
        raise ConfigError(f"--refresh-s must be within 0.5 and 3600 s, got {refresh_s}")
    from live.logs import configure

    configure()
    token = token_from_environment()
    cfg, store = _open_store(config)  # fail now, not on the first request, without a store
    store.close()
    server = make_server(
        cfg, host=host, port=port, token=token, refresh_s=refresh_s, allow_remote=allow_remote
    )
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    switch = "kill switch on" if token else f"read-only ({TOKEN_ENV} unset)"
    typer.echo(f"status page of {cfg.name} at http://{shown}:{bound_port}/ ({switch})")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command("notify-test")
def notify_test(config: ConfigOpt) -> None:
    """Send a test message to every [notify] channel; exit 1 if any could not be reached."""
    from live.config import load_config
    from live.notify import send_test
    from quantshift.errors import ConfigError

    cfg = load_config(config)
    if not cfg.notify.channels:
        raise ConfigError(f"{config}: [notify] names no channels ([[notify.channels]])")
    results = send_test(cfg, socket.gethostname())
    for name, failure in results.items():
        typer.echo(f"{name}: {'sent' if failure is None else 'failed: ' + failure}")
    if any(failure is not None for failure in results.values()):
        raise typer.Exit(1)


def _iso(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    import pandas as pd

    return pd.Timestamp(ts_ns, unit="ns", tz="UTC").isoformat()


def _print_status(info: dict[str, Any]) -> None:
    from live.status import status_lines

    for line, alarming in status_lines(info):
        typer.secho(line, fg="red" if alarming else None, bold=alarming)
