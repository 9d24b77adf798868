"""The persistent trial registry: every path records its trials, the count never resets, the
trial Sharpe is in the winner's unit, N_eff clusters correlated trials; SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import math
import multiprocessing

import numpy as np
import pandas as pd
import pytest
from test_research_cli import invoke

import quantshift as qs
from quantshift.engine.config import SimConfig
from quantshift.engine.metrics import infer_periods_per_year
from research.optimize import optimize, run_worker
from research.registry import (
    TrialRegistry,
    data_key,
    default_registry,
    effective_trials,
    return_signature,
    sweep_batch,
    trial_context,
)
from research.spec import parse_spec
from research.splitters import WalkForward
from research.study import run
from research.walkforward import walk_forward

GRID = {"fast": [4, 8, 12], "slow": [20, 30]}
BARS = "synthetic:symbols=1,bars=400,seed=11"
NOISE = "synthetic:symbols=4,bars=300,seed=12"
RAW = {
    "experiment": {"name": "registry-study", "strategy": "ma_crossover", "seed": 3},
    "data": {"source": BARS},
    "params": {"fast": 8, "slow": 20},
    "search": {
        "method": "grid",
        "space": {"fast": {"low": 4, "high": 12, "step": 4}, "slow": [20, 30]},
    },
}


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A fresh SQLite registry that every sweep of the test goes to."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    monkeypatch.setenv("QUANTSHIFT_REGISTRY_URL", url)
    return default_registry()


def _spec(name="registry-study", seed=3, **search):
    raw = {k: dict(v) for k, v in RAW.items()}
    raw["experiment"].update(name=name, seed=seed)
    raw["search"].update(search)
    return parse_spec(raw, source=f"{name}.toml")


def test_qs_sweep_records_each_set_once_in_the_symbols_unit(registry):
    bars = qs.load_bars(BARS)
    table = qs.sweep("ma_crossover", bars, GRID)
    rows = registry.frame("ma_crossover")
    assert len(rows) == len(table) == 6 and set(rows["source"]) == {"sweep"}
    assert set(rows["data_key"]) == {data_key(bars)} and rows["evaluation"].nunique() == 1
    assert [json.loads(p) for p in rows["params"]] == table[["fast", "slow"]].to_dict("records")
    ppy = infer_periods_per_year(bars.ts_ns[bars.valid[:, 0]])
    np.testing.assert_allclose(rows["sharpe_per_bar"], table["sharpe"] / math.sqrt(ppy))
    assert (rows["trades"] == table["trades"]).all() and (rows["state"] == "complete").all()
    assert len(set(rows["source_hash"])) == 1 and len(rows["source_hash"][0]) == 16
    assert registry.count("ma_crossover", data_key(bars)) == 6
    assert registry.count("ma_crossover", "other|1d|x|y") == 0


def test_several_symbols_trial_sharpe_is_the_portfolio_per_bar_sharpe(registry):
    bars = qs.load_bars(NOISE)
    _, equity = qs.sweep_equity("ma_crossover", bars, GRID)
    rows = registry.frame("ma_crossover")
    assert len(rows) == 6 and (rows["n_symbols"] == 4).all()
    for k, recorded in enumerate(rows["sharpe_per_bar"]):
        # Independently: pandas on the summed equity of the four sleeves.
        portfolio = pd.DataFrame(equity[k].T).sum(axis=1)
        returns = portfolio.pct_change()
        returns.iloc[0] = portfolio.iloc[0] / (4 * 100_000.0) - 1.0
        assert recorded == pytest.approx(returns.mean() / returns.std(), rel=1e-10)
    # The mean of each symbol's own Sharpe (the old unit) is a different number.
    table = qs.sweep("ma_crossover", bars, GRID)
    ppy = np.array([infer_periods_per_year(bars.ts_ns[bars.valid[:, s]]) for s in range(4)])
    own = (table["sharpe"].to_numpy().reshape(6, 4) / np.sqrt(ppy)).mean(axis=1)
    assert not np.allclose(own, rows["sharpe_per_bar"], rtol=0.05)
    # qs.sweep keeps no equity: its rows count, but have no Sharpe in the portfolio unit.
    plain = registry.frame("ma_crossover").iloc[6:]
    assert len(plain) == 6 and plain["sharpe_per_bar"].isna().all()
    assert registry.count("ma_crossover") == 12 and registry.sharpes("ma_crossover").size == 6


def test_several_symbols_winner_is_judged_in_its_trials_unit_on_the_portfolio(registry):
    """The DSR compares the winner with its trials: on several symbols the winner's Sharpe is
    its own registry trial's (the summed portfolio's per-bar Sharpe), and T, skew and kurtosis
    are the portfolio's returns', not one symbol's (scipy on the pandas portfolio)."""
    from scipy import stats

    raw = {**RAW, "data": {"source": NOISE}}
    report = run(parse_spec(raw, source="four.toml"), "optimize", track=False, plots=False)
    s = report.summary
    rows = registry.frame("ma_crossover", s["registry_data"])
    mine = rows[[json.loads(p) == s["best_params"] for p in rows["params"]]]
    assert len(mine) == 1 and (rows["n_symbols"] == 4).all()
    assert s["is_sharpe_per_period"] == pytest.approx(mine["sharpe_per_bar"].iloc[0], rel=1e-12)
    portfolio = report.parts["best"].equity.sum(axis=1)
    returns = portfolio.pct_change()
    returns.iloc[0] = portfolio.iloc[0] / (4 * 100_000.0) - 1.0
    assert s["is_sharpe_per_period"] == pytest.approx(returns.mean() / returns.std(), rel=1e-10)
    assert s["return_skew"] == pytest.approx(stats.skew(returns), rel=1e-9)
    assert s["return_kurtosis"] == pytest.approx(stats.kurtosis(returns, fisher=False), rel=1e-9)
    sharpes = rows["sharpe_per_bar"].to_numpy()
    assert s["dsr_trials"] == len(rows) and s["dsr_trial_variance"] == pytest.approx(
        np.var(sharpes), rel=1e-12
    )
    # The DSR is the PSR against the hurdle over the portfolio's T returns (Bailey & Lopez de
    # Prado 2014, eq. 2 with eq. 11 of 2012), computed here with scipy's normal law.
    sr, skew, kurt = s["is_sharpe_per_period"], s["return_skew"], s["return_kurtosis"]
    z = (sr - s["dsr_hurdle_sharpe_per_bar"]) * math.sqrt(len(returns) - 1)
    z /= math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    assert s["dsr"] == pytest.approx(stats.norm.cdf(z), rel=1e-9)


def test_cli_sweep_records_as_cli_sweep(registry):
    code, out = invoke(
        "sweep", "ma_crossover", "-g", "fast=4,8", "-g", "slow=20,30", "--data", BARS, "--json"
    )
    assert code == 0, out
    rows = registry.frame("ma_crossover")
    assert len(rows) == 4 and set(rows["source"]) == {"cli-sweep"}


def test_optimize_records_every_worker_with_its_seed(registry, tmp_path):
    bars = qs.load_bars(BARS)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = {"fast": (3, 15), "slow": (20, 40)}
    optimize("ma_crossover", bars, n_trials=8, batch_size=4, seed=5, storage=storage,
             study_name="workers", search_space=space, sampler="random", worker="one")  # fmt: skip
    run_worker(bars, storage=storage, study_name="workers", n_trials=16, worker="two")
    rows = registry.frame("ma_crossover")
    assert len(rows) == 16 and set(rows["source"]) == {"optimize"}
    assert rows.groupby("worker").size().to_dict() == {"one": 8, "two": 8}
    assert set(rows["study"]) == {"workers"} and set(rows["stage"]) == {"optimize"}
    assert rows["seed"].notna().all()


def test_infeasible_sets_are_recorded_but_not_counted(registry):
    bars = qs.load_bars(BARS)
    result = optimize("ma_crossover", bars, n_trials=12, batch_size=12, sampler="random",
                      search_space={"fast": (5, 40), "slow": (10, 30)}, seed=2)  # fmt: skip
    infeasible = result.ledger.counts()["infeasible"]
    assert infeasible > 0
    assert registry.summary("ma_crossover")["states"]["infeasible"] == infeasible
    assert registry.count("ma_crossover") == 12 - infeasible


def test_walk_forward_records_every_fold(registry):
    bars = qs.load_bars(BARS)
    result = walk_forward("ma_crossover", bars, WalkForward(150, 50), search=GRID, study="wf")
    rows = registry.frame("ma_crossover")
    folds = len(result.folds)
    assert folds >= 3 and len(rows) == folds * 6 and set(rows["source"]) == {"walk-forward"}
    assert rows["data_key"].nunique() == folds and rows["stage"].nunique() == folds


def test_count_grows_across_no_track_reruns_reseeds_and_renamed_studies(registry):
    first = run(_spec(), "optimize", track=False)
    assert first.summary["trials"] == first.summary["dsr_trials"] == 6
    again = run(_spec(seed=4), "optimize", track=False)
    renamed = run(_spec(name="a-new-name", seed=9), "optimize", track=False)
    s = renamed.summary
    assert s["trials"] == 6 and s["registry_trials"] == s["dsr_trials"] == 18
    assert again.summary["dsr_trials"] == 12
    # The same winner, deflated by more trials (and the PBO/Monte Carlo re-evaluations are
    # not trials: none were added beyond the three searches).
    assert s["is_sharpe_per_period"] == first.summary["is_sharpe_per_period"]
    assert s["dsr_hurdle_sharpe_per_bar"] > first.summary["dsr_hurdle_sharpe_per_bar"]
    assert s["dsr"] < first.summary["dsr"]
    summary = registry.summary("ma_crossover", s["registry_data"])
    assert summary["studies"] == 2 and summary["seeds"] == [3, 4, 9]
    assert summary["evaluations"] == 3 and summary["sources"] == {"study": 18}


def test_the_no_track_cli_run_and_trials_command(registry, tmp_path):
    spec = tmp_path / "cli.toml"
    spec.write_text(
        f'[experiment]\nname = "cli"\nstrategy = "ma_crossover"\n[data]\nsource = "{BARS}"\n'
        '[search]\nmethod = "grid"\n[search.space]\nfast = [4, 8]\nslow = [20, 30]\n'
    )
    code, out = invoke("research", "optimize", str(spec), "--no-track", "--json")
    assert code == 0, out
    assert json.loads(out)["dsr_trials"] == 4 and registry.count("ma_crossover") == 4
    code, out = invoke("research", "trials", "ma_crossover", "--data", str(spec), "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["trials"] == 4 and shown["studies"] == 1 and shown["sources"] == {"study": 4}
    assert shown["n_effective"] is not None and 1 <= shown["n_effective"] <= 4
    assert shown["hurdle_sharpe_per_bar"] > 0
    code, out = invoke("research", "trials", "ma_crossover", "--data", BARS)
    assert code == 0 and "trials (run on data" in out and "effective N" in out
    code, out = invoke("research", "trials", "no_such_strategy")
    assert code == 2 and "no_such_strategy" in out


def test_a_failing_registry_warns_and_the_sweep_result_is_kept(monkeypatch):
    monkeypatch.setenv("QUANTSHIFT_REGISTRY_URL", "mysql://user:hunter2@host/db")
    with pytest.warns(RuntimeWarning, match="trial recorder 'registry' failed") as caught:
        table = qs.sweep("ma_crossover", qs.load_bars(BARS), GRID)
    assert len(table) == 6 and "hunter2" not in str(caught[0].message)


def test_record_false_and_tags(registry):
    bars = qs.load_bars(BARS)
    with trial_context(record=False):
        qs.sweep("ma_crossover", bars, GRID)
    assert registry.count("ma_crossover") == 0
    with trial_context(source="notebook", spec_hash="abc", study="s", seed=7):
        qs.sweep("ma_crossover", bars, GRID)
    assert registry.count("ma_crossover", spec_hash="abc") == 6
    assert registry.count("ma_crossover", spec_hash=["zzz"]) == 0
    with pytest.raises(qs.ConfigError, match="unknown tag"):
        with trial_context(colour="red"):
            pass


def test_effective_n_of_constructed_correlated_trials():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 0.01, (3, 2_000))
    # 30 trials: 10 close copies (correlation ~0.97) of each of 3 independent return series.
    copies = np.repeat(base, 10, axis=0) + rng.normal(0, 0.0025, (30, 2_000))
    assert effective_trials(copies).n_effective == 3
    assert effective_trials(return_signature(copies)).n_effective == 3
    exact = np.repeat(base, 10, axis=0)
    found = effective_trials(exact)
    assert found.n_effective == 3 and found.n_distinct == 3 and found.n_trials == 30
    independent = rng.normal(0, 0.01, (40, 2_000))
    assert effective_trials(independent).n_effective == 40
    # Beyond max_trials a sample is clustered and Chao's estimator extrapolates, never above
    # the distinct trials nor below the clusters seen.
    sampled = effective_trials(copies, max_trials=12, seed=1)
    assert sampled.n_clustered == 12 and sampled.n_effective == 3
    wide = effective_trials(independent, max_trials=10)
    assert 10 <= wide.n_effective <= 40
    flat = effective_trials(np.vstack([np.zeros((5, 100)), rng.normal(size=(2, 100))]))
    assert flat.n_effective == 3  # the no-position trials are one


def _writer(url: str, worker: int, batches: int) -> None:
    bars = qs.load_bars(BARS)
    strat = qs.get_strategy("ma_crossover")
    matrix = strat.grid({"fast": range(2, 22), "slow": range(30, 40)})
    metrics = np.zeros((matrix.shape[0], len(qs.METRICS)))
    with TrialRegistry.open(url) as registry:
        for _ in range(batches):
            tags = {"worker": f"w{worker}", "source": "test"}
            registry.record(sweep_batch(strat, bars, SimConfig(), matrix, metrics, None, tags))


def _concurrent(url: str, writers: int, batches: int) -> int:
    """Run ``writers`` processes recording ``batches`` of 200 trials each at once; return the
    registry's count after."""
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_writer, args=(url, w, batches)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * writers
    with TrialRegistry.open(url) as registry:
        frame = registry.frame("ma_crossover", states=["complete"])
        assert not frame.duplicated(["evaluation_id", "trial"]).any()
        workers = frame[frame["source"] == "test"].groupby("worker").size()
        assert workers.tolist() == [batches * 200] * writers
        return registry.count("ma_crossover")


def test_concurrent_writers_sqlite(tmp_path):
    assert _concurrent(f"sqlite:///{tmp_path / 'shared.db'}", 4, 5) == 4 * 5 * 200


@pytest.fixture
def pg_url(request):
    from test_live_store import new_pg_database, pg_admin_connection

    admin = pg_admin_connection()
    request.addfinalizer(admin.close)
    return new_pg_database(admin, request)


def test_postgresql_registry_records_counts_and_takes_concurrent_writers(pg_url, monkeypatch):
    monkeypatch.setenv("QUANTSHIFT_REGISTRY_URL", pg_url)
    bars = qs.load_bars(NOISE)
    qs.sweep_equity("ma_crossover", bars, GRID)
    registry = default_registry()
    assert "secret" not in repr(registry) and registry.dialect == "postgresql"
    assert registry.count("ma_crossover", data_key(bars)) == 6
    assert registry.sharpes("ma_crossover").size == 6
    assert registry.summary("ma_crossover")["n_effective"] >= 1
    assert registry.lineages()["trials"].tolist() == [6]
    assert _concurrent(pg_url, 3, 3) == 6 + 3 * 3 * 200
    assert registry.schema_versions() == [1]


def test_schema_is_created_once_and_bad_urls_name_the_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    for _ in range(2):
        with TrialRegistry.open(url) as registry:
            assert registry.schema_versions() == [1]
    with pytest.raises(qs.ConfigError, match="scheme"):
        TrialRegistry.open("mysql://u:hunter2@h/db")
    with pytest.raises(qs.ConfigError, match="cannot connect") as info:
        TrialRegistry.open("postgresql://u:hunter2@127.0.0.1:1/db", timeout_s=2)
    assert "hunter2" not in str(info.value) and "127.0.0.1:1/db" in str(info.value)


def test_registry_benchmark_runs_on_tiny_sizes(monkeypatch, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_registry.py"
    spec = importlib.util.spec_from_file_location("bench_registry", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    target = tmp_path / "registry.json"
    monkeypatch.setenv("QUANTSHIFT_REGISTRY_URL", "")  # restored after; the benchmark sets its own
    assert bench.main(["--quick", "--json", str(target)]) == 0
    report = json.loads(target.read_text())
    rows = [v for v in report.values() if isinstance(v, dict)]
    assert len(rows) == 2 and all(r["on_s"] > 0 and r["off_s"] > 0 for r in rows)
    # Per workload: one recorded call, two timed ones and two of the recorder alone.
    assert report["rows_written"] == 5 * 400 + 5 * 50
    assert "us/trial" in capsys.readouterr().out
