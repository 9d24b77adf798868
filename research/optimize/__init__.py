"""Optuna behind one small package, the only place that imports it: seeded single- and
multi-objective searches over a strategy's parameters, evaluated in batches through the fused
sweep, in memory or shared through a database.

``space`` turns declared parameter ranges into Optuna distributions, ``storage`` opens, creates
and joins stored studies, ``loop`` asks, evaluates and tells batches, ``search`` is the API.
"""

from research.optimize.loop import OVER_BUDGET
from research.optimize.search import OptimizeResult, load_ledger, optimize, run_worker
from research.optimize.space import MAX_GRID_AXIS
from research.optimize.storage import PRUNERS, SAMPLERS

__all__ = [
    "MAX_GRID_AXIS",
    "OVER_BUDGET",
    "PRUNERS",
    "SAMPLERS",
    "OptimizeResult",
    "load_ledger",
    "optimize",
    "run_worker",
]
