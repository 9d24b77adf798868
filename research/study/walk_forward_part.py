"""The study's ``walk-forward`` part: the search registered first for the lineage, re-run on each
training window and judged out of sample, with Monte Carlo of the out-of-sample returns."""

from __future__ import annotations

import dataclasses

from research.spec import grid_values, space_from_plain
from research.stats import probabilistic_sharpe_ratio
from research.study.measures import _per_period
from research.study.montecarlo_part import _spec_monte_carlo
from research.study.report import _log_figures


def _walk_forward(spec, bars, report, run, progress) -> None:
    from research.splitters import WalkForward
    from research.walkforward import walk_forward

    wf = spec.walk_forward
    # The space registered first for this lineage and data, before any full-sample result: a
    # space narrowed after seeing one would leak the test windows into the evidence.
    registered = report.parts["registration"].root.spec["search"]
    search = dataclasses.replace(
        spec.search,
        method=registered["method"],
        sampler=registered["sampler"],
        space=space_from_plain(registered["space"]),
    )
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
    report.add_figure("walk_forward", result.plot)
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
