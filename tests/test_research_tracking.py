"""research.tracking against real MLflow stores: SQLite in a temporary directory and PostgreSQL.

Runs, nested children, steps, artifacts read back, failure status, secrets masking, env precedence.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from probe import run_json

import quantshift as qs
from quantshift.errors import ConfigError, UnknownNameError
from research.tracking import (
    ERROR_TAG,
    KIND_TAG,
    PARENT_TAG,
    Tracker,
    default_artifact_root,
    default_tracking_uri,
    ui_command,
)

PASSWORD = "hunter2-Xq9"
SECRET_URL = f"postgresql+psycopg://quant:{PASSWORD}@db.internal:5432/optuna"
MASKED_URL = "postgresql+psycopg://quant:***@db.internal:5432/optuna"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlflow-store")


@pytest.fixture(scope="module")
def tracker(store_dir) -> Tracker:
    """One migrated SQLite store for the module: a fresh store costs seconds of migrations."""
    return Tracker(f"sqlite:///{store_dir / 'mlflow.db'}", experiment="tests")


def _artifact_dir(record) -> Path:
    return Path(urlsplit(record.artifact_uri).path)


# --------------------------------------------------------------------------- locations
def test_importing_tracking_does_not_import_mlflow():
    loaded = run_json(
        "import json, sys\nimport research.tracking\n"
        "print(json.dumps({'mlflow': 'mlflow' in sys.modules}))"
    )
    assert loaded == {"mlflow": False}


def test_default_tracking_uri_order_env_then_experiments_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("QUANTSHIFT_EXPERIMENTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'experiments' / 'mlflow.db'}"
    assert (tmp_path / "experiments").is_dir()

    monkeypatch.setenv("QUANTSHIFT_EXPERIMENTS_DIR", str(tmp_path / "from-env"))
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'from-env' / 'mlflow.db'}"
    assert default_tracking_uri("given") == f"sqlite:///{tmp_path / 'given' / 'mlflow.db'}"
    assert default_artifact_root("postgresql+psycopg://u@h/db") == (
        (tmp_path / "from-env" / "artifacts").as_uri()
    )
    assert default_artifact_root("sqlite:////srv/x/mlflow.db") == "file:///srv/x/artifacts"
    assert default_artifact_root("http://mlflow.internal:5000") is None

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert default_tracking_uri("given") == "http://mlflow.internal:5000"


def test_tracker_without_uri_follows_the_environment(tracker, store_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("QUANTSHIFT_EXPERIMENTS_DIR", str(store_dir))
    from_dir = Tracker(experiment=tracker.experiment)
    with from_dir.run("found through QUANTSHIFT_EXPERIMENTS_DIR", kind="report") as run:
        pass
    assert tracker.get_run(run.run_id).status == "FINISHED"

    # MLFLOW_TRACKING_URI wins over the experiments directory.
    monkeypatch.setenv("QUANTSHIFT_EXPERIMENTS_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.resolved_tracking_uri)
    from_env = Tracker(experiment=tracker.experiment)
    with from_env.run("found through MLFLOW_TRACKING_URI", kind="report") as run:
        pass
    assert tracker.get_run(run.run_id).name == "found through MLFLOW_TRACKING_URI"
    assert not (tmp_path / "mlflow.db").exists()
    assert repr(from_env) == "Tracker(tracking_uri=None, experiment='tests')"


# --------------------------------------------------------------------------- writing and reading
def test_run_records_params_metrics_and_tags(tracker):
    long_note = "x" * 7000
    with tracker.run(
        "optimize ma_crossover",
        kind="optimize",
        params={"strategy": "ma_crossover", "grid": {"fast": np.int64(10), "slow": 50}},
        tags={"universe": "sp500"},
    ) as run:
        run.log_params({"fees_bps": np.float64(1.5), "note": long_note, "stops": True})
        run.log_metrics(
            {
                "is": {"sharpe": np.float64(1.25), "trades": np.int64(42)},
                "pbo": None,
                "dsr": float("nan"),
                "win_rate_pct": np.float32(0.5),
            }
        )
    record = tracker.get_run(run.run_id)
    note = record.params["note"]
    assert len(note) == 6000 and note.endswith("...[truncated]") and note.startswith("xxxx")
    assert {k: v for k, v in record.params.items() if k != "note"} == {
        "strategy": "ma_crossover",
        "grid.fast": "10",
        "grid.slow": "50",
        "fees_bps": "1.5",
        "stops": "True",
    }
    assert dict(record.metrics) == {"is.sharpe": 1.25, "is.trades": 42.0, "win_rate_pct": 0.5}
    assert record.status == "FINISHED"
    assert record.name == "optimize ma_crossover"
    assert record.kind == "optimize" and record.tags[KIND_TAG] == "optimize"
    assert record.tags["universe"] == "sp500"
    assert record.parent_run_id is None
    assert record.start_time_ms <= record.end_time_ms
    with pytest.raises(TypeError):
        record.params["strategy"] = "changed"  # read-back records are frozen
    with pytest.raises(ConfigError, match="metric 'label' must be a number"):
        run.log_metrics({"label": "high"})
    with pytest.raises(ConfigError, match="run kind 'Walk Forward'"):
        tracker.run("x", kind="Walk Forward").__enter__()


def test_more_entries_than_one_mlflow_batch(tracker):
    params = {f"p{i:03d}": i for i in range(250)}  # MLflow takes 100 params per request
    metrics = {f"m{i:04d}": i / 8 for i in range(1900)}  # and 1,000 entities per request
    with tracker.run("wide", kind="report", params=params) as run:
        run.log_metrics(metrics)
    record = tracker.get_run(run.run_id)
    assert dict(record.params) == {key: str(value) for key, value in params.items()}
    assert dict(record.metrics) == metrics


def test_metrics_keep_every_step(tracker):
    oos_sharpe = [0.4, -0.1, 0.8, 0.3]
    with tracker.run("walk-forward", kind="walk-forward") as run:
        for fold, value in enumerate(oos_sharpe):
            run.log_metrics({"oos_sharpe": value, "fold_trades": 10 + fold}, step=fold)
    assert tracker.metric_history(run.run_id, "oos_sharpe") == list(enumerate(oos_sharpe))
    assert tracker.metric_history(run.run_id, "fold_trades") == [(i, 10.0 + i) for i in range(4)]
    assert tracker.get_run(run.run_id).metrics["oos_sharpe"] == 0.3  # value at the last step


def test_artifacts_read_back(tracker, tmp_path):
    ledger = pd.DataFrame(
        {
            "trial": np.arange(4, dtype=np.int64),
            "sharpe": [0.5, 1.5, np.nan, -0.25],
            "state": ["complete", "complete", "pruned", "fail"],
        }
    )
    spec = tmp_path / "ma.toml"
    spec.write_text('strategy = "ma_crossover"\n[search]\ntrials = 200\n')
    figure = Figure(figsize=(3, 2))
    figure.subplots().plot([1.0, 1.1, 0.9, 1.3])
    report = {"dsr": np.float64(0.95836), "folds": np.array([1, 2, 3]), "best": {"fast": 10}}
    with tracker.run("artifacts", kind="report") as run:
        run.log_figure(figure, "plots/equity")
        run.log_frame(ledger, "ledger.parquet")
        run.log_dict(report, "report")
        run.log_dict([1, 2], "folds/fold_1.json")
        run.log_file(spec, artifact_path="spec")
    record = tracker.get_run(run.run_id)
    assert record.artifacts == (
        "folds/fold_1.json",
        "ledger.parquet",
        "plots/equity.png",
        "report.json",
        "spec/ma.toml",
    )
    pd.testing.assert_frame_equal(tracker.load_frame(run.run_id, "ledger"), ledger)
    assert tracker.load_dict(run.run_id, "report.json") == {
        "dsr": 0.95836,
        "folds": [1, 2, 3],
        "best": {"fast": 10},
    }
    assert tracker.load_dict(run.run_id, "folds/fold_1.json") == [1, 2]
    stored = _artifact_dir(record)
    assert (stored / "spec" / "ma.toml").read_text() == spec.read_text()
    assert (stored / "plots" / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UnknownNameError, match=r"no artifact 'trials.parquet'.*ledger.parquet"):
        tracker.load_frame(run.run_id, "trials")
    with pytest.raises(ConfigError, match="no such file"):
        run.log_file(tmp_path / "missing.toml")


def test_nested_children(tracker):
    with tracker.run("study", kind="optimize") as study:
        first = study.child("trial 17", params={"fast": 10}, metrics={"sharpe": 1.4})
        second = study.child("trial 3", params={"fast": 12}, metrics={"sharpe": 1.1})
        with tracker.run("fold 1", kind="walk-forward", parent=study.run_id) as fold:
            fold.log_metrics({"oos_sharpe": 0.7})
    children = tracker.find_runs(parent=study)
    assert [c.run_id for c in children] == [fold.run_id, second, first]  # newest first
    assert {c.parent_run_id for c in children} == {study.run_id}
    assert {c.status for c in children} == {"FINISHED"}
    trial = tracker.get_run(first)
    assert (trial.kind, trial.name, dict(trial.params), dict(trial.metrics)) == (
        "trial",
        "trial 17",
        {"fast": "10"},
        {"sharpe": 1.4},
    )
    assert trial.tags[PARENT_TAG] == study.run_id
    assert [r.run_id for r in tracker.find_runs(kind="walk-forward", parent=study)] == [fold.run_id]
    assert tracker.get_run(study.run_id).parent_run_id is None
    with pytest.raises(UnknownNameError, match="not found"):
        tracker.run("orphan", kind="report", parent="f" * 32).__enter__()


@pytest.mark.parametrize(
    ("error", "status"), [(ValueError, "FAILED"), (KeyboardInterrupt, "KILLED")]
)
def test_run_that_raises_ends_failed_and_the_error_propagates(tracker, error, status):
    with pytest.raises(error), tracker.run("broken", kind="optimize") as run:
        run.log_metrics({"sharpe": 0.5})
        raise error(f"lost connection to {SECRET_URL}")
    record = tracker.get_run(run.run_id)
    assert record.status == status
    assert record.metrics["sharpe"] == 0.5
    assert record.tags[ERROR_TAG].endswith(f"lost connection to {MASKED_URL}")


def test_unknown_run_id_is_a_clear_error(tracker):
    missing = "0123456789abcdef" * 2
    for read in (
        lambda: tracker.get_run(missing),
        lambda: tracker.load_frame(missing, "ledger"),
        lambda: tracker.load_dict(missing, "report.json"),
        lambda: tracker.metric_history(missing, "sharpe"),
    ):
        with pytest.raises(UnknownNameError, match=f"MLflow run '{missing}' not found in sqlite"):
            read()
    with pytest.raises(UnknownNameError, match="is not an MLflow run id"):
        tracker.find_runs(parent="x' or '1'='1")


def test_fingerprints_and_seeds_are_tags(tracker):
    code = qs.code_fingerprint("ma_crossover")
    bars = qs.load_bars("synthetic:symbols=1,bars=300,seed=7")
    with tracker.run("fingerprinted", kind="optimize") as run:
        run.log_fingerprints(data_fingerprint=bars.fingerprint(), code=code)
        run.log_seed(np.int64(7))
        run.log_seed(11, purpose="sampler")
    tags = tracker.get_run(run.run_id).tags
    assert tags["quantshift.data_fingerprint"] == bars.fingerprint()
    assert tags["quantshift.code.version"] == code["version"]
    assert tags["quantshift.code.strategy_hash"] == code["strategy_hash"]
    dirty = {None: None, True: "true", False: "false"}[code["git_dirty"]]
    for key, value in {"git_commit": code["git_commit"], "git_dirty": dirty}.items():
        assert tags.get(f"quantshift.code.{key}") == value  # None outside a git checkout
    assert (tags["quantshift.seed"], tags["quantshift.seed.sampler"]) == ("7", "11")


def test_two_stores_in_one_process_do_not_interfere(tracker, tmp_path):
    # A copy of the migrated store is a second, independent store without new migrations.
    other_db = tmp_path / "other" / "mlflow.db"
    other_db.parent.mkdir()
    with (
        closing(
            sqlite3.connect(tracker.resolved_tracking_uri.removeprefix("sqlite:///"))
        ) as source,
        closing(sqlite3.connect(other_db)) as target,
    ):
        source.backup(target)
    other = Tracker(f"sqlite:///{other_db}", experiment="other")
    with tracker.run("in A", kind="report") as in_a, other.run("in B", kind="report") as in_b:
        in_a.log_metrics({"sharpe": 1.0})
        in_b.log_metrics({"sharpe": 2.0})
        in_b.log_dict({"store": "B"}, "where")
    assert tracker.get_run(in_a.run_id).metrics["sharpe"] == 1.0
    assert other.get_run(in_b.run_id).metrics["sharpe"] == 2.0
    with pytest.raises(UnknownNameError):
        tracker.get_run(in_b.run_id)
    with pytest.raises(UnknownNameError):
        other.get_run(in_a.run_id)
    assert other.get_run(in_b.run_id).artifact_uri.startswith((tmp_path / "other").as_uri())


# --------------------------------------------------------------------------- secrets
@pytest.mark.parametrize(
    "key",
    ["api_key", "broker.secret", "ALPACA_TOKEN", "privateKey", "db_password", "passphrase", "pwd"],
)
def test_secret_looking_keys_are_refused(tracker, key):
    with tracker.run("secret keys", kind="report") as run:
        with pytest.raises(ConfigError, match="looks like a secret"):
            run.log_params({"broker": {key: "x"}})
        with pytest.raises(ConfigError, match="looks like a secret"):
            run.set_tags({key: "x"})
        with pytest.raises(ConfigError, match="looks like a secret"):
            run.log_dict({"storage": {key: "x"}}, "spec.json")
    record = tracker.get_run(run.run_id)
    assert not record.params and not record.artifacts


def test_passwords_never_reach_the_store(tracker, tmp_path):
    spec = tmp_path / "distributed.toml"
    spec.write_text(f'[optuna]\nstorage = "{SECRET_URL}"\n')
    with tracker.run(
        f"study on {SECRET_URL}", kind="optimize", params={"storage": SECRET_URL}
    ) as run:
        run.set_tags({"optuna.storage": SECRET_URL, "keystone": "not a secret"})
        run.log_dict({"storage": SECRET_URL, "trials": 10}, "spec.json")
        run.log_file(spec)
        run.child("best", params={"storage": SECRET_URL})
    record = tracker.get_run(run.run_id)
    assert record.params["storage"] == MASKED_URL
    assert record.tags["optuna.storage"] == MASKED_URL
    assert record.name == f"study on {MASKED_URL}"
    assert tracker.load_dict(run.run_id, "spec.json") == {"storage": MASKED_URL, "trials": 10}
    assert (_artifact_dir(record) / "distributed.toml").read_text() == (
        f'[optuna]\nstorage = "{MASKED_URL}"\n'
    )
    everything = [record, *tracker.find_runs(parent=run)]
    stored = repr([(r.name, dict(r.params), dict(r.tags)) for r in everything])
    stored += "".join(p.read_text() for p in _artifact_dir(record).iterdir())
    assert PASSWORD not in stored
    assert spec.read_text().count(PASSWORD) == 1  # the local file is left as it was
    assert PASSWORD not in repr(Tracker(SECRET_URL))
    assert PASSWORD not in ui_command(SECRET_URL)


# --------------------------------------------------------------------------- UI
def test_summary_ui_url_and_ui_command(tracker, store_dir):
    with tracker.run("summarised", kind="montecarlo") as run:
        run.log_metrics({"max_drawdown_pct_p95": 28.0, "prob_ruin": 0.125})
        run.log_params({"paths": 10_000})
    url = f"http://127.0.0.1:5000/#/experiments/{run.experiment_id}/runs/{run.run_id}"
    assert run.ui_url == url
    summary = run.summary()
    assert summary.splitlines()[0] == "MLflow run 'summarised' (montecarlo) FINISHED"
    for expected in (run.run_id, "1 params, 2 metrics, 0 artifacts", "prob_ruin", "0.125", url):
        assert expected in summary
    assert ui_command(tracker.resolved_tracking_uri) == (
        f"uv run mlflow ui --backend-store-uri sqlite:///{store_dir}/mlflow.db "
        f"--default-artifact-root {(store_dir / 'artifacts').as_uri()} "
        "--host 127.0.0.1 --port 5000"
    )
    assert ui_command("postgresql+psycopg://quant:pw@db/mlflow", port=5001).startswith(
        "uv run mlflow ui --backend-store-uri postgresql+psycopg://quant@db/mlflow "
    )
    assert ui_command("http://mlflow.internal:5000") == (
        "uv run python -m webbrowser http://mlflow.internal:5000"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_mlflow_ui_serves_artifacts_of_local_runs(tracker):
    with tracker.run("served", kind="report") as run:
        run.log_dict({"served": True}, "served.json")
    port = _free_port()
    command = shlex.split(ui_command(tracker.resolved_tracking_uri, port=port))
    assert command[:2] == ["uv", "run"]
    bin_dir = Path(sys.executable).parent  # the mlflow script of this environment
    server = subprocess.Popen(
        command[2:],
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/get-artifact?path=served.json&run_id={run.run_id}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = response.read()
                break
            except OSError:
                assert server.poll() is None, "mlflow ui exited"
                assert time.monotonic() < deadline, "mlflow ui did not answer in 120 s"
                time.sleep(1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert body.decode().split() == ["{", '"served":', "true", "}"]


# --------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="module")
def pg_database():
    """A uniquely named PostgreSQL database, dropped afterwards (skip if no server, unless CI)."""
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required in CI: {exc}")
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 unreachable: {exc}")
    name = f"qs_tracking_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _connections_to(database: str) -> int:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        return admin.execute(query, (database,)).fetchone()[0]


def test_postgresql_backed_store(pg_database, tmp_path):
    # Trust auth ignores the password, so the URI can carry one to prove it never leaks.
    uri = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:5432/{pg_database}"
    pg = Tracker(uri, experiment="pg", artifact_root=(tmp_path / "artifacts").as_uri())
    ledger = pd.DataFrame({"trial": [0, 1, 2], "sharpe": [0.1, 0.9, 0.4]})
    with pg.run("study on postgres", kind="optimize", params={"storage": uri}) as run:
        for step, value in enumerate([0.1, 0.9, 0.4]):
            run.log_metrics({"best_sharpe": value}, step=step)
        run.log_frame(ledger, "ledger")
        run.log_dict({"sampler": "tpe", "storage": uri}, "spec.json")
        best = run.child("trial 1", params={"fast": 12}, metrics={"sharpe": 0.9})
    record = pg.get_run(run.run_id)
    assert record.status == "FINISHED"
    assert record.params["storage"] == uri.replace(PASSWORD, "***")
    assert record.artifacts == ("ledger.parquet", "spec.json")
    assert record.artifact_uri.startswith((tmp_path / "artifacts").as_uri())
    assert pg.metric_history(run.run_id, "best_sharpe") == [(0, 0.1), (1, 0.9), (2, 0.4)]
    pd.testing.assert_frame_equal(pg.load_frame(run.run_id, "ledger"), ledger)
    assert pg.load_dict(run.run_id, "spec.json")["sampler"] == "tpe"
    assert [c.run_id for c in pg.find_runs(parent=run)] == [best]
    with pytest.raises(UnknownNameError) as missing:
        pg.get_run("f" * 32)
    stored = repr((dict(record.params), dict(record.tags), record.name)) + str(missing.value)
    stored += "".join(p.read_text() for p in _artifact_dir(record).glob("*.json"))
    assert PASSWORD not in stored + repr(pg) + run.summary()
    assert "postgres:***@127.0.0.1" in str(missing.value)

    assert _connections_to(pg_database) > 0
    pg.close()
    assert _connections_to(pg_database) == 0
    assert pg.get_run(best).name == "trial 1"  # the store reconnects after close()
    pg.close()


def test_unreachable_database_store_fails_fast_with_the_password_masked():
    started = time.perf_counter()
    tracker = Tracker("postgresql+psycopg://quant:hunter2@127.0.0.1:9/none", experiment="x")
    with pytest.raises(ConfigError, match=r"cannot reach MLflow store") as info:
        with tracker.run("r", kind="report"):
            pass
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    assert time.perf_counter() - started < 30


@pytest.fixture
def http_answering():
    """Start a local TCP server that answers every request with the given bytes; yield a
    function returning its URI."""
    import socketserver
    import threading

    servers = []

    def start(answer: bytes) -> str:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.recv(65536)
                self.request.sendall(answer)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://user:hunter2@127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


_OPEN_A_RUN = """
import json, time
from quantshift.errors import ConfigError
from research.tracking import Tracker
started = time.perf_counter()
try:
    with Tracker({uri!r}, experiment="x").run("r", kind="report"):
        pass
    print(json.dumps({{"error": None}}))
except ConfigError as exc:
    print(json.dumps({{"error": str(exc), "seconds": time.perf_counter() - started}}))
"""


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (None, "cannot reach MLflow server"),
        (b"\x00\xffgarbage, not HTTP\r\n\r\n", "an answer that is not HTTP"),
        (
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "returned HTTP 500",
        ),
    ],
    ids=["closed-port", "garbage", "http-500"],
)
def test_regression_unreachable_mlflow_server_fails_in_seconds(http_answering, answer, message):
    # MLflow's own client retried such a server for about 4 minutes, then raised a traceback.
    uri = f"http://user:hunter2@127.0.0.1:{_free_port()}/" if answer is None else None
    uri = uri or http_answering(answer)
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_A_RUN.format(uri=uri)],
        capture_output=True,
        text=True,
        timeout=60,  # the unprobed client was still retrying here
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["error"] is not None and message in result["error"], result
    assert "hunter2" not in result["error"] and result["seconds"] < 10


@pytest.mark.parametrize("status", ["200 OK", "401 Unauthorized"])
def test_mlflow_server_that_answers_its_health_check_passes_the_probe(http_answering, status):
    from research.tracking import _check_reachable

    answer = f"HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK".encode()
    assert _check_reachable(http_answering(answer), "shown") is None


# --------------------------------------------------------------------------- issue 14
def test_experiments_open_as_classic_ml_experiments_not_the_genai_view(tracker, store_dir):
    """MLflow 3 opened our experiments in its GenAI view (a traces page, no metric columns)."""
    from mlflow import MlflowClient

    with tracker.run("kind", kind="report") as run:
        pass
    client = MlflowClient(tracking_uri=tracker.resolved_tracking_uri)
    tags = client.get_experiment(run.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    # An experiment made before (here by MLflow itself, untagged) is tagged on first use.
    old = client.create_experiment("made-elsewhere")
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    with Tracker(tracker.resolved_tracking_uri, experiment="made-elsewhere").run(
        "again", kind="report"
    ):
        pass
    tags = client.get_experiment(old).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_forced_promotion_is_marked_in_the_registry_version(tracker):
    with tracker.run("promoted", kind="report") as run:
        pass
    name = f"forced-{uuid.uuid4().hex[:6]}"
    kept = tracker.register_promotion(name, "paper", run.run_id, {"record_id": "pr1"})
    forced = tracker.register_promotion(
        name, "paper", run.run_id, {"record_id": "pr2"}, forced=True, reason="desk override"
    )
    client = tracker._client
    first = client.get_model_version(f"quantshift.{name}", kept)
    second = client.get_model_version(f"quantshift.{name}", forced)
    assert first.tags["gate"] == "passed" and "forced_reason" not in first.tags
    assert second.tags["gate"] == "FORCED" and second.tags["forced_reason"] == "desk override"
    assert "FORCED past a failed gate: desk override" in second.description


def test_research_ui_takes_a_port_and_a_host(store_dir):
    from typer.testing import CliRunner

    from quantshift.cli import app

    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    shown = CliRunner().invoke(
        app, ["research", "ui", "--tracking-uri", uri, "--port", "5123", "--print"]
    )
    assert shown.exit_code == 0, shown.output
    assert shown.output.strip().endswith("--host 127.0.0.1 --port 5123")
    shown = CliRunner().invoke(
        app, ["research", "ui", "--tracking-uri", uri, "--host", "0.0.0.0", "--print"]
    )
    assert shown.output.strip().endswith("--host 0.0.0.0 --port 5000")
    refused = CliRunner().invoke(app, ["research", "ui", "--port", "70000", "--print"])
    assert isinstance(refused.exception, ConfigError) and "--port" in str(refused.exception)
