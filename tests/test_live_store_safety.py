"""Regressions of issue 17 on the live store: the kill switch reaches the runner's own store from
any directory, one store has one runner identity, and a store deleted, replaced or damaged under
a runner or a command stops it with one line (exit 2) instead of losing data or creating a store.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from live_cluster import RedisServer, wait_until
from test_live_store import intent, new_pg_database, pg_admin  # noqa: F401 (fixture)
from typer.testing import CliRunner

from live.cli import app
from live.config import load_config
from live.runner import Runner
from live.store import Store
from live.store.errors import StoreError, StoreUnavailableError

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from live.cli import main; main()"]
# One sleeve without protective stops: during a HALT nothing at all may go out.
CONFIG = """
[runner]
name = "{name}"
market = "equities"
mode = "paper"
bar_interval = "1d"

[[sleeves]]
name = "trend"
strategy = "ma_crossover"
params = {{ fast = 5, slow = 20 }}
symbols = ["SP500", "NASDAQ"]
allocation = 1.0

[feed]
kind = "replay"
source = "builtin:sp500,nasdaq"
start = "{start}"
speed = {speed}

[store]
url = "{url}"

[lease]
{lease}

[metrics]
enabled = false
"""


def write_config(
    path: Path, url: str, *, name="safety", start="2015-01-01", speed=0.0, lease=""
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CONFIG.format(name=name, url=url, start=start, speed=speed, lease=lease))
    return path


def live(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The error a command printed: one line, exit code 2, no traceback (a runner's JSON log
    records aside)."""
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("{")]
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    return lines[0]


def paper_orders(db: Path) -> list[int]:
    """Times (ns) the paper venue executed each order in the SQLite store ``db``."""
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return [r[0] for r in conn.execute("SELECT ts_created_ns FROM paper_orders")]
    except sqlite3.OperationalError:  # not migrated yet
        return []
    finally:
        conn.close()


def stop_or_dump(runner: subprocess.Popen, timeout_s: float) -> None:
    """Wait for a runner sent SIGTERM; if it is still running after ``timeout_s``, have it print
    every thread's stack (SIGUSR1), kill it and fail with what it printed."""
    try:
        runner.communicate(timeout=timeout_s)
        return
    except subprocess.TimeoutExpired:
        runner.send_signal(signal.SIGUSR1)
        time.sleep(2.0)
        runner.kill()
        _, err = runner.communicate(timeout=30)
    pytest.fail(f"the runner did not stop {timeout_s} s after SIGTERM:\n{err[-8000:]}")


# --------------------------------------------------------------------------- 1: the kill switch
def test_live_halt_from_another_directory_stops_the_runner_it_names(tmp_path):
    """The example's relative store URL: `live halt` run elsewhere created a new, empty store,
    printed "HALT active" and the runner kept sending orders."""
    conf, rundir, elsewhere = tmp_path / "conf", tmp_path / "run", tmp_path / "elsewhere"
    rundir.mkdir(), elsewhere.mkdir()
    config = write_config(conf / "live.toml", "sqlite:///state/live.db", speed=40.0)
    db = conf / "state" / "live.db"  # relative to the config file's directory
    runner = subprocess.Popen(
        [*CLI, "run", "--config", str(config)],
        cwd=rundir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: db.exists() and len(paper_orders(db)) >= 2, 60, f"orders in {db}")
        assert runner.poll() is None, "the replay ended before the HALT"
        halted = live("halt", "--config", str(config), "--reason", "test", cwd=elsewhere)
        assert halted.returncode == 0 and "HALT active" in halted.stdout, halted.stderr
        time.sleep(3.0)  # ~120 more bars at 40 bars/s: ma_crossover(5, 20) would trade
    finally:
        runner.send_signal(signal.SIGTERM)
        stop_or_dump(runner, 60)
    with Store.open(f"sqlite:///{db}") as store:
        (halt,) = store.halts()
    sent_after = [ts for ts in paper_orders(db) if ts > halt.ts_created_ns]
    assert sent_after == [], f"{len(sent_after)} orders sent after the HALT"
    assert not (elsewhere / "state").exists() and not (rundir / "state").exists()


@pytest.mark.parametrize("command", ["halt", "resume", "status", "reconcile"])
def test_commands_refuse_to_create_a_missing_store(tmp_path, command):
    """`live halt` / `status` / `resume` / `reconcile` on a store that does not exist created an
    empty one and reported success ("HALT active", "ok ... 0 symbol(s)")."""
    config = write_config(tmp_path / "live.toml", "sqlite:///state/missing.db")
    line = one_line_error(live(command, "--config", str(config), cwd=tmp_path))
    assert str(tmp_path / "state" / "missing.db") in line and "live run" in line
    assert not (tmp_path / "state").exists()


def test_a_relative_store_url_is_resolved_against_the_config_directory(tmp_path):
    config = load_config(write_config(tmp_path / "a" / "live.toml", "sqlite:///../b/state.db"))
    assert config.store_url == f"sqlite:///{(tmp_path / 'b' / 'state.db').resolve()}"
    absolute = f"sqlite:///{tmp_path / 'abs.db'}"
    assert load_config(write_config(tmp_path / "c.toml", absolute)).store_url == absolute


# --------------------------------------------------------------------------- 2: one runner a store
def _identities(backend, tmp_path, request) -> tuple[str, str]:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}", ""
    url = new_pg_database(request.getfixturevalue("pg_admin"), request)
    redis = RedisServer(tmp_path)
    redis.start()
    request.addfinalizer(redis.close)
    return url, f'redis_url = "{redis.url}"'


def _snapshot(url: str) -> dict:
    with Store.open(url) as store:
        return {
            "positions": [p.to_dict() for p in store.positions(include_flat=True)],
            "intents": len(store.intents()),
            "fence": store.fence_epoch(),
            "beats": sorted(b.host for b in store.heartbeats()),
            "state": store.load_runner_state("beta"),
        }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_second_runner_identity_on_one_store_is_refused(backend, tmp_path, request):
    """Two configs differing only in [runner] name (each with its own lease) shared a store:
    both traded, overwriting each other's positions."""
    url, lease = _identities(backend, tmp_path, request)
    alpha = load_config(write_config(tmp_path / "alpha.toml", url, name="alpha", lease=lease))
    assert Runner(alpha, host="alpha-host", max_bars=60).run().orders > 0
    before = _snapshot(url)
    assert before["positions"] and before["state"] is None
    for name, lease_name, named in [("beta", None, "'alpha'"), ("alpha", "other", "'alpha'")]:
        extra = lease + (f'\nname = "{lease_name}"' if lease_name else "")
        config = write_config(tmp_path / f"{name}.toml", url, name=name, lease=extra)
        with pytest.raises(StoreError, match=f"belongs to runner {named}"):
            Runner(load_config(config), host="beta-host", max_bars=60).run()
        assert _snapshot(url) == before  # nothing written by the refused runner
    # `live status` with the refused config says whose store it is; the owner itself goes on.
    shown = CliRunner().invoke(app, ["status", "--config", str(tmp_path / "beta.toml")])
    assert shown.exit_code == 0 and "this store belongs to runner 'alpha'" in shown.output
    assert Runner(alpha, host="alpha-host", max_bars=5).run().bars == 5


# --------------------------------------------------------------------------- 7: store deleted
def test_a_store_deleted_mid_run_stops_the_runner_with_an_error(tmp_path):
    """With the SQLite files removed during a replay the runner finished with exit 0 and
    "106 orders, 52 trades" while nothing was stored."""
    config = write_config(tmp_path / "live.toml", "sqlite:///live.db", start="2017-01-01", speed=40)
    db = tmp_path / "live.db"
    runner = subprocess.Popen(
        [*CLI, "run", "--config", str(config)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: db.exists() and paper_orders(db), 60, f"orders in {db}")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        out, err = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    done = subprocess.CompletedProcess(runner.args, runner.returncode, out, err)
    line = one_line_error(done)
    assert str(db) in line and "deleted or replaced" in line
    assert not db.exists()  # no new, empty store in its place


def test_a_postgres_store_replaced_mid_run_is_refused(pg_admin, request):  # noqa: F811
    url = new_pg_database(pg_admin, request)
    name = url.rsplit("/", 1)[1]
    with Store.open(url) as store:
        intent(store, bar=1)
        pg_admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        pg_admin.execute(f'CREATE DATABASE "{name}"')
        Store.open(url).close()  # someone creates a new, empty store under the same name
        with pytest.raises(StoreError, match="deleted or replaced"):
            for bar in (2, 3):  # the first write may only find its session cut
                with contextlib.suppress(StoreUnavailableError):
                    intent(store, bar=bar)


# --------------------------------------------------------------------------- 10: store damaged
@pytest.mark.parametrize("damage", ["pages", "header"])
def test_a_corrupted_sqlite_store_is_one_line_exit_2(tmp_path, damage):
    """`database disk image is malformed` tracebacks from run, status and reconcile."""
    db = tmp_path / "live.db"
    config = write_config(tmp_path / "live.toml", f"sqlite:///{db}")
    with Store.open(f"sqlite:///{db}") as store:
        for bar in range(300):
            intent(store, bar=bar)
    size = db.stat().st_size
    with db.open("r+b") as f:
        start = 8192 if damage == "pages" else 0
        f.seek(start)
        f.write(b"\xff" * (size - start))
    for command in ("status", "reconcile", "run", "halt"):
        line = one_line_error(live(command, "--config", str(config), cwd=tmp_path))
        assert str(db) in line and "damaged" in line and "restore" in line, line


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_runners_claiming_a_new_store_at_once_leave_one_owner(backend, tmp_path, request):
    url = _identities(backend, tmp_path, request)[0]
    Store.open(url).close()
    barrier, outcomes = threading.Barrier(8), {}

    def claim(name: str) -> None:
        with Store.open(url) as store:
            barrier.wait()
            try:
                store.claim_owner(name, name)
                outcomes[name] = "owner"
            except StoreError as exc:
                outcomes[name] = str(exc)

    threads = [threading.Thread(target=claim, args=(f"r{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    (owner,) = [name for name, outcome in outcomes.items() if outcome == "owner"]
    assert len(outcomes) == 8
    assert all(f"belongs to runner {owner!r}" in o for n, o in outcomes.items() if n != owner)
    with Store.open(url) as store:
        assert store.owner()["runner"] == owner
