"""Simulation: the shared fill model, metrics, fused per-strategy kernels, backtest and sweep."""

from quantshift.engine.backtest import BacktestResult, backtest
from quantshift.engine.config import SimConfig
from quantshift.engine.metrics import METRIC_DESCRIPTIONS, METRICS
from quantshift.engine.sweep import sweep, sweep_equity

__all__ = [
    "METRICS",
    "METRIC_DESCRIPTIONS",
    "BacktestResult",
    "SimConfig",
    "backtest",
    "sweep",
    "sweep_equity",
]
