"""Public parameter sweep: many parameter sets x symbols in one parallel fused numba kernel.

Signals, fills and metrics run per (parameter set, symbol) in O(bars) memory per worker.
Every sweep is offered to the trial recorders a driver declares (entry point group
``quantshift.trial_recorders``): research keeps a registry of every evaluation that way.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from quantshift.data.bars import Bars
from quantshift.engine.arrays import pack
from quantshift.engine.backtest import prepare
from quantshift.engine.config import SimConfig
from quantshift.engine.fused import kernels_for
from quantshift.engine.metrics import METRICS
from quantshift.engine.records import float_matrix
from quantshift.errors import ConfigError
from quantshift.progress import Progress
from quantshift.strategies import Strategy
from quantshift.strategies.grid import ParameterGrid

ParamSets = Mapping[str, Any] | Sequence[Mapping[str, Any]] | np.ndarray | ParameterGrid | None

TRIAL_RECORDERS = "quantshift.trial_recorders"
"""Entry point group: callables given a :class:`SweepTrials` after every sweep."""

_TAGS: ContextVar[Mapping[str, Any]] = ContextVar(
    "quantshift_sweep_tags", default=MappingProxyType({})
)
_RECORDERS: list[tuple[str, Callable[[SweepTrials], None]]] | None = None


@dataclass(frozen=True, eq=False)
class SweepTrials:
    """What one sweep evaluated, as offered to trial recorders.

    ``metrics`` is the (n_sets * n_symbols, len(METRICS)) float matrix of the sweep's table
    (parameter-set major); ``equity`` the (n_sets, n_symbols, n_bars) curves of
    :func:`sweep_equity` (None for :func:`sweep`); ``tags`` what :func:`sweep_tags` set.
    """

    strategy: Strategy
    bars: Bars
    config: SimConfig
    matrix: np.ndarray
    metrics: np.ndarray
    equity: np.ndarray | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def sweep_tags(**tags: Any) -> Iterator[Mapping[str, Any]]:
    """Tag every sweep run inside the block for the trial recorders (nested blocks add to and
    override the outer tags; ``record=False`` asks recorders to skip a re-evaluation)."""
    merged = MappingProxyType({**_TAGS.get(), **tags})
    token = _TAGS.set(merged)
    try:
        yield merged
    finally:
        _TAGS.reset(token)


def current_sweep_tags() -> Mapping[str, Any]:
    """Return the tags the enclosing :func:`sweep_tags` blocks set."""
    return _TAGS.get()


def _recorders() -> list[tuple[str, Callable[[SweepTrials], None]]]:
    global _RECORDERS
    if _RECORDERS is None:
        from importlib.metadata import entry_points

        found = []
        for entry in entry_points(group=TRIAL_RECORDERS):
            try:
                found.append((entry.name, entry.load()))
            except Exception as exc:  # a broken driver must not break sweeps
                warnings.warn(f"trial recorder '{entry.name}' not loaded: {exc}", stacklevel=3)
        _RECORDERS = found
    return _RECORDERS


def _offer(trials: SweepTrials) -> None:
    """Give the sweep to every recorder; a failing recorder warns, the result is kept."""
    for name, recorder in _recorders():
        try:
            recorder(trials)
        except Exception as exc:
            warnings.warn(
                f"trial recorder '{name}' failed ({type(exc).__name__}: {exc}); "
                "the sweep's result is returned unrecorded",
                RuntimeWarning,
                stacklevel=3,
            )


def sweep(
    strategy: str | Strategy,
    bars: Bars | str,
    params: ParamSets = None,
    *,
    symbol: str | Sequence[str] | None = None,
    config: SimConfig | None = None,
    progress: bool | Callable[[int, int], None] = False,
    **settings: Any,
) -> pd.DataFrame:
    """Evaluate many parameter sets of a strategy on every symbol.

    Parameters
    ----------
    strategy : str or Strategy
        A registered strategy name or a Strategy object.
    bars : Bars or str
        Bars, or a data spec for :func:`quantshift.load_bars`.
    params : mapping, sequence of mappings or ndarray, optional
        A grid ``{name: values}`` (Cartesian product; a scalar fixes a parameter; sets that
        violate a constraint such as fast < slow are dropped; more sets than
        :func:`~quantshift.strategies.grid.max_grid_sets` are refused), a
        :class:`~quantshift.strategies.grid.ParameterGrid` (its own limit), a list of parameter
        dicts, or an (n_sets, n_params) matrix in declaration order. Default: the defaults.
    symbol : str or sequence of str, optional
        Restrict to these symbols.
    config : SimConfig, optional
        Simulation settings; ``settings`` keywords override single fields.
    progress : bool or callable
        True shows a progress bar on stderr; a callable gets ``(sets_done, sets_total)``.

    Returns
    -------
    DataFrame
        One row per (parameter set, symbol), in parameter-set order: the parameters, ``symbol``
        and every metric of ``quantshift.engine.metrics.METRICS``.
    """
    strat, data, cfg = prepare(strategy, bars, symbol, config, settings)
    matrix = parameter_matrix(strat, params)
    packed = pack(data, cfg)
    kernel = kernels_for(strat).sweep
    cfg_record = cfg.to_record()
    kernel_bars = packed.kernel_bars()
    n_sets = matrix.shape[0]
    chunks = _chunks(n_sets, data.n_symbols) if progress else [(0, n_sets)]
    parts = []
    with Progress(progress, n_sets, f"sweep {strat.name}") as report:
        for lo, hi in chunks:
            parts.append(kernel(kernel_bars, np.ascontiguousarray(matrix[lo:hi]), cfg_record))
            report(hi)
    metrics = float_matrix(np.concatenate(parts) if len(parts) > 1 else parts[0])
    _offer(SweepTrials(strat, data, cfg, matrix, metrics, None, _TAGS.get()))
    return _table(strat, data, matrix, metrics)


def sweep_equity(
    strategy: str | Strategy,
    bars: Bars | str,
    params: ParamSets = None,
    *,
    symbol: str | Sequence[str] | None = None,
    config: SimConfig | None = None,
    **settings: Any,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Evaluate many parameter sets and keep each one's equity curve (for PBO, Monte Carlo).

    Unlike :func:`sweep` this materialises an (n_sets, n_symbols, n_bars) float64 array, so
    memory grows with parameter sets x symbols x bars; use it for the hundreds or thousands of
    sets a PBO study needs, not for million-set sweeps.

    Returns
    -------
    table : DataFrame
        As :func:`sweep`: one row per (parameter set, symbol), parameters and metrics.
    equity : ndarray
        ``equity[k, s, t]``: equity of parameter set k on symbol s at bar t of the bars' time
        axis; a symbol's missing bars carry its last value, and bars before its first carry the
        initial cash.
    """
    strat, data, cfg = prepare(strategy, bars, symbol, config, settings)
    matrix = parameter_matrix(strat, params)
    packed = pack(data, cfg)
    packed_equity, metrics = kernels_for(strat).equity_sweep(
        packed.kernel_bars(), matrix, cfg.to_record()
    )
    n_sets, m = matrix.shape[0], data.n_symbols
    packed_equity = packed_equity.reshape(n_sets, m, -1)
    if packed.gap_free:
        equity = packed_equity
    else:
        equity = np.full((n_sets, m, data.n_bars), np.nan)
        for s, rows in enumerate(packed.rows):
            equity[:, s, rows] = packed_equity[:, s, : rows.shape[0]]
        equity = pd.DataFrame(equity.reshape(-1, data.n_bars).T).ffill().fillna(cfg.cash)
        equity = equity.to_numpy().T.reshape(n_sets, m, data.n_bars)
    equity = np.ascontiguousarray(equity)
    metrics = float_matrix(metrics)
    _offer(SweepTrials(strat, data, cfg, matrix, metrics, equity, _TAGS.get()))
    return _table(strat, data, matrix, metrics), equity


def _table(strat: Strategy, data: Bars, matrix: np.ndarray, metrics: np.ndarray) -> pd.DataFrame:
    """One row per (parameter set, symbol): the parameters, the symbol and every metric
    (``metrics``: the float matrix of the kernel's records)."""
    n_sets, m = matrix.shape[0], data.n_symbols
    table = pd.DataFrame(np.repeat(matrix, m, axis=0), columns=list(strat.param_names))
    for p in strat.params:
        if p.integer:
            table[p.name] = table[p.name].astype(np.int64)
    table["symbol"] = np.tile(np.array(data.symbols, dtype=object), n_sets)
    return pd.concat([table, pd.DataFrame(metrics, columns=list(METRICS))], axis=1)


def parameter_matrix(strategy: Strategy, params: ParamSets) -> np.ndarray:
    """Return the validated (n_sets, n_params) matrix for any accepted ``params`` form."""
    if params is None:
        return strategy.vector().reshape(1, -1)
    if isinstance(params, np.ndarray):
        return strategy.check_matrix(params)
    if isinstance(params, ParameterGrid):
        return params.matrix()
    if isinstance(params, Mapping):
        axes = {k: _as_values(v) for k, v in params.items()}
        return strategy.grid(axes)
    if isinstance(params, Sequence) and not isinstance(params, str):
        if not params:
            raise ConfigError(f"strategy '{strategy.name}': the list of parameter sets is empty")
        return np.stack([strategy.vector(p) for p in params])
    raise ConfigError(
        f"params must be a grid dict, a list of dicts or an array, got {type(params).__name__}"
    )


def _as_values(value: Any) -> Iterable[float]:
    # Left as given: the grid counts a range without expanding it.
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return [value]
    return value


def _chunks(n_sets: int, n_symbols: int) -> list[tuple[int, int]]:
    # About 50 updates, but never chunks so small that thread start-up dominates.
    size = max(1, -(-n_sets // 50), -(-64 // max(n_symbols, 1)))
    return [(lo, min(lo + size, n_sets)) for lo in range(0, n_sets, size)]
