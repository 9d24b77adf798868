"""Compile the decision layer's kernels before the first bar that needs them."""

from __future__ import annotations

import time

import numpy as np

from quantshift.data.bars import Bars
from quantshift.engine.metrics import equity_metrics, trade_metrics
from quantshift.portfolio.config import PortfolioConfig
from quantshift.portfolio.decide import check_stops, decide, fill_orders
from quantshift.portfolio.overlay import REGIME_UNKNOWN
from quantshift.portfolio.signals import compute_signals
from quantshift.portfolio.state import PortfolioState

WARM_ROWS = 64
"""Bars of ``bars`` the warm-up computes signals on (any rows give the kernels their types)."""


def warm_kernels(config: PortfolioConfig, bars: Bars) -> float:
    """Compile, or load from numba's cache, every kernel one bar of ``config`` runs: the
    sleeves' signal kernels, the decision, the fill, the protective-level check and the equity
    and trade metrics. Each runs once on a throwaway all-cash state over the last rows of
    ``bars`` (the calls are pure: nothing of it is kept). Return the seconds it took.

    A live runner calls it before it says it is ready, so its first cycle, and a standby's
    first after a takeover, decides in milliseconds instead of the seconds numba takes to load
    its cache (about a minute to compile on a cold one).
    """
    started = time.perf_counter()
    equity_metrics(np.ones(2), 1.0, 252.0)
    trade_metrics(np.zeros(1))
    if bars.n_bars == 0:
        return time.perf_counter() - started
    history = compute_signals(config, bars[max(0, bars.n_bars - WARM_ROWS) :])
    signals = history.at(-1)
    state = PortfolioState.initial(config)
    decision = decide(
        state,
        signals,
        config,
        regime=None if config.regimes is None else REGIME_UNKNOWN,
        sentiment=None if config.sentiment is None else {},
    )
    close = np.asarray(signals.close, dtype=np.float64)
    fill_orders(state, decision.orders, close, signals.ts_ns, config)
    check_stops(state, close, close, close, signals.ts_ns, config)
    return time.perf_counter() - started
