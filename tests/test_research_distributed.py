"""Distributed Optuna for real: three worker processes share one study in a fresh PostgreSQL
database; every trial is evaluated exactly once and its stored value is what a sweep gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import optuna
import psycopg
import pytest

import quantshift as qs
from research.ledger import TrialLedger
from research.optimize import OVER_BUDGET, load_ledger, run_worker

ROOT = Path(__file__).resolve().parents[1]
SERVER = "postgresql://postgres@127.0.0.1:5432"
N_TRIALS = 60
SPACE = {"fast": (2, 30), "slow": (10, 120)}
DATA = "synthetic:symbols=1,bars=600,seed=3"

# Each worker warms numba and prints "ready", then waits for a line on stdin so that all
# three race for the same study (and for creating it) from the same moment.
WORKER = f"""
import json, sys
import quantshift as qs
from research.optimize import optimize

url, name, worker = sys.argv[1:4]
bars = qs.load_bars({DATA!r})
qs.sweep("ma_crossover", bars)
print("ready", flush=True)
sys.stdin.readline()
result = optimize("ma_crossover", bars, n_trials={N_TRIALS}, batch_size=4, seed=0,
                  search_space={SPACE!r}, storage=url, study_name=name, worker=worker)
print(json.dumps({{"trials": result.ledger.frame["trial"].tolist(), "storage": result.storage}}))
"""


@pytest.fixture
def database():
    """A uniquely named, empty PostgreSQL database, dropped afterwards."""
    name = f"qs_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {SERVER} is required on CI: {exc}")
        pytest.skip(f"PostgreSQL at {SERVER} is not reachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            # The password is ignored (trust auth); it is there to be masked in results.
            yield f"postgresql://postgres:secret@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_three_workers_share_one_study(database):
    study_name = "distributed-ma"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, database, study_name, f"w{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for i in range(3)
    ]
    try:
        for proc in workers:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in workers:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120) for proc in workers]
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
    for proc, (_, err) in zip(workers, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert all("secret" not in r["storage"] and "***" in r["storage"] for r in reports)

    # Exactly one worker evaluated each of trials 0..59, and more than one worker took part.
    by_worker = [set(r["trials"]) for r in reports]
    assert sum(len(s) for s in by_worker) == N_TRIALS
    assert set().union(*by_worker) == set(range(N_TRIALS))
    assert sum(1 for s in by_worker if s) > 1

    url = database.replace("postgresql://", "postgresql+psycopg://")
    study = optuna.load_study(study_name=study_name, storage=url)
    trials = study.get_trials(deepcopy=False)
    evaluated = [t for t in trials if t.user_attrs["state"] != OVER_BUDGET]
    assert sorted(t.number for t in evaluated) == list(range(N_TRIALS))
    # Trials asked in a race after the budget ran out were told FAIL without parameters.
    for t in trials:
        if t.number >= N_TRIALS:
            assert t.user_attrs["state"] == OVER_BUDGET
            assert t.state == optuna.trial.TrialState.FAIL and t.params == {}
    for t in evaluated:
        assert set(by_worker[int(t.user_attrs["worker"][1:])]) >= {t.number}

    # Every stored objective equals an independent sweep of the trial's parameters.
    bars = qs.load_bars(DATA)
    ran = [t for t in evaluated if t.user_attrs["state"] != "infeasible"]
    matrix = np.array([[t.params["fast"], t.params["slow"]] for t in ran], dtype=float)
    sharpe = qs.sweep("ma_crossover", bars, matrix)["sharpe"].to_numpy()
    for t, expected in zip(ran, sharpe, strict=True):
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value == expected
        else:
            assert t.user_attrs["state"] == "fail" and np.isnan(expected)
    for t in evaluated:
        if t.user_attrs["state"] == "infeasible":
            assert t.params["fast"] >= t.params["slow"]

    # The ledger rebuilt from storage holds exactly the evaluated trials, each worker's own.
    ledger = load_ledger(database, study_name)
    assert isinstance(ledger, TrialLedger)
    frame = ledger.frame.sort_values("trial")
    assert frame["trial"].tolist() == list(range(N_TRIALS))
    for worker, numbers in zip(("w0", "w1", "w2"), by_worker, strict=True):
        assert set(frame.loc[frame["worker"] == worker, "trial"]) == numbers
    complete = frame[frame["state"] == "complete"]
    assert (complete["value_0"] == complete["sharpe"]).all()

    # A late worker finds the budget spent and evaluates nothing.
    late = run_worker(bars, storage=database, study_name=study_name, worker="late")
    assert late.n_trials == 0 and late.storage.endswith(
        f"postgres:***@127.0.0.1:5432/{database.rsplit('/', 1)[1]}"
    )
