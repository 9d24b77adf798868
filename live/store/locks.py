"""The single-runner lock: on a host without a Redis lease, one runner per store.

SQLite: an ``flock`` on ``<database>.lock``; PostgreSQL: a session-level advisory lock.
Both die with the process holding them, so ``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any

from live.store.db import POSTGRES, StoreUrl
from live.store.errors import RunnerLockedError, StoreUnavailableError

_APP_PREFIX = "quantshift-runner"


def _holder_text() -> str:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"pid {os.getpid()} on {socket.gethostname()} since {since}"


class RunnerLock:
    """An exclusive lock on one store for the lifetime of a runner.

    Use as a context manager (``with store.single_runner_lock(): ...``) or call
    :meth:`acquire` and :meth:`release`. Acquiring never waits: a held lock raises
    :class:`RunnerLockedError` naming the holder.
    """

    def __init__(self, url: StoreUrl, *, timeout_s: float = 10.0):
        self._url = url
        self._timeout_s = timeout_s
        self._fd: int | None = None
        self._conn: Any = None

    def __repr__(self) -> str:
        return f"RunnerLock({self._url.shown!r}, held={self.is_held()})"

    @property
    def lock_file(self) -> Path | None:
        """The lock file beside a SQLite database (None for PostgreSQL and in memory)."""
        path = self._url.path
        return None if path is None else path.with_name(path.name + ".lock")

    def __enter__(self) -> RunnerLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunnerLockedError` at once."""
        if self._fd is not None or self._conn is not None:
            return
        if self._url.dialect == POSTGRES:
            self._acquire_advisory()
        elif self.lock_file is not None:
            self._acquire_file(self.lock_file)
        # An in-memory SQLite store is private to its connection: no second runner can share it.

    def release(self) -> None:
        """Give the lock up (no-op when not held)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # ending the session drops its advisory locks
            self._conn = None

    def is_held(self) -> bool:
        """Whether the lock is still ours (a PostgreSQL lock is lost with its connection)."""
        if self._conn is not None:
            try:
                self._conn.execute("SELECT 1")
            except Exception:
                return False
            return True
        return self._fd is not None

    # ------------------------------------------------------------------ SQLite: flock
    def _acquire_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown holder"
            os.close(fd)
            raise RunnerLockedError(
                f"store {self._url.shown} is already used by a runner ({holder}; lock file "
                f"{path}); stop it first, or configure a Redis lease to run a standby"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text().encode(), 0)
        self._fd = fd

    # ------------------------------------------------------------------ PostgreSQL: advisory
    def _acquire_advisory(self) -> None:
        import psycopg

        app = f"{_APP_PREFIX} pid {os.getpid()} on {socket.gethostname()}"[:63]
        try:
            conn = psycopg.connect(
                self._url._conninfo,
                autocommit=True,
                connect_timeout=max(1, round(self._timeout_s)),
                application_name=app,
            )
            database = conn.execute("SELECT current_database()").fetchone()[0]
            key = advisory_key(database)
            locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
            holder = None if locked else _advisory_holder(conn, key)
        except psycopg.Error as exc:
            message = self._url.scrub(str(exc).strip())
            raise StoreUnavailableError(
                f"single-runner lock on {self._url.shown}: {message}"
            ) from None
        if not locked:
            conn.close()
            raise RunnerLockedError(
                f"store {self._url.shown} is already used by a runner ({holder or 'unknown'}; "
                f"advisory lock {key}); stop it first, or configure a Redis lease to run a standby"
            )
        self._conn = conn


def advisory_key(database: str) -> int:
    """Return the signed int64 advisory-lock key of the runner lock on ``database``."""
    digest = hashlib.blake2b(f"quantshift.live.runner:{database}".encode()).digest()[:8]
    return int.from_bytes(digest, signed=True)


def _advisory_holder(conn: Any, key: int) -> str | None:
    """Describe the session holding advisory lock ``key`` (its application name and pid)."""
    # A bigint advisory key is stored as classid (high 32 bits) and objid (low 32 bits).
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        "SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a "
        "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (unsigned >> 32, unsigned & 0xFFFFFFFF),
    ).fetchone()
    return None if row is None else f"{row[0]}, server pid {row[1]}"
