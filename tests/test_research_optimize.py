"""Optuna searches through research.optimize on small data: seeds, samplers, Pareto fronts,
infeasible and failed trials, pruning across folds, SQLite studies and the ledger they leave.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest

import quantshift as qs
from quantshift.errors import ConfigError, UnknownNameError
from research.ledger import TrialLedger
from research.optimize import optimize, run_worker

SPACE = {"fast": (2, 30), "slow": (10, 120)}
# Three walk-forward-style folds of 200 bars each.
FOLDS = [(0, 200), (200, 400), (400, 600)]
VOLATILE = ("study", "worker", "seconds")


@pytest.fixture(scope="module")
def bars():
    return qs.load_bars("synthetic:symbols=1,bars=600,seed=3")


def _stored_study(result) -> optuna.Study:
    return optuna.load_study(study_name=result.study_name, storage=result.storage)


def test_same_seed_gives_identical_trials_and_best(bars):
    runs = [
        optimize("ma_crossover", bars, n_trials=30, batch_size=8, seed=7, search_space=SPACE)
        for _ in range(2)
    ]
    a, b = (r.ledger.frame.drop(columns=list(VOLATILE)) for r in runs)
    pd.testing.assert_frame_equal(a, b)
    assert runs[0].best_params == runs[1].best_params
    assert runs[0].best_values == runs[1].best_values
    other = optimize("ma_crossover", bars, n_trials=30, batch_size=8, seed=8, search_space=SPACE)
    assert not other.ledger.frame[["fast", "slow"]].equals(runs[0].ledger.frame[["fast", "slow"]])


@pytest.mark.parametrize("sampler", ["tpe", "cmaes", "nsga2", "random", "grid"])
def test_each_sampler_runs_and_best_is_the_best_complete_trial(bars, sampler):
    space = {"fast": (2, 30, 4), "slow": (10, 120, 10)} if sampler == "grid" else SPACE
    result = optimize(
        "ma_crossover", bars, sampler=sampler, n_trials=24, batch_size=6, search_space=space
    )
    frame = result.ledger.frame
    assert result.n_trials == len(frame) == 24
    assert frame["trial"].tolist() == list(range(24))
    assert frame["fast"].between(2, 30).all() and frame["slow"].between(10, 120).all()
    done = frame[frame["state"] == "complete"]
    assert result.best_values["sharpe"] == done["value_0"].max() == done["sharpe"].max()
    if sampler == "grid":
        # Every point of the 8 x 12 grid at most once, on the declared steps.
        assert not frame.duplicated(["fast", "slow"]).any()
        assert (frame["fast"] % 4 == 2).all() and (frame["slow"] % 10 == 0).all()


def test_grid_budget_is_capped_at_the_grid_size(bars):
    result = optimize(
        "ma_crossover", bars, sampler="grid", search_space={"fast": [5, 10], "slow": [20, 40, 60]}
    )
    assert result.n_trials == 6
    assert sorted(map(tuple, result.ledger.frame[["fast", "slow"]].to_numpy())) == [
        (5, 20), (5, 40), (5, 60), (10, 20), (10, 40), (10, 60)
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="grid search needs discrete values for 'entry_below'"):
        optimize("rsi_reversion", bars, sampler="grid", search_space={"rsi_window": [5, 9]})


def test_best_value_equals_an_independent_backtest(bars):
    result = optimize(
        "ma_crossover",
        bars,
        n_trials=30,
        batch_size=10,
        search_space=SPACE,
        config=qs.SimConfig(fees_bps=2.0),
    )
    check = qs.backtest("ma_crossover", bars, result.best_params, fees_bps=2.0)
    assert result.best_values["sharpe"] == pytest.approx(check.metrics["sharpe"], rel=1e-12)


def test_multi_objective_pareto_front_is_exactly_the_non_dominated_trials(bars):
    result = optimize(
        "ma_crossover",
        bars,
        objectives=("sharpe", "max_drawdown_pct"),
        n_trials=60,
        batch_size=12,
        search_space=SPACE,
    )
    assert result.sampler == "nsga2"
    assert result.directions == ("maximize", "minimize")
    assert result.best_params is None
    frame = result.ledger.frame
    done = frame[frame["state"] == "complete"]
    points = np.column_stack([done["sharpe"], -done["max_drawdown_pct"]])  # both maximised

    def dominated(p):
        return bool(np.any(np.all(points >= p, axis=1) & np.any(points > p, axis=1)))

    front_rows = [not dominated(p) for p in points]
    by_brute_force = set(zip(done["fast"][front_rows], done["slow"][front_rows], strict=True))
    listed = list(zip(result.pareto["fast"], result.pareto["slow"], strict=True))
    assert len(listed) == len(set(listed))  # a set NSGA-II proposed twice is listed once
    assert set(listed) == by_brute_force
    assert len(by_brute_force) >= 1
    row = result.pareto.iloc[0]
    trial = done[done["trial"] == row["trial"]].iloc[0]
    assert (row["sharpe"], row["max_drawdown_pct"]) == (trial["sharpe"], trial["max_drawdown_pct"])


def test_infeasible_sets_are_recorded_and_told_fail(bars, tmp_path):
    # fast and slow overlap on 20..40, so the sampler proposes fast >= slow now and then.
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = optimize(
        "ma_crossover",
        bars,
        sampler="random",
        n_trials=20,
        batch_size=10,
        search_space={"fast": (10, 40), "slow": (20, 50)},
        storage=url,
    )
    frame = result.ledger.frame
    bad = frame[frame["state"] == "infeasible"]
    assert len(bad) > 0
    assert (bad["fast"] >= bad["slow"]).all()
    ran = frame[frame["state"] != "infeasible"]
    assert (ran["fast"] < ran["slow"]).all()
    assert bad[list(qs.METRICS)].isna().all().all()
    trials = {t.number: t for t in _stored_study(result).trials}
    for number in bad["trial"]:
        assert trials[number].state == optuna.trial.TrialState.FAIL
        assert trials[number].user_attrs["state"] == "infeasible"
    assert result.ledger.dsr_inputs()[0] == 20 - len(bad)


def test_undefined_objective_fails_the_trial(bars):
    # On these 600 bars such slow averages never cross: no trade, no return variance, no Sharpe.
    result = optimize(
        "ma_crossover",
        bars,
        sampler="random",
        n_trials=16,
        batch_size=8,
        search_space={"fast": (60, 100), "slow": (380, 400)},
    )
    frame = result.ledger.frame
    failed = frame[frame["state"] == "fail"]
    assert len(failed) == 16
    assert result.best_params is None and result.best_values is None
    assert failed["sharpe"].isna().all()
    independent = qs.sweep("ma_crossover", bars, failed[["fast", "slow"]].to_numpy())
    assert independent["sharpe"].isna().all()
    assert failed["trades"].tolist() == independent["trades"].tolist()


def test_pruning_across_folds(bars):
    # Keep only the top 10% at each fold: after the start-up trials nearly everything is pruned.
    pruner = optuna.pruners.PercentilePruner(90.0, n_startup_trials=4)
    result = optimize(
        "ma_crossover",
        bars,
        sampler="random",
        n_trials=40,
        batch_size=4,
        search_space={"fast": (2, 15), "slow": (16, 60)},
        folds=FOLDS,
        pruner=pruner,
    )
    frame = result.ledger.frame
    pruned = frame[frame["state"] == "pruned"]
    complete = frame[frame["state"] == "complete"]
    assert len(pruned) > 0 and len(complete) >= 4
    # A pruned trial ran fewer folds than a complete one and keeps its partial metrics.
    n_bars = int(bars.valid.sum())  # 600 bars less the synthetic gaps
    assert (pruned["n_bars"] < n_bars).all() and (complete["n_bars"] == n_bars).all()
    assert pruned["sharpe"].notna().all() and pruned["value_0"].isna().all()
    # The objective is the mean of the per-fold Sharpe ratios.
    first = complete.iloc[0]
    per_fold = [
        qs.backtest(
            "ma_crossover", bars[a:b], {"fast": first["fast"], "slow": first["slow"]}
        ).metrics["sharpe"]
        for a, b in FOLDS
    ]
    assert first["value_0"] == pytest.approx(np.mean(per_fold), rel=1e-12)


def test_folds_with_several_objectives_never_prune(bars):
    result = optimize(
        "ma_crossover",
        bars,
        objectives=("sharpe", "max_drawdown_pct"),
        n_trials=20,
        batch_size=5,
        search_space={"fast": (2, 15), "slow": (16, 60)},
        folds=FOLDS,
        pruner=optuna.pruners.PercentilePruner(90.0, n_startup_trials=1),
    )
    assert result.ledger.counts()["pruned"] == 0


def test_sqlite_study_resumes_rebuilds_its_ledger_and_refuses_other_settings(bars, tmp_path):
    url = f"sqlite:///{tmp_path / 'studies' / 'optuna.db'}"
    first = optimize(
        "ma_crossover",
        bars,
        n_trials=12,
        batch_size=5,
        search_space=SPACE,
        folds=FOLDS,
        storage=url,
        study_name="s1",
        worker="a",
    )
    assert first.storage == url and first.n_trials == 12
    rebuilt = TrialLedger.from_study(optuna.load_study(study_name="s1", storage=url))
    pd.testing.assert_frame_equal(rebuilt.frame, first.ledger.frame)
    # A second run with a larger budget continues the same study; so does a worker.
    second = optimize(
        "ma_crossover",
        bars,
        n_trials=20,
        batch_size=5,
        search_space=SPACE,
        folds=FOLDS,
        storage=url,
        study_name="s1",
        worker="b",
    )
    assert second.n_trials == 8
    assert second.ledger.frame["trial"].tolist() == list(range(12, 20))
    third = run_worker(bars, storage=url, study_name="s1", n_trials=26, worker="c")
    assert third.storage == url and third.objectives == ("sharpe",)
    assert third.ledger.frame["trial"].tolist() == list(range(20, 26))
    whole = TrialLedger.from_study(optuna.load_study(study_name="s1", storage=url))
    expected = TrialLedger.concat([first.ledger, second.ledger, third.ledger])
    pd.testing.assert_frame_equal(whole.frame, expected.frame)
    assert whole.frame["worker"].tolist() == ["a"] * 12 + ["b"] * 8 + ["c"] * 6
    # Same name, different objectives, data or search space: refused with the reason.
    with pytest.raises(ConfigError, match="objectives: study has"):
        optimize("ma_crossover", bars, objectives=("sortino",), storage=url, study_name="s1")
    with pytest.raises(ConfigError, match="data_fingerprint: study has"):
        optimize("ma_crossover", bars[:500], storage=url, study_name="s1", search_space=SPACE)
    with pytest.raises(ConfigError, match="search_space: study has"):
        optimize("ma_crossover", bars, storage=url, study_name="s1", folds=FOLDS)
    with pytest.raises(UnknownNameError, match="no study 'nope'"):
        run_worker(bars, storage=url, study_name="nope")


def test_progress_and_plot(bars, tmp_path):
    seen = []
    result = optimize(
        "ma_crossover",
        bars,
        n_trials=12,
        batch_size=5,
        search_space=SPACE,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(0, 12), (5, 12), (10, 12), (12, 12)]
    summary = result.summary()
    assert summary["trials_by_state"]["complete"] + summary["trials_by_state"]["infeasible"] == 12
    assert summary["best_values"] == result.best_values
    fig = result.plot(tmp_path / "history.png")
    assert (tmp_path / "history.png").stat().st_size > 0
    assert fig.axes[0].get_ylabel() == "sharpe"
    multi = optimize(
        "ma_crossover", bars, objectives=("sharpe", "max_drawdown_pct"), n_trials=12,
        search_space=SPACE,
    )  # fmt: skip
    assert multi.plot().axes[0].get_title().endswith("Pareto front")


def test_invalid_settings_are_refused(bars):
    with pytest.raises(UnknownNameError, match="unknown parameter 'fats'"):
        optimize("ma_crossover", bars, search_space={"fats": (2, 5)})
    with pytest.raises(UnknownNameError, match="unknown metric 'sharp'"):
        optimize("ma_crossover", bars, objectives=("sharp",))
    with pytest.raises(ConfigError, match="'cmaes' handles one objective"):
        optimize("ma_crossover", bars, sampler="cmaes", objectives=("sharpe", "trades"))
    with pytest.raises(ConfigError, match="sampler='bayes'"):
        optimize("ma_crossover", bars, sampler="bayes")
    with pytest.raises(ConfigError, match="outside the allowed range"):
        optimize("ma_crossover", bars, search_space={"slow": (10, 1000)})
    with pytest.raises(ConfigError, match="fold 1"):
        optimize("ma_crossover", bars, folds=[(0, 300), (300, 601)])
    with pytest.raises(ConfigError, match="directions"):
        optimize("ma_crossover", bars, directions=("maximize", "minimize"))
    with pytest.raises(ConfigError, match="n_trials must be a whole number"):
        optimize("ma_crossover", bars, n_trials=0)


def test_search_space_forms(bars):
    result = optimize(
        "ma_crossover",
        bars,
        sampler="random",
        n_trials=12,
        search_space={"fast": [3, 5, 8], "slow": {"low": 20, "high": 60, "step": 20}},
    )
    frame = result.ledger.frame
    assert set(frame["fast"]) <= {3, 5, 8} and set(frame["slow"]) <= {20, 40, 60}
    steps = optimize("ma_crossover", bars, n_trials=6, search_space={"fast": range(2, 9, 3)})
    assert set(steps.ledger.frame["fast"]) <= {2, 5, 8}
    fixed = optimize(
        "ma_crossover", bars, n_trials=6, search_space={"fast": (4, 4), "slow": (10, 60)}
    )
    assert (fixed.ledger.frame["fast"] == 4).all()
    assert fixed.best_params["fast"] == 4 and isinstance(fixed.best_params["slow"], int)
    assert math.isfinite(fixed.best_values["sharpe"])


def test_universe_objective_is_the_mean_over_symbols():
    universe = qs.load_bars("synthetic:symbols=3,bars=500,seed=5")
    result = optimize("ma_crossover", universe, sampler="random", n_trials=8, search_space=SPACE)
    frame = result.ledger.frame
    done = frame[frame["state"] == "complete"]
    table = qs.sweep("ma_crossover", universe, done[["fast", "slow"]].to_numpy())
    sharpe = table["sharpe"].to_numpy().reshape(len(done), 3)
    np.testing.assert_allclose(done["value_0"], np.nanmean(sharpe, axis=1), rtol=1e-13)
    # The trial Sharpe is in the winner's unit: the per-bar Sharpe of the summed portfolio.
    _, equity = qs.sweep_equity("ma_crossover", universe, done[["fast", "slow"]].to_numpy())
    for k, spp in enumerate(done["sharpe_per_period"]):
        returns = pd.Series(equity[k].sum(axis=0)).pct_change()
        returns.iloc[0] = equity[k, :, 0].sum() / (3 * 100_000.0) - 1.0
        assert spp == pytest.approx(returns.mean() / returns.std(), rel=1e-10)
    assert (done["n_bars"] == round(universe.valid.sum(axis=0).mean())).all()
