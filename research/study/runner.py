"""Run an experiment spec end to end: the spec's data without its lockbox, the MLflow run of the
command with a nested run per part, the preregistration, the parts in turn, the parent's summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack

from quantshift.data import Bars, load_bars
from quantshift.data.validate import iso_utc
from quantshift.errors import ConfigError
from quantshift.provenance import code_fingerprint
from research.registry import trial_context
from research.spec import ExperimentSpec
from research.study.montecarlo_part import _montecarlo
from research.study.optimize_part import _optimize
from research.study.report import (
    StudyReport,
    _json_safe,
    _log_figures,
    _numbers,
    _param_values,
    _run_params,
    _where,
)
from research.study.walk_forward_part import _walk_forward
from research.tracking import study_run_name

COMMANDS = ("optimize", "walk-forward", "montecarlo", "report")
KEY_PLOTS = (
    "best_equity", "parameter_heatmap", "optimization", "walk_forward", "oos_mc_fan", "mc_fan",
    "pbo",
)  # fmt: skip
"""Figures a study's parent run carries as well as the part that drew them."""


def load_experiment_bars(spec: ExperimentSpec) -> Bars:
    """Load the spec's data for research: its source, universe and window (end exclusive),
    without the lockbox (the window's last ``[lockbox] fraction``, read only by ``promote``)."""
    from research.lockbox import split_lockbox

    return split_lockbox(load_window(spec), spec.lockbox.fraction)[0]


def load_window(spec: ExperimentSpec) -> Bars:
    """The spec's whole data window, lockbox included (``promote`` reads it; research must
    call :func:`load_experiment_bars`)."""
    return load_bars(
        spec.data.source, symbols=spec.data.symbols, start=spec.data.start, end=spec.data.end
    )


def run(
    spec: ExperimentSpec,
    command: str = "report",
    *,
    tracker=None,
    track: bool = True,
    progress: bool | Callable[[int, int], None] = False,
    plots: bool = True,
) -> StudyReport:
    """Run ``command`` on ``spec`` and log it as one MLflow run (parts as nested runs).

    Parameters
    ----------
    spec : ExperimentSpec
    command : {"optimize", "walk-forward", "montecarlo", "report"}
        ``report`` runs every part the spec configures: the search with its DSR and PBO, the
        walk-forward, and Monte Carlo of the selected parameters.
    tracker : research.tracking.Tracker, optional
        Default: the spec's tracking URI (or the local store under ``experiments/``).
    track : bool
        False runs without MLflow (notebooks exploring, tests of the numbers alone).
    progress : bool or callable
        Progress bars on stderr for the long parts.
    plots : bool
        False draws no figures (the numbers are the same).
    """
    if command not in COMMANDS:
        raise ConfigError(f"unknown research command {command!r}; commands: {', '.join(COMMANDS)}")
    from research.lockbox import lockbox_window, split_lockbox
    from research.preregistration import register_study

    bars, lockbox = split_lockbox(load_window(spec), spec.lockbox.fraction)
    report = StudyReport(command=command, spec=spec, plots=plots)
    report.summary["lockbox"] = lockbox_window(lockbox, spec.lockbox.fraction)
    report.summary["data_window"] = {"start": spec.data.start, "end": spec.data.end}
    started = time.perf_counter()
    with ExitStack() as stack:
        handle = None
        if track:
            if tracker is None:
                from research.tracking import Tracker

                tracker = Tracker(spec.tracking_uri, experiment=spec.experiment)
            handle = stack.enter_context(
                tracker.run(spec.name, kind=command, params=_run_params(spec))
            )
            handle.rename(study_run_name(spec.name, handle.run_id))
            report.run_name = handle.name
            handle.log_fingerprints(
                data_fingerprint=bars.fingerprint(), code=code_fingerprint(spec.strategy)
            )
            handle.log_seed(spec.seed)
            if spec.path is not None:
                handle.log_file(spec.path, artifact_path="spec")
            report.run_id = handle.run_id
            report.tracking_uri = tracker.resolved_tracking_uri
        # Registered before the first trial, in the trial registry's database (--no-track
        # too); every trial the parts run is recorded under the spec's hash.
        registration = register_study(spec, bars)
        report.parts["registration"] = registration
        report.summary["preregistration"] = registration.summary()
        report.summary["spec"] = registration.headline()
        stack.enter_context(
            trial_context(
                source="study",
                study=spec.name,
                spec_hash=registration.spec.spec_hash,
                seed=spec.seed,
            )
        )
        parts = _parts(spec, command)
        for part in parts:
            child = None
            if handle is not None and len(parts) > 1:
                child = stack.enter_context(
                    tracker.run(f"{handle.name}:{part}", kind=part, parent=handle)
                )
                report.child_runs[part] = child.run_id
            target = child or handle
            _PARTS[part](spec, bars, report, target, progress)
        report.summary["elapsed_s"] = round(time.perf_counter() - started, 3)
        report.summary["data_fingerprint"] = bars.fingerprint()
        # What a promotion record pins: the universe and the bars actually used.
        report.summary["symbols"] = list(bars.symbols)
        report.summary["data_source"] = spec.data.source
        report.summary["data_first_bar"] = iso_utc(int(bars.ts_ns[0]))
        report.summary["data_last_bar"] = iso_utc(int(bars.ts_ns[-1]))
        report.summary["data_bars"] = int(bars.n_bars)
        report.summary["research_settings"] = spec.costs.to_dict()
        if handle is not None:
            # The parent alone compares studies in the runs table: the parameters that won
            # (or, for montecarlo, that traded), the headline numbers and the key plots.
            handle.log_params(_param_values(report.summary.get("best_params") or {}))
            handle.log_metrics(_numbers(report.summary))
            handle.log_dict(_json_safe(report.summary), "summary.json")
            if len(parts) > 1:
                key = {k: report.figures[k] for k in KEY_PLOTS if k in report.figures}
                _log_figures(handle, key)
    if handle is not None:
        report.summary["run_id"] = report.run_id
    return report


def _parts(spec: ExperimentSpec, command: str) -> list[str]:
    if command != "report":
        if command == "walk-forward" and spec.walk_forward is None:
            raise ConfigError(f"{_where(spec)}: walk-forward needs a [walk_forward] section")
        return [command]
    parts = ["optimize"]
    if spec.walk_forward is not None:
        parts.append("walk-forward")
    return parts


_PARTS = {
    "optimize": _optimize,
    "walk-forward": _walk_forward,
    "montecarlo": _montecarlo,
}
