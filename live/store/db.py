"""Database access of the live store: store URLs, the SQLite/PostgreSQL shim, transactions.

SQL is written once with ``?`` placeholders (PostgreSQL gets ``%s``); no ORM.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from live.store.errors import (
    StaleEpochError,
    StoreCorruptError,
    StoreError,
    StoreMissingError,
    StoreReplacedError,
    StoreUnavailableError,
)
from quantshift.errors import ConfigError
from quantshift.urls import mask_secrets, postgres_url

SQLITE = "sqlite"
POSTGRES = "postgresql"
MEMORY = ":memory:"
_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_NO_DATABASE = "3D000"  # PostgreSQL's invalid_catalog_name: the database does not exist
IDLE_IN_TRANSACTION_MS = 2000
"""PostgreSQL ends a session idle inside a transaction this long (ms), releasing its locks."""
# SQLite errors that mean "try again later", not a bug in our SQL.
_SQLITE_TRANSIENT = ("locked", "busy", "disk i/o", "unable to open", "readonly")
# SQLite result codes of a damaged file: retrying cannot help, a person must restore it.
_SQLITE_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


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


def resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """Return ``url`` with a relative SQLite path made absolute against ``base_dir``.

    A config file names its store relative to its own directory, so every command reading
    the config reaches the same database from any working directory. Other URLs (absolute
    paths, ``:memory:``, PostgreSQL) are returned unchanged.
    """
    parsed = parse_url(url)
    if parsed.path is None or parsed.path.is_absolute():
        return url
    return f"sqlite:///{(base_dir / parsed.path).resolve()}"


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
    create : bool
        Whether a missing SQLite file may be created (False: :class:`StoreMissingError`).

    Once connected, the database is pinned: a SQLite file deleted or replaced since, or a
    PostgreSQL database whose ``store_identity`` differs on reconnecting (see :meth:`pin`),
    raises :class:`StoreReplacedError` at every later transaction instead of writing to a
    database nobody will read.
    """

    def __init__(self, url: StoreUrl, *, timeout_s: float, create: bool = True):
        self.url = url
        self.dialect = url.dialect
        self.timeout_s = timeout_s
        self.create = create
        self.instance_id: str | None = None
        self._file_id: tuple[int, int] | None = None
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
        if self.instance_id is not None:
            self._check_instance(conn)
        return conn

    def _check_instance(self, conn: Any) -> None:
        """Refuse a PostgreSQL database that is not the one pinned (dropped and recreated)."""
        import psycopg

        try:
            row = conn.execute("SELECT instance_id FROM store_identity WHERE id = 1").fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        if row is None or row["instance_id"] != self.instance_id:
            conn.close()
            found = "no store" if row is None else f"store {row['instance_id']}"
            raise self._replaced(f"it now holds {found}, not store {self.instance_id}")

    def pin(self, instance_id: str) -> None:
        """Remember which database this is (its ``store_identity`` id) to refuse another."""
        self.instance_id = instance_id

    def _replaced(self, what: str) -> StoreReplacedError:
        where = self.url.shown if self.url.path is None else str(self.url.path)
        return StoreReplacedError(
            f"store {where} was deleted or replaced while in use ({what}); stopped, nothing "
            "more is written: restore it, then run `live reconcile` before trading again"
        )

    def _check_file(self) -> None:
        """Refuse to go on once the pinned SQLite file was deleted or replaced: the open
        connection would keep writing to the unlinked file, and a new one would create one."""
        if self._file_id is None:
            return
        try:
            stat = os.stat(self.url.path)
        except FileNotFoundError:
            raise self._replaced("the file is gone") from None
        if (stat.st_dev, stat.st_ino) != self._file_id:
            raise self._replaced("another file is in its place")

    def _connect_sqlite(self) -> sqlite3.Connection:
        path = self.url.path
        target = MEMORY if path is None else str(path)
        if path is not None and self.create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif path is not None:
            if not path.is_file():
                raise StoreMissingError(
                    f"no live store at {path}: `live run` creates it; check [store] url (a "
                    "relative SQLite path is relative to the config file's directory)"
                )
            target = f"{path.absolute().as_uri()}?mode=rw"  # never create it
        conn = sqlite3.connect(
            target,
            uri=not self.create,
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
            if self._file_id is None:
                stat = os.stat(path)
                self._file_id = (stat.st_dev, stat.st_ino)
        return conn

    def connection(self) -> Any:
        """Return the open connection, reconnecting after a PostgreSQL connection was lost;
        raise :class:`StoreReplacedError` if the pinned database was replaced."""
        self._check_file()
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
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _SQLITE_DAMAGED:
                raise StoreCorruptError(
                    f"store {self.url.path} is damaged ({exc}): stop every runner using it, "
                    "restore the file from a backup (or move it aside to start a new store), "
                    "then run `live reconcile` before trading again"
                ) from None
            transient = any(word in str(exc).lower() for word in _SQLITE_TRANSIENT)
            if not isinstance(exc, sqlite3.OperationalError) or not transient:
                raise
            raise StoreUnavailableError(f"{what} on {self.url.shown}: {exc}") from None
        except Exception as exc:
            if self.dialect != POSTGRES or not _pg_unavailable(exc, self._conn):
                raise
            if self.instance_id is not None and getattr(exc, "sqlstate", None) == _NO_DATABASE:
                raise self._replaced("the database was dropped") from None
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
                    # A file deleted during the transaction took the commit with it: say so
                    # before the caller acts on it (e.g. sends the order it just recorded).
                    self._check_file()
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
