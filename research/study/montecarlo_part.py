"""The study's Monte Carlo: the ``montecarlo`` part (fixed ``[params]`` on the whole data), and
the spec's Monte Carlo of any returns, which the optimize and walk-forward parts run too."""

from __future__ import annotations

from quantshift.engine.backtest import BacktestResult, backtest
from quantshift.errors import ConfigError
from research.study.measures import _combined, _curve_figure, _ppy_of, _returns
from research.study.report import StudyReport, _log_figures, _param_values, _where


def _montecarlo(spec, bars, report, run, progress) -> None:
    """Monte Carlo of the spec's fixed ``[params]`` on the whole data."""
    if spec.monte_carlo is None:
        raise ConfigError(f"{_where(spec)}: montecarlo needs a [monte_carlo] section")
    result = backtest(spec.strategy, bars, dict(spec.params), config=spec.costs)
    report.parts["backtest"] = result
    report.summary["strategy"] = spec.strategy
    report.summary["params"] = dict(spec.params)
    report.summary.update({f"bt_{k}": v for k, v in _combined(result).items()})
    report.add_figure(
        "equity", lambda: _curve_figure(result, f"{spec.strategy} {dict(spec.params)}")
    )
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
    report.add_figure(f"{prefix}_fan", outcome.plot)
