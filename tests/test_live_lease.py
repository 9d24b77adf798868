"""Leader lease against the real Redis on 127.0.0.1:6379: epochs, one leader, deadline, outages.

Leaders run in real processes (SIGSTOP, SIGKILL); an outage is a TCP proxy we cut or stall.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import random
import signal
import socket
import statistics
import threading
import time
import uuid

import pytest
import redis

from live.lease import (
    LeaseUnavailableError,
    NoLease,
    NotLeaderError,
    RedisLease,
    lease_timing,
    open_lease,
)
from quantshift.errors import ConfigError
from quantshift.urls import mask_secrets

REDIS_URL = "redis://127.0.0.1:6379/0"
CTX = mp.get_context("fork")  # children only use redis and the clock; fork keeps them fast


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis on 127.0.0.1:6379 is required in CI: {exc}")
        pytest.skip(f"Redis on 127.0.0.1:6379 unreachable: {exc}")
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client):
    """A key prefix of this test alone; its keys are deleted afterwards."""
    name = f"qs-test-lease-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(redis_client.scan_iter(f"{name}:*"))
    if keys:
        redis_client.delete(*keys)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout_s: float) -> bool:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


# --- configuration ------------------------------------------------------------------------------


def test_timings_are_checked_and_default_deadline_is_inside_the_lease():
    assert lease_timing(3000, 1000, None) == 2500
    for ttl, renew, deadline in [(3000, 1000, 3000), (3000, 1000, 900), (3000, 0, None)]:
        with pytest.raises(ConfigError, match="lease"):
            lease_timing(ttl, renew, deadline)
    with pytest.raises(ConfigError, match="ttl_ms"):
        RedisLease(REDIS_URL, "x", ttl_ms=True)
    with pytest.raises(ConfigError, match="renew_interval_ms=1000, deadline_ms=1000"):
        open_lease(REDIS_URL, "x", ttl_ms=3000, renew_interval_ms=1000, deadline_ms=1000)
    assert isinstance(open_lease(None, "x"), NoLease)
    lease = open_lease(REDIS_URL, "n", ttl_ms=6000)
    assert isinstance(lease, RedisLease) and lease.deadline_ms == 5500


def test_password_never_in_repr_errors_or_logs(caplog):
    url = f"redis://user:s3cret-pw@127.0.0.1:{_free_port()}/0"
    assert mask_secrets(url) == url.replace("s3cret-pw", "***")
    assert "s3cret-pw" not in mask_secrets("redis://127.0.0.1:6379/0?password=s3cret-pw")
    lease = open_lease(url, "main")
    caplog.set_level(logging.DEBUG, logger="live.lease")
    assert lease.try_acquire() is None  # nothing listens: not acquired, never raised
    assert "acquire failed" in caplog.text
    with pytest.raises(LeaseUnavailableError) as info:
        lease.current_holder()
    with pytest.raises(ConfigError) as bad:
        RedisLease("http://:s3cret-pw@host/0", "x")
    assert "127.0.0.1" in lease.unreachable
    for text in (repr(lease), str(info.value), str(bad.value), caplog.text, lease.unreachable):
        assert "s3cret-pw" not in text
    assert "127.0.0.1" in str(info.value)


def test_no_lease_is_always_leader_with_epoch_zero():
    lease = NoLease()
    assert lease.try_acquire().epoch == 0 and lease.acquire(timeout_s=0).epoch == 0
    assert lease.is_leader() and lease.assert_leader() == 0 and lease.renew()
    with lease.keep_alive() as keep_alive:
        assert not keep_alive.running
    lease.release()
    assert lease.is_leader() and lease.current_holder().epoch == 0


# --- one process ----------------------------------------------------------------------------------


def test_acquire_renew_release(redis_client, prefix):
    lease = RedisLease(REDIS_URL, "main", prefix=prefix, ttl_ms=3000, renew_interval_ms=1000)
    assert not lease.is_leader() and lease.epoch is None
    with pytest.raises(NotLeaderError):
        lease.assert_leader()
    sent = time.monotonic()
    state = lease.try_acquire()
    assert state is not None and state.epoch == 1 and lease.assert_leader() == 1
    assert sent + 2.5 <= state.valid_until_s <= time.monotonic() + 2.5
    value = redis_client.get(f"{prefix}:main:lease")
    assert value.startswith("1:") and len(value) == 2 + 32  # epoch and a 128-bit token
    assert redis_client.get(f"{prefix}:main:epoch") == "1"
    assert 2900 < redis_client.pttl(f"{prefix}:main:lease") <= 3000

    redis_client.pexpire(f"{prefix}:main:lease", 500)
    assert lease.renew()
    assert 2900 < redis_client.pttl(f"{prefix}:main:lease") <= 3000  # renew restores the ttl
    assert lease.state.valid_until_s > state.valid_until_s
    holder = lease.current_holder()
    assert holder.held and holder.epoch == 1 and 0 < holder.ttl_left_ms <= 3000
    assert lease.try_acquire().epoch == 1  # holding it already: renews, same term

    lease.release()
    assert redis_client.exists(f"{prefix}:main:lease") == 0
    assert not lease.is_leader() and not lease.renew() and lease.epoch == 1
    assert lease.current_holder() == type(holder)(
        held=False, epoch=None, ttl_left_ms=None, last_epoch=1
    )
    assert lease.try_acquire().epoch == 2
    lease.close()


def test_second_contender_cannot_acquire_or_free_a_held_lease(redis_client, prefix):
    first = RedisLease(REDIS_URL, "main", prefix=prefix)
    second = RedisLease(REDIS_URL, "main", prefix=prefix)
    assert first.try_acquire().epoch == 1
    assert second.try_acquire() is None and not second.is_leader() and not second.renew()
    assert second.acquire(poll_interval_ms=20, timeout_s=0.1) is None
    second.release()
    assert first.current_holder().epoch == 1 and first.renew()
    assert redis_client.get(f"{prefix}:main:epoch") == "1"  # failed attempts take no epoch
    first.release()
    assert second.acquire(poll_interval_ms=20, timeout_s=1).epoch == 2


def test_token_check_refuses_a_holder_whose_clock_lies(redis_client, prefix):
    """A leader whose clock stood still past its lease cannot renew or delete the new key."""
    slow = RedisLease(
        REDIS_URL, "main", prefix=prefix, ttl_ms=150, renew_interval_ms=50, clock=lambda: 100.0
    )
    assert slow.try_acquire().epoch == 1  # and never renews: the key expires in Redis
    time.sleep(0.3)
    other = RedisLease(REDIS_URL, "main", prefix=prefix, ttl_ms=1000, renew_interval_ms=100)
    assert other.try_acquire().epoch == 2
    assert slow.is_leader()  # its own clock cannot tell; Redis can
    assert not slow.renew()
    assert not slow.is_leader() and slow.state is None
    slow.release()
    assert other.current_holder().epoch == 2 and other.renew()
    other.release()


def test_epoch_floor_survives_a_lost_counter(redis_client, prefix):
    lease = RedisLease(REDIS_URL, "main", prefix=prefix)
    assert lease.try_acquire().epoch == 1
    lease.release()
    redis_client.delete(f"{prefix}:main:epoch")  # Redis restarted without persistence
    assert lease.try_acquire(above_epoch=7).epoch == 8
    lease.release()
    assert lease.try_acquire().epoch == 9
    lease.release()


def test_keep_alive_holds_the_lease_over_many_ttls(redis_client, prefix):
    leader = RedisLease(REDIS_URL, "main", prefix=prefix, ttl_ms=400, renew_interval_ms=100)
    standby = RedisLease(REDIS_URL, "main", prefix=prefix, ttl_ms=400, renew_interval_ms=100)
    epoch = leader.try_acquire().epoch
    lost = []
    with leader.keep_alive(on_lost=lost.append) as keep_alive:
        assert standby.acquire(poll_interval_ms=10, timeout_s=1.2) is None  # three ttls
        assert leader.is_leader() and keep_alive.running and not lost
    # Stopped renewing without releasing: the key expires, the standby takes over.
    assert not keep_alive.running and not lost
    took = standby.acquire(poll_interval_ms=10, timeout_s=1.0)
    assert took is not None and took.epoch == epoch + 1
    assert not leader.is_leader() and not leader.renew()
    standby.release()


def test_renew_latency_against_local_redis(redis_client, prefix):
    lease = RedisLease(REDIS_URL, "main", prefix=prefix)
    lease.try_acquire()
    lease.renew()  # loads the script
    latencies_s = []
    for _ in range(200):
        started = time.perf_counter()
        assert lease.renew()
        latencies_s.append(time.perf_counter() - started)
    lease.release()
    median_ms = statistics.median(latencies_s) * 1000
    p99_ms = statistics.quantiles(latencies_s, n=100)[98] * 1000
    print(f"\nrenew latency: median {median_ms:.3f} ms, p99 {p99_ms:.3f} ms (200 renews)")
    assert median_ms < 50


# --- many processes -------------------------------------------------------------------------------


def _contender(prefix: str, cycles: int, seed: int, results) -> None:
    rng = random.Random(seed)
    records = []
    lease = RedisLease(REDIS_URL, "race", prefix=prefix, ttl_ms=100, renew_interval_ms=30)
    while len(records) < cycles:
        state = lease.try_acquire()
        if state is None:
            time.sleep(rng.uniform(0.0002, 0.002))
            continue
        start_s = time.monotonic()  # leader from the reply on, until its own deadline
        renewed = rng.random() < 0.3 and lease.renew()
        time.sleep(rng.uniform(0, 0.002))
        valid_until_s = (lease.state or state).valid_until_s  # a late renew may end the term
        if rng.random() < 0.08:
            # Walk away without releasing: valid until the deadline, then the key expires.
            records.append((state.epoch, start_s, valid_until_s, "expired", renewed))
            lease = RedisLease(REDIS_URL, "race", prefix=prefix, ttl_ms=100, renew_interval_ms=30)
            continue
        end_s = min(time.monotonic(), valid_until_s)
        lease.release()
        records.append((state.epoch, start_s, end_s, "released", renewed))
    results.put((os.getpid(), records))


def test_epochs_increase_and_leaders_never_overlap_across_processes(redis_client, prefix):
    results = CTX.Queue()
    procs = [CTX.Process(target=_contender, args=(prefix, 50, i, results)) for i in range(4)]
    for p in procs:
        p.start()
    try:
        gathered = [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    terms = sorted(
        (start, end, epoch, pid, kind, renewed)
        for pid, records in gathered
        for epoch, start, end, kind, renewed in records
    )
    epochs = [t[2] for t in terms]
    assert len(terms) == 200 and len({t[3] for t in terms}) == 4
    assert sorted(epochs) == list(range(1, 201))  # unique, and no epoch burnt by a failed try
    assert all(b > a for a, b in itertools.pairwise(epochs))  # later holder, higher
    latest_end = -1.0
    for start, end, epoch, pid, _, _ in terms:
        assert start >= latest_end, f"epoch {epoch} ({pid}) began while another was leader"
        assert end >= start
        latest_end = max(latest_end, end)
    kinds = [t[4] for t in terms]
    assert kinds.count("expired") >= 3 and any(t[5] for t in terms)


def _stoppable_leader(prefix: str, conn) -> None:
    lease = RedisLease(REDIS_URL, "stop", prefix=prefix, ttl_ms=400, renew_interval_ms=100)
    state = lease.acquire(poll_interval_ms=10, timeout_s=5)
    lost = []
    lease.keep_alive(on_lost=lost.append)
    conn.send(state.epoch)
    checks = []  # (time the check began, its answer): the check made before each submit
    while not conn.poll(0.002):
        checked_s = time.monotonic()
        checks.append((checked_s, lease.is_leader()))
    conn.recv()
    _wait_for(lambda: bool(lost), 1.0)
    conn.send(
        {
            "epoch": state.epoch,
            "checks": checks,
            "is_leader": lease.is_leader(),
            "renew": lease.renew(),
            "lost": lost,
            "holder_epoch": lease.current_holder().epoch,
        }
    )


def test_a_leader_stopped_past_its_lease_loses_to_the_standby(redis_client, prefix):
    parent, child = CTX.Pipe()
    proc = CTX.Process(target=_stoppable_leader, args=(prefix, child))
    proc.start()
    try:
        assert parent.poll(10)
        first_epoch = parent.recv()
        time.sleep(0.2)
        stopped_s = time.monotonic()
        os.kill(proc.pid, signal.SIGSTOP)
        standby = RedisLease(REDIS_URL, "stop", prefix=prefix, ttl_ms=400, renew_interval_ms=100)
        took = standby.acquire(poll_interval_ms=10, timeout_s=5)
        took_s = time.monotonic()
        assert took is not None and took.epoch == first_epoch + 1
        # The successful acquire was sent at its deadline minus deadline_ms.
        took_sent_s = took.valid_until_s - standby.deadline_ms / 1000
        keep_alive = standby.keep_alive()
        time.sleep(0.1)
        continued_s = time.monotonic()
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.3)
        parent.send("report")
        assert parent.poll(10)
        report = parent.recv()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
    # The last renew went out at most one interval before the stop; the key lives 400 ms after.
    assert 0.1 < took_s - stopped_s < 1.0
    leader_checks = [t for t, ok in report["checks"] if ok]
    assert leader_checks and max(leader_checks) < took_sent_s  # never a leader alongside
    after_resume = [ok for t, ok in report["checks"] if t >= continued_s]
    assert after_resume and not any(after_resume)  # the first check after SIGCONT says no
    assert report["is_leader"] is False and report["renew"] is False
    assert report["lost"] == [first_epoch] and report["holder_epoch"] == took.epoch
    assert standby.is_leader() and standby.current_holder().epoch == took.epoch  # key untouched
    keep_alive.stop()
    standby.release()


# --- Redis outage ---------------------------------------------------------------------------------


class _Proxy:
    """A TCP proxy to the real Redis that we can cut (refuse) or stall (accept, never answer)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.mode = "forward"
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self.mode != "forward":
                continue  # stalled: connected, never served
            upstream = socket.create_connection(("127.0.0.1", 6379))
            self._sockets.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.mode == "forward":
                    sink.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        """Nothing listens any more and open connections are reset."""
        self.mode = "cut"
        self._listener.close()
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.mark.parametrize("outage", ["cut", "stalled"])
def test_redis_outage_ends_leadership_at_the_deadline(redis_client, prefix, outage):
    proxy = _Proxy()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    lease = RedisLease(url, "main", prefix=prefix, ttl_ms=400, renew_interval_ms=100)
    state = lease.try_acquire()
    lost_at = []
    keep_alive = lease.keep_alive(on_lost=lambda epoch: lost_at.append((epoch, time.monotonic())))
    time.sleep(0.25)  # renewals go through the proxy
    assert lease.is_leader() and lease.state.valid_until_s > state.valid_until_s
    if outage == "cut":
        proxy.cut()
    else:
        proxy.mode = "stalled"
    started = time.perf_counter()
    assert lease.renew() is False  # a failed renew, not an exception
    # Bounded by the 100 ms socket timeouts (ttl / 4): its own call and a keep-alive renew it
    # may have waited for, each at most a connect and a reply.
    assert time.perf_counter() - started < 0.6
    deadline_s = lease.state.valid_until_s  # of the last good renew: no renew is in flight now
    assert _wait_for(lambda: not lease.is_leader(), 1.0)
    off_s = time.monotonic()
    # Renewals after the outage failed, so the deadline of the last good one decides.
    assert lease.state is None or lease.state.valid_until_s == deadline_s
    assert deadline_s <= off_s < deadline_s + 0.1
    assert keep_alive.lost.wait(1.0)
    # on_lost may be late by the renew call in flight, at most a connect and a reply.
    assert lost_at[0][0] == state.epoch and lost_at[0][1] < deadline_s + 0.3
    with pytest.raises(NotLeaderError):
        lease.assert_leader()
    assert lease.renew() is False
    # The shared Redis kept the key until its ttl; then a standby on it takes over.
    standby = RedisLease(REDIS_URL, "main", prefix=prefix, ttl_ms=400, renew_interval_ms=100)
    assert standby.acquire(poll_interval_ms=10, timeout_s=1).epoch == state.epoch + 1
    standby.release()
    if outage == "stalled":
        proxy.cut()


# --- takeover time with default settings ----------------------------------------------------------


def _default_leader(prefix: str, conn) -> None:
    lease = RedisLease(REDIS_URL, "takeover", prefix=prefix)
    state = lease.acquire(poll_interval_ms=10, timeout_s=10)
    lease.keep_alive()
    conn.send(state.epoch)
    time.sleep(60)  # killed long before


def _takeover_seconds(prefix: str, rng: random.Random) -> float:
    parent, child = CTX.Pipe()
    proc = CTX.Process(target=_default_leader, args=(prefix, child))
    proc.start()
    try:
        assert parent.poll(15)
        epoch = parent.recv()
        standby = RedisLease(REDIS_URL, "takeover", prefix=prefix)  # defaults: 3 s / 1 s
        took = []

        def wait() -> None:
            took.append((standby.acquire(poll_interval_ms=250, timeout_s=15), time.monotonic()))

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(rng.uniform(0.5, 1.5))  # anywhere in the renew cycle
        killed_s = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        waiter.join()
    finally:
        proc.kill()
        proc.join()
    state, took_s = took[0]
    assert state is not None and state.epoch == epoch + 1
    standby.release()
    return took_s - killed_s


def test_takeover_after_sigkill_with_defaults(redis_client, prefix):
    seconds = _takeover_seconds(prefix, random.Random(4))
    print(f"\ntakeover after SIGKILL: {seconds:.3f} s")
    assert 1.0 < seconds < 5.0  # ttl 3 s minus time since the last renew, plus one 250 ms poll


@pytest.mark.slow
def test_takeover_time_over_ten_runs(redis_client, prefix):
    rng = random.Random(10)
    times_s = [_takeover_seconds(prefix, rng) for _ in range(10)]
    median_s, max_s = statistics.median(times_s), max(times_s)
    print(f"\ntakeover over 10 runs: median {median_s:.3f} s, max {max_s:.3f} s: {times_s}")
    assert max_s < 5.0


@pytest.mark.parametrize(("ttl", "renew"), [(1000, 2000), (1000, 1000), (1000, 1500)])
def test_ttl_below_renew_interval_is_reported_as_that_not_as_a_deadline_problem(ttl, renew):
    with pytest.raises(ConfigError) as caught:
        lease_timing(ttl, renew, None)
    message = str(caught.value)
    assert f"renew_interval_ms={renew} is not below ttl_ms={ttl}" in message
    assert "deadline_ms must be" not in message and "deadline_ms=" not in message
