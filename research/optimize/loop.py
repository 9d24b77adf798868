"""The ask/tell loop: batches of trials asked from a study, evaluated in one fused sweep call
per fold (pruned between folds), told back and recorded in the trial ledger (and, through the
sweeps, in the trial registry; infeasible sets are recorded there directly).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

from quantshift.data.bars import Bars
from quantshift.engine.config import SimConfig
from quantshift.engine.metrics import METRICS
from quantshift.strategies import Strategy
from research.ledger import (
    TRIAL_LEDGER_ATTR,
    TRIAL_STATE_ATTR,
    TRIAL_WORKER_ATTR,
    Fold,
    FoldEvaluation,
    TrialLedger,
)
from research.optimize.space import SearchSpace, satisfies_constraints
from research.registry import record_unevaluated

OVER_BUDGET = "over_budget"


@dataclass
class TrialLoop:
    """Asks, evaluates and tells batches of one study's trials, and records them."""

    study: optuna.Study
    strategy: Strategy
    config: SimConfig
    space: SearchSpace
    folds: list[Fold]
    objectives: tuple[str, ...]
    budget: int
    worker: str
    ledger: TrialLedger
    stage: str
    data: Bars | None = None  # the whole data the folds cut (where infeasible sets are keyed)

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
        feasible = np.array([satisfies_constraints(strat, row) for row in matrix], dtype=bool)
        state = np.where(feasible, "complete", "infeasible").astype(object)
        if not feasible.all():
            data = self.data if self.data is not None else self.folds[0].bars
            record_unevaluated(strat, data, self.config, matrix[~feasible], "infeasible")
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
