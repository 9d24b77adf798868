"""Optuna behind one module: seeded single- and multi-objective searches over a strategy's
parameters, evaluated in batches through the fused sweep, in memory or shared through a database.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.trial import TrialState

from quantshift.data.bars import Bars
from quantshift.engine.backtest import prepare
from quantshift.engine.config import SimConfig
from quantshift.engine.metrics import METRICS
from quantshift.engine.sweep import _Progress
from quantshift.errors import ConfigError, UnknownNameError
from quantshift.strategies import Param, Strategy
from research.ledger import (
    STUDY_ATTR,
    TRIAL_LEDGER_ATTR,
    TRIAL_STATE_ATTR,
    TRIAL_WORKER_ATTR,
    Fold,
    FoldEvaluation,
    TrialLedger,
    default_direction,
    make_folds,
)

SAMPLERS = ("tpe", "cmaes", "nsga2", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
OVER_BUDGET = "over_budget"
MAX_GRID_AXIS = 10_000
# Settings two processes must share to work on one study (the seed may differ: see _seed).
_SHARED = ("strategy param_names objectives directions sampler pruner data_fingerprint symbols "
           "search_space fixed_params config folds").split()  # fmt: skip


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
        from quantshift.engine.plotting import _pyplot

        if len(self.objectives) > 2:
            raise ConfigError("plot shows one objective's history or a two-objective front")
        plt = _pyplot()
        frame = self.ledger.frame
        # A shared ledger may hold other studies (walk-forward folds): plot this one only.
        done = frame[(frame["state"] == "complete") & (frame["study"] == self.study_name)]
        done = done.sort_values("trial")
        fig, ax = plt.subplots(figsize=(9, 5.5))
        if len(self.objectives) == 1:
            values = done["value_0"].to_numpy()
            best = (np.maximum if self.directions[0] == "maximize" else np.minimum).accumulate(
                values
            )
            ax.scatter(done["trial"], values, s=12, color="#1f4e79", label="complete trial")
            ax.step(done["trial"], best, where="post", color="#d62728", label="best so far")
            ax.set_xlabel("trial")
            ax.set_ylabel(self.objectives[0])
            ax.set_title(f"{self.study_name}: optimisation history")
        else:
            x, y = self.objectives
            ax.scatter(done["value_0"], done["value_1"], s=12, color="#9fb4c7", label="trial")
            front = self.pareto.sort_values(x)
            ax.plot(front[x], front[y], "o-", color="#d62728", ms=4, label="Pareto front")
            ax.set_xlabel(f"{x} ({self.directions[0]})")
            ax.set_ylabel(f"{y} ({self.directions[1]})")
            ax.set_title(f"{self.study_name}: Pareto front")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=120)
        return fig


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
    space = _Space.build(strat, search_space)
    grid = space.grid() if sampler_name == "grid" else None
    budget = _positive_int("n_trials", n_trials)
    if grid is not None:
        budget = min(budget, math.prod(len(v) for v in grid.values()))
    batch = _positive_int("batch_size", batch_size or max(2 * _cores(), 16))
    fold_list = make_folds(data, cfg, folds)
    pruner_obj, pruner_name = _pruner(pruner, len(fold_list))
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
    with _quiet_optuna():
        backend, shown = _storage(storage)
        study, creator = _open_study(backend, study_name, settings, pruner_obj, shown)
        study.sampler = _sampler(sampler_name, _seed(seed, worker, creator), grid)
        run = _Run(study, strat, cfg, space, fold_list, objectives, budget, worker, ledger, stage)
        with _Progress(progress, budget, f"optimize {strat.name}") as report:
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
    with _quiet_optuna():
        backend, shown = _storage(storage)
        settings = _wait_for_settings(_load_study(backend, study_name, shown), shown)
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
        search_space=_Space.from_settings(settings),
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
    with _quiet_optuna():
        backend, shown = _storage(storage)
        study = _load_study(backend, study_name, shown)
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


def _load_study(backend, study_name: str, shown: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=study_name, storage=backend)
    except KeyError:
        raise UnknownNameError(f"no study '{study_name}' in {shown}") from None


# --------------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    study: optuna.Study
    strategy: Strategy
    config: SimConfig
    space: _Space
    folds: list[Fold]
    objectives: tuple[str, ...]
    budget: int
    worker: str
    ledger: TrialLedger
    stage: str

    def loop(self, batch: int, report: Callable[[int], None]) -> None:
        """Ask, evaluate and tell batches until the study holds ``budget`` trials.

        Trial numbers are assigned atomically by the storage (RDBStorage locks the study row),
        so a trial numbered ``>= budget`` was asked after the budget ran out in a race with
        another worker: it is told FAIL with ``state="over_budget"`` unevaluated and left out
        of the ledger. Asking only what the study still lacks keeps such trials rare.
        """
        while True:
            existing = len(self.study.get_trials(deepcopy=False))
            report(min(existing, self.budget))
            remaining = self.budget - existing
            if remaining <= 0:
                return
            trials = []
            for _ in range(min(batch, remaining)):
                trial = self.study.ask()
                if trial.number < self.budget:
                    trials.append(trial)
                    continue
                trial.set_user_attr(TRIAL_STATE_ATTR, OVER_BUDGET)
                trial.set_user_attr(TRIAL_WORKER_ATTR, self.worker)
                self.study.tell(trial, state=TrialState.FAIL)
            if not trials:
                return
            try:
                self._evaluate(trials)
            except BaseException:
                # Never leave a trial RUNNING: it would hold a slot of the budget forever.
                for trial in trials:
                    with contextlib.suppress(Exception):  # raised for a trial already told
                        trial.set_user_attr(TRIAL_STATE_ATTR, "fail")
                        trial.set_user_attr(TRIAL_WORKER_ATTR, self.worker)
                        self.study.tell(trial, state=TrialState.FAIL)
                raise

    def _evaluate(self, trials: list[optuna.Trial]) -> None:
        strat, space = self.strategy, self.space
        matrix = np.array([space.row(space.suggest(t)) for t in trials], dtype=np.float64)
        feasible = np.array([_feasible(strat, row) for row in matrix], dtype=bool)
        state = np.where(feasible, "complete", "infeasible").astype(object)
        alive = feasible.copy()
        columns = [METRICS.index(o) for o in self.objectives]
        n_folds = len(self.folds)
        prune = n_folds > 1 and len(self.objectives) == 1
        evaluation = FoldEvaluation(strat, matrix, self.folds, self.config)
        for f in range(n_folds):
            rows = np.flatnonzero(alive)
            if rows.size == 0:
                break
            fold_values = evaluation.run(f, rows)[:, columns]
            for i, value in zip(rows, fold_values, strict=True):
                if np.isnan(value).any():
                    state[i], alive[i] = "fail", False
                elif prune:
                    # Report the running mean: the last report is the value told at the end.
                    trials[i].report(float(evaluation.metrics[: f + 1, i, columns[0]].mean()), f)
                    if f < n_folds - 1 and trials[i].should_prune():
                        state[i], alive[i] = "pruned", False
        columns_by_name = evaluation.columns()
        complete = (state == "complete")[:, None]
        values = np.where(complete, columns_by_name["metrics"][:, columns], np.nan)
        for i, trial in enumerate(trials):
            trial.set_user_attr(TRIAL_STATE_ATTR, state[i])
            trial.set_user_attr(TRIAL_WORKER_ATTR, self.worker)
            row = {k: v[i].tolist() for k, v in columns_by_name.items()}
            trial.set_user_attr(TRIAL_LEDGER_ATTR, {"stage": self.stage, **row})
            if state[i] == "complete":
                self.study.tell(trial, values[i].tolist())
            else:
                told = TrialState.PRUNED if state[i] == "pruned" else TrialState.FAIL
                self.study.tell(trial, state=told)
        numbers = np.array([t.number for t in trials], dtype=np.int64)
        self.ledger.record(
            study=self.study.study_name, stage=self.stage, trials=numbers, states=state,
            params=matrix, values=values, worker=self.worker, **columns_by_name,
        )  # fmt: skip


def _feasible(strategy: Strategy, row: np.ndarray) -> bool:
    values = dict(zip(strategy.param_names, row, strict=True))
    return all(c.holds(values) for c in strategy.constraints)


# --------------------------------------------------------------------------------- search space


@dataclass(frozen=True)
class _Space:
    """Optuna distributions of the searched parameters plus the fixed ones."""

    names: tuple[str, ...]
    distributions: dict[str, BaseDistribution]
    fixed: dict[str, float]

    @classmethod
    def build(cls, strategy: Strategy, search_space: Mapping[str, Any] | None) -> _Space:
        spec = dict(search_space or {})
        unknown = [k for k in spec if k not in strategy.param_names]
        if unknown:
            raise UnknownNameError(
                f"search_space names unknown parameter '{unknown[0]}' of strategy "
                f"'{strategy.name}'; parameters: {', '.join(strategy.param_names)}"
            )
        distributions, fixed = {}, {}
        for p in strategy.params:
            dist = _distribution(p, spec.get(p.name, (p.low, p.high)), strategy.name)
            if isinstance(dist, BaseDistribution):
                distributions[p.name] = dist
            else:
                fixed[p.name] = dist
        if not distributions:
            raise ConfigError(f"search_space of '{strategy.name}' fixes every parameter")
        return cls(strategy.param_names, distributions, fixed)

    @staticmethod
    def from_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
        """The ``search_space`` argument that rebuilds a stored space."""
        out: dict[str, Any] = dict(settings["fixed_params"])
        out.update({k: json_to_distribution(v) for k, v in settings["search_space"].items()})
        return out

    def settings(self) -> dict[str, Any]:
        return {
            "search_space": {k: distribution_to_json(d) for k, d in self.distributions.items()},
            "fixed_params": dict(self.fixed),
        }

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        out = {}
        for name, d in self.distributions.items():
            if isinstance(d, IntDistribution):
                out[name] = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
            elif isinstance(d, FloatDistribution):
                out[name] = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
            else:
                out[name] = trial.suggest_categorical(name, d.choices)
        return out

    def row(self, params: Mapping[str, Any]) -> list[float]:
        return [float(params[n]) if n in params else self.fixed[n] for n in self.names]

    def grid(self) -> dict[str, list]:
        """The values GridSampler walks through; raise if a parameter is continuous."""
        out = {}
        for name, d in self.distributions.items():
            if isinstance(d, CategoricalDistribution):
                out[name] = list(d.choices)
                continue
            if d.step is None:
                raise ConfigError(
                    f"grid search needs discrete values for '{name}': give (low, high, step) "
                    "or a list of values in search_space"
                )
            count = round((d.high - d.low) / d.step) + 1
            if count > MAX_GRID_AXIS:
                raise ConfigError(
                    f"grid search: '{name}' has {count:,} values (limit {MAX_GRID_AXIS:,}); "
                    "give a step or a list in search_space"
                )
            values = d.low + d.step * np.arange(count)
            out[name] = (
                [int(v) for v in values] if isinstance(d, IntDistribution) else values.tolist()
            )
        return out


def _distribution(p: Param, spec: Any, strategy: str) -> BaseDistribution | float:
    """One parameter's search range from its search_space entry, checked against the Param."""
    where = f"search_space['{p.name}'] of '{strategy}'"
    if isinstance(spec, BaseDistribution):
        if isinstance(spec, CategoricalDistribution):
            return _distribution(p, list(spec.choices), strategy)
        spec = {"low": spec.low, "high": spec.high, "step": spec.step, "log": spec.log}
    if isinstance(spec, Mapping) and "choices" in spec:
        spec = list(spec["choices"])
    if isinstance(spec, list | range | np.ndarray):
        choices = [p.check(v, strategy) for v in spec]
        if not choices:
            raise ConfigError(f"{where}: the list of choices is empty")
        choices = [int(v) for v in choices] if p.integer else choices
        return CategoricalDistribution(choices) if len(choices) > 1 else float(choices[0])
    if isinstance(spec, tuple):
        if len(spec) not in (2, 3):
            raise ConfigError(f"{where}: expected (low, high) or (low, high, step), got {spec!r}")
        spec = dict(zip(("low", "high", "step"), spec, strict=False))
    if not isinstance(spec, Mapping):
        return p.check(spec, strategy)
    extra = sorted(set(spec) - {"low", "high", "step", "log"})
    if extra or "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: expected keys low, high[, step, log], got {sorted(spec)}")
    low, high = p.check(spec["low"], strategy), p.check(spec["high"], strategy)
    step, log = spec.get("step"), bool(spec.get("log", False))
    if low >= high:
        if low == high:
            return low
        raise ConfigError(f"{where}: low {low:g} must not exceed high {high:g}")
    if log and step not in (None, 1):
        raise ConfigError(f"{where}: a log-scaled range takes no step")
    if p.integer:
        if step is not None and (float(step) != int(step) or int(step) < 1):
            raise ConfigError(f"{where}: integer parameter needs a whole step >= 1, got {step!r}")
        return IntDistribution(int(low), int(high), step=int(step or 1), log=log)
    if step is not None and not float(step) > 0:
        raise ConfigError(f"{where}: step must be positive, got {step!r}")
    return FloatDistribution(low, high, step=None if step is None else float(step), log=log)


# --------------------------------------------------------------------------------- Optuna set-up


class _GridSampler(optuna.samplers.GridSampler):
    """GridSampler without its stop at the last grid point.

    Its ``after_trial`` calls ``Study.stop()``, which raises outside ``Study.optimize``
    (optuna issues #4121, #5141); our loop caps the budget at the grid size instead.
    """

    def after_trial(self, study, trial, state, values) -> None:
        return None


def _sampler(name: str, seed: int, grid: dict[str, list] | None) -> optuna.samplers.BaseSampler:
    if name == "grid":
        return _GridSampler(grid, seed=seed)
    factory = {
        "tpe": optuna.samplers.TPESampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "random": optuna.samplers.RandomSampler,
    }[name]
    return factory(seed=seed)


def _pruner(pruner, n_folds: int) -> tuple[optuna.pruners.BasePruner, str]:
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner, type(pruner).__name__
    name = "none" if pruner is None else pruner
    if name == "median":
        return optuna.pruners.MedianPruner(), name
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(n_folds, 1)), name
    if name == "none":
        return optuna.pruners.NopPruner(), name
    raise ConfigError(f"pruner={pruner!r} is not allowed; choose one of {PRUNERS} or a pruner")


def _seed(seed: int, worker: str, creator: bool) -> int:
    # Workers joining a study must not replay the creator's random draws.
    return int(seed) if creator else zlib.crc32(f"{seed}:{worker}".encode())


def _storage(storage) -> tuple[optuna.storages.BaseStorage | None, str]:
    """Return the storage object and a printable name (password masked)."""
    if storage is None:
        return None, "memory"
    import sqlalchemy

    if isinstance(storage, optuna.storages.BaseStorage):
        url = getattr(storage, "url", None)
        shown = type(storage).__name__ if url is None else sqlalchemy.engine.make_url(url)
        return storage, str(shown)  # a sqlalchemy URL prints its password masked
    url = str(storage)
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url[len(plain) :]
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"storage {storage!r} is not a database URL") from None
    shown = parsed.render_as_string(hide_password=True)
    engine_kwargs: dict[str, Any] = {}
    if parsed.drivername.startswith("sqlite"):
        # Several processes on one SQLite file wait for its lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        try:
            backend = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            # Workers starting together race to create the tables; the loser retries.
            if attempt == 4:
                raise ConfigError(f"cannot open Optuna storage {shown}: {exc}") from exc
            time.sleep(0.2 * (attempt + 1))
            continue
        if parsed.drivername.startswith("sqlite"):
            # Every trial commits several times; in WAL mode with synchronous=NORMAL a commit
            # needs no fsync (a power cut may lose the last trials, never the file's integrity).
            sqlalchemy.event.listen(backend.engine, "connect", _sqlite_wal)
            backend.engine.dispose()
        return backend, shown
    raise AssertionError("unreachable")


def _sqlite_wal(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _open_study(backend, study_name, settings, pruner, shown) -> tuple[optuna.Study, bool]:
    """Create the study (and store its settings) or join it; return (study, created here)."""
    directions = settings["directions"]
    if backend is None:
        study = optuna.create_study(directions=directions, pruner=pruner, study_name=study_name)
        study.set_user_attr(STUDY_ATTR, settings)
        return study, True
    name = study_name or "-".join(
        (settings["strategy"], *settings["objectives"], settings["data_fingerprint"][:12])
    )
    try:
        study = optuna.create_study(
            storage=backend, study_name=name, directions=directions, pruner=pruner
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=backend, pruner=pruner)
    else:
        study.set_user_attr(STUDY_ATTR, settings)
        return study, True
    stored = _wait_for_settings(study, shown)
    differ = [k for k in _SHARED if stored.get(k) != settings[k]]
    if differ:
        lines = "; ".join(
            f"{k}: study has {_short(stored.get(k))}, this run {_short(settings[k])}"
            for k in differ
        )
        raise ConfigError(f"cannot join study '{name}' in {shown}: {lines}")
    return study, False


def _wait_for_settings(study: optuna.Study, shown: str, timeout_s: float = 30.0) -> dict:
    # The creator writes the settings just after creating the study; a joiner may be faster.
    deadline = time.monotonic() + timeout_s
    while (settings := study.user_attrs.get(STUDY_ATTR)) is None:
        if time.monotonic() > deadline:
            raise ConfigError(
                f"study '{study.study_name}' in {shown} has no QuantShift settings; it was not "
                "created by research.optimize"
            )
        time.sleep(0.1)
    return settings


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@contextlib.contextmanager
def _quiet_optuna():
    """Keep Optuna's per-study INFO lines off the console while we drive it."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _best(study, strat: Strategy, space: _Space, objectives: tuple[str, ...]):
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
