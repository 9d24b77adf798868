"""QuantShift: write a strategy once as a causal numba signal function; backtest, sweep, trade it.

The curated public API, imported lazily so ``import quantshift`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Bars": "quantshift.data",
    "load_bars": "quantshift.data",
    "METRICS": "quantshift.engine",
    "BacktestResult": "quantshift.engine",
    "SimConfig": "quantshift.engine",
    "backtest": "quantshift.engine",
    "sweep": "quantshift.engine",
    "sweep_equity": "quantshift.engine",
    "code_fingerprint": "quantshift.provenance",
    "PortfolioConfig": "quantshift.portfolio",
    "RiskLimits": "quantshift.portfolio",
    "Sleeve": "quantshift.portfolio",
    "portfolio_backtest": "quantshift.portfolio",
    "ConfigError": "quantshift.errors",
    "DataError": "quantshift.errors",
    "QuantShiftError": "quantshift.errors",
    "UnknownNameError": "quantshift.errors",
    "Constraint": "quantshift.strategies",
    "Param": "quantshift.strategies",
    "Strategy": "quantshift.strategies",
    "get_strategy": "quantshift.strategies",
    "list_strategies": "quantshift.strategies",
}

__all__ = [
    "METRICS",
    "BacktestResult",
    "Bars",
    "ConfigError",
    "Constraint",
    "DataError",
    "Param",
    "PortfolioConfig",
    "QuantShiftError",
    "RiskLimits",
    "SimConfig",
    "Sleeve",
    "Strategy",
    "UnknownNameError",
    "__version__",
    "backtest",
    "code_fingerprint",
    "get_strategy",
    "list_strategies",
    "load_bars",
    "portfolio_backtest",
    "sweep",
    "sweep_equity",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'quantshift' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from quantshift.data import Bars, load_bars
    from quantshift.engine import (
        METRICS,
        BacktestResult,
        SimConfig,
        backtest,
        sweep,
        sweep_equity,
    )
    from quantshift.errors import ConfigError, DataError, QuantShiftError, UnknownNameError
    from quantshift.portfolio import PortfolioConfig, RiskLimits, Sleeve, portfolio_backtest
    from quantshift.provenance import code_fingerprint
    from quantshift.strategies import Constraint, Param, Strategy, get_strategy, list_strategies
