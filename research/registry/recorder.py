"""The sweep observer research declares (entry point ``quantshift.trial_recorders``): every
``qs.sweep`` / ``qs.sweep_equity`` becomes one batch of registry rows, tagged with what
:func:`trial_context` says about where it came from.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from quantshift.data.bars import Bars
from quantshift.engine.config import SimConfig
from quantshift.engine.metrics import METRICS, infer_periods_per_year
from quantshift.engine.sweep import SweepTrials, current_sweep_tags, sweep_tags
from quantshift.errors import ConfigError
from quantshift.strategies import Strategy
from research.registry.effective import return_signature
from research.registry.keys import DataKey, registry_url, source_hash
from research.registry.store import TrialBatch, TrialRegistry

TAGS = ("source", "study", "stage", "spec_hash", "seed", "worker", "evaluation", "record")
"""What :func:`trial_context` accepts."""

DEFAULT_SOURCE = "sweep"
_SHARPE = METRICS.index("sharpe")
_TRADES = METRICS.index("trades")
OPEN_TIMEOUT_S = 10.0
RETRY_AFTER_S = 60.0
"""A registry that could not be opened is not tried again for this long (each sweep warns)."""
_DEFAULT: list[tuple[str, int, TrialRegistry]] = []  # this process's open default registry
_FAILED: dict[str, tuple[float, str]] = {}  # URL -> (monotonic time, error) of a failed open


@contextmanager
def trial_context(**tags: Any) -> Iterator[Mapping[str, Any]]:
    """Tag every sweep inside the block: ``source`` (sweep, cli-sweep, optimize,
    walk-forward, study, notebook ...), ``study``, ``stage``, ``spec_hash``, ``seed``,
    ``worker``, ``evaluation``; ``record=False`` keeps a re-evaluation of trials already
    recorded (PBO's equity curves) out of the registry. Nested blocks add to the outer tags."""
    unknown = sorted(set(tags) - set(TAGS))
    if unknown:
        raise ConfigError(f"trial_context: unknown tag(s) {unknown}; tags: {', '.join(TAGS)}")
    with sweep_tags(**tags) as merged:
        yield merged


@contextmanager
def trial_defaults(**tags: Any) -> Iterator[Mapping[str, Any]]:
    """Like :func:`trial_context`, but only for tags an outer block has not set (a walk-forward
    calling the optimiser stays ``source="walk-forward"``)."""
    current = current_tags()
    fresh = {k: v for k, v in tags.items() if k not in current and v is not None}
    with trial_context(**fresh) as merged:
        yield merged


def current_tags() -> Mapping[str, Any]:
    """Return the tags the enclosing :func:`trial_context` blocks set."""
    return current_sweep_tags()


def default_registry(url: str | None = None) -> TrialRegistry:
    """Return this process's open registry at ``url`` (default :func:`registry_url`: env
    ``QUANTSHIFT_REGISTRY_URL``, the PostgreSQL tracking database, or experiments/registry.db)."""
    resolved, pid = registry_url(url), os.getpid()
    if _DEFAULT:
        open_url, open_pid, registry = _DEFAULT[0]
        if (open_url, open_pid) == (resolved, pid) and not registry.closed:
            return registry
        _DEFAULT.clear()
        if open_pid == pid:  # the URL changed (tests, a notebook): one connection at a time
            registry.close()
    failed = _FAILED.get(resolved)
    if failed is not None and time.monotonic() - failed[0] < RETRY_AFTER_S:
        raise ConfigError(f"{failed[1]} (not retried for {RETRY_AFTER_S:.0f} s)")
    try:
        registry = TrialRegistry.open(resolved, timeout_s=OPEN_TIMEOUT_S)
    except Exception as exc:
        _FAILED[resolved] = (time.monotonic(), str(exc))
        raise
    _FAILED.pop(resolved, None)
    _DEFAULT.append((resolved, pid, registry))
    return registry


def record_sweep(trials: SweepTrials) -> None:
    """Record one sweep's parameter sets (the entry point the core calls after each sweep)."""
    if trials.tags.get("record", True) is False:
        return
    batch = sweep_batch(
        trials.strategy,
        trials.bars,
        trials.config,
        trials.matrix,
        trials.metrics,
        trials.equity,
        trials.tags,
    )
    default_registry().record(batch)


def sweep_batch(
    strategy: Strategy,
    bars: Bars,
    config: SimConfig,
    matrix: np.ndarray,
    metrics: np.ndarray | None,
    equity: np.ndarray | None,
    tags: Mapping[str, Any],
    *,
    state: str | None = None,
) -> TrialBatch:
    """Return the registry rows of parameter sets evaluated on ``bars``: one per set, with the
    per-bar Sharpe ratio in the winner's unit (:func:`trial_sharpes`). Without ``metrics``
    the sets were never run (``state``, e.g. "infeasible")."""
    n, m = matrix.shape[0], bars.n_symbols
    key = DataKey.of(bars)
    if metrics is None:
        sharpe, signature = np.full(n, np.nan), None
        trades = np.full(n, np.nan)
        states = [state or "infeasible"] * n
    else:
        sharpe, signature = trial_sharpes(bars, config, metrics, equity)
        trades = metrics[:, _TRADES].reshape(n, m).sum(axis=1)
        finite = np.isfinite(sharpe) if m == 1 or equity is not None else np.ones(n, bool)
        states = np.where(finite, state or "complete", "failed").tolist()
    seed = tags.get("seed")
    return TrialBatch(
        lineage=strategy.name,
        source_hash=source_hash(strategy),
        data_key=str(key),
        universe=key.universe,
        interval=key.interval,
        start_ns=key.start_ns,
        end_ns=key.end_ns,
        source=str(tags.get("source") or _default_source()),
        evaluation=str(tags.get("evaluation") or uuid.uuid4().hex),
        param_names=strategy.param_names,
        params=matrix,
        integer_params=[p.integer for p in strategy.params],
        sharpe_per_bar=sharpe,
        n_bars=int(bars.valid.any(axis=1).sum()),
        trades=trades,
        states=states,
        n_symbols=m,
        spec_hash=tags.get("spec_hash"),
        study=tags.get("study"),
        stage=tags.get("stage"),
        worker=str(tags.get("worker") or f"{socket.gethostname()}:{os.getpid()}"),
        seed=None if seed is None else int(seed),
        signature=signature,
    )


def _default_source() -> str:
    # A sweep typed into a Jupyter kernel is a notebook's; anything else a plain sweep. A
    # process that merely imported ipykernel (a test runner executing notebooks) is not one.
    kernel = sys.modules.get("ipykernel.kernelapp")
    running = kernel is not None and kernel.IPKernelApp.initialized()
    return "notebook" if running else DEFAULT_SOURCE


def record_unevaluated(
    strategy: Strategy, bars: Bars, config: SimConfig, matrix: np.ndarray, state: str
) -> None:
    """Record parameter sets that were never run on data (``state``: "infeasible"), under the
    current tags; a registry that cannot be written warns (the caller's work goes on)."""
    tags = current_tags()
    if tags.get("record", True) is False or matrix.shape[0] == 0:
        return
    try:
        batch = sweep_batch(strategy, bars, config, matrix, None, None, tags, state=state)
        default_registry().record(batch)
    except Exception as exc:
        warnings.warn(
            f"trial registry: {matrix.shape[0]} {state} set(s) not recorded "
            f"({type(exc).__name__}: {exc})",
            RuntimeWarning,
            stacklevel=2,
        )


def trial_sharpes(
    bars: Bars, config: SimConfig, metrics: np.ndarray, equity: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return each set's per-bar Sharpe ratio in the unit the winner is judged on, and its
    return signature (None without equity curves).

    One symbol: the symbol's Sharpe ratio over the root of its periods per year (the kernel's
    per-bar ``mean / std``). Several symbols: the per-bar Sharpe ratio of the summed equity of
    all sleeves (:func:`portfolio_returns`), as ``research.study`` judges the winner; NaN when
    the sweep kept no equity curves (``qs.sweep`` of several symbols).
    """
    m = bars.n_symbols
    n = metrics.shape[0] // m
    returns = None
    if equity is not None:
        returns = portfolio_returns(equity, config.cash)
    if m == 1:
        if config.periods_per_year is not None:
            ppy = float(config.periods_per_year)
        else:
            ppy = infer_periods_per_year(bars.ts_ns[bars.valid[:, 0]])
        sharpe = metrics[:, _SHARPE] / math.sqrt(ppy)
    elif returns is not None:
        sharpe = sharpe_per_bar(returns)
    else:
        sharpe = np.full(n, np.nan)
    signature = None if returns is None else return_signature(returns)
    return np.asarray(sharpe, dtype=np.float64), signature


def portfolio_returns(equity: np.ndarray, cash: float) -> np.ndarray:
    """Return the (n_sets, n_bars) per-bar returns of each set's summed equity over its
    symbols (``equity``: (n_sets, n_symbols, n_bars) from ``sweep_equity``), the first bar
    against the initial cash of every sleeve."""
    total = np.asarray(equity, dtype=np.float64).sum(axis=1)
    previous = np.empty_like(total)
    previous[:, 0] = cash * equity.shape[1]
    previous[:, 1:] = total[:, :-1]
    return total / previous - 1.0


def sharpe_per_bar(returns: np.ndarray) -> np.ndarray:
    """Return each row's ``mean / std`` (sample std, ddof=1): NaN where returns do not vary."""
    values = np.asarray(returns, dtype=np.float64)
    std = values.std(axis=1, ddof=1) if values.shape[1] > 1 else np.zeros(values.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 0, values.mean(axis=1) / np.where(std > 0, std, 1.0), np.nan)
