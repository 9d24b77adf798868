"""The decision layer: allocation, conflicts, sizing and risk limits over several strategies.

``decide`` is one pure function shared by the portfolio backtest and the live runner; regime
and sentiment inputs and the sector map are described in ``quantshift.portfolio.overlay``.
"""

from quantshift.portfolio.backtest import PortfolioResult, portfolio_backtest
from quantshift.portfolio.config import SLEEVE_SETTINGS, PortfolioConfig, RiskLimits, Sleeve
from quantshift.portfolio.decide import (
    ClosedTrade,
    Decision,
    Fill,
    FillResult,
    TargetOrder,
    Veto,
    apply_executions,
    check_stops,
    decide,
    fill_orders,
    flatten_orders,
)
from quantshift.portfolio.overlay import (
    REGIME_UNKNOWN,
    REGIMES,
    RegimeOverlay,
    RegimeRule,
    SectorMap,
    SentimentFilter,
)
from quantshift.portfolio.signals import BarSignals, SignalHistory, compute_signals
from quantshift.portfolio.state import PortfolioState, Position
from quantshift.portfolio.warm import warm_kernels

__all__ = [
    "REGIMES",
    "REGIME_UNKNOWN",
    "SLEEVE_SETTINGS",
    "BarSignals",
    "ClosedTrade",
    "Decision",
    "Fill",
    "FillResult",
    "PortfolioConfig",
    "PortfolioResult",
    "PortfolioState",
    "Position",
    "RegimeOverlay",
    "RegimeRule",
    "RiskLimits",
    "SectorMap",
    "SentimentFilter",
    "SignalHistory",
    "Sleeve",
    "TargetOrder",
    "Veto",
    "apply_executions",
    "check_stops",
    "compute_signals",
    "decide",
    "fill_orders",
    "flatten_orders",
    "portfolio_backtest",
    "warm_kernels",
]
