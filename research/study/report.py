"""A study's report (headline numbers, figures, MLflow runs) and the forms its contents take on
the way out: run params, numeric metrics, JSON-safe summaries, figures logged to a run."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from research.spec import ExperimentSpec


@dataclass(eq=False)
class StudyReport:
    """What one command produced: the headline numbers, the figures and the MLflow run."""

    command: str
    spec: ExperimentSpec
    summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict, repr=False)
    run_id: str | None = None
    run_name: str | None = None
    child_runs: dict[str, str] = field(default_factory=dict)
    tracking_uri: str | None = None
    parts: dict[str, Any] = field(default_factory=dict, repr=False)
    plots: bool = True
    """False: draw no figures (a harness running many studies needs only the numbers)."""

    def add_figure(self, name: str, draw: Callable[[], Any]) -> None:
        """Draw and keep a figure, unless the report draws none."""
        if self.plots:
            self.figures[name] = draw()

    def save_figures(self, directory: str | Path) -> list[Path]:
        """Write every figure as PNG under ``directory``; return the paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, fig in self.figures.items():
            path = directory / f"{name}.png"
            fig.savefig(path, dpi=110)
            paths.append(path)
        return paths

    def close_figures(self) -> None:
        """Release the figures (pyplot keeps every open figure alive until closed)."""
        from quantshift.engine.plotting import pyplot

        plt = pyplot()
        for fig in self.figures.values():
            plt.close(fig)


def _log_figures(run, figures: dict[str, Any]) -> None:
    for name, fig in figures.items():
        run.log_figure(fig, f"plots/{name}.png")


def _run_params(spec: ExperimentSpec) -> dict[str, Any]:
    params: dict[str, Any] = {
        "strategy": spec.strategy,
        "seed": spec.seed,
        "data": {
            "source": spec.data.source,
            "symbols": ",".join(spec.data.symbols) if spec.data.symbols else "all",
            "start": spec.data.start,
            "end": spec.data.end,
        },
        "costs": spec.costs.to_dict(),
        "search": {
            "method": spec.search.method,
            "sampler": spec.search.sampler,
            "trials": spec.search.trials,
            "objectives": ",".join(spec.search.objectives),
            "min_trades": spec.search.min_trades,
            "space": {k: str(v) for k, v in spec.search.space.items()},
        },
    }
    if spec.walk_forward is not None:
        params["walk_forward"] = dict(vars(spec.walk_forward))
    if spec.monte_carlo is not None:
        params["monte_carlo"] = dict(vars(spec.monte_carlo))
    if spec.pbo is not None:
        params["pbo"] = dict(vars(spec.pbo))
    return params


def _param_values(params) -> dict[str, Any]:
    """Parameter values as a person reads them in the runs table (``10``, not ``10.0``)."""
    return {k: int(v) if float(v).is_integer() else float(v) for k, v in params.items()}


def _numbers(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's finite numbers (MLflow metrics); nested values stay in summary.json."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _where(spec: ExperimentSpec) -> str:
    return str(spec.path) if spec.path is not None else spec.name


def json_summary(report: StudyReport) -> dict[str, Any]:
    """The report's summary with non-finite numbers as null (for ``--json``)."""
    return _json_safe(report.summary)
