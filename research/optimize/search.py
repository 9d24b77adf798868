"""The search API: :func:`optimize` creates or joins a study and runs the ask/tell loop,
:func:`run_worker` adds trials to a stored study, :func:`load_ledger` reads all its trials.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from quantshift.data.bars import Bars
from quantshift.engine.backtest import prepare
from quantshift.engine.config import SimConfig
from quantshift.errors import ConfigError
from quantshift.progress import Progress
from quantshift.strategies import Strategy
from research.ledger import TrialLedger, default_direction, make_folds
from research.optimize.loop import TrialLoop
from research.optimize.space import SearchSpace
from research.optimize.storage import (
    PRUNERS,
    SAMPLERS,
    load_study,
    make_pruner,
    make_sampler,
    open_storage,
    open_study,
    quiet_optuna,
    wait_for_settings,
    worker_seed,
)
from research.registry import trial_defaults


@dataclass(frozen=True, eq=False)
class OptimizeResult:
    """What :func:`optimize` produced.

    ``ledger`` holds the trials this call evaluated (with shared storage, other workers'
    trials are in the study: see :func:`load_ledger`). ``best_params`` / ``best_values``
    (one objective) and ``pareto`` (several) are read from the whole study at the end.
    ``n_trials`` counts the trials this call evaluated; ``trials_per_second`` is their rate.
    """

    study_name: str
    storage: str
    sampler: str
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    ledger: TrialLedger
    n_trials: int
    elapsed_s: float
    trials_per_second: float
    best_params: dict[str, float] | None = None
    best_values: dict[str, float] | None = None
    pareto: pd.DataFrame | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """Return a JSON-ready summary: study, settings, trial counts and the best trial(s)."""
        out: dict[str, Any] = {
            "study_name": self.study_name,
            "storage": self.storage,
            "sampler": self.sampler,
            "objectives": list(self.objectives),
            "directions": list(self.directions),
            "n_trials": self.n_trials,
            "trials_by_state": self.ledger.counts(),
            "elapsed_s": self.elapsed_s,
            "trials_per_second": self.trials_per_second,
        }
        if self.pareto is not None:
            out["pareto"] = self.pareto.to_dict(orient="records")
        else:
            out["best_params"] = self.best_params
            out["best_values"] = self.best_values
        return out

    def plot(self, path: str | Path | None = None):
        """Plot the optimisation history (one objective) or the Pareto front (two objectives).

        Saves to ``path`` when given; returns the matplotlib figure.
        """
        from research.plots import plot_optimization

        return plot_optimization(self, path)


def optimize(
    strategy: str | Strategy,
    bars: Bars | str,
    *,
    objectives: Sequence[str] = ("sharpe",),
    directions: Sequence[str] | None = None,
    sampler: str | None = None,
    n_trials: int = 100,
    batch_size: int | None = None,
    seed: int = 0,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    search_space: Mapping[str, Any] | None = None,
    symbol: str | Sequence[str] | None = None,
    config: SimConfig | None = None,
    folds: Sequence[tuple[int, int]] | None = None,
    pruner: str | optuna.pruners.BasePruner | None = "median",
    progress: bool | Callable[[int, int], None] = False,
    worker: str | None = None,
    ledger: TrialLedger | None = None,
    stage: str = "optimize",
    **settings: Any,
) -> OptimizeResult:
    """Search a strategy's parameters with Optuna, evaluating trials in batches.

    Each round asks ``batch_size`` trials, turns them into one parameter matrix, evaluates it
    with ONE :func:`quantshift.sweep` call (per fold) and tells every result, so the sampler,
    not Python per-trial overhead, sets the pace. Larger batches trade sample efficiency for
    throughput with samplers that learn from every result (TPE, CMA-ES): a trial asked in a
    batch does not see the results of the others in it (TPE treats them as running, Optuna's
    "constant liar"); random and grid search lose nothing.

    Parameters
    ----------
    strategy : str or Strategy
    bars : Bars or str
        Bars or a data spec; ``symbol`` restricts them. With several symbols each metric is the
        mean over the symbols where it is defined.
    objectives : sequence of str
        Names from ``METRICS``; two or more make a multi-objective study (e.g.
        ``("sharpe", "max_drawdown_pct")``).
    directions : sequence of {"maximize", "minimize"}, optional
        Default: minimise ``max_drawdown_pct`` and ``volatility_pct``, maximise the rest.
    sampler : {"tpe", "cmaes", "nsga2", "random", "grid"}, optional
        Default TPE for one objective, NSGA-II for several; all seeded from ``seed``. Grid
        needs discrete values (integer ranges of at most MAX_GRID_AXIS values, float ranges
        with a step, or lists) and caps ``n_trials`` at the grid size.
    n_trials : int
        The study's total budget of trials (with shared storage: across every worker, so a
        second run with the same study resumes it).
    batch_size : int, optional
        Trials per sweep call; default ``max(2 * cores, 16)``.
    seed : int
        Seeds the sampler. The process that creates a study uses ``seed`` as is; a process that
        joins one uses a seed derived from ``seed`` and its worker id, so workers differ.
    storage : str or optuna storage, optional
        None keeps the study in memory; ``"sqlite:///path.db"`` or ``"postgresql://..."``
        (mapped to the psycopg driver) shares it between processes (``load_if_exists``).
    study_name : str, optional
        Default: an Optuna name in memory, ``"<strategy>-<objectives>-<data hash>"`` in storage.
    search_space : mapping, optional
        Overrides per parameter of the declared ``[low, high]`` ranges: ``(low, high)``,
        ``(low, high, step)``, ``{"low", "high", "step", "log"}``, a list of choices, an Optuna
        distribution, or a scalar that fixes the parameter.
    config : SimConfig, optional
        Simulation settings.
    folds : sequence of (start, stop), optional
        Bar ranges ``bars[start:stop]`` evaluated in order; the objective is the mean over
        folds. With one objective each fold's running mean is reported to Optuna and the
        pruner may stop the trial (told PRUNED, recorded with its partial metrics). Optuna
        cannot prune multi-objective trials, so then every fold runs.
    pruner : {"median", "hyperband", "none"} or optuna pruner
        Used only with folds and one objective.
    progress : bool or callable
        True shows a progress bar on stderr; a callable gets ``(trials_done, n_trials)``.
    worker : str, optional
        Stored on every trial; default ``"hostname:pid"``.
    ledger : TrialLedger, optional
        Record into this ledger (e.g. one shared by walk-forward stages) instead of a new one.
    stage : str
        The ledger stage of these trials.
    settings
        Simulation settings (``fees_bps=1`` ...) overriding single fields of ``config``.

    Returns
    -------
    OptimizeResult

    Notes
    -----
    Trials whose parameters violate a strategy constraint are told FAIL with user attribute
    ``state="infeasible"`` (never silently resampled). A trial whose objective is undefined
    (NaN: e.g. no trade, so no return variance and no Sharpe ratio) is told FAIL with
    ``state="fail"``: telling it a made-up worst value would teach the sampler a number the
    backtest never produced. Both stay in the ledger. Every trial stores its metrics in its
    user attributes, so :meth:`TrialLedger.from_study` rebuilds the ledger from storage.
    """
    started = time.perf_counter()
    strat, data, cfg = prepare(strategy, bars, symbol, config, settings)
    objectives = _objectives(objectives)
    directions = _directions(objectives, directions)
    sampler_name = sampler or ("tpe" if len(objectives) == 1 else "nsga2")
    if sampler_name not in SAMPLERS:
        raise ConfigError(f"sampler={sampler_name!r} is not allowed; choose one of {SAMPLERS}")
    if sampler_name == "cmaes" and len(objectives) > 1:
        raise ConfigError("sampler 'cmaes' handles one objective only; use 'nsga2' or 'tpe'")
    space = SearchSpace.build(strat, search_space)
    grid = space.grid() if sampler_name == "grid" else None
    budget = _positive_int("n_trials", n_trials)
    if grid is not None:
        budget = min(budget, math.prod(len(v) for v in grid.values()))
    batch = _positive_int("batch_size", batch_size or max(2 * _cores(), 16))
    fold_list = make_folds(data, cfg, folds)
    pruner_obj, pruner_name = make_pruner(pruner, len(fold_list))
    settings = {
        "strategy": strat.name,
        "param_names": list(strat.param_names),
        "objectives": list(objectives),
        "directions": list(directions),
        "sampler": sampler_name,
        "pruner": pruner_name,
        "seed": int(seed),
        "n_trials": budget,
        "data_fingerprint": data.fingerprint(),
        "data_source": data.source,
        "symbol": [symbol] if isinstance(symbol, str) else symbol and list(symbol),
        "symbols": list(data.symbols),
        **space.settings(),
        "config": cfg.to_dict(),
        "folds": None if folds is None else [[int(a), int(b)] for a, b in folds],
        "stage": stage,
    }
    worker = worker or f"{socket.gethostname()}:{os.getpid()}"
    if ledger is None:
        ledger = TrialLedger(strat.name, strat.param_names)
    elif (ledger.strategy_name, ledger.param_names) != (strat.name, strat.param_names):
        raise ConfigError(f"ledger is of '{ledger.strategy_name}', not of '{strat.name}'")
    before = len(ledger)
    with quiet_optuna():
        backend, shown = open_storage(storage)
        study, creator = open_study(backend, study_name, settings, pruner_obj, shown)
        study.sampler = make_sampler(sampler_name, worker_seed(seed, worker, creator), grid)
        run = TrialLoop(
            study, strat, cfg, space, fold_list, objectives, budget, worker, ledger, stage, data
        )
        tags = {"study": study.study_name, "stage": stage, "seed": int(seed), "worker": worker}
        with (
            trial_defaults(source="optimize", **tags),
            Progress(progress, budget, f"optimize {strat.name}") as report,
        ):
            run.loop(batch, report)
        best_params, best_values, pareto = _best(study, strat, space, objectives)
    elapsed = time.perf_counter() - started
    done = len(ledger) - before
    return OptimizeResult(
        study_name=study.study_name,
        storage=shown,
        sampler=sampler_name,
        objectives=objectives,
        directions=directions,
        ledger=ledger,
        n_trials=done,
        elapsed_s=elapsed,
        trials_per_second=done / elapsed if elapsed > 0 else math.nan,
        best_params=best_params,
        best_values=best_values,
        pareto=pareto,
    )


def run_worker(
    bars: Bars | str,
    *,
    storage: str | optuna.storages.BaseStorage,
    study_name: str,
    strategy: str | Strategy | None = None,
    n_trials: int | None = None,
    batch_size: int | None = None,
    pruner: str | optuna.pruners.BasePruner | None = None,
    progress: bool | Callable[[int, int], None] = False,
    worker: str | None = None,
) -> OptimizeResult:
    """Contribute trials to an existing study until its budget is spent.

    Everything but the data (strategy, objectives, sampler, search space, settings, folds,
    budget) is read from the study; ``n_trials`` raises the budget, ``strategy`` supplies an
    unregistered Strategy object and ``pruner`` an Optuna pruner object the creator used.

    Notes
    -----
    To spread one study over machines, give every machine the same data and a PostgreSQL
    database they all reach: one process creates the study with :func:`optimize` (or
    ``quantshift research optimize SPEC``), the others run ``run_worker(bars,
    storage="postgresql://user:password@dbhost/quantshift", study_name=...)`` (or
    ``quantshift research worker SPEC``). Each asks, evaluates and tells batches until the
    study holds its ``n_trials`` trials; a worker with different data, strategy or settings
    is refused. A worker killed outright (SIGKILL, power loss) leaves its trials RUNNING:
    they keep their slots of the budget and never enter the ledger.
    """
    with quiet_optuna():
        backend, shown = open_storage(storage)
        settings = wait_for_settings(load_study(backend, study_name, shown), shown)
    stored_pruner = settings["pruner"]
    return optimize(
        strategy or settings["strategy"],
        bars,
        objectives=settings["objectives"],
        directions=settings["directions"],
        sampler=settings["sampler"],
        n_trials=n_trials or settings["n_trials"],
        batch_size=batch_size,
        seed=settings["seed"],
        storage=backend,
        study_name=study_name,
        search_space=SearchSpace.from_settings(settings),
        symbol=settings["symbol"],
        config=SimConfig(**settings["config"]),
        folds=settings["folds"],
        pruner=pruner or (stored_pruner if stored_pruner in PRUNERS else None),
        progress=progress,
        worker=worker,
        stage=settings["stage"],
    )


def load_ledger(
    storage: str | optuna.storages.BaseStorage, study_name: str, *, wait_s: float = 0.0
) -> TrialLedger:
    """Return the ledger of every trial of a stored study (all workers).

    ``wait_s`` > 0 first waits up to that long for trials other workers are still evaluating
    (state RUNNING), so a report made when this process's share is done counts theirs too;
    trials still running after that are left out and a warning says how many.
    """
    with quiet_optuna():
        backend, shown = open_storage(storage)
        study = load_study(backend, study_name, shown)
        deadline = time.monotonic() + wait_s
        while True:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if running:
            warnings.warn(
                f"study '{study_name}': {len(running)} trial(s) still running (another worker, "
                "or one that was killed) are not in the ledger",
                stacklevel=2,
            )
        return TrialLedger.from_study(study)


def _best(study, strat: Strategy, space: SearchSpace, objectives: tuple[str, ...]):
    """Best parameters and values (one objective) or the Pareto front (several)."""

    def params_of(trial) -> dict[str, float]:
        row = space.row(trial.params)
        return {p.name: int(v) if p.integer else v for p, v in zip(strat.params, row, strict=True)}

    if len(objectives) == 1:
        try:
            trial = study.best_trial
        except ValueError:  # no complete trial
            return None, None, None
        return params_of(trial), {objectives[0]: float(trial.value)}, None
    rows = [
        {"trial": t.number, **params_of(t), **dict(zip(objectives, t.values, strict=True))}
        for t in study.best_trials
    ]
    columns = ["trial", *strat.param_names, *objectives]
    front = pd.DataFrame(rows, columns=columns).sort_values("trial", ignore_index=True)
    # NSGA-II proposes some sets again; the front lists each set once (its first trial).
    return None, None, front.drop_duplicates(list(strat.param_names), ignore_index=True)


def _objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    names = (objectives,) if isinstance(objectives, str) else tuple(objectives)
    if not names:
        raise ConfigError("objectives is empty; name one or more of METRICS")
    for name in names:
        default_direction(name)  # raises for an unknown metric
    if len(set(names)) != len(names):
        raise ConfigError(f"objectives repeat a metric: {names}")
    return names


def _directions(objectives: tuple[str, ...], directions) -> tuple[str, ...]:
    if directions is None:
        return tuple(default_direction(o) for o in objectives)
    out = (directions,) if isinstance(directions, str) else tuple(directions)
    if len(out) != len(objectives) or any(d not in ("maximize", "minimize") for d in out):
        raise ConfigError(
            f"directions {out} must give 'maximize' or 'minimize' for each of {objectives}"
        )
    return out


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
