"""The trial ledger: every parameter set a study evaluated, whatever became of it, and how a
set's ledger numbers come from sweeps over symbols and folds.

Pruned, failed and infeasible trials stay in the table so the trial count and the variance of
trial Sharpe ratios that feed the deflated Sharpe ratio are honest.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import quantshift as qs
from quantshift.data.bars import Bars
from quantshift.engine.config import SimConfig
from quantshift.engine.metrics import METRICS, infer_periods_per_year
from quantshift.errors import ConfigError, UnknownNameError
from quantshift.progress import Progress

STATES = ("complete", "pruned", "fail", "infeasible")
"""Trial states: told COMPLETE; PRUNED; FAIL (e.g. the objective was undefined); FAIL because
the parameter set violated a strategy constraint and was never run on data."""

MINIMIZED_METRICS = ("max_drawdown_pct", "volatility_pct")
"""Metrics where smaller is better; every other metric of METRICS is maximised."""

EQUITY_FLOATS_PER_SWEEP = 4_000_000
"""Equity values one evaluation sweep keeps at once (32 MB): sets per chunk x symbols x bars."""

_HEAD = ("study", "stage", "trial", "state", "worker")
_TAIL = ("sharpe_per_period", "n_bars", "periods_per_year")
_META_KEY = b"quantshift.ledger"

# Where research.optimize keeps what the ledger needs inside an Optuna study, so that
# TrialLedger.from_study can rebuild the ledger from storage alone.
STUDY_ATTR = "quantshift"
TRIAL_STATE_ATTR = "state"
TRIAL_WORKER_ATTR = "worker"
TRIAL_LEDGER_ATTR = "ledger"


def default_direction(metric: str) -> str:
    """Return "minimize" for drawdown and volatility, "maximize" for every other metric."""
    if metric not in METRICS:
        raise UnknownNameError(f"unknown metric '{metric}'; metrics: {', '.join(METRICS)}")
    return "minimize" if metric in MINIMIZED_METRICS else "maximize"


class TrialLedger:
    """A table of every evaluated parameter set of one strategy, across studies and stages.

    Columns: ``study``, ``stage`` (e.g. "optimize", "wf-fold-3"), ``trial`` (unique within
    study and stage), ``state`` (one of :data:`STATES`), ``worker``, one column per parameter,
    every metric of ``METRICS`` (the mean over symbols and folds; NaN where not evaluated),
    ``sharpe_per_period`` (annualised Sharpe / sqrt(periods per year)), ``n_bars``,
    ``periods_per_year``, the objective values ``value_0``, ``value_1``, ... (NaN unless the
    trial completed) and ``seconds`` (its share of evaluation wall time).

    Parameters
    ----------
    strategy_name : str
        The strategy every row belongs to.
    param_names : sequence of str
        Its parameter names, in declaration order.
    """

    def __init__(self, strategy_name: str, param_names: Sequence[str]) -> None:
        self.strategy_name = str(strategy_name)
        self.param_names = tuple(str(n) for n in param_names)
        clash = set(self.param_names) & set(_HEAD + METRICS + _TAIL + ("seconds",))
        if clash or len(set(self.param_names)) != len(self.param_names):
            raise ConfigError(
                f"ledger of '{self.strategy_name}': parameter names {self.param_names} repeat "
                f"or clash with ledger columns {sorted(clash)}"
            )
        self._parts: list[pd.DataFrame] = []
        self._keys: set[tuple[str, str, int]] = set()
        self._frame: pd.DataFrame | None = None

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts().items() if v)
        return f"TrialLedger({self.strategy_name!r}, {len(self)} trials: {counts or 'empty'})"

    def __len__(self) -> int:
        return len(self._keys)

    # ----------------------------------------------------------------- writing
    def record(
        self,
        *,
        study: str | Sequence[str],
        stage: str | Sequence[str],
        trials: Sequence[int] | np.ndarray,
        states: str | Sequence[str] | np.ndarray,
        params: np.ndarray,
        metrics: np.ndarray | None = None,
        sharpe_per_period: np.ndarray | None = None,
        n_bars: int | np.ndarray = 0,
        periods_per_year: float | np.ndarray = math.nan,
        values: np.ndarray | None = None,
        seconds: float | np.ndarray = math.nan,
        worker: str | Sequence[str] = "",
    ) -> None:
        """Append a batch of n trials.

        Parameters
        ----------
        study, stage : str or array of str, shape (n,)
            Where the trials come from.
        trials : array of int, shape (n,)
            Trial numbers, unique within (study, stage) across everything recorded.
        states : str or array of str, shape (n,)
            One of :data:`STATES` per trial (or one for all).
        params : ndarray, shape (n, n_params)
            Parameter values in declaration order.
        metrics : ndarray, shape (n, len(METRICS)), optional
            Metrics in ``METRICS`` order; NaN (the default) where not evaluated.
        sharpe_per_period : ndarray, shape (n,), optional
            Default: ``sharpe / sqrt(periods_per_year)``.
        n_bars, periods_per_year, seconds : scalar or array of shape (n,)
        values : ndarray, shape (n,) or (n, n_objectives), optional
            Objective values told to the optimiser; NaN for trials that did not complete.
        worker : str or array of str, shape (n,)
        """
        number = np.asarray(trials)
        if number.ndim != 1 or (number.size and not np.issubdtype(number.dtype, np.integer)):
            raise ConfigError(f"ledger record: trials must be a 1-D integer array, got {number!r}")
        n = number.shape[0]
        table: dict[str, Any] = {
            "study": _strings("study", study, n),
            "stage": _strings("stage", stage, n),
            "trial": number.astype(np.int64),
            "state": _strings("states", states, n),
            "worker": _strings("worker", worker, n),
        }
        unknown = sorted(set(table["state"]) - set(STATES))
        if unknown:
            raise ConfigError(f"ledger record: unknown state(s) {unknown}; states: {STATES}")
        param_values = _matrix("params", params, n, len(self.param_names))
        table.update(zip(self.param_names, param_values.T, strict=True))
        metric_values = (
            np.full((n, len(METRICS)), np.nan)
            if metrics is None
            else _matrix("metrics", metrics, n, len(METRICS))
        )
        table.update(zip(METRICS, metric_values.T, strict=True))
        ppy = _vector("periods_per_year", periods_per_year, n)
        if sharpe_per_period is None:
            with np.errstate(invalid="ignore"):
                table["sharpe_per_period"] = table["sharpe"] / np.sqrt(ppy)
        else:
            table["sharpe_per_period"] = _vector("sharpe_per_period", sharpe_per_period, n)
        table["n_bars"] = _vector("n_bars", n_bars, n).astype(np.int64)
        table["periods_per_year"] = ppy
        if values is not None:
            objective = np.asarray(values, dtype=np.float64)
            objective = objective.reshape(n, -1) if objective.ndim == 1 else objective
            objective = _matrix("values", objective, n, objective.shape[1])
            table.update({f"value_{k}": objective[:, k] for k in range(objective.shape[1])})
        table["seconds"] = _vector("seconds", seconds, n)
        keys = list(zip(table["study"], table["stage"], table["trial"].tolist(), strict=True))
        if len(set(keys)) < n or not self._keys.isdisjoint(keys):
            seen = set(self._keys)
            twice = next(k for k in keys if k in seen or seen.add(k))
            raise ConfigError(f"ledger record: (study, stage, trial) {twice} recorded twice")
        self._parts.append(pd.DataFrame(table))
        self._keys.update(keys)
        self._frame = None

    # ----------------------------------------------------------------- reading
    @property
    def frame(self) -> pd.DataFrame:
        """All rows as a new DataFrame, in the order recorded."""
        return self._table().copy()

    def _table(self) -> pd.DataFrame:
        if self._frame is None:
            parts = [p for p in self._parts if len(p)]
            frame = pd.concat(parts, ignore_index=True) if parts else _empty(self.param_names)
            values = sorted((c for c in frame.columns if c.startswith("value_")), key=_value_index)
            fixed = [*_HEAD, *self.param_names, *METRICS, *_TAIL]
            self._frame = frame.reindex(columns=[*fixed, *values, "seconds"])
            self._parts = [self._frame]
        return self._frame

    def _rows(self, stage: str | None) -> pd.DataFrame:
        frame = self._table()
        return frame if stage is None else frame[frame["stage"] == stage]

    def counts(self, stage: str | None = None) -> dict[str, int]:
        """Return the number of trials in each state (all of :data:`STATES`, zeros included)."""
        found = self._rows(stage)["state"].value_counts()
        return {s: int(found.get(s, 0)) for s in STATES}

    def n_trials(self, stage: str | None = None, states: Iterable[str] | None = None) -> int:
        """Return the number of trials (of ``stage``, in ``states``; default every state)."""
        rows = self._rows(stage)
        if states is None:
            return len(rows)
        wanted = list(states)
        unknown = sorted(set(wanted) - set(STATES))
        if unknown:
            raise ConfigError(f"unknown state(s) {unknown}; states: {STATES}")
        return int(rows["state"].isin(wanted).sum())

    def trial_sharpes(self, stage: str | None = None) -> np.ndarray:
        """Return the per-period Sharpe ratios of the trials that have one (finite)."""
        spp = self._rows(stage)["sharpe_per_period"].to_numpy(dtype=np.float64)
        return spp[np.isfinite(spp)]

    def dsr_inputs(self, stage: str | None = None) -> tuple[int, float]:
        """Return (number of trials, population variance of their per-period Sharpe ratios).

        The count is every trial run on data: complete, pruned and failed ones. Infeasible
        parameter sets are left out: they were never run, so no result was chosen among them,
        and counting them would make the deflation depend on how the search space happens to
        be parameterised (a square that includes fast >= slow versus the triangle without).
        The variance is over the trials with a finite per-period Sharpe, ``ddof=0`` as in
        Bailey and Lopez de Prado's deflated Sharpe ratio; NaN when there are none.
        """
        n = self.n_trials(stage, states=("complete", "pruned", "fail"))
        sharpes = self.trial_sharpes(stage)
        return n, float(np.var(sharpes)) if sharpes.size else math.nan

    def best(self, metric: str, stage: str | None = None, direction: str | None = None):
        """Return the row (Series) of the complete trial with the best ``metric``.

        ``direction`` defaults to :func:`default_direction` of the metric; value columns
        (``value_0`` ...) are maximised unless told otherwise.
        """
        rows = self._rows(stage)
        if metric not in rows.columns or metric in _HEAD:
            raise UnknownNameError(
                f"ledger has no numeric column '{metric}'; metrics: {', '.join(METRICS)}"
            )
        if direction is None:
            direction = default_direction(metric) if metric in METRICS else "maximize"
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        rows = rows[rows["state"] == "complete"]
        column = rows[metric].to_numpy(dtype=np.float64)
        finite = ~np.isnan(column)
        if not finite.any():
            raise ConfigError(
                f"ledger of '{self.strategy_name}': no complete trial"
                f"{f' in stage {stage!r}' if stage else ''} has a value for '{metric}'"
            )
        pick = np.flatnonzero(finite)
        best = pick[np.argmax(column[pick]) if direction == "maximize" else np.argmin(column[pick])]
        return rows.iloc[best]

    # ----------------------------------------------------------------- files and joins
    def to_parquet(self, path: str | Path) -> Path:
        """Write the ledger (with strategy and parameter names) to a Parquet file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(self._table(), preserve_index=False)
        meta = {"strategy": self.strategy_name, "param_names": list(self.param_names)}
        schema_meta = {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()}
        pq.write_table(table.replace_schema_metadata(schema_meta), path)
        return path

    @classmethod
    def read_parquet(cls, path: str | Path) -> TrialLedger:
        """Read a ledger written by :meth:`to_parquet`."""
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(_META_KEY)
        if raw is None:
            raise ConfigError(f"{path}: not a QuantShift trial ledger (no '{_META_KEY.decode()}')")
        meta = json.loads(raw)
        return cls.from_frame(table.to_pandas(), meta["strategy"], meta["param_names"])

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, strategy_name: str, param_names: Sequence[str]
    ) -> TrialLedger:
        """Build a ledger from a DataFrame with the ledger's columns (e.g. ``other.frame``)."""
        ledger = cls(strategy_name, param_names)
        missing = [
            c for c in (*_HEAD, *ledger.param_names, *METRICS, *_TAIL) if c not in frame.columns
        ]
        if missing:
            raise ConfigError(f"ledger frame lacks column(s) {missing}")
        value_columns = sorted((c for c in frame if c.startswith("value_")), key=_value_index)
        ledger.record(
            study=frame["study"].astype(str).to_numpy(dtype=object),
            stage=frame["stage"].astype(str).to_numpy(dtype=object),
            trials=frame["trial"].to_numpy(dtype=np.int64),
            states=frame["state"].to_numpy(dtype=object),
            params=frame[list(ledger.param_names)].to_numpy(dtype=np.float64),
            metrics=frame[list(METRICS)].to_numpy(dtype=np.float64),
            sharpe_per_period=frame["sharpe_per_period"].to_numpy(dtype=np.float64),
            n_bars=frame["n_bars"].to_numpy(dtype=np.int64),
            periods_per_year=frame["periods_per_year"].to_numpy(dtype=np.float64),
            values=frame[value_columns].to_numpy(dtype=np.float64) if value_columns else None,
            seconds=frame["seconds"].to_numpy(dtype=np.float64) if "seconds" in frame else math.nan,
            worker=frame["worker"].astype(str).to_numpy(dtype=object),
        )
        return ledger

    @classmethod
    def concat(cls, ledgers: Iterable[TrialLedger]) -> TrialLedger:
        """Join ledgers of the same strategy and parameters (their trials must not overlap)."""
        ledgers = list(ledgers)
        if not ledgers:
            raise ConfigError("concat needs at least one ledger")
        first = ledgers[0]
        for other in ledgers[1:]:
            if (other.strategy_name, other.param_names) != (first.strategy_name, first.param_names):
                raise ConfigError(
                    f"cannot join ledgers of '{first.strategy_name}' {first.param_names} and "
                    f"'{other.strategy_name}' {other.param_names}"
                )
        frames = [ledger._table() for ledger in ledgers]
        joined = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return cls.from_frame(joined, first.strategy_name, first.param_names)

    @classmethod
    def from_study(cls, study, stage: str | None = None) -> TrialLedger:
        """Rebuild the ledger of an Optuna study run by :func:`research.optimize.optimize`.

        Reads the study's QuantShift settings and each trial's user attributes; running
        trials and trials told FAIL only because the budget was spent are skipped. ``stage``
        keeps one stage (default: every stage the study holds).
        """
        settings = study.user_attrs.get(STUDY_ATTR)
        if settings is None:
            raise ConfigError(
                f"study '{study.study_name}' was not created by research.optimize "
                f"(no '{STUDY_ATTR}' user attribute)"
            )
        ledger = cls(settings["strategy"], settings["param_names"])
        fixed = settings["fixed_params"]
        rows = []
        for trial in study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            state = attrs.get(TRIAL_STATE_ATTR)
            info = attrs.get(TRIAL_LEDGER_ATTR, {})
            if state not in STATES or (stage is not None and info.get("stage") != stage):
                continue
            values = trial.values if state == "complete" else None
            rows.append(
                {
                    "study": study.study_name,
                    "stage": info.get("stage", ""),
                    "trial": trial.number,
                    "state": state,
                    "worker": attrs.get(TRIAL_WORKER_ATTR, ""),
                    **{
                        n: float(trial.params.get(n, fixed.get(n, math.nan)))
                        for n in ledger.param_names
                    },
                    **dict(
                        zip(METRICS, info.get("metrics", [math.nan] * len(METRICS)), strict=True)
                    ),
                    "sharpe_per_period": info.get("sharpe_per_period", math.nan),
                    "n_bars": info.get("n_bars", 0),
                    "periods_per_year": info.get("periods_per_year", math.nan),
                    **{
                        f"value_{k}": values[k] if values else math.nan
                        for k in range(len(settings["objectives"]))
                    },
                    "seconds": info.get("seconds", math.nan),
                }
            )
        if not rows:
            return ledger
        return cls.from_frame(pd.DataFrame(rows), ledger.strategy_name, ledger.param_names)


@dataclass(frozen=True)
class Fold:
    """One evaluation window, ``bars[start:stop]``, with its per-symbol annualisation."""

    bars: Bars
    periods_per_year: np.ndarray  # per symbol
    n_bars: np.ndarray  # valid bars per symbol


def make_folds(
    bars: Bars, config: SimConfig, folds: Sequence[tuple[int, int]] | None
) -> list[Fold]:
    """Return the folds ``bars[start:stop]`` (all bars when ``folds`` is None), validated."""
    bounds = [(0, bars.n_bars)] if folds is None else list(folds)
    if not bounds:
        raise ConfigError("folds is empty; give (start, stop) bar ranges or None")
    out = []
    for k, bound in enumerate(bounds):
        try:
            start, stop = (int(b) for b in bound)
        except (TypeError, ValueError):
            raise ConfigError(
                f"fold {k}: expected (start, stop) bar positions, got {bound!r}"
            ) from None
        if not 0 <= start <= stop - 2 <= bars.n_bars - 2:
            raise ConfigError(
                f"fold {k}: ({start}, {stop}) needs 0 <= start, stop - start >= 2 and "
                f"stop <= {bars.n_bars} (the number of bars)"
            )
        window = bars[start:stop]
        valid = window.valid
        if config.periods_per_year is not None:
            ppy = np.full(window.n_symbols, float(config.periods_per_year))
        else:
            ppy = np.array([infer_periods_per_year(window.ts_ns[v]) for v in valid.T])
        out.append(Fold(window, ppy, valid.sum(axis=0).astype(np.float64)))
    return out


class FoldEvaluation:
    """Sweeps of a parameter matrix over folds, folded into the ledger's per-trial numbers.

    Each metric is the mean over the symbols where it is defined, then over the folds a set
    ran; ``sharpe_per_period`` is in the unit the winner is judged on (the symbol's per-bar
    Sharpe ratio; with several symbols the per-bar Sharpe ratio of their summed equity, see
    :func:`research.registry.trial_sharpes`), the mean over folds; ``n_bars`` sums the folds'
    mean bars per symbol; ``seconds`` is each set's share of the sweep wall time. Every sweep
    is recorded in the trial registry (tagged by the caller's ``trial_context``).
    """

    def __init__(self, strategy, matrix: np.ndarray, folds: Sequence[Fold], config: SimConfig):
        self.strategy, self.matrix, self.folds, self.config = strategy, matrix, folds, config
        n, k = matrix.shape[0], len(folds)
        self.metrics = np.full((k, n, len(METRICS)), np.nan)
        self._spp = np.full((k, n), np.nan)
        self._bars = np.zeros((k, n))
        self._ppy = np.full((k, n), np.nan)
        self._seconds = np.zeros(n)

    def run(self, fold: int, rows: np.ndarray, progress=False) -> np.ndarray:
        """Evaluate sets ``rows`` on fold ``fold`` (sweeps keeping equity curves, in chunks of
        bounded memory); return their (rows, METRICS). ``progress``: a bar or a callback."""
        from research.registry import trial_sharpes

        part = self.folds[fold]
        tick = time.perf_counter()
        m, width = part.bars.n_symbols, len(METRICS)
        raw = np.empty((rows.size, m, width))
        spp = np.empty(rows.size)
        step = max(1, EQUITY_FLOATS_PER_SWEEP // max(1, m * part.bars.n_bars))
        with Progress(progress, rows.size, f"sweep {self.strategy.name}") as report:
            for lo in range(0, rows.size, step):
                hi = min(lo + step, rows.size)
                table, equity = qs.sweep_equity(
                    self.strategy, part.bars, self.matrix[rows[lo:hi]], config=self.config
                )
                metrics = table[list(METRICS)].to_numpy(dtype=np.float64)
                raw[lo:hi] = metrics.reshape(hi - lo, m, width)
                spp[lo:hi] = trial_sharpes(part.bars, self.config, metrics, equity)[0]
                report(hi)
        self._seconds[rows] += (time.perf_counter() - tick) / rows.size
        self.metrics[fold, rows] = mean_defined(raw, axis=1)
        self._spp[fold, rows] = spp
        self._bars[fold, rows] = part.n_bars.mean()
        self._ppy[fold, rows] = part.periods_per_year.mean()
        return self.metrics[fold, rows]

    def columns(self) -> dict[str, np.ndarray]:
        """The ledger columns of every set, as keywords of :meth:`TrialLedger.record`."""
        return {
            "metrics": mean_defined(self.metrics, axis=0),
            "sharpe_per_period": mean_defined(self._spp, axis=0),
            "n_bars": np.rint(self._bars.sum(axis=0)).astype(np.int64),
            "periods_per_year": mean_defined(self._ppy, axis=0),
            "seconds": self._seconds,
        }


def record_grid(
    ledger: TrialLedger,
    strategy,
    bars: Bars,
    matrix: np.ndarray,
    config: SimConfig,
    *,
    objective: str,
    study: str,
    stage: str,
    seed: int | None = None,
    progress=False,
) -> np.ndarray:
    """Evaluate every row of ``matrix`` on all of ``bars`` in one sweep and record each as a
    trial (complete, or fail where ``objective`` is undefined); return the (rows, METRICS)
    metrics, the mean over symbols as for Optuna trials. The sweep goes to the trial registry
    as ``source="study"`` unless an enclosing ``trial_context`` says otherwise."""
    from research.registry import trial_defaults

    n = matrix.shape[0]
    evaluation = FoldEvaluation(strategy, matrix, make_folds(bars, config, None), config)
    with trial_defaults(source="study", study=study, stage=stage, seed=seed):
        metrics = evaluation.run(0, np.arange(n), progress=progress)
    values = metrics[:, METRICS.index(objective)]
    ok = np.isfinite(values)
    ledger.record(
        study=study,
        stage=stage,
        trials=np.arange(n),
        states=np.where(ok, "complete", "fail"),
        params=matrix,
        values=np.where(ok, values, np.nan),
        **evaluation.columns(),
    )
    return metrics


def mean_defined(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` of the non-NaN entries; NaN where there is none (no warning)."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=axis)
    total = np.where(defined, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _empty(param_names: Sequence[str]) -> pd.DataFrame:
    columns = {c: pd.Series(dtype=object) for c in ("study", "stage", "state", "worker")}
    columns["trial"] = pd.Series(dtype=np.int64)
    columns["n_bars"] = pd.Series(dtype=np.int64)
    floats = (*param_names, *METRICS, "sharpe_per_period", "periods_per_year", "seconds")
    columns.update({c: pd.Series(dtype=np.float64) for c in floats})
    return pd.DataFrame(columns)


def _value_index(column: str) -> int:
    return int(column.split("_", 1)[1])


def _strings(name: str, value: str | Sequence[str] | np.ndarray, n: int) -> np.ndarray:
    if isinstance(value, str):
        return np.full(n, value, dtype=object)
    out = np.asarray(value, dtype=object)
    if out.shape != (n,):
        raise ConfigError(f"ledger record: {name} has shape {out.shape}, expected ({n},)")
    return np.array([str(v) for v in out], dtype=object)


def _vector(name: str, value: Any, n: int) -> np.ndarray:
    out = np.asarray(value, dtype=np.float64)
    if out.ndim == 0:
        return np.full(n, float(out))
    if out.shape != (n,):
        raise ConfigError(f"ledger record: {name} has shape {out.shape}, expected ({n},)")
    return out


def _matrix(name: str, value: Any, n: int, width: int) -> np.ndarray:
    out = np.asarray(value, dtype=np.float64)
    if out.ndim == 1 and n == 1 and out.shape[0] == width:
        out = out.reshape(1, width)
    if out.shape != (n, width):
        raise ConfigError(f"ledger record: {name} has shape {out.shape}, expected ({n}, {width})")
    return out
