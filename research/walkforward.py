"""Walk-forward optimisation: choose parameters in sample, trade them out of sample, stitch.

Every in-sample evaluation goes to the trial ledger (and the trial registry, as
``source="walk-forward"``); the out-of-sample segments form one curve.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quantshift.data.bars import Bars
from quantshift.engine.backtest import backtest, prepare
from quantshift.engine.config import SimConfig
from quantshift.engine.metrics import METRICS, equity_metrics, infer_periods_per_year
from quantshift.engine.sweep import parameter_matrix
from quantshift.errors import ConfigError
from quantshift.strategies import Strategy
from research.ledger import TrialLedger, default_direction, record_grid
from research.montecarlo import trade_equity_returns
from research.registry import trial_defaults
from research.splitters import WalkForward

FOLD_COLUMNS = (
    "fold",
    "train_start",
    "train_end",
    "test_start",
    "test_end",
    "candidates",
)


@dataclass(frozen=True, eq=False)
class WalkForwardResult:
    """What a walk-forward produced.

    Attributes
    ----------
    folds : DataFrame
        One row per fold: its windows, the parameters chosen in sample, ``is_*`` metrics of the
        choice in sample and ``oos_*`` metrics out of sample.
    equity : Series
        Stitched out-of-sample equity (all symbols together), starting at the initial capital.
    trades : DataFrame
        Out-of-sample trades with a ``fold`` column; a position open at a fold's end is closed
        there at the close (``exit_reason == "fold-end"``), without an exit fee.
    metrics : dict
        Metrics of the stitched curve (``EQUITY_METRICS``) plus ``trades`` and ``win_rate_pct``.
    stability : DataFrame
        Per parameter, how the choice moved across folds.
    efficiency : float
        Walk-forward efficiency: stitched out-of-sample CAGR over the mean in-sample CAGR of the
        chosen parameters (Pardo). Reported, not a gate: it is noisy and undefined when the
        in-sample CAGR is near zero.
    ledger : TrialLedger
        Every in-sample evaluation, stage ``wf-fold-<k>``.
    """

    strategy: str
    objective: str
    method: str
    folds: pd.DataFrame
    equity: pd.Series
    trades: pd.DataFrame
    metrics: dict[str, float]
    stability: pd.DataFrame
    efficiency: float
    ledger: TrialLedger
    config: SimConfig
    initial_capital: float
    periods_per_year: float
    data_fingerprint: str
    elapsed_s: float

    def __repr__(self) -> str:
        m = self.metrics
        return (
            f"WalkForwardResult({self.strategy!r}, {len(self.folds)} folds, {self.method}, "
            f"objective={self.objective!r}, oos_sharpe={m['sharpe']:.3f}, "
            f"oos_cagr_pct={m['cagr_pct']:.2f}, trials={self.ledger.n_trials()})"
        )

    @property
    def returns(self) -> pd.Series:
        """Per-bar returns of the stitched out-of-sample curve."""
        previous = self.equity.shift(1).fillna(self.initial_capital)
        return self.equity / previous - 1.0

    def summary(self) -> dict[str, Any]:
        """Return a JSON-ready summary: stitched metrics, efficiency and per-fold choices."""
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "objective": self.objective,
            "method": self.method,
            "folds": len(self.folds),
            "trials": self.ledger.n_trials(),
            "walk_forward_efficiency": _finite(self.efficiency),
            "elapsed_s": round(self.elapsed_s, 3),
        }
        out.update({f"oos_{k}": _finite(v) for k, v in self.metrics.items()})
        out["per_fold"] = [
            {k: (_finite(v) if isinstance(v, float) else v) for k, v in row.items()}
            for row in self.folds.assign(
                **{c: self.folds[c].astype(str) for c in FOLD_COLUMNS[1:5]}
            ).to_dict(orient="records")
        ]
        return out

    def plot(self, path=None):
        """Plot the stitched equity with fold boundaries, its drawdown and the chosen parameters
        per fold; save to ``path`` if given; return the figure."""
        from research.plots import plot_walk_forward

        return plot_walk_forward(self, path=path)


def walk_forward(
    strategy: str | Strategy,
    bars: Bars | str,
    splitter: WalkForward,
    *,
    search: Mapping[str, Any] | None = None,
    method: str = "grid",
    objective: str = "sharpe",
    n_trials: int = 100,
    sampler: str = "tpe",
    batch_size: int | None = None,
    seed: int = 0,
    min_trades: int = 1,
    symbol: str | list[str] | None = None,
    config: SimConfig | None = None,
    study: str = "walk-forward",
    ledger: TrialLedger | None = None,
    progress: bool | Callable[[int, int], None] = False,
    **settings: Any,
) -> WalkForwardResult:
    """Optimise in each in-sample window, trade the choice in the next out-of-sample window.

    Parameters
    ----------
    strategy, bars, symbol, config, settings
        As for :func:`quantshift.backtest`. With several symbols each trades its own ``cash``;
        the objective is the mean over symbols and the curve is their sum.
    splitter : WalkForward
        The windows (rolling or anchored, in bars or time). Test windows must not overlap.
    search : mapping, optional
        ``method="grid"``: a grid ``{name: values}`` (every set is evaluated in one fused sweep
        per fold). ``method="optuna"``: a search space ``{name: (low, high[, step]) | [values]
        | number}``; unnamed parameters use the strategy's ranges.
    method : {"grid", "optuna"}
    objective : str
        The metric to select on (maximised; drawdown and volatility minimised).
    n_trials, sampler, batch_size, seed
        The Optuna study per fold (``seed + fold`` seeds fold k).
    min_trades : int
        In-sample trades a parameter set needs to be selectable.
    study : str
        The study name in the ledger.
    ledger : TrialLedger, optional
        Append to this ledger (default: a new one).
    progress : bool or callable
        True shows a progress bar over folds; a callable gets ``(folds_done, folds_total)``.
    """
    started = time.perf_counter()
    strat, data, cfg = prepare(strategy, bars, symbol, config, settings)
    if method not in ("grid", "optuna"):
        raise ConfigError(f"walk-forward method must be 'grid' or 'optuna', got {method!r}")
    direction = default_direction(objective)
    windows = splitter.folds(data)
    if not windows:
        raise ConfigError(
            f"walk-forward: {data.n_bars} bars are too few for one train + test window"
        )
    for (_, _, _, stop), (_, _, start, _) in itertools.pairwise(windows):
        if start < stop:
            raise ConfigError("walk-forward test windows overlap; use step >= test length")
    ledger = ledger if ledger is not None else TrialLedger(strat.name, strat.param_names)
    matrix = parameter_matrix(strat, search) if method == "grid" else None
    ppy = (
        float(cfg.periods_per_year)
        if cfg.periods_per_year is not None
        else infer_periods_per_year(data.ts_ns)
    )
    initial = cfg.cash * data.n_symbols

    rows, segments, trade_parts = [], [], []
    from quantshift.progress import Progress

    with (
        trial_defaults(source="walk-forward", study=study, seed=int(seed)),
        Progress(progress, len(windows), f"walk-forward {strat.name}") as report,
    ):
        for k, (train_lo, train_hi, test_lo, test_hi) in enumerate(windows):
            train = data[train_lo:train_hi]
            stage = f"wf-fold-{k}"
            if method == "grid":
                chosen, is_metrics, candidates = _select_grid(
                    strat,
                    train,
                    matrix,
                    cfg,
                    objective,
                    direction,
                    min_trades,
                    ledger,
                    study,
                    stage,
                )
            else:
                chosen, is_metrics, candidates = _select_optuna(
                    strat,
                    train,
                    search,
                    cfg,
                    objective,
                    direction,
                    min_trades,
                    ledger,
                    study,
                    stage,
                    n_trials=n_trials,
                    sampler=sampler,
                    batch_size=batch_size,
                    seed=seed + k,
                )
            fold_equity, fold_trades = _out_of_sample(strat, data, chosen, cfg, test_lo, test_hi)
            oos = equity_metrics(fold_equity, initial, ppy)
            oos.update(_trade_counts(fold_trades))
            trade_parts.append(fold_trades.assign(fold=k))
            segments.append(fold_equity)
            row: dict[str, Any] = {
                "fold": k,
                "train_start": data.index[train_lo],
                "train_end": data.index[train_hi - 1],
                "test_start": data.index[test_lo],
                "test_end": data.index[test_hi - 1],
                "candidates": candidates,
            }
            row.update(chosen)
            row.update({f"is_{m}": is_metrics.get(m, math.nan) for m in METRICS})
            row.update({f"oos_{m}": v for m, v in oos.items()})
            row["efficiency"] = _ratio(oos["cagr_pct"], row["is_cagr_pct"])
            rows.append(row)
            report(k + 1)

    folds = pd.DataFrame(rows)
    for p in strat.params:
        if p.integer:
            folds[p.name] = folds[p.name].astype(np.int64)
    equity = _stitch(segments, initial)
    first, last = windows[0][2], windows[-1][3]
    index = data.index[first:last]
    keep = np.concatenate([np.arange(lo, hi) for _, _, lo, hi in windows]) - first
    equity_series = pd.Series(equity, index=index[keep], name="equity")
    metrics = equity_metrics(equity, initial, ppy)
    trades = pd.concat(trade_parts, ignore_index=True)
    metrics.update(_trade_counts(trades))
    return WalkForwardResult(
        strategy=strat.name,
        objective=objective,
        method=method,
        folds=folds,
        equity=equity_series,
        trades=trades,
        metrics=metrics,
        stability=parameter_stability(folds, strat.param_names),
        efficiency=_ratio(metrics["cagr_pct"], float(folds["is_cagr_pct"].mean())),
        ledger=ledger,
        config=cfg,
        initial_capital=initial,
        periods_per_year=ppy,
        data_fingerprint=data.fingerprint(),
        elapsed_s=time.perf_counter() - started,
    )


def parameter_stability(folds: pd.DataFrame, names) -> pd.DataFrame:
    """Per parameter: mean, standard deviation, coefficient of variation, range, the number of
    distinct choices and the share of folds that chose the most common value."""
    rows = []
    for name in names:
        values = folds[name].astype(float)
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append(
            {
                "parameter": name,
                "mean": mean,
                "std": std,
                "cv": std / abs(mean) if mean else math.nan,
                "min": float(values.min()),
                "max": float(values.max()),
                "distinct": int(values.nunique()),
                "modal_share": float(values.value_counts().iloc[0] / len(values)),
            }
        )
    return pd.DataFrame(rows).set_index("parameter")


def _select_grid(strat, train, matrix, cfg, objective, direction, min_trades, ledger, study, stage):
    """Evaluate every grid set in one sweep; record them; return the best selectable set."""
    metrics = record_grid(
        ledger, strat, train, matrix, cfg, objective=objective, study=study, stage=stage
    )
    values = metrics[:, METRICS.index(objective)]
    selectable = np.isfinite(values) & (metrics[:, METRICS.index("trades")] >= min_trades)
    best = _best_index(values, selectable, direction, stage)
    chosen = dict(zip(strat.param_names, matrix[best].tolist(), strict=True))
    return chosen, dict(zip(METRICS, metrics[best].tolist(), strict=True)), int(matrix.shape[0])


def _select_optuna(
    strat, train, space, cfg, objective, direction, min_trades, ledger, study, stage, **kw
):
    """Run one Optuna study on the window (its trials go to the ledger); return its best set."""
    from research.optimize import optimize

    result = optimize(
        strat,
        train,
        objectives=(objective,),
        search_space=space,
        config=cfg,
        ledger=ledger,
        study_name=f"{study}-{stage}",
        stage=stage,
        n_trials=kw["n_trials"],
        sampler=kw["sampler"],
        batch_size=kw["batch_size"],
        seed=kw["seed"],
    )
    rows = ledger.frame
    rows = rows[(rows["stage"] == stage) & (rows["study"] == f"{study}-{stage}")]
    values = rows[objective].to_numpy(dtype=float)
    selectable = (rows["state"] == "complete").to_numpy() & (
        rows["trades"].to_numpy(dtype=float) >= min_trades
    )
    best = _best_index(values, selectable & np.isfinite(values), direction, stage)
    chosen = {n: float(rows[n].iloc[best]) for n in strat.param_names}
    del result
    return chosen, {m: float(rows[m].iloc[best]) for m in METRICS}, len(rows)


def _best_index(values, selectable, direction, stage) -> int:
    if not selectable.any():
        raise ConfigError(
            f"walk-forward {stage}: no parameter set has a finite objective and enough "
            "in-sample trades; widen the train window or the search, or lower min_trades"
        )
    scored = np.where(selectable, values, np.nan)
    return int(np.nanargmax(scored) if direction == "maximize" else np.nanargmin(scored))


def _out_of_sample(strat, data, params, cfg, test_lo, test_hi):
    """Backtest ``params`` on the test window, preceded by just enough bars to warm up, so the
    first signal can fire on the first test bar; return the window's summed equity and trades."""
    warm = strat.warmup_bars(params)
    lo = max(0, test_lo - warm)
    result = backtest(strat, data[lo:test_hi], params, config=cfg)
    equity = result.equity.to_numpy().sum(axis=1)[test_lo - lo :]
    trades = result.trades.sort_values("entry_time", kind="stable")
    # Each trade's P&L as a fraction of its symbol's equity before entry (for Monte Carlo).
    trades = trades.assign(equity_return=trade_equity_returns(result, include_open=True))
    trades = trades[trades["entry_time"] >= data.index[test_lo]].reset_index(drop=True)
    trades["exit_reason"] = trades["exit_reason"].astype(str).replace("open", "fold-end")
    return equity, trades


def _trade_counts(trades: pd.DataFrame) -> dict[str, float]:
    """Trades (positions closed at a fold's end count) and the share with positive P&L."""
    n = len(trades)
    win_rate = 100.0 * float((trades["pnl"] > 0).mean()) if n else math.nan
    return {"trades": n, "win_rate_pct": win_rate}


def _stitch(segments: list[np.ndarray], initial: float) -> np.ndarray:
    """Chain each fold's returns (each fold starts from the initial capital) into one curve."""
    returns = [seg / np.concatenate(([initial], seg[:-1])) - 1.0 for seg in segments]
    return initial * np.cumprod(1.0 + np.concatenate(returns))


def _ratio(numerator: float, denominator: float) -> float:
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0.0:
        return math.nan
    return numerator / denominator


def _finite(value):
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value
