"""Runners of the paper S&P 500 example in threads of the test process, each with its metrics
exporter on a free port, for tests that talk to a running runner over HTTP."""

from __future__ import annotations

import copy
import threading
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from live_cluster import EXAMPLE, wait_until

from live.config import parse_config
from live.runner import Runner


def example_config(tmp_path: Path, *, speed: float, redis_url: str | None = None, lease=None):
    """The example on a store under ``tmp_path``, replayed at ``speed`` bars/s, metrics on a
    free port; with ``redis_url``, a Redis lease named ``lease`` (primary and standby)."""
    raw = copy.deepcopy(tomllib.loads(EXAMPLE.read_text()))
    raw["store"]["url"] = f"sqlite:///{tmp_path}/state.db"
    raw["metrics"]["port"] = 0
    raw["feed"].update(start="2015-01-01", end="2018-01-01", speed=speed)
    if redis_url is not None:
        raw["lease"].update(redis_url=redis_url, name=lease or "qs-test")
    return parse_config(raw, source="test.toml")


class RunnerThread:
    """A :class:`Runner` in a daemon thread; ``url(path)`` reaches its exporter."""

    def __init__(self, config, host: str) -> None:
        self.runner = Runner(config, host=host)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=host, daemon=True)
        self.thread.start()
        wait_until(self._serving, 120, f"the metrics exporter of {host}", step_s=0.05)

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # reported by stop(), not lost in the thread
            self.error = exc

    def _serving(self) -> bool:
        if self.error is not None:
            raise AssertionError(f"runner failed: {self.error!r}")
        return getattr(self.runner, "server", None) is not None

    @property
    def port(self) -> int:
        return self.runner.server.port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        """(HTTP status, body) of a GET on the exporter."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self) -> None:
        self.runner.stop_event.set()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "runner did not stop"
        if self.error is not None:
            raise self.error
