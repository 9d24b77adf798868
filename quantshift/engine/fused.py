"""Per-strategy kernels (signals, backtest, fused parallel sweep), compiled once and cached.

The templates below call a module-global ``signal_nb``. :func:`kernels_for` re-creates each
template with that name bound to one strategy's signal function and a qualified name carrying a
digest of the sources, so numba caches one kernel per strategy (no function passes through a
cached kernel's arguments) and never reuses machine code compiled from older sources.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, prange

from quantshift.engine.config import CFG_CASH
from quantshift.engine.metrics import N_METRICS, ST_LEN, metrics_nb
from quantshift.engine.simulate import TR_LEN, simulate_nb
from quantshift.provenance import function_bytes, package_digest, source_file

# Bound per strategy by kernels_for(); the templates below are never compiled with this value.
signal_nb: Any = None


@njit
def signal_buffers_nb(n):
    """Return (entries, exits, stop, take-profit, trail) buffers pre-filled per the contract."""
    return (
        np.zeros(n, np.bool_),
        np.zeros(n, np.bool_),
        np.full(n, np.nan),
        np.full(n, np.nan),
        np.full(n, np.nan),
    )


def signals_template(open_, high, low, close, volume, params):
    entries, exits, stop, take_profit, trail = signal_buffers_nb(close.shape[0])
    signal_nb(open_, high, low, close, volume, params, entries, exits, stop, take_profit, trail)
    return entries, exits, stop, take_profit, trail


def backtest_template(open_, high, low, close, volume, lengths, periods_per_year, params, cfg):
    n_symbols, n_max = close.shape
    equity = np.full((n_symbols, n_max), np.nan)
    position = np.zeros((n_symbols, n_max))
    trades = np.empty((n_symbols, max(n_max, 1), TR_LEN))  # rows past n_trades[s] are unused
    n_trades = np.zeros(n_symbols, np.int64)
    metrics = np.empty((n_symbols, N_METRICS))
    for s in prange(n_symbols):
        n = lengths[s]
        o, h, lo, c, v = open_[s, :n], high[s, :n], low[s, :n], close[s, :n], volume[s, :n]
        entries, exits, stop, take_profit, trail = signal_buffers_nb(n)
        signal_nb(o, h, lo, c, v, params, entries, exits, stop, take_profit, trail)
        stats = np.zeros(ST_LEN)
        n_trades[s] = simulate_nb(
            o,
            h,
            lo,
            c,
            entries,
            exits,
            stop,
            take_profit,
            trail,
            cfg,
            equity[s, :n],
            position[s, :n],
            trades[s],
            stats,
        )
        metrics_nb(stats, cfg[CFG_CASH], periods_per_year[s], metrics[s])
    return equity, position, trades, n_trades, metrics


def sweep_template(open_, high, low, close, volume, lengths, periods_per_year, param_sets, cfg):
    n_symbols = close.shape[0]
    n_jobs = param_sets.shape[0] * n_symbols
    out = np.empty((n_jobs, N_METRICS))
    no_records = np.zeros((0, TR_LEN))
    no_series = np.zeros(0)
    for job in prange(n_jobs):
        k = job // n_symbols
        s = job - k * n_symbols
        n = lengths[s]
        o, h, lo, c, v = open_[s, :n], high[s, :n], low[s, :n], close[s, :n], volume[s, :n]
        entries, exits, stop, take_profit, trail = signal_buffers_nb(n)
        signal_nb(o, h, lo, c, v, param_sets[k], entries, exits, stop, take_profit, trail)
        stats = np.zeros(ST_LEN)
        simulate_nb(
            o,
            h,
            lo,
            c,
            entries,
            exits,
            stop,
            take_profit,
            trail,
            cfg,
            no_series,
            no_series,
            no_records,
            stats,
        )
        metrics_nb(stats, cfg[CFG_CASH], periods_per_year[s], out[job])
    return out


def equity_sweep_template(
    open_, high, low, close, volume, lengths, periods_per_year, param_sets, cfg
):
    n_symbols, n_max = close.shape
    n_jobs = param_sets.shape[0] * n_symbols
    equity = np.full((n_jobs, n_max), np.nan)
    metrics = np.empty((n_jobs, N_METRICS))
    for job in prange(n_jobs):
        k = job // n_symbols
        s = job - k * n_symbols
        n = lengths[s]
        o, h, lo, c, v = open_[s, :n], high[s, :n], low[s, :n], close[s, :n], volume[s, :n]
        entries, exits, stop, take_profit, trail = signal_buffers_nb(n)
        signal_nb(o, h, lo, c, v, param_sets[k], entries, exits, stop, take_profit, trail)
        stats = np.zeros(ST_LEN)
        # Equity is only written when trades are recorded; the buffers live for one job.
        simulate_nb(
            o,
            h,
            lo,
            c,
            entries,
            exits,
            stop,
            take_profit,
            trail,
            cfg,
            equity[job, :n],
            np.empty(n),
            np.empty((max(n, 1), TR_LEN)),
            stats,
        )
        metrics_nb(stats, cfg[CFG_CASH], periods_per_year[s], metrics[job])
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
        digest = _digest(strategy.signal_nb)
        # A signal function whose module cannot be imported (exec'd code, a notebook cell)
        # compiles in numba's "<dynamic>" module; a cached kernel calling it fails to load in
        # the next process, so such kernels are compiled per process instead.
        cache = _importable(getattr(strategy.signal_nb, "py_func", strategy.signal_nb))
        compiled = {}
        for kind, template, parallel in _TEMPLATES:
            name = f"{kind}__{tag}__{digest}"
            fn = types.FunctionType(template.__code__, namespace, name)
            fn.__qualname__ = name
            compiled[kind] = njit(cache=cache, parallel=parallel)(fn)
        built = _BUILT[key] = Kernels(**compiled)
    return built


def _importable(func) -> bool:
    """True if numba can find the module ``func`` lives in (what its cache needs)."""
    module = inspect.getmodule(func)
    return module is not None and getattr(module, "__name__", "") in sys.modules


def _digest(signal) -> str:
    """Digest of everything a kernel is compiled from: the package, the signal function's
    identity and bytecode and those of the numba functions it calls, and its source file
    (numba's own cache only sees the template)."""
    func = getattr(signal, "py_func", signal)
    h = hashlib.sha256(package_digest())
    h.update(function_bytes(func, set()))
    path = source_file(func)
    if path is not None:
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:12]
