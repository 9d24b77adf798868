"""`quantshift research ...`: found by entry point, runs specs, fails with one clear line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantshift.cli import app
from quantshift.errors import QuantShiftError
from research.registry import default_registry

runner = CliRunner()

SPEC = """
[experiment]
name = "cli-test"
strategy = "ma_crossover"
seed = 1

[data]
source = "builtin:sp500"
start = "2012-01-01"
end = "2016-01-01"

[params]
fast = 10
slow = 40

[search]
method = "grid"
min_trades = 2

[search.space]
fast = { low = 4, high = 12, step = 4 }
slow = { low = 20, high = 50, step = 15 }

[monte_carlo]
paths = 300
"""


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    if isinstance(result.exception, QuantShiftError):
        return 2, f"error: {result.exception}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "cli.toml"
    path.write_text(SPEC)
    return path


def test_optimize_json_without_tracking(spec):
    code, out = invoke("research", "optimize", str(spec), "--no-track", "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["trials"] == 9 and set(summary["best_params"]) == {"fast", "slow"}
    assert 0.0 <= summary["dsr"] <= 1.0
    assert "mc_max_drawdown_pct_p95" in summary and "run_id" not in summary


def test_tracked_run_prints_a_summary_with_the_run_id(spec, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code, out = invoke(
        "research", "montecarlo", str(spec), "--tracking-uri", uri, "--out", str(tmp_path / "p")
    )
    assert code == 0, out
    assert "MLflow run" in out and "Monte Carlo max drawdown p95" in out
    assert "Tracker(" not in out  # the run by name, not the tracker's repr
    assert re.search(r"MLflow run cli-test-\d{8}-[0-9a-f]{8} \([0-9a-f]{32}\) in experiment", out)
    assert "mlflow" in out.split("open the UI:")[1]
    assert (tmp_path / "p" / "mc_fan.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["research", "optimize", "missing.toml", "--no-track"], "missing.toml: experiment spec"),
        (["research", "walk-forward", "{spec}", "--no-track"], r"needs a [walk_forward] section"),
        (["research", "worker", "{spec}"], "a worker needs"),
    ],
)
def test_errors_are_one_line(spec, args, message):
    code, out = invoke(*[a.replace("{spec}", str(spec)) for a in args])
    assert code == 2 and out.startswith("error: ") and message in out


@pytest.mark.skipif(shutil.which("quantshift") is None, reason="console script not installed")
def test_installed_console_script_lists_the_research_group():
    out = subprocess.run(
        ["quantshift", "research", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0
    for command in ("optimize", "walk-forward", "montecarlo", "report", "worker", "ui"):
        assert command in out.stdout
    ui = subprocess.run(
        ["quantshift", "research", "ui", "--print"], capture_output=True, text=True, timeout=120
    )
    assert ui.returncode == 0 and "mlflow" in ui.stdout


def test_regression_optimize_reports_a_study_its_workers_already_finished(
    spec, tmp_path, monkeypatch
):
    """`research optimize` joining a shared study whose budget a worker already spent
    evaluated nothing itself and failed plotting its own empty ledger."""
    shared = spec.read_text().replace(
        'method = "grid"', f'method = "optuna"\ntrials = 12\nstorage = "sqlite:///{tmp_path}/o.db"'
    )
    shared = shared.replace(
        "fast = { low = 4, high = 12, step = 4 }", "fast = { low = 4, high = 12 }"
    )
    shared = shared.replace(
        "slow = { low = 20, high = 50, step = 15 }", "slow = { low = 20, high = 50 }"
    )
    spec.write_text(shared)
    monkeypatch.setenv("QUANTSHIFT_REGISTRY_URL", f"sqlite:///{tmp_path / 'registry.db'}")
    code, out = invoke("research", "worker", str(spec), "--json")
    assert code == 0, out
    assert json.loads(out)["n_trials"] == 12
    code, out = invoke("research", "optimize", str(spec), "--no-track", "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["trials"] == 12
    # The worker came first: it registered the spec, and its trials count under the hash the
    # study then found registered (the registry's N for the spec is the worker's 12 trials).
    digest = summary["preregistration"]["spec_hash"]
    rows = default_registry().frame("ma_crossover")
    assert len(rows) == 12 and set(rows["spec_hash"]) == {digest}
    assert set(rows["source"]) == {"study"} and set(rows["study"]) == {"cli-test"}


def test_regression_bad_out_directory_is_refused_before_the_run(spec, tmp_path):
    (tmp_path / "file").write_text("x")
    code, out = invoke(
        "research", "optimize", str(spec), "--no-track", "--out", str(tmp_path / "file" / "p")
    )
    assert code == 2 and "is not a directory" in out and out.count("\n") == 0


@pytest.mark.skipif(shutil.which("quantshift") is None, reason="console script not installed")
def test_regression_unreachable_mlflow_server_is_one_line_and_exit_2(spec):
    import socket
    import time

    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    done = subprocess.run(
        ["quantshift", "research", "optimize", str(spec), "--tracking-uri",
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert (
        done.stderr.startswith("error: cannot reach MLflow server") and done.stderr.count("\n") == 1
    )
    assert time.perf_counter() - started < 60
