"""The study's ``optimize`` part: the search over the spec's space (grid or Optuna), then the
winner judged: PSR, DSR over every trial, causality, PBO, Monte Carlo; its best trials logged."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from quantshift.data import Bars
from quantshift.engine.backtest import backtest
from quantshift.engine.metrics import METRICS
from quantshift.engine.sweep import sweep_equity
from quantshift.errors import ConfigError
from research.ledger import TrialLedger, default_direction, record_grid
from research.registry import dsr_report, trial_context
from research.spec import ExperimentSpec, grid_values
from research.stats import pbo, probabilistic_sharpe_ratio
from research.study.measures import _combined, _curve_figure, _per_period, _returns
from research.study.montecarlo_part import _monte_carlo_of
from research.study.report import _log_figures

TOP_TRIALS_LOGGED = 5


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

        report.add_figure(
            "optimization", lambda: plot_optimization(result, min_trades=search.min_trades)
        )
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
    report.add_figure("best_equity", lambda: _curve_figure(best, f"{strat.name} {best_params}"))
    if report.plots:
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
    report.add_figure("pbo", result.plot)


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
