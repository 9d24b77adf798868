"""Failure modes of the store's database connection: a lost PostgreSQL session, a writer frozen
inside a transaction (SIGSTOP), a lost lock session, a busy SQLite file; URLs and masked passwords.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest
from test_live_store import intent, new_pg_database, pg_admin, spawn  # noqa: F401 (fixture)

from live.store import StaleEpochError, Store, StoreUnavailableError
from live.store.db import IDLE_IN_TRANSACTION_MS, parse_url
from quantshift.errors import ConfigError


@pytest.fixture
def pg_url(pg_admin, request):  # noqa: F811 (the imported fixture)
    return new_pg_database(pg_admin, request)


def test_urls_are_parsed_and_passwords_masked(tmp_path):
    assert parse_url("sqlite:///:memory:").path is None
    assert str(parse_url("sqlite:///data/live.db").path) == "data/live.db"
    assert str(parse_url("sqlite:////var/lib/live.db").path) == "/var/lib/live.db"
    pg = parse_url("postgresql+psycopg://trader:hunter2@db.example:5433/live")
    assert pg.dialect == "postgresql" and "hunter2" not in repr(pg)
    assert pg.shown == "postgresql+psycopg://trader:***@db.example:5433/live"
    for bad, match in [
        ("mysql://trader:hunter2@h/db", "scheme"),
        ("sqlite://relative.db", "sqlite:///"),
        ("sqlite:///", "database file"),
        ("postgresql://trader:hunter2@h:5432/", "name the database"),
    ]:
        with pytest.raises(ConfigError, match=match) as info:
            parse_url(bad)
        assert "hunter2" not in str(info.value)


def test_an_unreachable_server_is_reported_without_the_password():
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:1/live") as info:
        Store.open("postgresql://trader:hunter2@127.0.0.1:1/live", timeout_s=2)
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    assert info.value.__cause__ is None and time.monotonic() - start < 10


def test_a_busy_sqlite_store_gives_up_after_its_timeout(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    with Store.open(url, timeout_s=0.3) as store:
        other = sqlite3.connect(tmp_path / "live.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.raises(StoreUnavailableError, match="locked"):
            intent(store)
        other.execute("ROLLBACK")
        assert intent(store).state == "NEW"
        other.close()


def test_the_store_reconnects_after_the_server_drops_its_session(pg_url, pg_admin):  # noqa: F811
    with Store.open(pg_url) as store:
        cid = intent(store).client_order_id
        pid = store._db.connection().info.backend_pid
        pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailableError) as info:
            store.transition(cid, "SUBMITTING", epoch=1)
        assert "secret" not in str(info.value) and "***" in str(info.value)
        # The failed write did not commit; the next call reconnects and succeeds.
        assert store.intent(cid).state == "NEW"
        assert store.transition(cid, "SUBMITTING", epoch=1).state == "SUBMITTING"


FROZEN_WRITER = """
import os, signal, sys
from live.store import Store, StoreUnavailableError
store = Store.open(sys.argv[1])
try:
    with store._db.write("intent of the old leader", 1) as tx:
        print("holding the fence", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)  # frozen mid-transaction, past the lease
        tx.run("UPDATE leader_fence SET ts_updated_ns = 1 WHERE id = 1")
    print("committed", flush=True)
except StoreUnavailableError as exc:
    print("refused:", exc, flush=True)
"""


def test_a_writer_frozen_inside_a_transaction_does_not_block_the_next_leader(pg_url):
    Store.open(pg_url).close()
    frozen = spawn(FROZEN_WRITER, pg_url)
    try:
        assert frozen.stdout.readline().strip() == "holding the fence", frozen.stderr.read()
        with Store.open(pg_url) as store:
            start = time.monotonic()
            assert store.claim_epoch(2) == 2  # waits until the server ends the frozen session
            waited_s = time.monotonic() - start
            assert waited_s < IDLE_IN_TRANSACTION_MS / 1000 + 3.0
            os.kill(frozen.pid, signal.SIGCONT)
            out, err = frozen.communicate(timeout=30)
            assert out.startswith("refused:"), out + err
            assert "secret" not in out
            with pytest.raises(StaleEpochError):  # the old leader, reconnected, stays fenced
                intent(store, epoch=1)
    finally:
        frozen.kill()
        frozen.wait()


def test_a_lost_lock_session_is_reported(pg_url, pg_admin):  # noqa: F811
    with Store.open(pg_url) as store, store.single_runner_lock() as lock:
        assert lock.is_held()
        pg_admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name LIKE 'quantshift-runner%%'",
            (pg_url.rsplit("/", 1)[1],),
        )
        deadline = time.monotonic() + 5
        while lock.is_held():
            assert time.monotonic() < deadline, "a terminated lock session still looks held"
            time.sleep(0.05)
