"""Run an experiment spec end to end: search, walk-forward, Monte Carlo, DSR/PBO, one MLflow run.

The CLI and notebooks call these functions; each returns a report whose summary is JSON-ready.
``runner`` runs a command's parts under one MLflow run; ``optimize_part``, ``walk_forward_part``
and ``montecarlo_part`` are the parts; ``measures`` reads a backtest result for them; ``report``
holds the report and the forms its summary takes for MLflow and ``--json``.
"""

from research.study.optimize_part import TOP_TRIALS_LOGGED, optimize_spec
from research.study.report import StudyReport, json_summary
from research.study.runner import COMMANDS, KEY_PLOTS, load_experiment_bars, load_window, run

__all__ = [
    "COMMANDS",
    "KEY_PLOTS",
    "TOP_TRIALS_LOGGED",
    "StudyReport",
    "json_summary",
    "load_experiment_bars",
    "load_window",
    "optimize_spec",
    "run",
]
