"""Primary/standby failover with real `live run` processes, a private Redis and real PostgreSQL:
kill -9 inside the cycle, SIGSTOP past the lease, Redis and PostgreSQL outages.

Every scenario ends in the same state as one uninterrupted runner: the same venue executions
(client order id, quantity, price), fills, trades, positions and equity, with epochs that only
ever increase and no write from a deposed leader after its successor's claim.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import signal
import statistics
import time
from dataclasses import dataclass
from typing import Any

import pytest
from live_cluster import (
    Cluster,
    PostgresServer,
    RunnerProcess,
    require,
    wait_until,
    write_config,
)
from typer.testing import CliRunner

from live.cli import app
from live.config import load_config
from live.paper import PaperVenue
from live.runner import Runner
from live.store import Store

# Nine months of daily bars: the first orders come after the slowest indicator's 50-bar warm-up,
# and at 200 bars/s (plus the cycle) a replay lasts a few seconds, so that kills land mid-run.
FEED = {"start": "2015-01-01", "end": "2015-10-01", "speed": 200.0}
TTL_S = 3.0  # the example's lease (the defaults: ttl 3000 ms, renew every 1000 ms)
LEASE_MARGIN_NS = 500_000_000  # ttl - the default deadline (ttl - renew_interval / 2)
TAKEOVER_GOAL_S = 5.0
TAKEOVERS: list[tuple[str, float, float | None]] = []  # after a kill or a freeze
REDIS_RETURNS: list[float] = []  # from Redis answering again to the next leader


class RunnerDied(AssertionError):
    """A runner process ended with an error where it should have ridden the fault out."""


# Who wrote a record and when: differs between a failover and an uninterrupted replay. A venue
# order's submits count resubmissions (a redo after a crash), not executions.
VARYING = frozenset({"epoch", "ts_decided_ns", "ts_updated_ns", "ts_recorded_ns", "submits"})


def stable(records) -> list[tuple]:
    """``records`` without the varying fields, as sorted tuples of (field, value)."""
    return sorted(
        tuple((k, v) for k, v in dataclasses.asdict(r).items() if k not in VARYING) for r in records
    )


@dataclass(frozen=True)
class Outcome:
    """What a replay leaves behind: the bar it ended on, the venue's executions, and the store's
    intents, fills, trades, positions and equity curve."""

    last_bar_ts_ns: int | None
    orders: list[tuple]
    intents: list[tuple]
    fills: list[tuple]
    trades: list[tuple]
    positions: list[tuple]
    equity: list[tuple]

    @classmethod
    def read(cls, url: str, runner: str) -> Outcome:
        venue = PaperVenue(url)
        try:
            orders = venue.orders()
        finally:
            venue.close()
        with Store.open(url) as store:
            saved = store.load_runner_state(runner)
            return cls(
                last_bar_ts_ns=None if saved is None else saved["bar_ts_ns"],
                orders=stable(orders),
                intents=stable(store.intents()),
                fills=stable(store.fills()),
                trades=stable(store.trades()),
                positions=stable(store.positions(include_flat=True)),
                equity=stable(store.equity_curve()),
            )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Outcome:
    """One runner replaying the same config uninterrupted (SQLite store, no lease): the state
    every failover must end in. It also warms the kernels' cache for the processes."""
    work = tmp_path_factory.mktemp("reference")
    path = write_config(
        work / "live.toml",
        store={"url": f"sqlite:///{work / 'reference.db'}"},
        metrics={"enabled": False},
        feed={**FEED, "speed": 0.0},
    )
    config = load_config(path)
    summary = Runner(config).run()
    assert summary.ended == "replay finished"
    outcome = Outcome.read(config.store_url, config.name)
    assert len(outcome.orders) >= 20 and len(outcome.trades) >= 10, "too few orders to test"
    return outcome


@pytest.fixture(scope="module", autouse=True)
def takeover_report(request):
    """Print the measured takeover times at the end of the module."""
    yield
    lines = [
        f"{name}: leader after {lease_s:.2f} s, first cycle after "
        + ("-" if cycle_s is None else f"{cycle_s:.2f} s")
        for name, lease_s, cycle_s in TAKEOVERS
    ]
    if TAKEOVERS:
        lease = [t for _, t, _ in TAKEOVERS]
        cycle = [t for _, _, t in TAKEOVERS if t is not None] or [float("nan")]
        lines.append(
            f"takeover (n={len(lease)}): leader median {statistics.median(lease):.2f} s, max "
            f"{max(lease):.2f} s; first cycle median {statistics.median(cycle):.2f} s, max "
            f"{max(cycle):.2f} s"
        )
    lines += [f"Redis back -> leader after {s:.2f} s" for s in REDIS_RETURNS]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if lines and reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            for line in lines:
                reporter.write_line(f"failover: {line}")


@pytest.fixture
def cluster(tmp_path, request):
    """A private Redis and store database; ``postgres`` (a private server) if the test asks."""
    server = request.getfixturevalue("postgres") if "postgres" in request.fixturenames else None
    feed = {**FEED, **getattr(request, "param", {})}
    built = Cluster(tmp_path, feed=feed, postgres=server)
    yield built
    built.close()


@pytest.fixture
def postgres():
    server = PostgresServer()
    try:
        server.init()
    except (OSError, RuntimeError) as exc:
        server.close()
        require("a private PostgreSQL (initdb, pg_ctl)", exc)
    yield server
    server.close()


# --------------------------------------------------------------------------- checks
def record_takeover(cluster: Cluster, scenario: str, gone_ns: int, old_epoch: int) -> int:
    """Time from the leader's death to the next leader's term and first cycle; return the
    new epoch. The lease is what a standby waits for: it must be under the goal."""
    ts, epoch, label = wait_until(
        lambda: next((t for t in cluster.leader_terms() if t[1] > old_epoch), None),
        30,
        f"a leader after epoch {old_epoch}\n{cluster.logs()}",
    )
    host = next(r.host for r in cluster.runners if r.label == label)
    beat = wait_until(
        lambda: (
            cluster.watch.first_leader_beat_ns(host, epoch)
            or any(r.host == host and not r.alive for r in cluster.runners)
        ),
        30,
        "the new leader's first cycle",
    )
    lease_s = (ts - gone_ns) / 1e9
    cycle_s = (beat - gone_ns) / 1e9 if beat is not True else None
    TAKEOVERS.append((scenario, lease_s, cycle_s))
    assert lease_s < TAKEOVER_GOAL_S, f"takeover took {lease_s:.2f} s"
    return epoch


def check_failover(cluster: Cluster, reference: Outcome) -> None:
    """What every scenario must end with (see the module docstring)."""
    final = Outcome.read(cluster.store_url, cluster.lease_name)
    assert final.last_bar_ts_ns == reference.last_bar_ts_ns, "the replay did not complete"
    # One venue execution per decision: the same client order ids, quantities and prices.
    assert final.orders == reference.orders
    assert final.intents == reference.intents  # as decided once, in the same states
    assert final.fills == reference.fills  # no fill lost or doubled
    assert final.trades == reference.trades  # no trade lost or doubled
    assert final.positions == reference.positions
    assert final.equity == reference.equity
    check_epochs(cluster)
    check_cli(cluster)


def check_epochs(cluster: Cluster) -> None:
    """Leaders' epochs strictly increase, and every fenced row was written by a leader before
    any newer epoch's claim (so never by a deposed leader)."""
    terms = cluster.leader_terms()
    epochs = [epoch for _, epoch, _ in terms]
    assert epochs and all(a < b for a, b in itertools.pairwise(epochs)), terms
    # When each epoch was claimed (the fence's time; else its leader line, just after it).
    claimed = {epoch: cluster.watch.claims.get(epoch, ts) for ts, epoch, _ in terms}
    with Store.open(cluster.store_url) as store:
        assert store.fence_epoch() == max(epochs)
        events = store.order_events()
        timed = {  # (write time, epoch)
            "order event": [(e.ts_ns, e.epoch) for e in events],
            "intent": [(i.ts_decided_ns, i.epoch) for i in store.intents()],
            "fill": [(f.ts_recorded_ns, f.epoch) for f in store.fills()],
            "trade": [(t.ts_recorded_ns, t.epoch) for t in store.trades()],
        }
        ordered = {  # in commit order, and equity snapshots in bar order (a redo overwrites)
            "order events": [epoch for _, epoch in sorted((e.seq, e.epoch) for e in events)],
            "equity": [s.epoch for s in store.equity_curve()],
        }
        # Each term was announced once, by the host that took it (the notification outbox).
        takeovers = {n.event_key: n.title for n in store.notifications("takeover")}
    for epoch in epochs:
        assert takeovers[f"takeover:{epoch}"].endswith(f" leads with epoch {epoch}")
        assert not takeovers[f"takeover:{epoch}"].startswith("a runner ")
    for name, rows in timed.items():
        ordered[f"{name}s"] = [epoch for _, epoch in sorted(rows)]
        for ts_ns, epoch in rows:
            newer = [c for e, c in claimed.items() if e > epoch]
            assert ts_ns < min(newer, default=ts_ns + 1), f"{name} of epoch {epoch} after a claim"
    for name, in_order in ordered.items():
        assert in_order == sorted(in_order), f"{name}: an older epoch wrote after a newer one"
        assert set(in_order) <= set(epochs), f"{name}: written by an epoch that never led"


def check_cli(cluster: Cluster) -> None:
    """`live reconcile` agrees; `live status` shows the last leader, no HALT, no open order."""
    cli = CliRunner()
    done = cli.invoke(app, ["reconcile", "--config", str(cluster.config), "--json"])
    assert done.exit_code == 0 and json.loads(done.stdout)["ok"], done.output
    status = cli.invoke(app, ["status", "--config", str(cluster.config), "--json"])
    info = json.loads(status.stdout)
    with Store.open(cluster.store_url) as store:
        last = store.load_runner_state(cluster.lease_name)
    assert info["leader"]["epoch"] == last["epoch"]
    assert info["fence_epoch"] == max(e for _, e, _ in cluster.leader_terms())
    with Store.open(cluster.store_url) as store:
        working = store.intents(open_only=True)
    # the only orders still open are the protection resting under the positions still held
    assert all(i.details.get("action") == "protect" for i in working)
    assert info["halt"] is None and info["open_orders"] == len(working)


def venue_rows(cluster: Cluster) -> list[dict[str, Any]]:
    """The paper venue's order book: every order it was sent, with its submits and first-submit
    time (what `PaperVenue` does not show)."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(cluster.store_url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM paper_book ORDER BY ts_created_ns").fetchall()


def in_flight(cluster: Cluster, old: int, new: int) -> list[list[tuple[str, int]]]:
    """The intents both epochs moved: [(to_state, epoch), ...] of each."""
    with Store.open(cluster.store_url) as store:
        events = store.order_events()
    by_order: dict[str, list[tuple[str, int]]] = {}
    for e in events:
        by_order.setdefault(e.client_order_id, []).append((e.to_state, e.epoch))
    return [steps for steps in by_order.values() if {epoch for _, epoch in steps} == {old, new}]


def finished(runner: RunnerProcess, timeout_s: float = 60) -> dict[str, Any]:
    """Wait for a runner that should complete the replay; return its summary."""
    summary = runner.finish(timeout_s)
    assert summary["returncode"] == 0, runner.log()
    assert summary["ended"] == "replay finished", summary
    return summary


# --------------------------------------------------------------------------- kill -9
@pytest.mark.parametrize(
    "point, nth",
    [
        # The default run kills after the submit (the answer is lost: the successor must adopt
        # the venue's order); the kill before the submit is the slow variant.
        pytest.param("after_intent", 6, marks=pytest.mark.slow),
        ("after_submit", 11),
    ],
    ids=["between_intent_and_submit", "between_submit_and_record"],
)
def test_a_primary_killed_inside_the_cycle_is_replaced_without_a_lost_or_double_order(
    cluster, reference, point, nth
):
    primary, standby = cluster.start_pair(f"{point}={nth}")
    old = primary.leader_terms()[0][0]
    assert primary.finish(30)["returncode"] == -signal.SIGKILL, primary.log()
    new = record_takeover(cluster, point, primary.exited_ns, old)
    assert finished(standby)["epochs"] == [new]
    check_failover(cluster, reference)
    # The decision in flight was finished by the new leader, and executed once.
    # (Resting protection the old leader placed and the new one settled spans both terms too;
    # the order in flight is the one the old leader left before the venue's answer.)
    left = ("NEW", "SUBMITTING")
    (steps,) = [s for s in in_flight(cluster, old, new)
                if [to for to, epoch in s if epoch == old][-1] in left]  # fmt: skip
    submits = {r["client_order_id"]: r["submits"] for r in venue_rows(cluster)}
    if point == "after_intent":
        # Committed as NEW by the old leader, never sent: the new leader sends it, once.
        assert steps[:2] == [("NEW", old), ("SUBMITTING", new)]
        assert all(epoch == new for _, epoch in steps[1:])
        assert set(submits.values()) == {1}
    else:
        # Sent by the old leader, not recorded: resent under the same client order id, the venue
        # answers with the first order (submits 2) and the fill is recorded once.
        assert steps[:2] == [("NEW", old), ("SUBMITTING", old)]
        assert steps[2:] and all(epoch == new for _, epoch in steps[2:])
        assert sorted(submits.values()).count(2) == 1 and max(submits.values()) == 2


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_a_primary_killed_at_a_random_time_is_replaced(cluster, reference, seed):
    primary, standby = cluster.start_pair()
    old = primary.leader_terms()[0][0]
    cluster.wait_cycling(primary)
    time.sleep(random.Random(seed).uniform(0.0, 2.0))
    if not primary.alive:
        pytest.skip("the primary finished the replay before the kill")
    gone_ns = primary.send(signal.SIGKILL)
    new = record_takeover(cluster, f"SIGKILL at a random time (seed {seed})", gone_ns, old)
    assert finished(standby)["epochs"] == [new]
    check_failover(cluster, reference)
    # The new leader carried the replay to its end, unless the kill landed after the old one
    # had saved the last bar (then there was nothing left to do). It may have had no order left
    # to send either, so its fills are not asked for: check_failover compared every order,
    # fill and trade with the reference already.
    with Store.open(cluster.store_url) as store, store._db.read("runner state") as tx:
        (row,) = tx.all("SELECT epoch, bar_ts_ns FROM runner_state")
    finished_by_old = row["epoch"] == old and row["bar_ts_ns"] == reference.last_bar_ts_ns
    assert row["epoch"] == new or finished_by_old, "trading did not resume"


# Passes through each failpoint of the replay: one per order for the first three, one per bar
# for after_state; the kill lands anywhere from the first order to the last few.
PASSES = {"after_intent": 26, "after_submit": 26, "after_fill": 26, "after_state": 180}


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("point", sorted(PASSES))
def test_many_kills_at_every_failpoint(cluster, reference, point, seed):
    nth = random.Random(f"{point} {seed}").randint(1, PASSES[point])
    primary, standby = cluster.start_pair(f"{point}={nth}")
    old = primary.leader_terms()[0][0]
    assert primary.finish(30)["returncode"] == -signal.SIGKILL, primary.log()
    new = record_takeover(cluster, f"{point}={nth}", primary.exited_ns, old)
    assert finished(standby)["epochs"] == [new]
    check_failover(cluster, reference)


# --------------------------------------------------------------------------- SIGSTOP
def runner_backends_busy(cluster: Cluster) -> list[str]:
    """States of the runners' sessions that are inside a transaction or a statement (a standby
    waiting for the lease has none, so these are the leader's)."""
    import psycopg

    database = cluster.store_url.rsplit("/", 1)[1]
    with psycopg.connect(cluster.store_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT state FROM pg_stat_activity WHERE datname = %s AND application_name = "
            "'quantshift-live-store' AND state <> 'idle'",
            (database,),
        ).fetchall()
    return [state for (state,) in rows]


def freeze_between_transactions(cluster: Cluster, runner: RunnerProcess, rng: random.Random) -> int:
    """SIGSTOP ``runner`` at a random moment outside any store transaction; return the time."""
    for _ in range(100):
        stopped_ns = runner.send(signal.SIGSTOP)
        if not runner_backends_busy(cluster):
            return stopped_ns
        runner.send(signal.SIGCONT)
        time.sleep(rng.uniform(0.002, 0.03))
    raise AssertionError("never caught the leader outside a store transaction")


@pytest.mark.slow  # the default run fences a cut-off primary in tests/test_live_partitions.py
def test_a_primary_frozen_past_its_lease_is_fenced_and_goes_back_to_standby(cluster, reference):
    primary, standby = cluster.start_pair()
    old = primary.leader_terms()[0][0]
    cluster.wait_cycling(primary)
    rng = random.Random(7)
    time.sleep(rng.uniform(0.1, 1.0))
    stopped_ns = freeze_between_transactions(cluster, primary, rng)
    new = record_takeover(cluster, "SIGSTOP", stopped_ns, old)
    time.sleep(0.5)  # the new leader trades while the old one is frozen
    primary.send(signal.SIGCONT)
    finished(standby)
    # Thawed, the old leader finds its term gone, stands by, and once the replay is done
    # takes the lease (a newer epoch) only to find nothing left to do.
    stale = finished(primary)
    assert len(stale["epochs"]) == 2 and stale["epochs"][0] == old < new < stale["epochs"][1]
    check_failover(cluster, reference)
    # No order reached the venue from the thawed leader: an order sent twice was first sent
    # before the freeze (and resent by the new leader's redo), never after it.
    for row in venue_rows(cluster):
        assert row["submits"] == 1 or row["ts_created_ns"] < stopped_ns, row


class FenceBroken(AssertionError):
    """Two leaders held the same epoch, so the store's fence cannot tell them apart."""


def line_time(runner: RunnerProcess, text: str, timeout_s: float) -> int:
    """When ``runner`` logged a line containing ``text`` (waiting for it)."""
    return wait_until(
        lambda: next((ts for ts, line in list(runner.lines) if text in line), None),
        timeout_s,
        f"{runner.label} to log {text!r}\n{runner.log()}",
    )


def quiet_between(cluster: Cluster, start_ns: int, end_ns: int) -> None:
    """Nothing reached the venue or the store's order records between the two times."""
    with Store.open(cluster.store_url) as store:
        events = [e.ts_ns for e in store.order_events()]
        fills = [f.ts_recorded_ns for f in store.fills()]
    sent = [r["ts_created_ns"] for r in venue_rows(cluster)]
    for name, times in (("venue order", sent), ("order event", events), ("fill", fills)):
        assert not [t for t in times if start_ns <= t < end_ns], f"a {name} while nobody led"


# --------------------------------------------------------------------------- Redis outage
@pytest.mark.parametrize("cluster", [{"speed": 25.0}], ids=["slower"], indirect=True)
def test_a_redis_outage_stops_the_leader_at_its_deadline_and_one_runner_resumes(cluster, reference):
    # The standby starts after the primary's claim (the next test shows why that matters), and
    # the slower feed keeps the primary trading through the standby's start and the outage.
    primary = cluster.spawn("primary")
    cluster.wait_cycling(primary)
    standby = cluster.spawn("standby")
    cluster.wait_standing_by(standby)
    old = primary.leader_terms()[0][0]
    assert primary.alive, "the primary finished before the outage"
    killed_ns = cluster.redis.kill()
    # The leader cannot renew: it stops at its local deadline, before the lease's ttl.
    lost_ns = line_time(primary, f"epoch {old} lost", TTL_S + 5)
    assert (lost_ns - killed_ns) / 1e9 < TTL_S
    time.sleep(max(0.0, (killed_ns - time.time_ns()) / 1e9 + TTL_S + 0.5))
    restarted_ns = cluster.redis.start()  # empty: the lease and the epoch counter are gone
    ts, new, _ = wait_until(
        lambda: next((t for t in cluster.leader_terms() if t[1] > old), None),
        15,
        f"a leader after Redis returned\n{cluster.logs()}",
    )
    REDIS_RETURNS.append((ts - restarted_ns) / 1e9)
    # The lease outlives the leader's local deadline by its margin (ttl - deadline, 0.5 s): an
    # order that passed its last leadership check before the deadline may reach the venue
    # inside that margin (a thread descheduled between the check and the send, seen on a loaded
    # machine); none after it, when a successor could first claim.
    quiet_between(cluster, lost_ns + LEASE_MARGIN_NS, cluster.watch.claims.get(new, ts))
    finished(primary)
    finished(standby)
    check_failover(cluster, reference)
    # The new leader carried the replay to its end, unless the kill landed after the old one
    # had saved the last bar (then there was nothing left to do). It may have had no order left
    # to send either, so its fills are not asked for: check_failover compared every order,
    # fill and trade with the reference already.
    with Store.open(cluster.store_url) as store, store._db.read("runner state") as tx:
        (row,) = tx.all("SELECT epoch, bar_ts_ns FROM runner_state")
    finished_by_old = row["epoch"] == old and row["bar_ts_ns"] == reference.last_bar_ts_ns
    assert row["epoch"] == new or finished_by_old, "trading did not resume"


@pytest.mark.slow
def test_a_standby_that_waited_across_a_redis_restart_leads_with_a_newer_epoch(cluster, reference):
    # Regression: a standby read the fence once, when it began to wait; a Redis restarted
    # without its counter then handed it the dead leader's epoch, which the fence accepts.
    primary, standby = cluster.start_pair()
    old = primary.leader_terms()[0][0]
    cluster.wait_cycling(primary)
    cluster.redis.kill()
    primary.send(signal.SIGKILL)  # the old leader is gone for good: only the standby remains
    primary.finish(10)
    time.sleep(0.5)
    cluster.redis.start()
    new = standby.wait_leader(15)[0]
    if new <= old:
        raise FenceBroken(f"the standby leads with epoch {new}, the dead leader had {old}")
    finished(standby)
    check_failover(cluster, reference)


# --------------------------------------------------------------------------- frozen in a write
class LockedTable:
    """Hold a PostgreSQL lock on ``table`` so that the runner's next write to it waits (inside
    its transaction, holding the fence row) until :meth:`release`."""

    def __init__(self, url: str, table: str) -> None:
        import psycopg

        self.url, self.table = url, table
        self.conn = psycopg.connect(url)
        self.conn.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")

    def wait_for_writer(self, timeout_s: float) -> None:
        import psycopg

        database = self.url.rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as conn:

            def waiting() -> bool:
                return bool(
                    conn.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND wait_event_type "
                        "= 'Lock' AND query ILIKE %s",
                        (database, f"INSERT INTO {self.table}%"),
                    ).fetchone()
                )

            wait_until(waiting, timeout_s, f"a writer blocked on {self.table}")

    def release(self) -> None:
        self.conn.commit()
        self.conn.close()


@pytest.mark.slow
def test_a_primary_frozen_inside_a_store_write_is_fenced_and_goes_back_to_standby(
    cluster, reference
):
    # Regression: thawed, the old leader found its session ended by the server (idle in a
    # transaction) and exited 2 on the StoreUnavailableError instead of standing by.
    primary, standby = cluster.start_pair()
    old = primary.leader_terms()[0][0]
    cluster.wait_cycling(primary)
    time.sleep(random.Random(11).uniform(0.2, 1.0))
    lock = LockedTable(cluster.store_url, "runner_state")
    try:
        lock.wait_for_writer(10)
        stopped_ns = primary.send(signal.SIGSTOP)  # inside save_runner_state, holding the fence
    finally:
        lock.release()
    # The frozen session idles inside its transaction: the server ends it and rolls it back.
    new = record_takeover(cluster, "SIGSTOP in a write", stopped_ns, old)
    time.sleep(0.5)
    primary.send(signal.SIGCONT)
    finished(standby)
    stale = primary.finish(60)
    check_failover(cluster, reference)
    for row in venue_rows(cluster):
        assert row["submits"] == 1 or row["ts_created_ns"] < stopped_ns, row
    if stale["returncode"] != 0:
        raise RunnerDied(f"the thawed primary exited {stale['returncode']}\n{primary.log()}")
    assert len(stale["epochs"]) == 2 and stale["epochs"][0] == old < new < stale["epochs"][1]


# --------------------------------------------------------------------------- PostgreSQL outage
def supervise(cluster: Cluster, runners: list[RunnerProcess], timeout_s: float) -> int:
    """Restart runners that exit with an error, as systemd's Restart=on-failure would (after
    0.5 s), until one completes the replay; wait for the rest; return the number of restarts."""
    restarts, give_up = 0, time.monotonic() + timeout_s
    while not any(r.proc.poll() == 0 for r in runners):
        assert time.monotonic() < give_up, f"the replay did not complete\n{cluster.logs()}"
        for runner in [r for r in runners if r.proc.poll() not in (None, 0)]:
            assert restarts < 20, f"restart loop\n{cluster.logs()}"
            runners.remove(runner)
            time.sleep(0.5)
            runners.append(cluster.spawn(f"{runner.label}+"))
            restarts += 1
        time.sleep(0.05)
    for runner in runners:
        finished(runner)
    return restarts


def test_a_postgresql_outage_loses_nothing_and_trading_resumes(postgres, cluster, reference):
    # Regression: a StoreUnavailableError escaped the runner's loop, so the outage ended both
    # runners (exit 2) and only restarts resumed trading. The test restarts dead runners as a
    # supervisor would, checks that nothing was lost even so, and then fails if any died.
    primary, standby = cluster.start_pair()
    old = primary.leader_terms()[0][0]
    cluster.wait_cycling(primary)
    time.sleep(random.Random(5).uniform(0.2, 1.0))
    stopped_ns = postgres.stop("immediate")  # like a crash: sessions cut, nothing flushed
    time.sleep(2.0)
    postgres.start()
    restarts = supervise(cluster, [primary, standby], 90)
    check_failover(cluster, reference)
    with Store.open(cluster.store_url) as store:
        resumed = [f for f in store.fills() if f.epoch > old and f.ts_recorded_ns > stopped_ns]
    assert resumed, "trading did not resume"
    if restarts:
        raise RunnerDied(f"{restarts} runner restart(s) were needed\n{cluster.logs()}")
