"""Private services and `live run` processes for the failover tests: a Redis and a PostgreSQL of
the test's own, runner processes whose log lines are timed, and a watcher of the store's fence.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "live" / "examples" / "paper_sp500.toml"
SHARED_PG = "postgresql://postgres@127.0.0.1:5432"
LEADER_PREFIX = "leader with epoch "


def require(what: str, problem: object) -> None:
    """Skip the test for a missing service or tool; fail instead on CI (CI=true)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required on CI: {problem}")
    pytest.skip(f"{what} unavailable: {problem}")


def in_netns(netns: str | None) -> list[str]:
    """The command prefix that runs a program inside network namespace ``netns`` (or none)."""
    return [] if netns is None else ["ip", "netns", "exec", netns]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, step_s=0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` on timeout."""
    give_up = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(step_s)


# --------------------------------------------------------------------------- services
class RedisServer:
    """A redis-server of the test's own on a free port: no persistence, so a restart forgets the
    lease and the epoch counter (the store's fence must keep epochs increasing). In network
    namespace ``netns`` (bound to ``host`` there) it takes the default port, alone there."""

    def __init__(self, workdir: Path, *, host: str = "127.0.0.1", netns: str | None = None):
        if shutil.which("redis-server") is None:
            require("redis-server", "not on PATH")
        self.workdir, self.host, self.netns = workdir, host, netns
        self.port = free_port() if netns is None else 6379
        self.url = f"redis://{host}:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> int:
        """Start the server and wait until it answers; return the time (ns) it did."""
        import redis

        self.proc = subprocess.Popen(
            [*in_netns(self.netns), "redis-server", "--port", str(self.port), "--bind", self.host,
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
             # Off in a test namespace only: its address exists nowhere else.
             "--protected-mode", "no" if self.netns else "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.2)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(up, 10, f"redis-server on port {self.port}")
        client.close()
        return time.time_ns()

    def kill(self) -> int:
        """SIGKILL the server (an outage, nothing saved); return the time (ns)."""
        assert self.proc is not None
        self.proc.kill()
        killed_ns = time.time_ns()
        self.proc.wait()
        return killed_ns

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


class PostgresServer:
    """A PostgreSQL cluster of the test's own (initdb + pg_ctl, trust auth, on a free port), so
    that the test can stop it; run as the ``postgres`` user when the test runs as root. In
    network namespace ``netns`` (listening on ``host`` there) it takes the default port."""

    def __init__(self, *, host: str = "127.0.0.1", netns: str | None = None) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            require("PostgreSQL server binaries", "no /usr/lib/postgresql/*/bin/initdb")
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="qs-pg-"))
        self.data = self.dir / "data"
        self.host, self.port = host, free_port() if netns is None else 5432
        self.url = f"postgresql://postgres@{host}:{self.port}"
        self._user: list[str] = in_netns(netns)
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.dir, user="postgres")
            self._user += ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._user, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.strip()[-500:]}")

    def init(self) -> None:
        """Create the cluster and start it."""
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                  "postgres", "-E", "UTF8", "--no-sync")  # fmt: skip
        if self.host != "127.0.0.1":  # in a test namespace: its hosts' links, also trusted
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all all samenet trust\n")
        self.start()

    def start(self) -> None:
        # fsync off: this server is thrown away, and a crash of it is simulated, not real.
        options = (
            f"-p {self.port} -c listen_addresses={self.host} -c unix_socket_directories='' "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.dir / "server.log"), "-w", "start")  # fmt: skip

    def stop(self, mode: str = "immediate") -> int:
        """Stop the server (``immediate``: like a crash, sessions cut); return the time (ns)."""
        started_ns = time.time_ns()
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        return started_ns

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def create_database(server_url: str) -> str:
    """Create a uniquely named database on ``server_url``; return its URL."""
    import psycopg

    name = f"qs_failover_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(f"{server_url}/postgres", autocommit=True, connect_timeout=3) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        require(f"PostgreSQL at {server_url}", exc)
    return f"{server_url}/{name}"


def drop_database(url: str) -> None:
    import psycopg

    server, name = url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True, connect_timeout=3) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- configs
def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)  # strings, numbers, booleans and lists of them read the same


def write_config(path: Path, **sections: dict[str, Any]) -> Path:
    """Write the shipped example with ``sections`` merged in (e.g. ``store={"url": ...}``)."""
    raw = tomllib.loads(EXAMPLE.read_text())
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    lines = []
    for section, table in raw.items():
        for item in table if isinstance(table, list) else [table]:
            lines.append(f"[[{section}]]" if isinstance(table, list) else f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in item.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- runners
def _message(line: str) -> str:
    """The message of a JSON log line; other lines (errors, tracebacks) as they are."""
    if line.startswith("{"):
        try:
            return str(json.loads(line).get("message", line))
        except ValueError:
            pass
    return line


class RunnerProcess:
    """One ``live run --config FILE --json`` process; its stderr messages are kept with the time
    (ns) they arrived, and its exit time is recorded. With ``netns``, it runs in that network
    namespace (`ip netns exec` execs the runner, so the process id is the runner's)."""

    def __init__(
        self, config: Path, *, label: str, failpoints: str | None = None, netns: str | None = None
    ) -> None:
        env = {k: v for k, v in os.environ.items() if k != "QUANTSHIFT_FAILPOINTS"}
        if failpoints:
            env["QUANTSHIFT_FAILPOINTS"] = failpoints
        self.label, self.failpoints = label, failpoints
        self.proc = subprocess.Popen(
            [*in_netns(netns), sys.executable, "-c", "from live.cli import main; main()", "run",
             "--config",
             str(config), "--json"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.host = f"{socket.gethostname()}:{self.proc.pid}"  # the runner's default host name
        self.lines: list[tuple[int, str]] = []
        self.stdout = ""
        self.exited_ns: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.time_ns(), _message(line.rstrip("\n"))))

    def _wait(self) -> None:
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()
        self.proc.wait()
        self.exited_ns = time.time_ns()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def leader_terms(self) -> list[tuple[int, int]]:
        """(epoch, time ns) of each "leader with epoch N" message, in order."""
        return [
            (int(text[len(LEADER_PREFIX) :]), ts)
            for ts, text in list(self.lines)
            if text.startswith(LEADER_PREFIX)
        ]

    def wait_leader(self, timeout_s: float, after_epoch: int = 0) -> tuple[int, int]:
        """Wait for a term above ``after_epoch``; return (epoch, time ns)."""

        def found():
            terms = [t for t in self.leader_terms() if t[0] > after_epoch]
            if not terms and not self.alive:
                raise AssertionError(f"{self.label} ended before leading\n{self.log()}")
            return terms[0] if terms else None

        return wait_until(found, timeout_s, f"{self.label} to lead\n{self.log()}")

    def send(self, sig: int) -> int:
        """Send ``sig``; return the time (ns)."""
        os.kill(self.proc.pid, sig)
        return time.time_ns()

    def finish(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the process to end; return its JSON summary (empty if it printed none)
        with ``returncode``."""
        self.proc.wait(timeout=timeout_s)
        self._waiter.join(5)
        self._reader.join(5)
        out = self.stdout.strip().splitlines()
        summary = json.loads(out[-1]) if out and out[-1].startswith("{") else {}
        return {**summary, "returncode": self.proc.returncode}

    def stop(self) -> None:
        """Kill the process if it still runs (teardown)."""
        if self.alive:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)

    def log(self) -> str:
        return f"--- {self.label} (pid {self.pid}) stderr:\n" + "\n".join(
            text for _, text in self.lines[-40:]
        )


class FenceWatch:
    """Poll the store's fence and heartbeats (every ~20 ms, riding out outages): when each
    epoch was claimed, and when each host was first seen in each role and epoch."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.claims: dict[int, int] = {}
        self.first_seen: dict[tuple[str, str, int], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        conn = None
        while not self._stop.wait(0.02):
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=1)
                fence = conn.execute("SELECT epoch, ts_updated_ns FROM leader_fence").fetchone()
                beats = conn.execute("SELECT host, role, epoch, ts_ns FROM heartbeats").fetchall()
            except psycopg.Error:
                conn = None  # the schema may not exist yet, or the server is down
                continue
            if fence is not None and fence[0] > 0:
                self.claims.setdefault(int(fence[0]), int(fence[1]))
            for host, role, epoch, ts_ns in beats:
                self.first_seen.setdefault((host, role, int(epoch)), int(ts_ns))
        if conn is not None:
            conn.close()

    def first_leader_beat_ns(self, host: str, epoch: int) -> int | None:
        return self.first_seen.get((host, "leader", epoch))

    def standing_by(self, host: str) -> bool:
        return any(h == host and role == "standby" for h, role, _ in list(self.first_seen))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------- a test's cluster
class Cluster:
    """A private Redis (or ``redis``, not started), a fresh store database (on the shared
    PostgreSQL, or on ``postgres``), a config for both, a :class:`FenceWatch`, and the runner
    processes started on them."""

    def __init__(
        self,
        workdir: Path,
        *,
        feed: dict[str, Any],
        postgres: PostgresServer | None = None,
        redis: RedisServer | None = None,
    ) -> None:
        self.postgres = postgres
        self.store_url = create_database(SHARED_PG if postgres is None else postgres.url)
        self.redis = RedisServer(workdir) if redis is None else redis
        self.redis.start()
        self.config = write_config(
            workdir / "live.toml",
            store={"url": self.store_url},
            lease={"redis_url": self.redis.url},
            metrics={"enabled": False},
            feed=feed,
        )
        self.lease_name = tomllib.loads(self.config.read_text())["runner"]["name"]
        self.watch = FenceWatch(self.store_url)
        self.runners: list[RunnerProcess] = []

    def spawn(
        self, label: str, failpoints: str | None = None, netns: str | None = None
    ) -> RunnerProcess:
        runner = RunnerProcess(self.config, label=label, failpoints=failpoints, netns=netns)
        self.runners.append(runner)
        return runner

    def wait_standing_by(self, *runners: RunnerProcess, timeout_s: float = 60) -> None:
        def ready() -> bool:
            for runner in runners:
                if not runner.alive:
                    raise AssertionError(f"{runner.label} ended while starting\n{runner.log()}")
            return all(self.watch.standing_by(r.host) for r in runners)

        wait_until(ready, timeout_s, "the runners to stand by")

    def start_pair(
        self,
        primary_failpoints: str | None = None,
        *,
        netns: tuple[str | None, str | None] = (None, None),
    ) -> tuple[RunnerProcess, RunnerProcess]:
        """Start a primary and a standby together, and make the primary the first leader.

        A gate the test holds on the lease key (``<prefix>:<name>:lease``, taking no epoch)
        keeps both in standby until both are up; the standby is paused (SIGSTOP) while the gate
        opens, so that the primary takes the lease (epoch 1), then resumed. The standby is thus
        waiting before the primary's first cycle, as when both hosts boot together, and every
        takeover is timed from a standby already waiting. ``netns`` names the network
        namespaces of the primary's and the standby's hosts (none: this one).
        """
        import redis

        client = redis.Redis(host=self.redis.host, port=self.redis.port)
        gate_key = f"quantshift:{self.lease_name}:lease"
        assert client.set(gate_key, "gate", nx=True, px=300_000)
        primary = self.spawn("primary", primary_failpoints, netns[0])
        standby = self.spawn("standby", netns=netns[1])
        self.wait_standing_by(primary, standby)
        standby.send(signal.SIGSTOP)
        client.delete(gate_key)
        client.close()
        try:
            primary.wait_leader(15)
        finally:
            standby.send(signal.SIGCONT)
        return primary, standby

    def wait_cycling(self, runner: RunnerProcess, timeout_s: float = 30) -> int:
        """Wait for ``runner``'s first cycle as leader (its first leader heartbeat); return
        its time (ns)."""
        epoch = runner.wait_leader(timeout_s)[0]
        return wait_until(
            lambda: self.watch.first_leader_beat_ns(runner.host, epoch),
            timeout_s,
            f"{runner.label}'s first cycle\n{runner.log()}",
        )

    def leader_terms(self) -> list[tuple[int, int, str]]:
        """Every "leader with epoch N" message of every runner: (time ns, epoch, label)."""
        return sorted((ts, epoch, r.label) for r in self.runners for epoch, ts in r.leader_terms())

    def logs(self) -> str:
        return "\n".join(r.log() for r in self.runners)

    def close(self) -> None:
        for runner in self.runners:
            runner.stop()
        self.watch.close()
        self.redis.close()
        try:
            drop_database(self.store_url)
        except Exception:  # a private server that is down goes away with its directory
            if self.postgres is None:
                raise
