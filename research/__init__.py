"""QuantShift research: walk-forward, Monte Carlo, Optuna studies, overfitting statistics, MLflow.

Drives the ``quantshift`` core over history. The curated API below is imported lazily, so
``import research`` does not pay for Optuna or MLflow until they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "WalkForward": "research.splitters",
    "PurgedKFold": "research.splitters",
    "CombinatorialPurgedCV": "research.splitters",
    "walk_forward": "research.walkforward",
    "WalkForwardResult": "research.walkforward",
    "monte_carlo": "research.montecarlo",
    "MonteCarloResult": "research.montecarlo",
    "optimal_block_length": "research.montecarlo",
    "trade_equity_returns": "research.montecarlo",
    "sharpe_ratio": "research.stats",
    "probabilistic_sharpe_ratio": "research.stats",
    "min_track_record_length": "research.stats",
    "expected_max_sharpe": "research.stats",
    "deflated_sharpe_ratio": "research.stats",
    "pbo": "research.stats",
    "PBOResult": "research.stats",
    "TrialLedger": "research.ledger",
    "optimize": "research.optimize",
    "OptimizeResult": "research.optimize",
    "Tracker": "research.tracking",
    "load_spec": "research.spec",
    "ExperimentSpec": "research.spec",
    "run_spec": "research.study",
}

__all__ = [
    "CombinatorialPurgedCV",
    "ExperimentSpec",
    "MonteCarloResult",
    "OptimizeResult",
    "PBOResult",
    "PurgedKFold",
    "Tracker",
    "TrialLedger",
    "WalkForward",
    "WalkForwardResult",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "load_spec",
    "min_track_record_length",
    "monte_carlo",
    "optimal_block_length",
    "optimize",
    "pbo",
    "probabilistic_sharpe_ratio",
    "run_spec",
    "sharpe_ratio",
    "trade_equity_returns",
    "walk_forward",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'research' has no attribute {name!r}")
    target = "run" if name == "run_spec" else name
    value = getattr(importlib.import_module(module), target)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from research.ledger import TrialLedger
    from research.montecarlo import (
        MonteCarloResult,
        monte_carlo,
        optimal_block_length,
        trade_equity_returns,
    )
    from research.optimize import OptimizeResult, optimize
    from research.spec import ExperimentSpec, load_spec
    from research.splitters import CombinatorialPurgedCV, PurgedKFold, WalkForward
    from research.stats import (
        PBOResult,
        deflated_sharpe_ratio,
        expected_max_sharpe,
        min_track_record_length,
        pbo,
        probabilistic_sharpe_ratio,
        sharpe_ratio,
    )
    from research.study import run as run_spec
    from research.tracking import Tracker
    from research.walkforward import WalkForwardResult, walk_forward
