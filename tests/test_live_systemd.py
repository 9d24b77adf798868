"""Running under systemd: the sd_notify datagrams a runner sends to a socket the test binds, and
the shipped units, filled in by `live install-units`, checked by `systemd-analyze verify`."""

from __future__ import annotations

import copy
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
import uuid
from pathlib import Path

import pytest
from live_cluster import require

from live.config import parse_config
from live.runner import Runner
from live.systemd import UNIT_NAMES, Notifier

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "live" / "examples" / "paper_sp500.toml"
LIVE = [sys.executable, "-c", "from live.cli import main; main()"]


class NotifySocket:
    """A bound AF_UNIX datagram socket, read by a thread so a sender never blocks on a full
    queue (what systemd's end of ``$NOTIFY_SOCKET`` does)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        self.sock.setblocking(False)
        while True:  # what arrived after the reader's last look
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        self.sock.close()
        return self.messages


def _config(tmp_path):
    raw = tomllib.loads(EXAMPLE.read_text())
    raw = copy.deepcopy(raw)
    raw["store"]["url"] = f"sqlite:///{tmp_path}/state.db"
    raw["metrics"]["enabled"] = False
    raw["feed"].update(start="2015-01-01", end="2016-01-01")
    return parse_config(raw, source="test.toml")


def test_runner_sends_ready_then_a_watchdog_ping_each_cycle_then_stopping(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    listener = NotifySocket(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        summary = Runner(_config(tmp_path), max_bars=25).run()
    finally:
        messages = listener.close()
    assert summary.bars == 25
    assert messages[0].split("\n")[:2] == ["READY=1", "STATUS=running"]
    assert f"MAINPID={os.getpid()}" in messages[0].split("\n")
    assert messages[-1].split("\n")[0] == "STOPPING=1"
    # What `systemctl status` shows: standby until the lease is won, then the leader's epoch
    # (a single host's local lock has epoch 0).
    assert [m for m in messages if m.startswith("STATUS=")] == [
        "STATUS=standby",
        "STATUS=leader epoch 0",
    ]
    pings = [m for m in messages[1:-1] if not m.startswith("STATUS=")]
    assert set(pings) == {"WATCHDOG=1"}
    # One at the standby poll that won the lease, then one per cycle.
    assert len(pings) >= summary.bars + 1


def test_abstract_socket_address_and_no_socket_means_silence():
    name = f"quantshift-test-{uuid.uuid4().hex}"
    listener = NotifySocket("\0" + name)
    try:
        assert Notifier(f"@{name}").ready(status="warming up")
        assert Notifier(None).ready() is False  # not under systemd: nothing sent, no error
    finally:
        messages = listener.close()
    assert messages == [f"READY=1\nSTATUS=warming up\nMAINPID={os.getpid()}"]


def test_watchdog_pings_are_rate_limited_and_only_for_the_watched_process(tmp_path):
    path = str(tmp_path / "n.sock")
    listener = NotifySocket(path)
    try:
        mine = Notifier.from_environment(
            {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
        )
        assert mine.watchdog_interval_s == 3.0  # a tenth of WatchdogSec=30
        sent = [mine.watchdog() for _ in range(100)]
        inherited = Notifier.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_PID": "1"})
        assert inherited.watchdog() is False
        assert inherited.stopping()  # only the watchdog is the other process's business
    finally:
        messages = listener.close()
    assert sent.count(True) == 1
    assert messages == ["WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]


def test_a_failing_socket_is_reported_once_and_never_raises(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert [notifier.watchdog() for _ in range(3)] == [False, False, False]
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1


# --------------------------------------------------------------------------- unit files
def _install(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LIVE, "install-units", "--target", str(tmp_path), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _keys(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("units")
    user = pwd.getpwuid(os.getuid()).pw_name
    data_dir = tmp_path_factory.mktemp("data")
    done = _install(target, "--user", user, "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    return target, user, data_dir, done.stdout


def test_install_units_writes_every_unit_filled_in_for_this_host(installed):
    target, user, data_dir, out = installed
    assert sorted(p.name for p in target.iterdir()) == sorted(UNIT_NAMES)
    for name in UNIT_NAMES:
        assert f"wrote {target / name}" in out
        text = (target / name).read_text()
        assert "{" not in text and "}" not in text
    runner = _keys((target / "quantshift-live@.service").read_text())
    bin_dir = Path(sys.executable).parent
    assert runner["ExecStart"] == [f"{bin_dir}/live run --config /etc/quantshift/%i.toml"]
    assert runner["WorkingDirectory"] == [str(ROOT)]
    assert runner["User"] == [user] and runner["Group"] == [user]
    assert runner["ReadWritePaths"] == [str(data_dir)]
    assert runner["EnvironmentFile"] == ["-/etc/quantshift/%i.env"]
    for key, value in (
        ("Type", "notify"), ("WatchdogSec", "60"), ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "2"),
        ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
    ):  # fmt: skip
        assert runner[key] == [value], key
    fetch = _keys((target / "quantshift-data-fetch.service").read_text())
    assert fetch["ExecStart"] == [f"{bin_dir}/quantshift data fetch $QUANTSHIFT_FETCH_ARGS"]
    research = _keys((target / "quantshift-research@.service").read_text())
    assert research["ExecStart"] == [
        f"{bin_dir}/quantshift research report {ROOT}/experiments/%i.toml"
    ]
    assert _keys((target / "quantshift-data-fetch.timer").read_text())["Persistent"] == ["yes"]


def test_systemd_analyze_verify_passes_on_every_unit(installed, tmp_path):
    if shutil.which("systemd-analyze") is None:
        require("systemd-analyze", "not on PATH (apt-get install systemd)")
    target = installed[0]
    # Templates are verified as an instance, the way systemd loads them.
    paths = []
    for name in UNIT_NAMES:
        instance = name.replace("@.", "@paper-sp500.")
        shutil.copy(target / name, tmp_path / instance)
        paths.append(str(tmp_path / instance))
    for path in paths:
        done = subprocess.run(
            ["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        # Unknown keys and unsafe settings are warnings with exit code 0: none allowed.
        assert done.stderr.strip() == "", done.stderr


def test_systemd_analyze_verify_catches_a_broken_unit(installed, tmp_path):
    if shutil.which("systemd-analyze") is None:
        require("systemd-analyze", "not on PATH (apt-get install systemd)")
    text = (installed[0] / "quantshift-live@.service").read_text()
    broken = tmp_path / "quantshift-live@x.service"
    broken.write_text(text.replace("/live run", "/no-such-live run"))
    done = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True)
    assert done.returncode != 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--data-dir", "relative/data"), "--data-dir must be absolute"),
        (("--user", "bad user"), "--user is not a valid name"),
    ],
)
def test_install_units_refuses_bad_input_with_one_line(tmp_path, extra, message):
    done = _install(tmp_path, *extra)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and message in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_install_units_refuses_a_missing_target_directory(tmp_path):
    done = _install(tmp_path / "absent")
    assert done.returncode == 2
    assert "target directory does not exist" in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_a_feed_waiting_for_the_next_bar_keeps_the_watchdog_fed(tmp_path):
    path = str(tmp_path / "w.sock")
    listener = NotifySocket(path)
    waits = []
    stop = threading.Event()
    try:
        wait = Notifier(path).watched(lambda event, seconds: waits.append((event, seconds)))
        for _ in range(3):  # three polls of a venue feed between two bars
            wait(stop, 5.0)
        default = Notifier(path).watched(None)  # the feed's own wait: the stop event's
        stop.set()
        assert default(stop, 30.0) is True
    finally:
        messages = listener.close()
    assert waits == [(stop, 5.0)] * 3
    assert messages == ["WATCHDOG=1"] * 4
