"""Run an experiment spec end to end: search, walk-forward, Monte Carlo, DSR/PBO, one MLflow run.

The CLI and notebooks call these functions; each returns a report whose summary is JSON-ready.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantshift.data import Bars, load_bars
from quantshift.data.validate import iso_utc
from quantshift.engine.backtest import BacktestResult, backtest
from quantshift.engine.metrics import METRICS
from quantshift.engine.sweep import sweep_equity
from quantshift.errors import ConfigError
from quantshift.provenance import code_fingerprint
from research.ledger import TrialLedger, default_direction, record_grid
from research.registry import dsr_report, trial_context
from research.spec import ExperimentSpec, grid_values
from research.stats import pbo, probabilistic_sharpe_ratio, return_moments
from research.tracking import study_run_name

COMMANDS = ("optimize", "walk-forward", "montecarlo", "report")
TOP_TRIALS_LOGGED = 5
KEY_PLOTS = (
    "best_equity", "parameter_heatmap", "optimization", "walk_forward", "oos_mc_fan", "mc_fan",
    "pbo",
)  # fmt: skip
"""Figures a study's parent run carries as well as the part that drew them."""


@dataclass(eq=False)
class StudyReport:
    """What one command produced: the headline numbers, the figures and the MLflow run."""

    command: str
    spec: ExperimentSpec
    summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict, repr=False)
    run_id: str | None = None
    run_name: str | None = None
    child_runs: dict[str, str] = field(default_factory=dict)
    tracking_uri: str | None = None
    parts: dict[str, Any] = field(default_factory=dict, repr=False)

    def save_figures(self, directory: str | Path) -> list[Path]:
        """Write every figure as PNG under ``directory``; return the paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, fig in self.figures.items():
            path = directory / f"{name}.png"
            fig.savefig(path, dpi=110)
            paths.append(path)
        return paths

    def close_figures(self) -> None:
        """Release the figures (pyplot keeps every open figure alive until closed)."""
        from quantshift.engine.plotting import pyplot

        plt = pyplot()
        for fig in self.figures.values():
            plt.close(fig)


def load_experiment_bars(spec: ExperimentSpec) -> Bars:
    """Load the spec's data: its source, universe and window (end exclusive)."""
    return load_bars(
        spec.data.source, symbols=spec.data.symbols, start=spec.data.start, end=spec.data.end
    )


def run(
    spec: ExperimentSpec,
    command: str = "report",
    *,
    tracker=None,
    track: bool = True,
    progress: bool | Callable[[int, int], None] = False,
) -> StudyReport:
    """Run ``command`` on ``spec`` and log it as one MLflow run (parts as nested runs).

    Parameters
    ----------
    spec : ExperimentSpec
    command : {"optimize", "walk-forward", "montecarlo", "report"}
        ``report`` runs every part the spec configures: the search with its DSR and PBO, the
        walk-forward, and Monte Carlo of the selected parameters.
    tracker : research.tracking.Tracker, optional
        Default: the spec's tracking URI (or the local store under ``experiments/``).
    track : bool
        False runs without MLflow (notebooks exploring, tests of the numbers alone).
    progress : bool or callable
        Progress bars on stderr for the long parts.
    """
    if command not in COMMANDS:
        raise ConfigError(f"unknown research command {command!r}; commands: {', '.join(COMMANDS)}")
    bars = load_experiment_bars(spec)
    report = StudyReport(command=command, spec=spec)
    started = time.perf_counter()
    with ExitStack() as stack:
        handle = None
        if track:
            if tracker is None:
                from research.tracking import Tracker

                tracker = Tracker(spec.tracking_uri, experiment=spec.experiment)
            handle = stack.enter_context(
                tracker.run(spec.name, kind=command, params=_run_params(spec))
            )
            handle.rename(study_run_name(spec.name, handle.run_id))
            report.run_name = handle.name
            handle.log_fingerprints(
                data_fingerprint=bars.fingerprint(), code=code_fingerprint(spec.strategy)
            )
            handle.log_seed(spec.seed)
            if spec.path is not None:
                handle.log_file(spec.path, artifact_path="spec")
            report.run_id = handle.run_id
            report.tracking_uri = tracker.resolved_tracking_uri
        parts = _parts(spec, command)
        for part in parts:
            child = None
            if handle is not None and len(parts) > 1:
                child = stack.enter_context(
                    tracker.run(f"{handle.name}:{part}", kind=part, parent=handle)
                )
                report.child_runs[part] = child.run_id
            target = child or handle
            _PARTS[part](spec, bars, report, target, progress)
        report.summary["elapsed_s"] = round(time.perf_counter() - started, 3)
        report.summary["data_fingerprint"] = bars.fingerprint()
        # What a promotion record pins: the universe and the bars actually used.
        report.summary["symbols"] = list(bars.symbols)
        report.summary["data_source"] = spec.data.source
        report.summary["data_first_bar"] = iso_utc(int(bars.ts_ns[0]))
        report.summary["data_last_bar"] = iso_utc(int(bars.ts_ns[-1]))
        report.summary["data_bars"] = int(bars.n_bars)
        report.summary["research_settings"] = spec.costs.to_dict()
        if handle is not None:
            # The parent alone compares studies in the runs table: the parameters that won
            # (or, for montecarlo, that traded), the headline numbers and the key plots.
            handle.log_params(_param_values(report.summary.get("best_params") or {}))
            handle.log_metrics(_numbers(report.summary))
            handle.log_dict(_json_safe(report.summary), "summary.json")
            if len(parts) > 1:
                key = {k: report.figures[k] for k in KEY_PLOTS if k in report.figures}
                _log_figures(handle, key)
    if handle is not None:
        report.summary["run_id"] = report.run_id
    return report


def _parts(spec: ExperimentSpec, command: str) -> list[str]:
    if command != "report":
        if command == "walk-forward" and spec.walk_forward is None:
            raise ConfigError(f"{_where(spec)}: walk-forward needs a [walk_forward] section")
        return [command]
    parts = ["optimize"]
    if spec.walk_forward is not None:
        parts.append("walk-forward")
    return parts


# --------------------------------------------------------------------------- optimize
def _optimize(spec, bars, report, run, progress) -> None:
    """Search the parameters, then judge the winner: DSR over every trial, PBO, Monte Carlo."""
    strat = spec.get_strategy()
    search = spec.search
    objective = search.objectives[0]
    ledger = TrialLedger(strat.name, strat.param_names)
    if search.method == "grid":
        best_params = _grid_search(spec, bars, ledger, progress)
    else:
        result = optimize_spec(spec, bars, progress=progress, ledger=ledger)
        if search.storage is not None:
            from research.optimize import load_ledger

            ledger = load_ledger(search.storage, search.study_name or spec.name, wait_s=600.0)
            # The history to plot is the whole study's, whichever worker evaluated it.
            result = dataclasses.replace(result, ledger=ledger)
        best_params = _best_by(ledger, objective, search.min_trades)
        from research.plots import plot_optimization

        report.figures["optimization"] = plot_optimization(result, min_trades=search.min_trades)
        if result.pareto is not None:
            report.parts["pareto"] = result.pareto
    best = backtest(strat, bars, best_params, config=spec.costs)
    report.parts.update(ledger=ledger, best=best, best_params=best_params)
    out = report.summary
    out["strategy"] = strat.name
    out["best_params"] = best_params
    out["trials"] = ledger.n_trials(states=("complete", "pruned", "fail"))
    out["trial_states"] = ledger.counts()
    out.update({f"is_{k}": v for k, v in _combined(best).items()})
    returns = _returns(best)
    sharpe_pp, skew, kurt = _per_period(returns)
    out["is_sharpe_per_period"] = sharpe_pp
    out["return_skew"], out["return_kurtosis"] = skew, kurt
    out["psr"] = probabilistic_sharpe_ratio(sharpe_pp, 0.0, len(returns), skew, kurt)
    # N and V from the trial registry: every trial of this lineage on this data (dsr_report).
    out.update(dsr_report(ledger, strat, bars, sharpe_pp, len(returns), skew, kurt))
    out["causality"] = _causality(strat, bars, best_params)
    report.figures["best_equity"] = _curve_figure(best, f"{strat.name} {best_params}")
    heat = _heatmap(ledger, strat, objective)
    if heat is not None:
        report.figures["parameter_heatmap"] = heat
    if spec.pbo is not None:
        _pbo(spec, bars, ledger, report)
    if spec.monte_carlo is not None:
        _monte_carlo_of(spec, best, report, prefix="mc")
    if run is not None:
        run.log_frame(ledger.frame, "ledger")
        _log_top_trials(run, ledger, objective, search.min_trades)
        _log_figures(run, report.figures)


def optimize_spec(spec: ExperimentSpec, bars: Bars, *, n_trials=None, batch_size=None, **options):
    """Run (or join) the spec's Optuna study on ``bars``; ``n_trials`` and ``batch_size``
    override the spec's, ``options`` go to :func:`research.optimize.optimize`."""
    from research.optimize import optimize

    search = spec.search
    return optimize(
        spec.strategy,
        bars,
        objectives=search.objectives,
        sampler=search.sampler,
        n_trials=n_trials or search.trials,
        batch_size=batch_size or search.batch_size,
        seed=spec.seed,
        storage=search.storage,
        study_name=search.study_name or spec.name,
        search_space=dict(search.space),
        config=spec.costs,
        **options,
    )


def _grid_search(spec, bars, ledger, progress):
    strat = spec.get_strategy()
    axes = {name: grid_values(entry) for name, entry in spec.search.space.items()}
    matrix = strat.grid(axes) if axes else strat.vector().reshape(1, -1)
    objective = spec.search.objectives[0]
    record_grid(
        ledger,
        strat,
        bars,
        matrix,
        spec.costs,
        objective=objective,
        study=spec.name,
        stage="optimize",
        seed=spec.seed,
        progress=progress,
    )
    return _best_by(ledger, objective, spec.search.min_trades)


def _best_by(ledger: TrialLedger, objective: str, min_trades: int) -> dict[str, float]:
    rows = ledger.frame
    rows = rows[(rows["state"] == "complete") & (rows["trades"] >= min_trades)]
    rows = rows[np.isfinite(rows[objective].to_numpy(dtype=float))]
    if rows.empty:
        raise ConfigError(
            f"no trial completed with a finite {objective} and at least {min_trades} trades; "
            "widen the search or lower [search] min_trades"
        )
    pick = (
        rows[objective].idxmax()
        if default_direction(objective) == "maximize"
        else rows[objective].idxmin()
    )
    return {name: float(rows.at[pick, name]) for name in ledger.param_names}


def _causality(strat, bars, params: dict[str, float]) -> dict:
    """The causality check of the chosen parameters on each symbol's bars (copies of each
    prefix); the first symbol that looks ahead, or the last verdict, as plain data."""
    from quantshift.strategies.causality import check_bars

    symbol, verdict = check_bars(strat, bars, strat.vector(params))
    return {**verdict.to_dict(), "symbol": symbol, "summary": f"{symbol}: {verdict.summary()}"}


def _pbo(spec, bars, ledger, report) -> None:
    """PBO over the completed trials with distinct parameters (an evenly spaced, seeded subset
    if there are more than ``max_trials``), from each trial's per-bar returns: a parameter set
    evaluated twice is one strategy, and its copies would make the best in-sample rank tie."""
    strat = spec.get_strategy()
    rows = ledger.frame
    rows = rows[rows["state"] == "complete"].drop_duplicates(subset=list(strat.param_names))
    if len(rows) < 2:
        report.summary["pbo"] = math.nan
        return
    if len(rows) > spec.pbo.max_trials:
        pick = np.random.default_rng(spec.seed).choice(len(rows), spec.pbo.max_trials, False)
        rows = rows.iloc[np.sort(pick)]
    matrix = rows[list(strat.param_names)].to_numpy(dtype=float)
    with trial_context(record=False):  # these trials are in the registry already
        _, equity = sweep_equity(strat, bars, matrix, config=spec.costs)
    portfolio = equity.sum(axis=1)  # (trials, bars): the symbols' sleeves together
    previous = np.concatenate(
        (np.full((portfolio.shape[0], 1), spec.costs.cash * bars.n_symbols), portfolio[:, :-1]),
        axis=1,
    )
    returns = (portfolio / previous - 1.0).T
    result = pbo(returns, n_splits=spec.pbo.splits, metric="sharpe")
    report.parts["pbo"] = result
    report.summary.update(
        pbo=result.pbo,
        pbo_trials=int(returns.shape[1]),
        pbo_degradation_slope=result.degradation_slope,
        pbo_prob_oos_loss=result.prob_oos_loss,
    )
    report.figures["pbo"] = result.plot()


# --------------------------------------------------------------------------- walk-forward
def _walk_forward(spec, bars, report, run, progress) -> None:
    from research.splitters import WalkForward
    from research.walkforward import walk_forward

    wf = spec.walk_forward
    search = spec.search
    if search.method == "grid":
        space = {name: grid_values(entry) for name, entry in search.space.items()} or None
    else:
        space = dict(search.space)
    result = walk_forward(
        spec.strategy,
        bars,
        WalkForward(
            wf.train,
            wf.test,
            anchored=wf.anchored,
            step=wf.step,
            purge=wf.purge,
            embargo=wf.embargo,
        ),
        search=space,
        method=search.method,
        objective=search.objectives[0],
        n_trials=search.trials,
        sampler=search.sampler,
        batch_size=search.batch_size,
        seed=spec.seed,
        min_trades=search.min_trades,
        config=spec.costs,
        study=spec.name,
        progress=progress,
    )
    report.parts["walk_forward"] = result
    out = report.summary
    out["wf_folds"] = len(result.folds)
    out["wf_trials"] = result.ledger.n_trials()
    out["walk_forward_efficiency"] = result.efficiency
    out.update({f"oos_{k}": v for k, v in result.metrics.items()})
    returns = result.returns.to_numpy()
    sharpe_pp, skew, kurt = _per_period(returns)
    out["oos_psr"] = probabilistic_sharpe_ratio(sharpe_pp, 0.0, len(returns), skew, kurt)
    out["wf_params"] = result.folds[list(result.stability.index)].to_dict(orient="list")
    report.figures["walk_forward"] = result.plot()
    if spec.monte_carlo is not None and len(result.trades) >= 2:
        _spec_monte_carlo(
            spec,
            report,
            "oos_mc",
            returns=returns,
            trade_returns=result.trades["equity_return"].to_numpy(),
            n_bars=len(result.equity),
            periods_per_year=result.periods_per_year,
        )
    if run is not None:
        run.log_frame(result.folds, "walk_forward_folds")
        run.log_frame(result.ledger.frame, "ledger")
        run.log_frame(result.stability.reset_index(), "parameter_stability")
        _log_figures(
            run, {k: v for k, v in report.figures.items() if k.startswith(("walk", "oos"))}
        )


# --------------------------------------------------------------------------- Monte Carlo
def _montecarlo(spec, bars, report, run, progress) -> None:
    """Monte Carlo of the spec's fixed ``[params]`` on the whole data."""
    if spec.monte_carlo is None:
        raise ConfigError(f"{_where(spec)}: montecarlo needs a [monte_carlo] section")
    result = backtest(spec.strategy, bars, dict(spec.params), config=spec.costs)
    report.parts["backtest"] = result
    report.summary["strategy"] = spec.strategy
    report.summary["params"] = dict(spec.params)
    report.summary.update({f"bt_{k}": v for k, v in _combined(result).items()})
    report.figures["equity"] = _curve_figure(result, f"{spec.strategy} {dict(spec.params)}")
    _monte_carlo_of(spec, result, report, prefix="mc")
    if run is not None:
        run.log_params(_param_values(spec.params))
        _log_figures(run, report.figures)


def _monte_carlo_of(spec, result: BacktestResult, report: StudyReport, prefix: str) -> None:
    from research.montecarlo import trade_equity_returns

    _spec_monte_carlo(
        spec,
        report,
        prefix,
        returns=_returns(result),
        trade_returns=trade_equity_returns(result),
        n_bars=len(result.equity),
        periods_per_year=_ppy_of(result),
    )


def _spec_monte_carlo(
    spec, report, prefix, *, returns, trade_returns, n_bars, periods_per_year
) -> None:
    """The spec's Monte Carlo: a block bootstrap of per-bar ``returns``, or a resampling of
    ``trade_returns`` (which needs two closed trades) over ``n_bars`` bars."""
    from research.montecarlo import monte_carlo

    mc = spec.monte_carlo
    if mc.method == "block":
        outcome = monte_carlo(
            returns=returns,
            method="block",
            n_paths=mc.paths,
            seed=spec.seed,
            ruin_drawdown_pct=mc.ruin_drawdown_pct,
            block_length=mc.block_length,
            periods_per_year=periods_per_year,
            confidence=mc.confidence,
        )
    else:
        if len(trade_returns) < 2:
            report.summary[f"{prefix}_skipped"] = f"{len(trade_returns)} closed trades; need 2"
            return
        outcome = monte_carlo(
            trade_returns=trade_returns,
            method=mc.method,
            n_paths=mc.paths,
            seed=spec.seed,
            ruin_drawdown_pct=mc.ruin_drawdown_pct,
            years=n_bars / periods_per_year,
            confidence=mc.confidence,
        )
    _record_monte_carlo(outcome, report, prefix)


def _record_monte_carlo(outcome, report: StudyReport, prefix: str) -> None:
    report.parts[prefix] = outcome
    report.summary.update({f"{prefix}_{k}": v for k, v in outcome.summary().items()})
    report.summary[f"{prefix}_method"] = outcome.method
    report.figures[f"{prefix}_fan"] = outcome.plot()


_PARTS = {
    "optimize": _optimize,
    "walk-forward": _walk_forward,
    "montecarlo": _montecarlo,
}


# --------------------------------------------------------------------------- helpers
def _combined(result: BacktestResult) -> dict[str, float]:
    """Metrics of the result: the single symbol's, or the summed equity of several."""
    if len(result.symbols) == 1:
        return result.metrics
    from quantshift.engine.metrics import equity_metrics

    equity = result.equity.sum(axis=1).to_numpy()
    out = equity_metrics(equity, result.config.cash * len(result.symbols), _ppy_of(result))
    out["trades"] = int(result.stats["trades"].sum())
    return out


def _returns(result: BacktestResult) -> np.ndarray:
    """Per-bar returns of all symbols' sleeves together (one symbol: its own returns)."""
    if len(result.symbols) == 1:
        return result.returns().iloc[:, 0].to_numpy()
    equity = result.equity.sum(axis=1).to_numpy()
    initial = result.config.cash * len(result.symbols)
    return equity / np.concatenate(([initial], equity[:-1])) - 1.0


def _per_period(returns: np.ndarray) -> tuple[float, float, float]:
    """Per-period Sharpe, skew and Pearson kurtosis of returns (NaN if they do not vary)."""
    if len(returns) < 3 or np.std(returns) == 0.0:
        return math.nan, math.nan, math.nan
    from research.stats import sharpe_ratio

    skew, kurt = return_moments(returns)
    return sharpe_ratio(returns), skew, kurt


def _ppy_of(result: BacktestResult) -> float:
    from quantshift.engine.metrics import infer_periods_per_year

    if result.config.periods_per_year is not None:
        return float(result.config.periods_per_year)
    return infer_periods_per_year(result.equity.index.asi8)


def _curve_figure(result: BacktestResult, title: str):
    from research.plots import plot_curve

    equity = result.equity.sum(axis=1)
    return plot_curve(equity, result.config.cash * len(result.symbols), title)


def _heatmap(ledger: TrialLedger, strat, objective: str):
    """A heatmap over the two parameters that vary most among completed trials, if two do."""
    from research.plots import plot_parameter_heatmap

    frame = ledger.frame
    frame = frame[frame["state"] == "complete"]
    varying = [n for n in strat.param_names if frame[n].nunique() > 1]
    if len(varying) < 2:
        return None
    x, y = sorted(varying, key=lambda n: -frame[n].nunique())[:2]
    return plot_parameter_heatmap(frame, x, y, objective)


def _log_top_trials(run, ledger: TrialLedger, objective: str, min_trades: int) -> None:
    """The best distinct parameter sets that pass the feasibility rules, as child runs (a
    sampler that repeats a set, or a set with too few trades, is not a contender)."""
    frame = ledger.frame
    frame = frame[(frame["state"] == "complete") & (frame["trades"] >= min_trades)]
    frame = frame[np.isfinite(frame[objective].to_numpy(dtype=float))]
    frame = frame.drop_duplicates(subset=list(ledger.param_names))
    ascending = default_direction(objective) == "minimize"
    top = frame.sort_values(objective, ascending=ascending).head(TOP_TRIALS_LOGGED)
    for rank, (_, row) in enumerate(top.iterrows(), start=1):
        run.child(
            f"top-{rank}:trial-{int(row['trial'])}",
            params={n: row[n] for n in ledger.param_names},
            metrics={m: row[m] for m in METRICS},
            tags={"quantshift.stage": row["stage"], "quantshift.rank": rank},
        )


def _log_figures(run, figures: dict[str, Any]) -> None:
    for name, fig in figures.items():
        run.log_figure(fig, f"plots/{name}.png")


def _run_params(spec: ExperimentSpec) -> dict[str, Any]:
    params: dict[str, Any] = {
        "strategy": spec.strategy,
        "seed": spec.seed,
        "data": {
            "source": spec.data.source,
            "symbols": ",".join(spec.data.symbols) if spec.data.symbols else "all",
            "start": spec.data.start,
            "end": spec.data.end,
        },
        "costs": spec.costs.to_dict(),
        "search": {
            "method": spec.search.method,
            "sampler": spec.search.sampler,
            "trials": spec.search.trials,
            "objectives": ",".join(spec.search.objectives),
            "min_trades": spec.search.min_trades,
            "space": {k: str(v) for k, v in spec.search.space.items()},
        },
    }
    if spec.walk_forward is not None:
        params["walk_forward"] = dict(vars(spec.walk_forward))
    if spec.monte_carlo is not None:
        params["monte_carlo"] = dict(vars(spec.monte_carlo))
    if spec.pbo is not None:
        params["pbo"] = dict(vars(spec.pbo))
    return params


def _param_values(params) -> dict[str, Any]:
    """Parameter values as a person reads them in the runs table (``10``, not ``10.0``)."""
    return {k: int(v) if float(v).is_integer() else float(v) for k, v in params.items()}


def _numbers(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's finite numbers (MLflow metrics); nested values stay in summary.json."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _where(spec: ExperimentSpec) -> str:
    return str(spec.path) if spec.path is not None else spec.name


def json_summary(report: StudyReport) -> dict[str, Any]:
    """The report's summary with non-finite numbers as null (for ``--json``)."""
    return _json_safe(report.summary)
