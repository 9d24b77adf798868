"""The live store's contract, run against SQLite (a temporary file) and the real PostgreSQL.

Migrations, idempotent intents, the order state machine, fills, positions, the epoch fence
(with two real processes racing), halts, the single-runner lock under kill -9, status, metrics.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from live.store import (
    LATEST_VERSION,
    TRANSITIONS,
    HaltedError,
    IllegalTransitionError,
    OrderState,
    RunnerLockedError,
    StaleEpochError,
    Store,
    StoreVersionError,
    UnknownOrderError,
    client_order_id,
)
from quantshift.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SERVER = "postgresql://postgres@127.0.0.1:5432"
TABLES = (
    "order_intents", "order_events", "orders", "fills", "trades", "positions",
    "equity_snapshots", "heartbeats", "sleeve_performance", "halts", "promotions",
)  # fmt: skip
BAR_NS = 86_400 * 10**9


def pg_admin_connection():
    """An autocommit connection to the server's ``postgres`` database, or skip (fail on CI)."""
    import psycopg

    try:
        return psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {SERVER} is required on CI: {exc}")
        pytest.skip(f"PostgreSQL at {SERVER} is not reachable: {exc}")


@pytest.fixture(scope="module")
def pg_admin():
    admin = pg_admin_connection()
    yield admin
    admin.close()


def new_pg_database(admin, request) -> str:
    """Create a uniquely named database, dropped WITH (FORCE) after the test; return its URL."""
    name = f"qs_store_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    request.addfinalizer(lambda: admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    # The password is ignored (trust auth); it is there to be masked.
    return f"postgresql://postgres:secret@127.0.0.1:5432/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """URL of a fresh, empty store on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'live.db'}"
    return new_pg_database(request.getfixturevalue("pg_admin"), request)


@pytest.fixture
def store(url):
    with Store.open(url) as opened:
        yield opened


def intent(store, *, epoch=1, bar=0, sleeve="ma", symbol="SPY", side="buy", qty=10.0):
    return store.record_intent(
        sleeve=sleeve, symbol=symbol, side=side, qty=qty, bar_ts_ns=bar * BAR_NS,
        venue="paper", epoch=epoch,
    )  # fmt: skip


def table_counts(store) -> dict[str, int]:
    with store._db.read("count") as tx:
        return {t: tx.one(f"SELECT COUNT(*) AS n FROM {t}")["n"] for t in TABLES}


def spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --------------------------------------------------------------------------- client order ids
def test_client_order_id_is_deterministic_across_processes():
    args = ("ma_crossover", "BTC/USD", 1_700_000_000_000_000_000, "buy")
    code = "import sys; from live.store import client_order_id as c; print(c(*sys.argv[1:3], "
    code += "int(sys.argv[3]), sys.argv[4]))"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True,
            text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }  # fmt: skip
    assert seen == {client_order_id(*args)}
    assert client_order_id(*args) == client_order_id(args[0], args[1], args[2], "BUY")


def test_client_order_id_differs_per_decision_and_fits_the_venue():
    base = ("ma", "SPY", 5, "buy")
    variants = [base, ("mb", "SPY", 5, "buy"), ("ma", "QQQ", 5, "buy"), ("ma", "SPY", 6, "buy")]
    variants += [("ma", "SPY", 5, "sell"), ("m", "aSPY", 5, "buy"), ("maS", "PY", 5, "buy")]
    assert len({client_order_id(*v) for v in variants}) == len(variants)
    for max_len in (18, 20, 36, 128):
        cid = client_order_id(*base, venue_max_len=max_len)
        assert 0 < len(cid) <= max_len and cid.isalnum() and cid.isascii()
    assert client_order_id(*base, venue_max_len=18) != client_order_id("mb", "SPY", 5, "buy", 18)
    for bad in [("", "SPY", 5, "buy"), ("ma", "SPY", 5.0, "buy"), ("ma", "SPY", True, "buy")]:
        with pytest.raises(ConfigError):
            client_order_id(*bad)
    with pytest.raises(ConfigError, match="side"):
        client_order_id("ma", "SPY", 5, "hold")
    with pytest.raises(ConfigError, match="too short"):
        client_order_id(*base, venue_max_len=17)


# --------------------------------------------------------------------------- migrations
def test_migrations_are_idempotent(url):
    for _ in range(2):
        with Store.open(url) as store:
            assert store.schema_version == LATEST_VERSION
            assert set(table_counts(store).values()) == {0}
            with store._db.read("versions") as tx:
                rows = tx.all("SELECT version FROM schema_version ORDER BY version")
                fence = tx.all("SELECT * FROM leader_fence")
            assert [r["version"] for r in rows] == list(range(1, LATEST_VERSION + 1))
            assert len(fence) == 1 and fence[0]["epoch"] == 0


def test_concurrent_opens_apply_each_migration_once(url):
    opened, errors = [], []
    barrier = threading.Barrier(4)

    def open_store():
        try:
            barrier.wait()
            opened.append(Store.open(url))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(opened) == 4
    with opened[0]._db.read("versions") as tx:
        assert tx.one("SELECT COUNT(*) AS n FROM schema_version")["n"] == LATEST_VERSION
    for store in opened:
        store.close()


def test_newer_schema_is_refused(url):
    future = LATEST_VERSION + 1
    with Store.open(url) as store, store._db.transaction("tamper") as tx:
        tx.run(
            "INSERT INTO schema_version (version, name, checksum, ts_applied_ns) "
            "VALUES (?, 'future', 'x', 0)",
            (future,),
        )
    with pytest.raises(StoreVersionError, match=f"schema version {future}.*newer") as info:
        Store.open(url)
    assert "secret" not in str(info.value)


def test_edited_migration_is_refused(url):
    with Store.open(url) as store, store._db.transaction("tamper") as tx:
        tx.run("UPDATE schema_version SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(StoreVersionError, match="0001_initial was changed after it was applied"):
        Store.open(url)


# --------------------------------------------------------------------------- intents, states
def test_recording_an_intent_twice_returns_the_first_row(store):
    first = intent(store, epoch=1, qty=10.0)
    again = intent(store, epoch=2, qty=99.0)  # a re-decision after failover: first one wins
    assert again == first and first.state == OrderState.NEW and first.qty == 10.0
    assert first.client_order_id == client_order_id("ma", "SPY", 0, "buy")
    assert table_counts(store)["order_intents"] == 1
    assert [e.to_state for e in store.order_events()] == ["NEW"]
    assert store.fence_epoch() == 2  # the second call was still a fenced write


def test_legal_transitions_succeed_and_illegal_ones_change_nothing(store):
    cid = intent(store).client_order_id
    with pytest.raises(IllegalTransitionError, match="NEW -> FILLED"):
        store.transition(cid, "FILLED", epoch=1)
    for state in ("SUBMITTING", "SUBMITTED", "ACKED", "PARTIALLY_FILLED", "UNKNOWN"):
        assert store.transition(cid, state, epoch=1, reason="test").state == state
    before = (store.intent(cid), store.order_events(cid))
    for illegal in ("NEW", "SUBMITTING", "UNKNOWN"):  # back, or to the same state
        with pytest.raises(IllegalTransitionError):
            store.transition(cid, illegal, epoch=1)
    with pytest.raises(IllegalTransitionError, match="expected ACKED"):
        store.transition(cid, "FILLED", epoch=1, expected_state="ACKED")
    assert (store.intent(cid), store.order_events(cid)) == before
    done = store.transition(cid, "FILLED", epoch=1, broker_order_id="B-1", broker_status="filled")
    assert done.state == "FILLED" and not done.is_open
    assert store.order(cid).broker_order_id == "B-1"
    with pytest.raises(IllegalTransitionError, match="final"):
        store.transition(cid, "CANCELLED", epoch=1)
    with pytest.raises(UnknownOrderError):
        store.transition("qsnothing", "SUBMITTING", epoch=1)
    with pytest.raises(ConfigError, match="to_state"):
        store.transition(cid, "DONE", epoch=1)
    events = [(e.from_state, e.to_state) for e in store.order_events(cid)]
    assert events[0] == (None, "NEW") and events[-1] == ("UNKNOWN", "FILLED")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(list(OrderState)), max_size=8))
def test_state_machine_follows_the_transition_table(targets):
    with Store.open("sqlite:///:memory:") as store:
        cid = intent(store).client_order_id
        state = OrderState.NEW
        for target in targets:
            if target in TRANSITIONS[state]:
                assert store.transition(cid, target, epoch=1).state == target
                state = target
            else:
                with pytest.raises(IllegalTransitionError):
                    store.transition(cid, target, epoch=1)
            assert store.intent(cid).state == state


def test_only_one_of_two_racing_submitters_wins(url):
    with Store.open(url) as first, Store.open(url) as second:
        for bar in range(5):
            cid = intent(first, bar=bar).client_order_id
            barrier, outcomes = threading.Barrier(2), []

            def submit(store, cid=cid, barrier=barrier, outcomes=outcomes):
                barrier.wait()
                try:
                    store.transition(cid, "SUBMITTING", epoch=1, expected_state="NEW")
                    outcomes.append("won")
                except IllegalTransitionError:
                    outcomes.append("refused")

            threads = [threading.Thread(target=submit, args=(s,)) for s in (first, second)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(outcomes) == ["refused", "won"]
            assert [e.to_state for e in first.order_events(cid)] == ["NEW", "SUBMITTING"]


# --------------------------------------------------------------------------- fills, positions
def test_fills_are_idempotent_and_may_arrive_out_of_order(store):
    cid = intent(store, qty=10.0).client_order_id
    store.transition(cid, "SUBMITTING", epoch=1)

    def fill(fill_id, qty, price, ts):
        return store.record_fill(
            venue="paper", fill_id=fill_id, client_order_id=cid, qty=qty, price=price,
            ts_fill_ns=ts, epoch=1, fee=0.5,
        )  # fmt: skip

    assert fill("f2", 6.0, 101.0, 20)  # the later execution is reported first
    partial = store.intent(cid)
    assert (partial.state, partial.filled_qty, partial.avg_fill_price) == (
        "PARTIALLY_FILLED",
        6,
        101,
    )
    assert fill("f1", 4.0, 100.0, 10)
    assert not fill("f1", 4.0, 100.0, 10) and not fill("f2", 1.0, 1.0, 99)  # duplicates
    done = store.intent(cid)
    assert done.state == "FILLED" and done.filled_qty == 10.0 and done.remaining_qty == 0.0
    assert done.avg_fill_price == pytest.approx((6 * 101 + 4 * 100) / 10, rel=1e-15)
    assert [f.fill_id for f in store.fills(cid)] == ["f1", "f2"]
    with pytest.raises(UnknownOrderError, match="qsnothing"):
        store.record_fill(
            venue="paper", fill_id="f9", client_order_id="qsnothing", qty=1, price=1,
            ts_fill_ns=1, epoch=1,
        )  # fmt: skip


def test_a_late_fill_of_a_cancelled_order_is_kept(store):
    cid = intent(store, qty=10.0).client_order_id
    for state in ("SUBMITTING", "ACKED", "CANCELLED"):
        store.transition(cid, state, epoch=1)
    assert store.record_fill(
        venue="paper", fill_id="late", client_order_id=cid, qty=3, price=50, ts_fill_ns=1, epoch=1
    )
    kept = store.intent(cid)
    assert (kept.state, kept.filled_qty, kept.avg_fill_price) == ("CANCELLED", 3.0, 50.0)


def test_positions_only_move_forward_in_time(store):
    def put(qty, ts):
        return store.upsert_position(
            sleeve="ma", symbol="SPY", qty=qty, avg_price=100.0, ts_ns=ts, epoch=1,
            details={"stop": 95.0},
        )  # fmt: skip

    assert put(10.0, 200)
    assert not put(5.0, 100)  # older: ignored
    assert store.positions()[0].qty == 10.0 and store.positions()[0].ts_ns == 200
    assert put(-4.0, 300)
    assert put(-3.0, 300)  # same time: overwrites
    assert store.positions()[0].qty == -3.0 and store.positions()[0].details == {"stop": 95.0}
    assert put(0.0, 400) and store.positions() == []
    assert store.positions(include_flat=True)[0].ts_ns == 400


# --------------------------------------------------------------------------- the fence
def stale_writes(store, cid, epoch):
    """Every fenced write, with ``epoch``."""
    yield lambda: intent(store, epoch=epoch, bar=7)
    yield lambda: store.transition(cid, "SUBMITTING", epoch=epoch)
    yield lambda: store.record_fill(
        venue="paper", fill_id="x", client_order_id=cid, qty=1, price=1, ts_fill_ns=1, epoch=epoch
    )
    yield lambda: store.record_trade(
        trade_id="t", sleeve="ma", symbol="SPY", direction="long", qty=1, entry_ts_ns=1,
        exit_ts_ns=2, entry_price=1, exit_price=2, pnl=1, epoch=epoch,
    )  # fmt: skip
    yield lambda: store.upsert_position(
        sleeve="ma", symbol="SPY", qty=1, avg_price=1, ts_ns=10**18, epoch=epoch
    )
    yield lambda: store.record_equity(ts_ns=1, equity=1.0, epoch=epoch)
    yield lambda: store.claim_epoch(epoch)


def test_the_fence_rejects_stale_epochs_and_rises_with_new_ones(store):
    cid = intent(store, epoch=5).client_order_id
    assert store.fence_epoch() == 5
    counts, events = table_counts(store), store.order_events()
    for write in stale_writes(store, cid, 4):
        with pytest.raises(StaleEpochError, match=r"epoch 4.*epoch 5") as info:
            write()
        assert (info.value.epoch, info.value.fence_epoch) == (4, 5)
    assert table_counts(store) == counts and store.order_events() == events
    assert store.intent(cid).state == "NEW" and store.fence_epoch() == 5
    assert store.transition(cid, "SUBMITTING", epoch=6).state == "SUBMITTING"
    assert store.fence_epoch() == 6
    with pytest.raises(StaleEpochError):
        store.transition(cid, "SUBMITTED", epoch=5)
    with pytest.raises(StaleEpochError):  # single-host mode cannot write after a leased leader
        intent(store, epoch=None, bar=8)
    assert store.claim_epoch(9) == 9 and store.fence_epoch() == 9


RACER = """
import json, sys, time
from live.store import Store, StaleEpochError
url, name, epoch, slot_s, delay_s, until_s, pause_s = sys.argv[1:8]
epoch, slot_s, delay_s, until_s = int(epoch), float(slot_s), float(delay_s), float(until_s)
store = Store.open(url)
print("ready", flush=True)
sys.stdin.readline()
start = time.monotonic()
time.sleep(delay_s)
ok = stale = ok_after_stale = bar = 0
while (elapsed := time.monotonic() - start) < until_s:
    bar += 1
    if slot_s:  # leapfrog: in time slot k one writer has epoch 2k + 1, the other 2k; alternating
        k = int(elapsed / slot_s)
        epoch = 2 * k + (int(sys.argv[3]) ^ (k % 2))
    try:
        store.record_intent(sleeve=name, symbol="X", side="buy", qty=1.0, bar_ts_ns=bar,
                            venue="paper", epoch=epoch)
        ok += 1
        ok_after_stale += stale > 0
    except StaleEpochError:
        stale += 1
    time.sleep(float(pause_s))
print(json.dumps({"ok": ok, "stale": stale, "ok_after_stale": ok_after_stale}))
"""


def race(url, *writers):
    """Run RACER processes (name, epoch or parity, leapfrog slot seconds, start delay)."""
    Store.open(url).close()
    # SQLite's busy handler polls with growing sleeps, so a writer that never pauses starves
    # the other; a live runner writes a few times per bar, so pausing 1 ms is still harsh.
    pause = "0.001" if url.startswith("sqlite") else "0"
    procs = [spawn(RACER, url, name, str(epoch), str(slot), str(delay), "0.7", pause)
             for name, epoch, slot, delay in writers]  # fmt: skip
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    results = [json.loads(out) for out, _ in outs]
    with Store.open(url) as store:
        events = store.order_events()
        intents = store.intents()
    # The fence's invariant: in commit order (seq: every write holds the fence row from its
    # check to its commit) the epochs of committed writes never decrease.
    epochs = [e.epoch for e in events]
    assert epochs == sorted(epochs)
    for (name, *_), result in zip(writers, results, strict=True):
        assert sum(i.sleeve == name for i in intents) == result["ok"] > 0, outs
    return results, events


def test_a_stale_leader_cannot_write_once_the_new_one_has(url):
    """Epoch 4 hammers the store; epoch 5 joins: after its first commit no epoch-4 write does."""
    (old, new), events = race(url, ("old", 4, 0, 0.0), ("new", 5, 0, 0.25))
    assert old["stale"] > 0 and old["ok_after_stale"] == 0 and new["stale"] == 0
    assert max(e.seq for e in events if e.epoch == 4) < min(e.seq for e in events if e.epoch == 5)


def test_leapfrogging_leaders_never_commit_a_stale_write(url):
    """Two writers take the lead in turn every 20 ms, so the fence moves dozens of times
    under contention; every move is a chance for a check/write interleaving."""
    results, events = race(url, ("even", 0, 0.02, 0.0), ("odd", 1, 0.02, 0.0))
    assert all(r["stale"] > 0 for r in results)
    assert len({e.epoch for e in events}) > 15


# --------------------------------------------------------------------------- halts, lock
def test_a_halt_survives_reopening_until_a_person_resumes(url):
    with Store.open(url) as store:
        assert store.active_halt() is None and store.resume("ops") is None
        halt = store.halt("guard: 500 orders in one decision", by="runner@a", epoch=3)
        assert store.halt("guard again", by="runner@a", epoch=3) == halt  # one HALT, first reason
    with Store.open(url) as store:
        assert store.active_halt() == halt and halt.active and halt.epoch == 3
        assert store.status().halt == halt
        cleared = store.resume("alice")
        assert cleared.halt_id == halt.halt_id and cleared.cleared_by == "alice"
    with Store.open(url) as store:
        assert store.active_halt() is None
        assert store.halts() == [cleared] and not cleared.active
        assert store.halt("kill switch", by="bob").halt_id != halt.halt_id


def test_no_order_is_sent_while_halted_but_a_flatten_order_is(store):
    entry, flatten = intent(store, bar=1).client_order_id, intent(store, bar=2).client_order_id
    store.halt("kill switch", by="bob")
    with pytest.raises(HaltedError, match="kill switch"):
        store.transition(entry, "SUBMITTING", epoch=1)
    assert store.intent(entry).state == "NEW"
    assert store.transition(flatten, "SUBMITTING", epoch=1, during_halt=True).state == "SUBMITTING"
    assert store.transition(flatten, "SUBMITTED", epoch=1).state == "SUBMITTED"  # not a send
    store.resume("alice")
    assert store.transition(entry, "SUBMITTING", epoch=1).state == "SUBMITTING"


LOCK_HOLDER = """
import sys, time
from live.store import Store
lock = Store.open(sys.argv[1]).single_runner_lock()
lock.acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_the_single_runner_lock_refuses_a_second_runner_and_dies_with_its_holder(url):
    holder = spawn(LOCK_HOLDER, url)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        with Store.open(url) as store:
            lock = store.single_runner_lock()
            with pytest.raises(RunnerLockedError, match=f"already used by a runner.*{holder.pid}"):
                lock.acquire()
            assert not lock.is_held()
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=30)
            deadline = time.monotonic() + 10  # the server notices the dead client's socket
            while True:
                try:
                    lock.acquire()
                    break
                except RunnerLockedError:
                    assert time.monotonic() < deadline, "lock not released after kill -9"
                    time.sleep(0.05)
            assert lock.is_held()
            with pytest.raises(RunnerLockedError), store.single_runner_lock():
                pass  # a second runner in the same process is refused too
            lock.release()
            with store.single_runner_lock() as again:
                assert again.is_held()
            assert "secret" not in repr(lock)
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- status, metrics
def test_status_reports_leader_epoch_heartbeats_positions_pnl_and_halt(store):
    day0 = 1_700_000_000 * 10**9 - (1_700_000_000 * 10**9) % BAR_NS
    assert store.heartbeat("host-a", "leader", 1, day0 + 1, {"cycle": 1})
    assert store.heartbeat("host-b", "standby", 0, day0 + 2)
    assert store.heartbeat("host-b", "leader", 2, day0 + 5)  # took over
    assert not store.heartbeat("host-b", "leader", 2, day0 + 4)  # late: ignored
    store.claim_epoch(2)
    store.upsert_position(sleeve="ma", symbol="SPY", qty=3.0, avg_price=100.0, ts_ns=9, epoch=2)
    store.upsert_position(sleeve="ma", symbol="QQQ", qty=0.0, avg_price=None, ts_ns=9, epoch=2)
    for ts, equity in ((day0 - 10, 1000.0), (day0 + 10, 1010.0), (day0 + 20, 1025.5)):
        store.record_equity(ts_ns=ts, equity=equity, cash=500.0, unrealized_pnl=5.0, epoch=2)
    store.record_trade(
        trade_id="t1", sleeve="ma", symbol="SPY", direction="long", qty=1, entry_ts_ns=1,
        exit_ts_ns=2, entry_price=100, exit_price=112.5, pnl=12.5, epoch=2,
    )  # fmt: skip
    intent(store, epoch=2)
    store.halt("daily loss limit", by="runner@host-b", epoch=2)
    status = store.status()
    assert status.fence_epoch == 2 and status.schema_version == LATEST_VERSION
    assert (status.leader.host, status.leader.epoch) == ("host-b", 2)
    assert status.last_heartbeat_ns == day0 + 5 and len(status.heartbeats) == 2
    assert [(p.symbol, p.qty) for p in status.positions] == [("SPY", 3.0)]
    assert status.equity.equity == 1025.5 and status.day_pnl == 25.5
    assert status.realized_pnl == 12.5 and status.open_orders == 1
    assert status.halt.reason == "daily loss limit"
    as_dict = status.to_dict()
    assert json.loads(json.dumps(as_dict))["leader"]["host"] == "host-b"
    assert "secret" not in json.dumps(as_dict)


def test_performance_matches_a_hand_computation(store):
    pnls = [100.0, -50.0, 30.0, 0.0, -20.0]  # a zero-P&L trade counts as a loss
    for k, pnl in enumerate(pnls):
        store.record_trade(
            trade_id=f"t{k}", sleeve="ma", symbol="SPY", direction="long", qty=1.0,
            entry_ts_ns=k, exit_ts_ns=k + 1, entry_price=100.0, exit_price=100.0 + pnl,
            pnl=pnl, epoch=1,
        )  # fmt: skip
    # returns +10%, -10%, +10%, +10%, -5%: mean 0.03; squared deviations from it sum to 0.038
    for ts, equity in enumerate([1000.0, 1100.0, 990.0, 1089.0, 1197.9, 1138.005]):
        store.record_equity(sleeve="ma", ts_ns=ts, equity=equity, epoch=1)
    perf = store.update_performance("ma", periods_per_year=252)
    assert (perf.trades, perf.wins, perf.win_rate_pct, perf.pnl) == (5, 2, 40.0, 60.0)
    assert perf.avg_win == 65.0 and perf.avg_loss == pytest.approx(-70.0 / 3, rel=1e-15)
    assert (perf.largest_win, perf.largest_loss) == (100.0, -50.0)
    assert perf.profit_factor == pytest.approx(130.0 / 70.0, rel=1e-15)
    assert perf.sharpe == pytest.approx(0.03 / math.sqrt(0.038 / 4) * math.sqrt(252), rel=1e-9)
    assert perf.max_drawdown_pct == pytest.approx(10.0, rel=1e-12)  # 1100 -> 990
    assert perf.current_drawdown_pct == pytest.approx(5.0, rel=1e-12)  # 1197.9 -> 1138.005
    assert store.performance() == [perf] and store.status().performance == [perf]
    store.record_trade(
        trade_id="t9", sleeve="rsi", symbol="SPY", direction="short", qty=1.0, entry_ts_ns=1,
        exit_ts_ns=2, entry_price=100.0, exit_price=90.0, pnl=10.0, epoch=1,
    )  # fmt: skip
    only_wins = store.update_performance("rsi")
    assert only_wins.profit_factor == math.inf and math.isnan(only_wins.avg_loss)
    assert math.isnan(only_wins.sharpe) and math.isnan(only_wins.max_drawdown_pct)
    assert store.performance("rsi") == [only_wins]


def test_performance_equals_the_backtest_metrics_of_the_same_trades(tmp_path):
    import quantshift as qs

    bars = qs.load_bars("synthetic:symbols=1,bars=600,seed=3,gaps=0")
    result = qs.backtest("ma_crossover", bars, {"fast": 5, "slow": 20}, fees_bps=1.0,
                         periods_per_year=252.0)  # fmt: skip
    closed = result.trades[result.trades["exit_reason"] != "open"]
    with Store.open(f"sqlite:///{tmp_path / 'live.db'}") as store:
        for k, trade in enumerate(closed.itertuples()):
            store.record_trade(
                trade_id=f"t{k}", sleeve="ma", symbol=trade.symbol, direction=trade.direction,
                qty=trade.units, entry_ts_ns=trade.entry_time.value,
                exit_ts_ns=trade.exit_time.value, entry_price=trade.entry_price,
                exit_price=trade.exit_price, pnl=trade.pnl, epoch=0,
            )  # fmt: skip
        curve = [result.config.cash, *result.equity.iloc[:, 0]]
        for ts, equity in enumerate(curve):
            store.record_equity(sleeve="ma", ts_ns=ts, equity=equity, epoch=0)
        perf = store.update_performance("ma", periods_per_year=252.0).to_dict()
    expected = result.metrics
    assert perf["trades"] == expected["trades"] > 5
    for key in ("win_rate_pct", "profit_factor", "avg_win", "avg_loss", "largest_win",
                "largest_loss", "sharpe", "max_drawdown_pct"):  # fmt: skip
        assert perf[key] == pytest.approx(expected[key], rel=1e-9), key


# --------------------------------------------------------------------------- promotions
def test_promotions_keep_one_active_record_per_stage(store):
    record = '{"strategy": "ma", "params": {"fast": 5}, "gate": "passed"}'
    first = store.add_promotion(
        name="ma", stage="paper", code_fingerprint="abc", record=record, created_by="alice"
    )
    assert first.active and first.record == record and first.record_dict()["gate"] == "passed"
    second = store.add_promotion(
        name="ma", stage="paper", code_fingerprint={"strategy_hash": "def"},
        record={"params": {"fast": 7}}, created_by="bob",
    )  # fmt: skip
    assert store.active_promotion("ma", "paper") == second
    assert store.activate_promotion(first.promotion_id).active  # rollback
    assert store.active_promotion("ma", "paper").promotion_id == first.promotion_id
    assert [p.active for p in store.promotions("ma")] == [True, False]
    assert store.active_promotion("ma", "live") is None
    with pytest.raises(ConfigError, match="JSON"):
        store.add_promotion(
            name="ma", stage="live", code_fingerprint="x", record="{", created_by="c"
        )


# --------------------------------------------------------------------------- latency
@pytest.mark.slow
def test_write_latency(store):
    """Median of 200 decisions: intent insert + transition + fill, each its own commit."""
    times = []
    for bar in range(200):
        start = time.perf_counter()
        cid = intent(store, bar=bar).client_order_id
        store.transition(cid, "SUBMITTING", epoch=1)
        store.record_fill(
            venue="paper", fill_id=f"f{bar}", client_order_id=cid, qty=10.0, price=100.0,
            ts_fill_ns=bar, epoch=1,
        )  # fmt: skip
        times.append(time.perf_counter() - start)
    median_ms = 1000 * sorted(times)[len(times) // 2]
    print(f"\n{store.dialect}: intent + transition + fill median {median_ms:.2f} ms")
    assert median_ms < 100.0
