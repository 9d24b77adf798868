"""`quantshift research ...`: run experiment specs, join distributed studies, open the MLflow UI.

Registered as a quantshift command plugin (entry point group ``quantshift.commands``); imports
Optuna and MLflow only inside commands so the rest of the CLI stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Research: optimise, walk forward, Monte Carlo and overfitting reports from a spec.",
    no_args_is_help=True,
)

SpecArg = Annotated[Path, typer.Argument(help="Experiment spec (experiments/*.toml).")]
SeedOpt = Annotated[int | None, typer.Option(help="Override the spec's seed.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
TrackOpt = Annotated[
    bool, typer.Option("--track/--no-track", help="Log the run to MLflow (default: yes).")
]
UriOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI (default: the spec's, or local)."),
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Also write the plots here (PNG).")]


def _run(command: str, spec_path: Path, seed, json_out, track, tracking_uri, out) -> None:
    from quantshift.cli import check_output_dir
    from research.spec import load_spec
    from research.study import json_summary, run

    if out is not None:
        check_output_dir("--out", out)
    if command == "report":
        from research.regime.overlay import is_overlay_spec

        if is_overlay_spec(spec_path):
            _run_overlay(spec_path, json_out, track, tracking_uri, out)
            return
    spec = load_spec(spec_path)
    if seed is not None:
        spec = spec.with_seed(seed)
    tracker = None
    if track:
        from research.tracking import Tracker

        tracker = Tracker(tracking_uri or spec.tracking_uri, experiment=spec.experiment)
    report = run(spec, command, tracker=tracker, track=track, progress=not json_out)
    written = report.save_figures(out) if out is not None else []
    report.close_figures()
    summary = json_summary(report)
    if json_out:
        typer.echo(json.dumps(summary, default=str))
        return
    _print_summary(command, summary, report, tracker, written)


def _spec_command(command: str, help_text: str) -> None:
    """Register ``research COMMAND SPEC``: the four spec commands share their options."""

    def run_command(
        spec: SpecArg,
        seed: SeedOpt = None,
        json_out: JsonOpt = False,
        track: TrackOpt = True,
        tracking_uri: UriOpt = None,
        out: OutOpt = None,
    ) -> None:
        _run(command, spec, seed, json_out, track, tracking_uri, out)

    app.command(command, help=help_text)(run_command)


_spec_command(
    "optimize",
    "Search the parameters (grid or Optuna), then DSR, PBO and Monte Carlo of the winner.",
)
_spec_command(
    "walk-forward",
    "Optimise in each training window, trade the choice out of sample, stitch the results.",
)
_spec_command(
    "montecarlo",
    "Monte Carlo of the spec's fixed parameters: drawdown, CAGR and Sharpe distributions.",
)
_spec_command(
    "report", "Everything the spec configures: search + DSR/PBO, walk-forward and Monte Carlo."
)


@app.command()
def worker(
    spec: SpecArg,
    trials: Annotated[
        int | None, typer.Option(help="Raise the study's trial budget to this many.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Trials per batch.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Join the spec's shared Optuna study and evaluate trials until its budget is spent.

    The spec's search storage must be a database every worker reaches (PostgreSQL for
    several machines); the study is created by `quantshift research optimize` or by the first
    worker to arrive.
    """
    from quantshift.errors import ConfigError
    from research.preregistration import register_study
    from research.registry import trial_context
    from research.spec import load_spec
    from research.study import load_experiment_bars, optimize_spec

    loaded = load_spec(spec)
    search = loaded.search
    if search.method != "optuna" or search.storage is None:
        raise ConfigError(
            f'{spec}: a worker needs [search] method = "optuna" and a shared storage '
            '(e.g. storage = "postgresql://user@dbhost/quantshift")'
        )
    bars = load_experiment_bars(loaded)
    # A worker's trials count like the study's own: registered under the spec's hash (the
    # spec is registered here if this worker arrives before `research optimize`).
    registration = register_study(loaded, bars)
    with trial_context(
        source="study",
        study=loaded.name,
        spec_hash=registration.spec.spec_hash,
        seed=loaded.seed,
    ):
        result = optimize_spec(
            loaded, bars, n_trials=trials, batch_size=batch_size, progress=not json_out
        )
    summary = result.summary()
    if json_out:
        typer.echo(json.dumps(summary, default=str))
        return
    typer.echo(
        f"worker done: evaluated {result.n_trials} trials of study '{result.study_name}' "
        f"({result.trials_per_second:.1f} trials/s) in {result.storage}"
    )


def _run_overlay(spec_path: Path, json_out, track, tracking_uri, out) -> None:
    """``research report`` on an overlay study (a spec with ``[overlay]``)."""
    from research.regime.overlay import load_overlay_spec, run_overlay

    spec = load_overlay_spec(spec_path)
    tracker = None
    if track:
        from research.tracking import Tracker

        tracker = Tracker(tracking_uri or spec.regime.tracking_uri, experiment=spec.name)

    def advance(done: int, total: int) -> None:
        typer.echo(f"regime model: walk-forward fold {done}/{total}", err=True)

    report = run_overlay(spec, tracker=tracker, track=track, progress=None if json_out else advance)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in {**report.figures, **report.regime_report.figures}.items():
            fig.savefig(out / f"{name}.png", dpi=110)
    if json_out:
        rows = report.table.reset_index().to_dict(orient="records")
        typer.echo(json.dumps({**report.summary, "variants": rows}, default=str))
        return
    print_overlay(report)


def print_overlay(report) -> None:
    """Print an overlay report: the variants' table, the verdicts, the spec's lineage and (when
    tracked) the run a sleeve is promoted from."""
    from rich.table import Table

    from quantshift.report import console

    table = Table(
        title=f"{report.spec.name}: out of sample {report.summary['oos_start']}.."
        f"{report.summary['oos_end']} (DSR over the {report.summary['trials']} variants its "
        "lineage has run on these bars)",
        title_justify="left",
    )
    columns = ("sharpe", "cagr_pct", "max_drawdown_pct", "trades", "vetoes", "psr", "dsr")
    table.add_column("variant")
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in report.table.iterrows():
        table.add_row(name, *(_shown(c, float(row[c])) for c in columns))
    console().print(table)
    # The verdicts name TOML tables ("[news]"): plain text, not console markup.
    console().print(report.regime_report.summary["verdict"], markup=False)
    console().print(report.summary["verdict"], markup=False)
    pre = report.summary["preregistration"]
    console().print(f"spec {pre['spec_hash']} of lineage {pre['lineage']}", highlight=False)
    if "run_id" in report.summary:
        model = report.summary["overlay"].get("regime_model", {})
        console().print(
            f"MLflow run {report.summary['run_id']} (regime model {model.get('name')} version "
            f"{model.get('version')}); promote a sleeve with `quantshift promote "
            f"{report.summary['run_id']} --sleeve NAME`",
            highlight=False,
        )


regime_app = typer.Typer(
    help="Regime models: train, judge out of sample against naive baselines, register.",
    no_args_is_help=True,
)
app.add_typer(regime_app, name="regime")


@regime_app.command("train")
def regime_train(
    spec: Annotated[Path, typer.Argument(help="Regime spec (experiments/regime_*.toml).")],
    json_out: JsonOpt = False,
    track: TrackOpt = True,
    tracking_uri: UriOpt = None,
    out: OutOpt = None,
) -> None:
    """Fit the spec's models in purged walk-forward folds, score them and the baselines
    (majority class, persistence) out of sample, then register the chosen model in MLflow."""
    from quantshift.cli import check_output_dir
    from research.regime.spec import load_regime_spec
    from research.regime.train import train

    if out is not None:
        check_output_dir("--out", out)
    loaded = load_regime_spec(spec)
    tracker = None
    if track:
        from research.tracking import Tracker

        tracker = Tracker(tracking_uri or loaded.tracking_uri, experiment=loaded.experiment)

    def advance(done: int, total: int) -> None:
        typer.echo(f"walk-forward fold {done}/{total}", err=True)

    report = train(loaded, tracker=tracker, track=track, progress=None if json_out else advance)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in report.figures.items():
            fig.savefig(out / f"{name}.png", dpi=110)
    report.close_figures()
    if json_out:
        typer.echo(json.dumps(report.summary, default=str))
        return
    _print_regime(report)


def _print_regime(report) -> None:
    from rich.table import Table

    from quantshift.report import console

    summary, scores = report.summary, report.evaluation.scores
    table = Table(
        title=f"{report.spec.name}: out-of-sample regime prediction "
        f"({summary['folds']} purged walk-forward folds, {summary['oos_samples']} bar-symbols)",
        title_justify="left",
    )
    for column in ("model", "accuracy", "balanced accuracy", "kappa"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, s in scores.items():
        table.add_row(
            name, f"{s['accuracy']:.1%}", f"{s['balanced_accuracy']:.1%}", f"{s['kappa']:.3f}"
        )
    table.add_row("legacy claim", f"{summary['legacy_claim_accuracy']:.1%}", "-", "-", style="dim")
    table.add_row(
        f"{report.spec.register}, shuffled unpurged CV",
        f"{summary['legacy_style_shuffled_cv_accuracy']:.1%}", "-", "-", style="dim",
    )  # fmt: skip
    out = console()
    out.print(table)
    out.print(summary["verdict"])
    if report.model_version is not None:
        out.print(
            f"registered {summary['model_name']} version {report.model_version} "
            f"(MLflow run {report.run_id})"
        )


@app.command()
def trials(
    strategy: Annotated[str, typer.Argument(help="Strategy name: its lineage in the registry.")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="The data: a data spec (builtin:sp500, a file, synthetic:...), an experiment "
            "spec (.toml) or a registry data key; default: every data.",
        ),
    ] = None,
    symbol: Annotated[
        list[str] | None, typer.Option("--symbol", "-s", help="With a data spec: symbols.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="With a data spec: first bar (date).")] = None,
    end: Annotated[str | None, typer.Option(help="With a data spec: end (exclusive).")] = None,
    registry_url: Annotated[
        str | None,
        typer.Option(
            "--registry", help="Registry URL (default $QUANTSHIFT_REGISTRY_URL or local)."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a strategy lineage's trials: how many, from which studies, specs and sources, and
    the DSR hurdle (expected best Sharpe of unskilled trials) that count implies."""
    from research.registry import TrialRegistry

    key = _data_key(data, symbol, start, end) if data is not None else None
    with TrialRegistry.open(registry_url) as registry:
        summary = registry.summary(strategy, key)
        by_data = registry.frame(strategy, key)
    if by_data.empty and not _known_strategy(strategy):
        from quantshift.errors import UnknownNameError

        raise UnknownNameError(
            f"no strategy and no registry lineage is named {strategy!r} ({summary['registry']})"
        )
    counted = by_data[by_data["state"].isin(("complete", "pruned", "failed"))]
    summary["by_data"] = {str(k): int(v) for k, v in counted["data_key"].value_counts().items()}
    if json_out:
        typer.echo(json.dumps(_json_ready(summary)))
        return
    _print_trials(summary)


def _known_strategy(strategy: str) -> bool:
    from quantshift.strategies import list_strategies

    return strategy in {s.name for s in list_strategies()}


def _data_key(data: str, symbol, start, end) -> str:
    """The registry data key ``--data`` names: a key as stored, an experiment spec's data, or
    a data spec loaded with ``--symbol/--start/--end``."""
    if "|" in data:
        return data
    from research.registry import data_key

    if data.endswith(".toml") and Path(data).is_file():
        from research.spec import load_spec
        from research.study import load_experiment_bars

        return data_key(load_experiment_bars(load_spec(Path(data))))
    from quantshift.data import load_bars

    return data_key(load_bars(data, symbols=symbol or None, start=start, end=end))


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def _print_trials(summary: dict[str, Any]) -> None:
    from rich.table import Table

    from quantshift.report import console

    where = summary["data_key"] or "every data"
    table = Table(title=f"{summary['strategy']}: trial registry ({where})", title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = (
        ("trials (run on data: the DSR's N)", summary["trials"]),
        ("by state", summary["states"]),
        ("by source", summary["sources"]),
        ("studies", summary["studies"]),
        ("pre-registered specs", summary["specs"]),
        ("evaluations (sweep calls)", summary["evaluations"]),
        ("data keys", len(summary["data_keys"])),
        ("source hashes (lineage)", ", ".join(summary["source_hashes"]) or "-"),
        ("seeds", ", ".join(map(str, summary["seeds"])) or "-"),
        ("distinct parameter sets", summary["distinct_params"]),
        ("per-bar Sharpe variance V", summary["sharpe_variance"]),
        ("DSR hurdle: E(max SR) per bar, N", summary["hurdle_sharpe_per_bar"]),
        ("effective N (clustered)", summary["n_effective"]),
        ("DSR hurdle per bar, effective N (not gated)", summary["hurdle_sharpe_per_bar_effective"]),
    )
    for label, value in rows:
        table.add_row(label, _trial_value(_json_ready(value)))
    out = console()
    out.print(table)
    if len(summary["by_data"]) > 1:
        data_table = Table(title="trials by data", title_justify="left")
        data_table.add_column("data key")
        data_table.add_column("trials", justify="right")
        for key, count in summary["by_data"].items():
            data_table.add_row(key, str(count))
        out.print(data_table)
    out.print(f"registry: {summary['registry']}; the gate's DSR uses N (every trial)")


@app.command()
def ui(
    tracking_uri: UriOpt = None,
    port: Annotated[int, typer.Option(help="Port to serve the UI on.")] = 5000,
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default: the UI has no login).")
    ] = "127.0.0.1",
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the command instead of running it.")
    ] = False,
) -> None:
    """Open the MLflow UI on the tracking store (the local one under experiments/ by default)."""
    from quantshift.errors import ConfigError
    from research.tracking import ui_command

    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be within 1 and 65535, got {port}")
    command = ui_command(tracking_uri, port=port, host=host)
    if print_only:
        typer.echo(command)
        return
    import shlex

    argv = shlex.split(command)
    if argv[:2] == ["uv", "run"]:
        argv = argv[2:]
    typer.echo(f"running: {command}", err=True)
    os.execvp(argv[0], argv)


_HEADLINE = (
    ("spec", "registered spec"),
    ("best_params", "best parameters"),
    ("trials", "trials of this study"),
    ("dsr_trials", "trials the DSR counts (registry)"),
    ("n_effective", "effective trials (clustered)"),
    ("is_sharpe", "in-sample Sharpe"),
    ("is_cagr_pct", "in-sample CAGR"),
    ("is_max_drawdown_pct", "in-sample max drawdown"),
    ("is_trades", "in-sample trades"),
    ("psr", "PSR (vs Sharpe 0)"),
    ("dsr", "deflated Sharpe ratio"),
    ("pbo", "PBO"),
    ("pbo_prob_oos_loss", "PBO: P(OOS loss)"),
    ("bt_sharpe", "Sharpe"),
    ("bt_cagr_pct", "CAGR"),
    ("bt_max_drawdown_pct", "max drawdown"),
    ("wf_folds", "walk-forward folds"),
    ("oos_sharpe", "out-of-sample Sharpe"),
    ("oos_cagr_pct", "out-of-sample CAGR"),
    ("oos_max_drawdown_pct", "out-of-sample max drawdown"),
    ("oos_trades", "out-of-sample trades"),
    ("oos_psr", "out-of-sample PSR (vs 0)"),
    ("walk_forward_efficiency", "walk-forward efficiency"),
    ("mc_max_drawdown_pct_p95", "Monte Carlo max drawdown p95"),
    ("mc_cagr_pct_low", "Monte Carlo CAGR low"),
    ("mc_prob_ruin", "Monte Carlo P(ruin)"),
    ("oos_mc_max_drawdown_pct_p95", "OOS Monte Carlo max drawdown p95"),
    ("oos_mc_prob_ruin", "OOS Monte Carlo P(ruin)"),
    ("elapsed_s", "wall time"),
)


def _print_summary(command, summary: dict[str, Any], report, tracker, written) -> None:
    from rich.table import Table

    from quantshift.report import console

    table = Table(title=f"{report.spec.name}: research {command}", title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, label in _HEADLINE:
        if key not in summary:
            continue
        table.add_row(label, _shown(key, summary[key]))
    out = console()
    out.print(table)
    for path in written:
        out.print(f"plot written to {path}")
    if report.run_id is not None:
        from quantshift.urls import mask_secrets
        from research.tracking import ui_command

        out.print(
            f"MLflow run {report.run_name} ({report.run_id}) in experiment "
            f"{tracker.experiment!r} of {mask_secrets(report.tracking_uri)}"
        )
        out.print(f"open the UI: {ui_command(report.tracking_uri)}")


def _trial_value(value: Any) -> str:
    """Counts with separators; per-bar Sharpe ratios and variances with 4 significant digits
    (they are small: 3 fixed decimals would show a variance of 2e-4 as 0.000)."""
    from quantshift.formatting import count, number

    if isinstance(value, dict):
        return ", ".join(f"{k}={_trial_value(v)}" for k, v in value.items())
    if isinstance(value, bool) or not isinstance(value, int | float):
        return number(value)
    return count(value) if isinstance(value, int) else f"{value:.4g}"


def _shown(key: str, value: Any) -> str:
    from quantshift.formatting import metric, number

    if isinstance(value, dict):
        return ", ".join(f"{k}={number(v)}" for k, v in value.items())
    return metric(key, value)
