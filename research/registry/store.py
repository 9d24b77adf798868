"""The registry's storage: one append-only table in SQLite (WAL) or PostgreSQL, its schema
migrations, batch writes and the queries the deflated Sharpe ratio and the CLI need.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd

from quantshift.errors import ConfigError
from quantshift.urls import mask_secrets, postgres_url
from research.registry.keys import registry_url

TABLE = "quantshift_trials"
STATES = ("complete", "pruned", "infeasible", "failed")
COUNTED_STATES = ("complete", "pruned", "failed")
"""States that count as a trial: run on data (infeasible sets never were)."""

COLUMNS = (
    "recorded_ns",
    "lineage",
    "source_hash",
    "data_key",
    "universe",
    "interval",
    "start_ns",
    "end_ns",
    "spec_hash",
    "source",
    "study",
    "stage",
    "evaluation",
    "params",
    "sharpe_per_bar",
    "n_bars",
    "n_symbols",
    "trades",
    "state",
    "worker",
    "seed",
    "signature",
)

_PG_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
_SQLITE_TYPES = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "int": "INTEGER", "blob": "BLOB"}
_PG_TYPES = {"id": "BIGSERIAL PRIMARY KEY", "int": "BIGINT", "blob": "BYTEA"}
# Each migration runs once, in order, inside the lock that creates the schema.
_MIGRATIONS = (
    (
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id {{id}}, recorded_ns {{int}} NOT NULL, "
        "lineage TEXT NOT NULL, source_hash TEXT NOT NULL, data_key TEXT NOT NULL, "
        "universe TEXT NOT NULL, interval TEXT NOT NULL, start_ns {int} NOT NULL, "
        "end_ns {int} NOT NULL, spec_hash TEXT, source TEXT NOT NULL, study TEXT, stage TEXT, "
        "evaluation TEXT NOT NULL, params TEXT NOT NULL, sharpe_per_bar DOUBLE PRECISION, "
        "n_bars {int} NOT NULL, n_symbols {int} NOT NULL, trades {int}, state TEXT NOT NULL, "
        "worker TEXT NOT NULL, seed {int}, signature {blob})",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_lineage_data ON {TABLE} (lineage, data_key)",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_spec ON {TABLE} (spec_hash)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True, eq=False)
class TrialBatch:
    """Trials of one evaluation (one sweep, one batch of an optimiser): shared keys and one
    entry per trial in each per-trial field.

    ``params`` holds each trial's parameters as a JSON object string; ``sharpe_per_bar`` the
    per-bar Sharpe ratio in the unit the winner is judged on (NaN when not known in that unit);
    ``signature`` None or an (n, k) float32 array of block sums of each trial's per-bar
    returns (what the effective number of trials is estimated from).
    """

    lineage: str
    source_hash: str
    data_key: str
    universe: str
    interval: str
    start_ns: int
    end_ns: int
    source: str
    evaluation: str
    params: Sequence[str]
    sharpe_per_bar: np.ndarray
    n_bars: np.ndarray
    trades: np.ndarray
    states: Sequence[str]
    n_symbols: int = 1
    spec_hash: str | None = None
    study: str | None = None
    stage: str | None = None
    worker: str = ""
    seed: int | None = None
    signature: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.params)

    def rows(self) -> list[tuple]:
        """The batch as table rows in :data:`COLUMNS` order."""
        n = len(self.params)
        for name in ("sharpe_per_bar", "n_bars", "trades", "states"):
            if len(getattr(self, name)) != n:
                raise ConfigError(
                    f"trial batch: {name} has {len(getattr(self, name))} entries, params {n}"
                )
        unknown = sorted(set(self.states) - set(STATES))
        if unknown:
            raise ConfigError(f"trial batch: unknown state(s) {unknown}; states: {STATES}")
        now = time.time_ns()
        shared_head = (
            now,
            self.lineage,
            self.source_hash,
            self.data_key,
            self.universe,
            self.interval,
            int(self.start_ns),
            int(self.end_ns),
            self.spec_hash,
            self.source,
            self.study,
            self.stage,
            self.evaluation,
        )
        seed = None if self.seed is None else int(self.seed)
        sharpe = [
            None if not math.isfinite(v) else v
            for v in np.asarray(self.sharpe_per_bar, dtype=float).tolist()
        ]
        trades = [
            None if not math.isfinite(v) else int(v)
            for v in np.asarray(self.trades, dtype=float).tolist()
        ]
        bars = np.asarray(self.n_bars, dtype=np.int64).tolist()
        blobs = (
            [None] * n
            if self.signature is None
            else [row.tobytes() for row in np.asarray(self.signature, dtype=np.float32)]
        )
        return [
            (
                *shared_head,
                self.params[i],
                sharpe[i],
                bars[i],
                int(self.n_symbols),
                trades[i],
                self.states[i],
                self.worker,
                seed,
                blobs[i],
            )
            for i in range(n)
        ]


class TrialRegistry:
    """An append-only table of every evaluation of every strategy, in SQLite or PostgreSQL.

    Open it with :meth:`open`; the schema is created (and migrated) on first use. Safe for
    several processes at once: SQLite in WAL mode with a busy timeout, PostgreSQL with a
    transaction-scoped advisory lock around migrations.
    """

    def __init__(self, url: str, connection, dialect: str) -> None:
        self.url = url
        self.shown = mask_secrets(url)
        self.dialect = dialect
        self._connection = connection
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"TrialRegistry({self.shown!r})"

    @classmethod
    def open(cls, url: str | None = None, *, timeout_s: float = 30.0) -> TrialRegistry:
        """Open (creating if needed) the registry at ``url`` (default :func:`registry_url`):
        ``sqlite:///path.db`` or ``postgresql://user@host/db``."""
        url = registry_url(url)
        shown = mask_secrets(url)
        if url.startswith("sqlite:///"):
            raw = unquote(url[len("sqlite:///") :])
            if not raw or "?" in raw or raw == ":memory:":
                raise ConfigError(f"registry URL {shown!r}: name a database file")
            Path(raw).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                raw, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            registry = cls(url, connection, "sqlite")
        elif url.startswith(_PG_SCHEMES):
            import psycopg

            try:
                connection = psycopg.connect(
                    postgres_url(url, "libpq"), autocommit=True, connect_timeout=int(timeout_s)
                )
            except psycopg.OperationalError as exc:
                raise ConfigError(
                    f"registry {shown}: cannot connect ({mask_secrets(str(exc)).strip()})"
                ) from None
            registry = cls(url, connection, "postgresql")
        else:
            raise ConfigError(
                f"registry URL {shown!r}: scheme must be sqlite:/// or postgresql:// "
                f"(set ${'QUANTSHIFT_REGISTRY_URL'})"
            )
        registry._migrate()
        return registry

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def __enter__(self) -> TrialRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- schema and writes
    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    def _migrate(self) -> None:
        types = _SQLITE_TYPES if self.dialect == "sqlite" else _PG_TYPES
        with self._lock:
            c = self._connection
            if self.dialect == "sqlite":
                c.execute("BEGIN IMMEDIATE")
            else:
                c.execute("BEGIN")
                c.execute("SELECT pg_advisory_xact_lock(hashtext('quantshift_trials_schema'))")
            try:
                c.execute(
                    "CREATE TABLE IF NOT EXISTS quantshift_trials_schema (version INTEGER NOT NULL)"
                )
                row = c.execute("SELECT MAX(version) FROM quantshift_trials_schema").fetchone()
                version = int(row[0] or 0)
                for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                    for statement in statements:
                        c.execute(statement.format(**types))
                    c.execute(
                        self._sql("INSERT INTO quantshift_trials_schema (version) VALUES (?)"),
                        (number,),
                    )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def record(self, batch: TrialBatch | Iterable[TrialBatch]) -> int:
        """Append one batch (or several) in one transaction; return the number of rows."""
        batches = [batch] if isinstance(batch, TrialBatch) else list(batch)
        rows = [row for b in batches for row in b.rows()]
        if not rows:
            return 0
        with self._lock:
            self._check_process()
            c = self._connection
            if self.dialect == "sqlite":
                c.execute("BEGIN IMMEDIATE")
                try:
                    c.executemany(
                        f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(COLUMNS))})",
                        rows,
                    )
                    c.execute("COMMIT")
                except BaseException:
                    c.execute("ROLLBACK")
                    raise
            else:
                with c.transaction(), c.cursor() as cursor:
                    with cursor.copy(f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
        return len(rows)

    def _check_process(self) -> None:
        # A forked child must not share its parent's connection.
        if os.getpid() != self._pid:
            raise ConfigError(f"{self!r} was opened in another process; open it again here")

    # ----------------------------------------------------------------- reading
    def _where(self, lineage, data_key, spec_hash, states) -> tuple[str, list]:
        clauses, args = [], []
        for column, wanted in (
            ("lineage", lineage),
            ("data_key", data_key),
            ("spec_hash", spec_hash),
            ("state", states),
        ):
            if wanted is None:
                continue
            values = [wanted] if isinstance(wanted, str) else list(wanted)
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})" if values else "0=1")
            args.extend(values)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            self._check_process()
            return list(self._connection.execute(self._sql(sql), args).fetchall())

    def count(
        self,
        lineage: str,
        data_key: str | Sequence[str] | None = None,
        *,
        spec_hash: str | Sequence[str] | None = None,
        states: Sequence[str] = COUNTED_STATES,
    ) -> int:
        """Return the number of trials of ``lineage`` (a strategy name: every source hash it
        has had), on ``data_key`` (one key or several; default any) and ``spec_hash``."""
        where, args = self._where(lineage, data_key, spec_hash, states)
        return int(self._query(f"SELECT COUNT(*) FROM {TABLE}{where}", args)[0][0])

    def sharpes(
        self,
        lineage: str,
        data_key: str | Sequence[str] | None = None,
        *,
        spec_hash: str | Sequence[str] | None = None,
    ) -> np.ndarray:
        """Return the finite per-bar Sharpe ratios of the counted trials (winner's unit)."""
        where, args = self._where(lineage, data_key, spec_hash, COUNTED_STATES)
        rows = self._query(
            f"SELECT sharpe_per_bar FROM {TABLE}{where}"
            f"{' AND' if where else ' WHERE'} sharpe_per_bar IS NOT NULL",
            args,
        )
        return np.array([r[0] for r in rows], dtype=np.float64)

    def dsr_inputs(
        self,
        lineage: str,
        data_key: str | Sequence[str] | None = None,
        *,
        spec_hash: str | Sequence[str] | None = None,
    ) -> tuple[int, float]:
        """Return (trial count, population variance of their per-bar Sharpe ratios)."""
        sharpes = self.sharpes(lineage, data_key, spec_hash=spec_hash)
        n = self.count(lineage, data_key, spec_hash=spec_hash)
        return n, float(np.var(sharpes)) if sharpes.size else math.nan

    def frame(
        self,
        lineage: str | None = None,
        data_key: str | Sequence[str] | None = None,
        *,
        spec_hash: str | Sequence[str] | None = None,
        states: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Return the matching rows (every column but ``signature``) in the order written."""
        columns = ["id", *(c for c in COLUMNS if c != "signature")]
        where, args = self._where(lineage, data_key, spec_hash, states)
        rows = self._query(f"SELECT {', '.join(columns)} FROM {TABLE}{where} ORDER BY id", args)
        return pd.DataFrame(rows, columns=columns)

    def signatures(
        self,
        lineage: str,
        data_key: str | Sequence[str] | None = None,
        *,
        spec_hash: str | Sequence[str] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """Return the return signatures of the counted trials that have one (rows of equal
        length: the most common length) and their parameters (JSON strings)."""
        where, args = self._where(lineage, data_key, spec_hash, COUNTED_STATES)
        rows = self._query(
            f"SELECT signature, params FROM {TABLE}{where}"
            f"{' AND' if where else ' WHERE'} signature IS NOT NULL ORDER BY id",
            args,
        )
        vectors = [np.frombuffer(bytes(r[0]), dtype=np.float32) for r in rows]
        if not vectors:
            return np.empty((0, 0)), []
        sizes = np.array([v.size for v in vectors])
        common = int(np.bincount(sizes).argmax())
        keep = [i for i, v in enumerate(vectors) if v.size == common]
        return np.stack([vectors[i] for i in keep]).astype(np.float64), [rows[i][1] for i in keep]

    def lineages(self) -> pd.DataFrame:
        """Return one row per strategy name: trials, source hashes, data keys, first and last
        write (UTC)."""
        rows = self._query(
            f"SELECT lineage, source_hash, data_key, state, recorded_ns FROM {TABLE}"
        )
        frame = pd.DataFrame(rows, columns=["lineage", "source_hash", "data_key", "state", "ns"])
        if frame.empty:
            return pd.DataFrame(
                columns=["lineage", "trials", "source_hashes", "data_keys", "first", "last"]
            )
        counted = frame["state"].isin(COUNTED_STATES)
        out = (
            frame.assign(counted=counted)
            .groupby("lineage")
            .agg(
                trials=("counted", "sum"),
                source_hashes=("source_hash", lambda s: list(dict.fromkeys(s))),
                data_keys=("data_key", "nunique"),
                first=("ns", "min"),
                last=("ns", "max"),
            )
        )
        for column in ("first", "last"):
            out[column] = pd.to_datetime(out[column], unit="ns", utc=True)
        return out.reset_index()

    def summary(
        self,
        strategy: str,
        data_key: str | Sequence[str] | None = None,
        *,
        spec_hash: str | Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Return the lineage's summary: trials (counted and by state), how many studies,
        specs, sources, evaluations and data keys they came from, the source hashes seen, the
        per-bar Sharpe variance, the effective number of trials and the DSR hurdles both
        counts imply (see :func:`research.registry.effective.lineage_statistics`)."""
        from research.registry.effective import lineage_statistics

        frame = self.frame(strategy, data_key, spec_hash=spec_hash)
        counted = frame[frame["state"].isin(COUNTED_STATES)]
        out: dict[str, Any] = {
            "strategy": strategy,
            "data_key": data_key,
            "spec_hash": spec_hash,
            "registry": self.shown,
            "trials": len(counted),
            "states": {s: int((frame["state"] == s).sum()) for s in STATES},
            "sources": {str(k): int(v) for k, v in counted["source"].value_counts().items()},
            "studies": int(counted["study"].dropna().nunique()),
            "specs": int(counted["spec_hash"].dropna().nunique()),
            "evaluations": int(counted["evaluation"].nunique()),
            "data_keys": sorted(counted["data_key"].unique().tolist()),
            "source_hashes": list(dict.fromkeys(counted["source_hash"])),
            "seeds": sorted({int(s) for s in counted["seed"].dropna()}),
        }
        signatures, params = self.signatures(strategy, data_key, spec_hash=spec_hash)
        out.update(
            lineage_statistics(
                counted["sharpe_per_bar"].to_numpy(dtype=np.float64),
                len(counted),
                signatures,
                params,
            )
        )
        return out


def params_json(names: Sequence[str], matrix: np.ndarray, integer: Sequence[bool]) -> list[str]:
    """Return each row of a parameter matrix as a JSON object string (integers as integers)."""
    values = matrix.tolist()
    flags = list(integer)
    return [
        json.dumps(
            {n: (int(v) if f else v) for n, v, f in zip(names, row, flags, strict=True)},
            separators=(",", ":"),
        )
        for row in values
    ]
