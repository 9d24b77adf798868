"""Primary and standby on two hosts, Redis, PostgreSQL and the paper venue on a third, and real
network partitions between them (network namespaces, veth links, nftables drops, netem delay;
see netns_hosts.py).

After each partition heals, the replay ends as one uninterrupted runner's would (the failover
tests' checks: the same venue executions, fills, trades, positions and equity; epochs only
increasing, no write from a deposed leader; `live reconcile` agrees). Each scenario also adds a
row to a history table, printed at the end of the module and written as JSON: the takeover
time, the most venue executions of any one decision, writes from a stale epoch, fills recorded
twice, and whether reconciliation agrees.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from typing import Any

import pytest
import test_live_failover
from live_cluster import Cluster, PostgresServer, RedisServer
from netns_hosts import Hosts
from test_live_failover import (
    FEED,
    TAKEOVERS,
    check_failover,
    finished,
    record_takeover,
    venue_rows,
)
from typer.testing import CliRunner

from live.cli import app
from live.store import Store

# 25 bars/s: the replay lasts about eight seconds, so that a partition lands mid-run.
SLOWER = {**FEED, "speed": 25.0}
HOLD_S = 1.5  # how long a partition lasts after the takeover it causes
ROWS: list[dict[str, Any]] = []
# The failover tests' fixture: the uninterrupted replay every scenario must end like.
reference = test_live_failover.reference


@pytest.fixture(scope="module", autouse=True)
def partition_table(request, tmp_path_factory):
    """Print the scenarios' table at the end of the module and write it as JSON."""
    yield
    if not ROWS:
        return
    path = tmp_path_factory.getbasetemp() / "partition_table.json"
    path.write_text(json.dumps(ROWS, indent=2))
    header = ("scenario", "takeover s", "orders/decision", "stale writes", "dup fills", "recon",
              "epochs")  # fmt: skip
    lines = [" | ".join(header)]
    for row in ROWS:
        takeover = "-" if row["takeover_s"] is None else f"{row['takeover_s']:.2f}"
        lines.append(
            f"{row['scenario']} | {takeover} | {row['max_orders_per_decision']} | "
            f"{row['stale_epoch_writes']} | {row['duplicate_fills']} | {row['reconciled']} | "
            f"{row['epochs']}"
        )
    lines.append(f"(written to {path})")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            for line in lines:
                reporter.write_line(f"partitions: {line}")


@pytest.fixture(scope="module")
def services():
    """The three hosts and a private PostgreSQL in the services' namespace, for the module."""
    hosts = Hosts.create()
    postgres = PostgresServer(host=hosts.ip["store"], netns=hosts.ns["svc"])
    try:
        postgres.init()
        yield hosts, postgres
    finally:
        postgres.close()
        hosts.close()


@pytest.fixture
def hosts(services):
    """The hosts, healed after each test."""
    hosts = services[0]
    yield hosts
    hosts.undelay()
    hosts.heal()


@pytest.fixture
def cluster(services, hosts, tmp_path):
    """A fresh store database and a Redis of the test's own in the services' namespace."""
    redis = RedisServer(tmp_path, host=hosts.ip["redis"], netns=hosts.ns["svc"])
    built = Cluster(tmp_path, feed=SLOWER, postgres=services[1], redis=redis)
    yield built
    built.close()


def start(cluster: Cluster, hosts: Hosts):
    """Primary on host a, standby on host b; return them and the primary's epoch once it
    trades."""
    primary, standby = cluster.start_pair(netns=(hosts.ns["a"], hosts.ns["b"]))
    old = primary.leader_terms()[0][0]
    cluster.wait_cycling(primary)
    time.sleep(random.Random(3).uniform(0.3, 1.0))
    assert primary.alive, "the primary finished before the partition"
    return primary, standby, old


def takeover(cluster: Cluster, scenario: str, since_ns: int, old: int) -> tuple[int, float]:
    """The failover tests' takeover check (under their goal); return (epoch, seconds)."""
    epoch = record_takeover(cluster, scenario, since_ns, old)
    return epoch, TAKEOVERS[-1][1]


def stale_epoch_writes(cluster: Cluster) -> int:
    """Fenced rows written by an epoch after a newer epoch's claim (check_failover asserts
    there are none; counted here for the table)."""
    claims = dict(cluster.watch.claims)
    for ts, epoch, _ in cluster.leader_terms():
        claims.setdefault(epoch, ts)
    with Store.open(cluster.store_url) as store:
        rows = [(e.ts_ns, e.epoch) for e in store.order_events()]
        rows += [(f.ts_recorded_ns, f.epoch) for f in store.fills()]
        rows += [(t.ts_recorded_ns, t.epoch) for t in store.trades()]
    return sum(any(e > epoch and c <= ts for e, c in claims.items()) for ts, epoch in rows)


def history(cluster: Cluster, scenario: str, takeover_s: float | None) -> dict[str, Any]:
    """The scenario's row of the table, read from the venue and the store."""
    executions = Counter(row["client_order_id"] for row in venue_rows(cluster))
    with Store.open(cluster.store_url) as store:
        fills = Counter((f.venue, f.fill_id) for f in store.fills())
        decided = {i.client_order_id for i in store.intents()}
    assert set(executions) <= decided, "a venue order no decision made"
    done = CliRunner().invoke(app, ["reconcile", "--config", str(cluster.config), "--json"])
    row = {
        "scenario": scenario,
        "takeover_s": takeover_s,
        "max_orders_per_decision": max(executions.values(), default=0),
        "stale_epoch_writes": stale_epoch_writes(cluster),
        "duplicate_fills": sum(n - 1 for n in fills.values()),
        "reconciled": done.exit_code == 0 and json.loads(done.stdout)["ok"],
        "epochs": sorted({e for _, e, _ in cluster.leader_terms()}),
    }
    ROWS.append(row)
    return row


def settle(cluster: Cluster, reference, scenario: str, takeover_s: float | None, *runners):
    """Both runners complete the replay; the history is recorded and checked."""
    for runner in runners:
        finished(runner, 90)
    row = history(cluster, scenario, takeover_s)
    check_failover(cluster, reference)
    assert row["max_orders_per_decision"] <= 1 and row["duplicate_fills"] == 0, row


def cut_and_take_over(cluster, hosts, reference, scenario: str, *services: str) -> None:
    """Cut the primary from ``services``: the standby takes over within the failover goal;
    the partition heals, the old primary stands by and ends with nothing left to do."""
    primary, standby, old = start(cluster, hosts)
    cut_ns = hosts.cut("a", *services)
    _, takeover_s = takeover(cluster, scenario, cut_ns, old)
    time.sleep(HOLD_S)
    hosts.heal()
    settle(cluster, reference, scenario, takeover_s, primary, standby)


# --------------------------------------------------------------------------- the fast set
def test_a_primary_cut_off_from_redis_only_is_replaced_once(cluster, hosts, reference):
    cut_and_take_over(cluster, hosts, reference, "primary cut from Redis", "redis")


def test_a_fully_isolated_primary_is_replaced_once(cluster, hosts, reference):
    cut_and_take_over(cluster, hosts, reference, "primary isolated")


# --------------------------------------------------------------------------- slow variants
@pytest.mark.slow
def test_a_primary_cut_off_from_the_store_only_keeps_or_loses_the_lease_safely(
    cluster, hosts, reference
):
    # The primary still renews its lease, so the standby has nothing to take; with the paper
    # venue in the store, trading waits for the partition to heal and then resumes.
    primary, standby, old = start(cluster, hosts)
    cut_ns = hosts.cut("a", "store")
    time.sleep(4.0)
    heal_ns = hosts.heal()
    later = [(ts, e) for ts, e, _ in cluster.leader_terms() if e > old]
    takeover_s = (later[0][0] - cut_ns) / 1e9 if later else None
    settle(cluster, reference, "primary cut from the store", takeover_s, primary, standby)
    with Store.open(cluster.store_url) as store:
        assert [f for f in store.fills() if f.ts_recorded_ns > heal_ns], "trading did not resume"


@pytest.mark.slow
@pytest.mark.parametrize("period_s", [0.7, 2.5], ids=["within_the_ttl", "past_the_deadline"])
def test_a_flapping_link_leaves_one_leader_per_epoch(cluster, hosts, reference, period_s):
    # Down and up by turns: 0.7 s outages the lease rides out, or 2.5 s ones past the leader's
    # local deadline (the lease may change hands several times).
    primary, standby, old = start(cluster, hosts)
    flap_ns = time.time_ns()
    hosts.flap("a", period_s=period_s, duration_s=4 * period_s if period_s > 1 else 6.0)
    hosts.wait_flapping(30)
    later = [(ts, e) for ts, e, _ in cluster.leader_terms() if e > old]
    takeover_s = (later[0][0] - flap_ns) / 1e9 if later else None
    settle(cluster, reference, f"flapping link ({period_s} s)", takeover_s, primary, standby)


@pytest.mark.slow
def test_a_delay_beyond_the_renew_interval_hands_the_lease_over(cluster, hosts, reference):
    primary, standby, old = start(cluster, hosts)
    delay_ns = time.time_ns()
    hosts.delay("a", 1500)  # each way, past the 1000 ms renew interval and its 750 ms timeout
    _, takeover_s = takeover(cluster, "delay 1.5 s", delay_ns, old)
    time.sleep(HOLD_S)
    hosts.undelay()
    settle(cluster, reference, "delay 1.5 s each way", takeover_s, primary, standby)


@pytest.mark.slow
def test_a_standby_back_during_the_primarys_recovery_leaves_one_leader(cluster, hosts, reference):
    # The standby's host is isolated; the primary is killed and restarted; the standby's link
    # comes back as soon as the restarted primary leads, i.e. while it recovers (redoes the
    # decision in flight). The takeover includes the restart, so the failover goal (a standby
    # already waiting) does not apply to it.
    primary, standby, old = start(cluster, hosts)
    hosts.cut("b")
    time.sleep(1.0)
    killed_ns = primary.send(signal.SIGKILL)
    primary.finish(10)
    restarted = cluster.spawn("primary+", netns=hosts.ns["a"])
    _, led_ns = restarted.wait_leader(60, after_epoch=old)
    hosts.heal("b")
    settle(cluster, reference, "standby back in recovery", (led_ns - killed_ns) / 1e9, restarted,
           standby)  # fmt: skip
