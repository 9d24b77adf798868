"""Per-strategy kernels (signals, backtest, fused parallel sweep), compiled once and cached.

The templates below call a module-global ``signal_nb``. :func:`kernels_for` re-creates each
template with that name bound to one strategy's signal function and a qualified name carrying a
digest of the sources, so numba caches one kernel per strategy (no function passes through a
cached kernel's arguments) and never reuses machine code compiled from older sources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

from quantshift.engine.compile import compile_template, function_digest, importable
from quantshift.engine.metrics import metrics_nb, new_stats_nb
from quantshift.engine.records import Signals, SimOutputs, SymbolBars, metrics_dt, trade_dt
from quantshift.engine.simulate import simulate_nb

# Bound per strategy by kernels_for(); the templates below are never compiled with this value.
signal_nb: Any = None
run_symbol_nb: Any = None


@njit
def signal_buffers_nb(n):
    """Return Signals buffers pre-filled per the contract (no signal, no distance)."""
    return Signals(
        np.zeros(n, np.bool_),
        np.zeros(n, np.bool_),
        np.full(n, np.nan),
        np.full(n, np.nan),
        np.full(n, np.nan),
    )


@njit
def symbol_bars_nb(bars, s):
    """Return symbol ``s``'s valid bars from a BarArrays."""
    n = bars.lengths[s]
    return SymbolBars(
        bars.open[s, :n], bars.high[s, :n], bars.low[s, :n], bars.close[s, :n], bars.volume[s, :n]
    )


def signals_template(open_, high, low, close, volume, params):
    sig = signal_buffers_nb(close.shape[0])
    signal_nb(
        open_, high, low, close, volume, params,
        sig.entries, sig.exits, sig.stop, sig.take_profit, sig.trail,
    )  # fmt: skip
    return sig


def run_symbol_template(bars, s, params, cfg, out, metrics_out):
    """Signals, fills and metrics of one symbol; return the trade rows written."""
    b = symbol_bars_nb(bars, s)
    sig = signal_buffers_nb(b.close.shape[0])
    signal_nb(
        b.open, b.high, b.low, b.close, b.volume, params,
        sig.entries, sig.exits, sig.stop, sig.take_profit, sig.trail,
    )  # fmt: skip
    n_trades = simulate_nb(b, sig, cfg, out)
    metrics_nb(out.stats[0], cfg.cash, bars.periods_per_year[s], metrics_out)
    return n_trades


def backtest_template(bars, params, cfg):
    n_symbols, n_max = bars.close.shape
    equity = np.full((n_symbols, n_max), np.nan)
    position = np.zeros((n_symbols, n_max))
    trades = np.empty((n_symbols, max(n_max, 1)), trade_dt)  # rows past n_trades[s]: unused
    n_trades = np.zeros(n_symbols, np.int64)
    metrics = np.empty(n_symbols, metrics_dt)
    for s in prange(n_symbols):
        n = bars.lengths[s]
        out = SimOutputs(equity[s, :n], position[s, :n], trades[s], new_stats_nb())
        n_trades[s] = run_symbol_nb(bars, s, params, cfg[0], out, metrics[s])
    return equity, position, trades, n_trades, metrics


def sweep_template(bars, param_sets, cfg):
    n_symbols = bars.close.shape[0]
    n_jobs = param_sets.shape[0] * n_symbols
    metrics = np.empty(n_jobs, metrics_dt)
    no_trades = np.empty(0, trade_dt)
    no_series = np.zeros(0)
    for job in prange(n_jobs):
        k = job // n_symbols
        s = job - k * n_symbols
        out = SimOutputs(no_series, no_series, no_trades, new_stats_nb())
        run_symbol_nb(bars, s, param_sets[k], cfg[0], out, metrics[job])
    return metrics


def equity_sweep_template(bars, param_sets, cfg):
    n_symbols, n_max = bars.close.shape
    n_jobs = param_sets.shape[0] * n_symbols
    equity = np.full((n_jobs, n_max), np.nan)
    metrics = np.empty(n_jobs, metrics_dt)
    for job in prange(n_jobs):
        k = job // n_symbols
        s = job - k * n_symbols
        n = bars.lengths[s]
        # Equity is only written when trades are recorded; the buffers live for one job.
        trades = np.empty(max(n, 1), trade_dt)
        out = SimOutputs(equity[job, :n], np.empty(n), trades, new_stats_nb())
        run_symbol_nb(bars, s, param_sets[k], cfg[0], out, metrics[job])
    return equity, metrics


@dataclass(frozen=True)
class Kernels:
    """The compiled kernels of one strategy."""

    signals: Any
    backtest: Any
    backtest_serial: Any
    sweep: Any
    equity_sweep: Any


_TEMPLATES = (
    ("signals", signals_template, False),
    ("backtest", backtest_template, True),
    # One symbol gains nothing from threads, and idle OpenMP workers spinning on a busy
    # machine made a 2 ms backtest take 30-60 ms.
    ("backtest_serial", backtest_template, False),
    ("sweep", sweep_template, True),
    ("equity_sweep", equity_sweep_template, True),
)
# Keyed by the signal function itself (not its id, which a new function could reuse).
_BUILT: dict[Any, Kernels] = {}


def kernels_for(strategy) -> Kernels:
    """Return the kernels of ``strategy`` (a :class:`~quantshift.strategies.Strategy`)."""
    key = strategy.signal_nb
    built = _BUILT.get(key)
    if built is None:
        namespace = dict(globals())
        namespace["signal_nb"] = strategy.signal_nb
        tag = re.sub(r"\W", "_", strategy.name)
        digest = function_digest(strategy.signal_nb)
        # A signal function whose module cannot be imported (exec'd code, a notebook cell)
        # compiles in numba's "<dynamic>" module; a cached kernel calling it fails to load in
        # the next process, so such kernels are compiled per process instead.
        cache = importable(getattr(strategy.signal_nb, "py_func", strategy.signal_nb))
        # The kernels call this per-symbol step; it is inlined into each, so not cached alone.
        namespace["run_symbol_nb"] = compile_template(
            run_symbol_template, namespace, f"run_symbol__{tag}__{digest}", cache=False
        )
        compiled = {
            kind: compile_template(
                template, namespace, f"{kind}__{tag}__{digest}", cache=cache, parallel=parallel
            )
            for kind, template, parallel in _TEMPLATES
        }
        built = _BUILT[key] = Kernels(**compiled)
    return built
