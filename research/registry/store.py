"""The registry's storage in SQLite (WAL) or PostgreSQL: one append-only row per evaluation (a
sweep call) holding its trials as packed arrays, schema migrations, batch writes, and the
queries the deflated Sharpe ratio and the CLI need.

One row per evaluation rather than per trial keeps recording a 10,000-set sweep to one insert
(``benchmarks/bench_registry.py`` measures it); the per-trial view is :meth:`TrialRegistry.frame`.
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

TABLE = "quantshift_evaluations"
SCHEMA_TABLE = "quantshift_registry_schema"
STATES = ("complete", "pruned", "infeasible", "failed")
COUNTED_STATES = ("complete", "pruned", "failed")
"""States that count as a trial: run on data (infeasible sets never were)."""

SHARED_COLUMNS = (
    "recorded_ns", "lineage", "source_hash", "data_key", "universe", "interval", "start_ns",
    "end_ns", "spec_hash", "source", "study", "stage", "evaluation", "n_bars", "n_symbols",
    "worker", "seed",
)  # fmt: skip
"""What the trials of one evaluation share (a column each in :meth:`TrialRegistry.frame`)."""
_STATE_COLUMNS = tuple(f"n_{s}" for s in STATES)
_ARRAY_COLUMNS = ("param_names", "integer_params", "params", "sharpe_per_bar", "trades", "states",
                  "signature")  # fmt: skip
COLUMNS = ("evaluation_id", "trial", *SHARED_COLUMNS, "params", "sharpe_per_bar", "trades", "state")
"""The columns of :meth:`TrialRegistry.frame`: one row per trial."""

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
        "evaluation TEXT NOT NULL, n_bars {int} NOT NULL, n_symbols {int} NOT NULL, "
        "worker TEXT NOT NULL, seed {int}, n_complete {int} NOT NULL, n_pruned {int} NOT NULL, "
        "n_infeasible {int} NOT NULL, n_failed {int} NOT NULL, param_names TEXT NOT NULL, "
        "integer_params TEXT NOT NULL, params {blob} NOT NULL, sharpe_per_bar {blob} NOT NULL, "
        "trades {blob} NOT NULL, states {blob} NOT NULL, signature {blob})",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_lineage_data ON {TABLE} (lineage, data_key)",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_spec ON {TABLE} (spec_hash)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True, eq=False)
class TrialBatch:
    """The trials of one evaluation (one sweep, one batch of an optimiser): the fields they
    share, and per trial a row of ``params`` (n, len(param_names)), an entry of
    ``sharpe_per_bar``, ``trades`` and ``states``, and optionally of ``signature``.

    ``sharpe_per_bar`` is in the unit the winner is judged on (NaN when not known in that
    unit); ``trades`` NaN where not run; ``signature`` None or (n, k) block sums of each
    trial's per-bar returns (what the effective number of trials is estimated from).
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
    param_names: Sequence[str]
    params: np.ndarray
    sharpe_per_bar: np.ndarray
    trades: np.ndarray
    states: Sequence[str]
    integer_params: Sequence[bool] = ()
    n_bars: int = 0
    n_symbols: int = 1
    spec_hash: str | None = None
    study: str | None = None
    stage: str | None = None
    worker: str = ""
    seed: int | None = None
    signature: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(np.asarray(self.params).shape[0])

    def row(self) -> tuple:
        """The batch as one table row: shared columns, counts by state, packed arrays."""
        params = np.ascontiguousarray(self.params, dtype=np.float64)
        n = params.shape[0]
        if params.ndim != 2 or params.shape[1] != len(self.param_names):
            raise ConfigError(
                f"trial batch: params has shape {params.shape}, expected ({n}, "
                f"{len(self.param_names)}) for {list(self.param_names)}"
            )
        codes = np.array([_STATE_CODE.get(s, -1) for s in self.states], dtype=np.int8)
        if (codes < 0).any():
            unknown = sorted({s for s in self.states if s not in _STATE_CODE})
            raise ConfigError(f"trial batch: unknown state(s) {unknown}; states: {STATES}")
        arrays = {
            "sharpe_per_bar": np.ascontiguousarray(self.sharpe_per_bar, dtype=np.float64),
            "trades": np.ascontiguousarray(self.trades, dtype=np.float64),
            "states": codes,
        }
        for name, values in arrays.items():
            if values.shape != (n,):
                raise ConfigError(f"trial batch: {name} has shape {values.shape}, expected ({n},)")
        signature = None
        if self.signature is not None:
            signature = np.ascontiguousarray(self.signature, dtype=np.float32)
            if signature.ndim != 2 or signature.shape[0] != n:
                raise ConfigError(f"trial batch: signature has shape {signature.shape}")
        counts = np.bincount(codes, minlength=len(STATES)).tolist()
        integer = list(self.integer_params) or [False] * len(self.param_names)
        return (
            time.time_ns(), self.lineage, self.source_hash, self.data_key, self.universe,
            self.interval, int(self.start_ns), int(self.end_ns), self.spec_hash, self.source,
            self.study, self.stage, self.evaluation, int(self.n_bars), int(self.n_symbols),
            self.worker, None if self.seed is None else int(self.seed), *counts,
            json.dumps(list(self.param_names)), json.dumps([bool(b) for b in integer]),
            params.tobytes(), arrays["sharpe_per_bar"].tobytes(), arrays["trades"].tobytes(),
            codes.tobytes(),
            None if signature is None else np.int32(signature.shape[1]).tobytes()
            + signature.tobytes(),
        )  # fmt: skip


_STATE_CODE = {s: i for i, s in enumerate(STATES)}
_INSERT_COLUMNS = (*SHARED_COLUMNS, *_STATE_COLUMNS, *_ARRAY_COLUMNS)


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
        self.closed = False

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
        self.closed = True
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
                c.execute("SELECT pg_advisory_xact_lock(hashtext('quantshift_registry_schema'))")
            try:
                c.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)")
                row = c.execute(f"SELECT MAX(version) FROM {SCHEMA_TABLE}").fetchone()
                version = int(row[0] or 0)
                for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                    for statement in statements:
                        c.execute(statement.format(**types))
                    c.execute(
                        self._sql(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (?)"),
                        (number,),
                    )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def schema_versions(self) -> list[int]:
        """Return the schema migrations applied, in order (each exactly once)."""
        rows = self._query(f"SELECT version FROM {SCHEMA_TABLE} ORDER BY version")
        return [int(r[0]) for r in rows]

    def record(self, batch: TrialBatch | Iterable[TrialBatch]) -> int:
        """Append one batch (or several) in one transaction; return the number of trials."""
        batches = [batch] if isinstance(batch, TrialBatch) else list(batch)
        rows = [b.row() for b in batches]
        if not rows:
            return 0
        with self._lock:
            self._check_process()
            c = self._connection
            if self.dialect == "sqlite":
                c.execute("BEGIN IMMEDIATE")
                try:
                    c.executemany(
                        f"INSERT INTO {TABLE} ({', '.join(_INSERT_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})",
                        rows,
                    )
                    c.execute("COMMIT")
                except BaseException:
                    c.execute("ROLLBACK")
                    raise
            else:
                with c.transaction(), c.cursor() as cursor:
                    with cursor.copy(
                        f"COPY {TABLE} ({', '.join(_INSERT_COLUMNS)}) FROM STDIN"
                    ) as copy:
                        for row in rows:
                            copy.write_row(row)
        return sum(len(b) for b in batches)

    def _check_process(self) -> None:
        # A forked child must not share its parent's connection.
        if os.getpid() != self._pid:
            raise ConfigError(f"{self!r} was opened in another process; open it again here")

    # ----------------------------------------------------------------- reading
    def _where(self, lineage, data_key, spec_hash) -> tuple[str, list]:
        clauses, args = [], []
        for column, wanted in (("lineage", lineage), ("data_key", data_key),
                               ("spec_hash", spec_hash)):  # fmt: skip
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
        has had), on ``data_key`` (one key or several; default any) and ``spec_hash``, in
        ``states`` (default: every state run on data)."""
        unknown = sorted(set(states) - set(STATES))
        if unknown:
            raise ConfigError(f"unknown state(s) {unknown}; states: {STATES}")
        total = " + ".join(f"n_{s}" for s in states) or "0"
        where, args = self._where(lineage, data_key, spec_hash)
        return int(self._query(f"SELECT SUM({total}) FROM {TABLE}{where}", args)[0][0] or 0)

    def _arrays(self, lineage, data_key, spec_hash, columns: Sequence[str]) -> list[tuple]:
        where, args = self._where(lineage, data_key, spec_hash)
        return self._query(f"SELECT {', '.join(columns)} FROM {TABLE}{where} ORDER BY id", args)

    def sharpes(
        self,
        lineage: str,
        data_key: str | Sequence[str] | None = None,
        *,
        spec_hash: str | Sequence[str] | None = None,
    ) -> np.ndarray:
        """Return the finite per-bar Sharpe ratios of the counted trials (winner's unit)."""
        parts = [np.empty(0)]
        for sharpe, states in self._arrays(
            lineage, data_key, spec_hash, ("sharpe_per_bar", "states")
        ):
            values = np.frombuffer(bytes(sharpe), dtype=np.float64)
            counted = np.isin(np.frombuffer(bytes(states), dtype=np.int8), _COUNTED_CODES)
            parts.append(values[counted & np.isfinite(values)])
        return np.concatenate(parts)

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
        """Return one row per trial (:data:`COLUMNS`; ``params`` as a JSON object string), in
        the order written, of the matching evaluations and ``states`` (default all)."""
        columns = ("id", *SHARED_COLUMNS, "param_names", "integer_params", "params",
                   "sharpe_per_bar", "trades", "states")  # fmt: skip
        parts = []
        for row in self._arrays(lineage, data_key, spec_hash, columns):
            names, integer = json.loads(row[-6]), json.loads(row[-5])
            matrix = np.frombuffer(bytes(row[-4]), dtype=np.float64).reshape(-1, len(names))
            n = matrix.shape[0]
            part = pd.DataFrame({"evaluation_id": np.full(n, row[0]), "trial": np.arange(n)})
            for k, column in enumerate(SHARED_COLUMNS, start=1):
                part[column] = [row[k]] * n
            part["params"] = params_json(names, matrix, integer)
            part["sharpe_per_bar"] = np.frombuffer(bytes(row[-3]), dtype=np.float64)
            part["trades"] = np.frombuffer(bytes(row[-2]), dtype=np.float64)
            part["state"] = np.array(STATES, dtype=object)[np.frombuffer(bytes(row[-1]), np.int8)]
            parts.append(part)
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
        if states is not None:
            frame = frame[frame["state"].isin(list(states))].reset_index(drop=True)
        return frame

    def signatures(
        self,
        lineage: str,
        data_key: str | Sequence[str] | None = None,
        *,
        spec_hash: str | Sequence[str] | None = None,
    ) -> np.ndarray:
        """Return the return signatures of the counted trials that have one, one row each
        (those of the most common length)."""
        found: list[np.ndarray] = []
        for blob, states in self._arrays(lineage, data_key, spec_hash, ("signature", "states")):
            if blob is None:
                continue
            raw = bytes(blob)
            width = int(np.frombuffer(raw[:4], dtype=np.int32)[0])
            matrix = np.frombuffer(raw[4:], dtype=np.float32).reshape(-1, width)
            counted = np.isin(np.frombuffer(bytes(states), dtype=np.int8), _COUNTED_CODES)
            found.append(matrix[counted])
        if not found:
            return np.empty((0, 0))
        widths = np.array([m.shape[1] for m in found])
        common = int(np.bincount(widths).argmax())
        return np.concatenate([m for m in found if m.shape[1] == common]).astype(np.float64)

    def lineages(self) -> pd.DataFrame:
        """Return one row per strategy name: trials, source hashes, data keys, first and last
        write (UTC)."""
        counted = " + ".join(f"n_{s}" for s in COUNTED_STATES)
        rows = self._query(
            f"SELECT lineage, source_hash, data_key, {counted}, recorded_ns FROM {TABLE} "
            "ORDER BY id"
        )
        frame = pd.DataFrame(rows, columns=["lineage", "source_hash", "data_key", "n", "ns"])
        if frame.empty:
            return pd.DataFrame(
                columns=["lineage", "trials", "source_hashes", "data_keys", "first", "last"]
            )
        out = frame.groupby("lineage").agg(
            trials=("n", "sum"),
            source_hashes=("source_hash", lambda s: list(dict.fromkeys(s))),
            data_keys=("data_key", "nunique"),
            first=("ns", "min"),
            last=("ns", "max"),
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
        signatures = self.signatures(strategy, data_key, spec_hash=spec_hash)
        sharpes = counted["sharpe_per_bar"].to_numpy(dtype=np.float64)
        out.update(lineage_statistics(sharpes, len(counted), signatures, counted["params"]))
        return out


_COUNTED_CODES = np.array([_STATE_CODE[s] for s in COUNTED_STATES], dtype=np.int8)


def params_json(names: Sequence[str], matrix: np.ndarray, integer: Sequence[bool]) -> list[str]:
    """Return each row of a parameter matrix as a JSON object string (integers as integers,
    floats in their shortest exact form): one format string for every row, cheap per trial."""
    fields = [f'"{n}":{"%d" if f else "%r"}' for n, f in zip(names, integer, strict=True)]
    template = "{" + ",".join(fields) + "}"
    return [template % tuple(row) for row in np.asarray(matrix, dtype=np.float64).tolist()]
