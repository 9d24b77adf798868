"""Health checks on the metrics port, over HTTP: liveness, readiness (feed warm, store
reachable) and leadership (200 only on the leader), on an exporter and on running runners."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from live_cluster import RedisServer, wait_until
from live_threads import RunnerThread, example_config

from live.metrics import LiveMetrics


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


def test_readiness_follows_the_feed_and_the_store_and_leader_follows_the_lease():
    metrics = LiveMetrics(sleeves=["trend"])
    with metrics.serve(port=0) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert _get(base + "/healthz") == (200, "ok")
        assert _get(base + "/readyz") == (503, "feed warming up")
        metrics.started()
        assert _get(base + "/readyz") == (503, "store unreachable")  # no store answer yet
        metrics.heartbeat()  # written to the store: it answered
        assert _get(base + "/readyz") == (200, "ready")
        metrics.set_store_reachable(False)
        assert _get(base + "/readyz") == (503, "store unreachable")
        assert _get(base + "/leader") == (503, "standby")
        metrics.set_leader(True, 4)
        assert _get(base + "/leader") == (200, "leader epoch 4")
        metrics.set_leader(False, None)
        assert _get(base + "/leader") == (503, "standby")
        status, text = _get(base + "/metrics")
        assert status == 200 and "quantshift_live_ready 0.0" in text
        assert "quantshift_live_leader_terms_total 1.0" in text


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.close()


def test_leader_check_answers_200_on_the_leader_only_and_moves_on_takeover(tmp_path, redis):
    config = example_config(tmp_path, speed=5.0, redis_url=redis.url)
    first = RunnerThread(config, "host-a")
    second = None
    try:
        wait_until(lambda: first.get("/leader")[0] == 200, 120, "host-a to lead")
        second = RunnerThread(config, "host-b")
        wait_until(lambda: second.get("/readyz")[0] == 200, 120, "host-b to be ready")
        for runner in (first, second):
            assert runner.get("/healthz") == (200, "ok\n")
            assert runner.get("/readyz") == (200, "ready\n")
        status, body = first.get("/leader")
        assert status == 200 and body.startswith("leader epoch ")
        assert second.get("/leader") == (503, "standby\n")
        first.stop()
        # The lease is released on a clean stop: the standby takes over.
        wait_until(lambda: second.get("/leader")[0] == 200, 60, "host-b to take over")
        epoch_a = int(body.split()[-1])
        epoch_b = int(second.get("/leader")[1].split()[-1])
        assert epoch_b > epoch_a
    finally:
        for runner in (first, second):
            if runner is not None and runner.thread.is_alive():
                runner.stop()
