"""Database access of the live store: store URLs, the SQLite/PostgreSQL shim, transactions.

SQL is written once with ``?`` placeholders (PostgreSQL gets ``%s``); no ORM.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from live.store.errors import StaleEpochError, StoreError, StoreUnavailableError
from quantshift.errors import ConfigError
from quantshift.urls import mask_secrets, postgres_url

SQLITE = "sqlite"
POSTGRES = "postgresql"
MEMORY = ":memory:"
_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
IDLE_IN_TRANSACTION_MS = 2000
"""PostgreSQL ends a session idle inside a transaction this long (ms), releasing its locks."""
# SQLite errors that mean "try again later", not a bug in our SQL.
_SQLITE_TRANSIENT = ("locked", "busy", "disk i/o", "unable to open", "readonly")


@dataclass(frozen=True)
class StoreUrl:
    """A parsed store URL; ``shown`` is the URL with its password masked."""

    dialect: str
    shown: str
    path: Path | None  # the SQLite file; None in memory and for PostgreSQL
    _conninfo: str  # the PostgreSQL URL passed to libpq (may hold a password)
    _password: str | None

    def __repr__(self) -> str:
        return f"StoreUrl({self.shown!r})"

    def scrub(self, text: str) -> str:
        """Return ``text`` with this URL's password masked wherever it appears."""
        return mask_secrets(text, self._password)


def parse_url(url: str) -> StoreUrl:
    """Parse ``sqlite:///path.db``, ``sqlite:///:memory:`` or ``postgresql://user@host/db``.

    Raises
    ------
    ConfigError
        On another scheme or a URL without a database, naming the URL (password masked).
    """
    if not isinstance(url, str):
        raise ConfigError(f"store URL must be a string, got {type(url).__name__}")
    shown = mask_secrets(url)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == SQLITE:
        if not url.startswith("sqlite:///"):
            raise ConfigError(
                f"store URL {shown!r}: a SQLite URL is sqlite:///relative.db, "
                "sqlite:////absolute/path.db or sqlite:///:memory:"
            )
        raw = unquote(url[len("sqlite:///") :])
        if not raw or "?" in raw:
            raise ConfigError(f"store URL {shown!r}: name a database file (no query options)")
        path = None if raw == MEMORY else Path(raw)
        return StoreUrl(SQLITE, shown, path, "", None)
    if scheme in _PG_SCHEMES:
        conninfo = postgres_url(url, "libpq")
        parts = urlsplit(conninfo)
        if not parts.path.strip("/"):
            raise ConfigError(f"store URL {shown!r}: name the database (postgresql://host/db)")
        return StoreUrl(POSTGRES, shown, None, conninfo, parts.password)
    raise ConfigError(
        f"store URL {shown!r}: scheme must be sqlite:/// or postgresql://, got {scheme or url!r}"
    )


def _dict_row(cursor: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    return {d[0]: value for d, value in zip(cursor.description, row, strict=True)}


class Tx:
    """One open transaction: run SQL written with ``?`` placeholders."""

    def __init__(self, db: Database, cursor: Any):
        self._db = db
        self._cursor = cursor

    def all(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        """Run ``sql`` and return every row as a dict."""
        cur = self._cursor.execute(self._db.sql(sql), params)
        return cur.fetchall() if cur.description else []

    def one(self, sql: str, params: tuple | list = ()) -> dict[str, Any] | None:
        """Run ``sql`` and return its first row (None without rows)."""
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def run(self, sql: str, params: tuple | list = ()) -> int:
        """Run ``sql`` and return the number of rows it changed."""
        cur = self._cursor.execute(self._db.sql(sql), params)
        if cur.description:  # RETURNING: count the rows (SQLite's rowcount lags until fetched)
            return len(cur.fetchall())
        return cur.rowcount


class Database:
    """One connection to the store's database; threads share it one call at a time.

    Parameters
    ----------
    url : StoreUrl
        Where the database is.
    timeout_s : float
        How long to wait for the connection, for the write lock (SQLite busy timeout,
        PostgreSQL ``lock_timeout``) before raising :class:`StoreUnavailableError`.
    """

    def __init__(self, url: StoreUrl, *, timeout_s: float):
        self.url = url
        self.dialect = url.dialect
        self.timeout_s = timeout_s
        self._conn: Any = None
        self._lock = threading.RLock()
        self._sql_cache: dict[str, str] = {}
        self.for_update = " FOR UPDATE" if url.dialect == POSTGRES else ""

    # ------------------------------------------------------------------ connection
    def sql(self, text: str) -> str:
        """Return ``text`` in this dialect's placeholder style."""
        if self.dialect == SQLITE:
            return text
        out = self._sql_cache.get(text)
        if out is None:
            out = self._sql_cache[text] = text.replace("%", "%%").replace("?", "%s")
        return out

    def _connect(self) -> Any:
        if self.dialect == SQLITE:
            return self._connect_sqlite()
        import psycopg
        from psycopg.rows import dict_row

        conn = psycopg.connect(
            self.url._conninfo,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=max(1, round(self.timeout_s)),
            application_name="quantshift-live-store",
            # Notice a server that vanished without closing the socket (host down, partition)
            # within about the timeout, instead of the kernel's default of minutes.
            keepalives=1,
            keepalives_idle=max(1, round(self.timeout_s / 2)),
            keepalives_interval=1,
            keepalives_count=3,
            tcp_user_timeout=int(self.timeout_s * 1000),
        )
        conn.execute(f"SET lock_timeout = {int(self.timeout_s * 1000)}")
        # A writer stopped (SIGSTOP, hung) inside a transaction holds the fence row: the server
        # ends its session soon, so the next leader is not blocked behind it. Our transactions
        # never wait on anything but the database, so a healthy one is never idle that long.
        conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")
        return conn

    def _connect_sqlite(self) -> sqlite3.Connection:
        path = self.url.path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            MEMORY if path is None else str(path),
            timeout=self.timeout_s,
            isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
            check_same_thread=False,  # guarded by self._lock
        )
        conn.row_factory = _dict_row
        conn.execute("PRAGMA foreign_keys = ON")
        if path is not None:
            # WAL: readers (live status) never block the writer. synchronous=FULL: a committed
            # intent survives a power cut, since the broker call follows the commit.
            deadline = time.monotonic() + self.timeout_s
            while True:
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            conn.execute("PRAGMA synchronous = FULL")
        return conn

    def connection(self) -> Any:
        """Return the open connection, reconnecting after a PostgreSQL connection was lost."""
        conn = self._conn
        if conn is not None and self.dialect == POSTGRES and (conn.closed or conn.broken):
            conn.close()
            conn = self._conn = None
        if conn is None:
            conn = self._conn = self._connect()
        return conn

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn driver errors that mean "unreachable or busy" into StoreUnavailableError."""
        try:
            yield
        except StoreError:
            raise
        except sqlite3.OperationalError as exc:
            if not any(word in str(exc).lower() for word in _SQLITE_TRANSIENT):
                raise
            raise StoreUnavailableError(f"{what} on {self.url.shown}: {exc}") from None
        except Exception as exc:
            if self.dialect != POSTGRES or not _pg_unavailable(exc, self._conn):
                raise
            message = self.url.scrub(str(exc).strip())
            raise StoreUnavailableError(f"{what} on {self.url.shown}: {message}") from None

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def transaction(self, what: str) -> Iterator[Tx]:
        """Run the block in one write transaction (SQLite ``BEGIN IMMEDIATE``); commit at the
        end, roll back on an exception. ``what`` names the operation in error messages."""
        with self._lock, self._errors(what):
            conn = self.connection()
            if self.dialect == SQLITE:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield Tx(self, conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            else:
                with conn.transaction(), conn.cursor() as cur:
                    yield Tx(self, cur)

    @contextmanager
    def write(self, what: str, epoch: int | None) -> Iterator[Tx]:
        """Run the block in a write transaction that first takes the fence row.

        With an ``epoch`` the write is fenced: a lower epoch than the stored one raises
        :class:`StaleEpochError` (nothing is written), a higher one raises the stored fence in
        the same transaction. Taking the fence row (``FOR UPDATE`` on PostgreSQL; SQLite's
        ``BEGIN IMMEDIATE`` already excludes other writers) serialises all writes, so a check
        and the write it guards cannot interleave with another writer's.
        """
        with self.transaction(what) as tx:
            fence = tx.one("SELECT epoch FROM leader_fence WHERE id = 1" + self.for_update)
            if fence is None:
                raise StoreError(f"{self.url.shown}: the leader_fence row is missing")
            if epoch is not None:
                if epoch < fence["epoch"]:
                    raise StaleEpochError(epoch, fence["epoch"], what)
                if epoch > fence["epoch"]:
                    tx.run(
                        "UPDATE leader_fence SET epoch = ?, ts_updated_ns = ? WHERE id = 1",
                        (epoch, time.time_ns()),
                    )
            yield tx

    @contextmanager
    def read(self, what: str) -> Iterator[Tx]:
        """Run the block in one read transaction (a consistent snapshot)."""
        with self._lock, self._errors(what):
            conn = self.connection()
            if self.dialect == SQLITE:
                conn.execute("BEGIN")
                try:
                    yield Tx(self, conn)
                finally:
                    conn.execute("COMMIT")
            else:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    yield Tx(self, cur)


def _pg_unavailable(exc: Exception, conn: Any) -> bool:
    """Whether a psycopg error means the server is unreachable, gone or too busy."""
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return False
    broken = conn is None or conn.closed or conn.broken
    return broken or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
