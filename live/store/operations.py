"""Operating records of the live store: halts, heartbeats, promotions, performance, status.

A mixin of :class:`live.store.Store`; these writes restrict or describe trading, so none is fenced.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from live.store import checks
from live.store.outbox import enqueue
from live.store.performance import PERFORMANCE_FIELDS, compute_performance
from live.store.records import (
    PORTFOLIO,
    TERMINAL_STATES,
    EquitySnapshot,
    Halt,
    Heartbeat,
    Performance,
    Position,
    Promotion,
    StoreStatus,
)
from quantshift.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from live.store.db import Database

LEADER = "leader"
DAY_NS = 86_400 * 10**9


class Operations:
    """Halts, heartbeats, promotions, per-sleeve performance and the status summary."""

    _db: Database
    _schema_version: int

    # ------------------------------------------------------------------ runner state
    def save_runner_state(
        self,
        runner: str,
        *,
        bar_ts_ns: int,
        epoch: int | None,
        state: Mapping[str, Any],
        pending: list[Mapping[str, Any]],
    ) -> bool:
        """Save where ``runner`` resumes: its decision state after the bar ``bar_ts_ns`` and the
        orders waiting to fill. Fenced, and forward only: an older bar is ignored (False)."""
        epoch = checks.epoch_of(epoch)
        values = (
            checks.text("runner", runner), checks.integer("bar_ts_ns", bar_ts_ns), epoch,
            json.dumps(state, allow_nan=True), json.dumps(list(pending), allow_nan=True),
            time.time_ns(),
        )  # fmt: skip
        with self._db.write(f"runner state {runner}", epoch) as tx:
            return bool(
                tx.run(
                    "INSERT INTO runner_state (runner, bar_ts_ns, epoch, state, pending, "
                    "ts_updated_ns) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (runner) DO UPDATE "
                    "SET bar_ts_ns = excluded.bar_ts_ns, epoch = excluded.epoch, "
                    "state = excluded.state, pending = excluded.pending, "
                    "ts_updated_ns = excluded.ts_updated_ns "
                    "WHERE runner_state.bar_ts_ns <= excluded.bar_ts_ns RETURNING runner",
                    values,
                )
            )

    def load_runner_state(self, runner: str) -> dict[str, Any] | None:
        """Return ``{bar_ts_ns, epoch, state, pending}`` saved for ``runner``, or None."""
        with self._db.read("read runner state") as tx:
            row = tx.one("SELECT * FROM runner_state WHERE runner = ?", (runner,))
        if row is None:
            return None
        return {
            "bar_ts_ns": int(row["bar_ts_ns"]),
            "epoch": int(row["epoch"]),
            "state": json.loads(row["state"]),
            "pending": json.loads(row["pending"]),
        }

    # ------------------------------------------------------------------ halts
    def halt(
        self, reason: str, by: str, epoch: int | None = None, ts_ns: int | None = None
    ) -> Halt:
        """Persist a HALT (survives restarts and failover) and return the active one.

        While a HALT is active the store refuses moves to SUBMITTING (see
        :meth:`~live.store.Store.transition`), so no new order goes out. If one is already active
        it is returned unchanged (its reason is kept): a guard tripping repeatedly leaves one
        HALT. Never refused for a stale ``epoch`` (recorded for the audit): stopping is safe
        from any writer.
        """
        reason, by = checks.text("reason", reason), checks.text("by", by)
        epoch = None if epoch is None else checks.epoch_of(epoch)
        now = time.time_ns() if ts_ns is None else checks.integer("ts_ns", ts_ns)
        with self._db.write("halt", None) as tx:
            row = _active_halt(tx)
            if row is None:
                tx.run(
                    "INSERT INTO halts (reason, created_by, epoch, ts_created_ns) "
                    "VALUES (?, ?, ?, ?)",
                    (reason, by, epoch, now),
                )
                row = _active_halt(tx)
                enqueue(
                    tx, key=f"halt:{row['halt_id']}", kind="halt", title=f"HALT by {by}",
                    body=reason, ts_ns=now,
                )  # fmt: skip
        return Halt.from_row(row)

    def active_halt(self) -> Halt | None:
        """Return the active HALT, or None when trading may go on."""
        with self._db.read("read halt") as tx:
            row = _active_halt(tx)
        return None if row is None else Halt.from_row(row)

    def resume(self, by: str, ts_ns: int | None = None) -> Halt | None:
        """Clear the active HALT (a person's decision; kept as history); return it, or None
        if nothing was halted."""
        by = checks.text("by", by)
        now = time.time_ns() if ts_ns is None else checks.integer("ts_ns", ts_ns)
        with self._db.write("resume", None) as tx:
            row = _active_halt(tx)
            if row is None:
                return None
            tx.run(
                "UPDATE halts SET cleared_by = ?, ts_cleared_ns = ? WHERE halt_id = ?",
                (by, now, row["halt_id"]),
            )
        return Halt.from_row({**row, "cleared_by": by, "ts_cleared_ns": now})

    def halts(self) -> list[Halt]:
        """Return every HALT ever written, oldest first."""
        with self._db.read("read halts") as tx:
            return [Halt.from_row(r) for r in tx.all("SELECT * FROM halts ORDER BY halt_id")]

    # ------------------------------------------------------------------ heartbeats
    def heartbeat(
        self,
        host: str,
        role: str,
        epoch: int | None,
        ts_ns: int,
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record that ``host`` is alive in ``role`` (``"leader"``, ``"standby"``,
        ``"single"``) at ``ts_ns``; an older heartbeat than the stored one is ignored (False).
        Not fenced: a deposed leader may still report that it is alive."""
        values = (
            checks.text("host", host), checks.text("role", role), checks.epoch_of(epoch),
            checks.integer("ts_ns", ts_ns), checks.dumps("details", details),
        )  # fmt: skip
        with self._db.write("heartbeat", None) as tx:
            return bool(
                tx.run(
                    "INSERT INTO heartbeats (host, role, epoch, ts_ns, details) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (host) DO UPDATE SET role = excluded.role, "
                    "epoch = excluded.epoch, ts_ns = excluded.ts_ns, details = excluded.details "
                    "WHERE heartbeats.ts_ns <= excluded.ts_ns RETURNING host",
                    values,
                )
            )

    def heartbeats(self) -> list[Heartbeat]:
        """Return the latest heartbeat of every host, most recent first."""
        with self._db.read("read heartbeats") as tx:
            rows = tx.all("SELECT * FROM heartbeats ORDER BY ts_ns DESC, host")
        return [Heartbeat.from_row(r) for r in rows]

    # ------------------------------------------------------------------ promotions
    def add_promotion(
        self,
        *,
        name: str,
        stage: str,
        code_fingerprint: str | Mapping[str, Any],
        record: str | Mapping[str, Any],
        created_by: str,
        activate: bool = True,
        ts_ns: int | None = None,
    ) -> Promotion:
        """Store a promotion record of ``name`` to ``stage`` (e.g. ``"paper"``, ``"live"``).

        ``record`` (JSON text, kept verbatim, or a mapping stored as canonical JSON) is the
        format the promotion code defines; ``code_fingerprint`` is what the runner compares
        with the code it runs. With ``activate`` the new record becomes the active one of
        (name, stage) and the previous one is deactivated in the same transaction.
        """
        fingerprint = (
            checks.dumps("code_fingerprint", code_fingerprint)
            if isinstance(code_fingerprint, Mapping)
            else checks.text("code_fingerprint", code_fingerprint)
        )
        values = (
            checks.text("name", name), checks.text("stage", stage), fingerprint,
            _record_text(record), checks.text("created_by", created_by),
            time.time_ns() if ts_ns is None else checks.integer("ts_ns", ts_ns),
        )  # fmt: skip
        with self._db.write("promotion", None) as tx:
            row = tx.one(
                "INSERT INTO promotions (name, stage, code_fingerprint, record, created_by, "
                "ts_created_ns, active) VALUES (?, ?, ?, ?, ?, ?, 0) RETURNING promotion_id",
                values,
            )
            if activate:
                _activate(tx, row["promotion_id"])
            return Promotion.from_row(_promotion_row(tx, row["promotion_id"]))

    def activate_promotion(self, promotion_id: int) -> Promotion:
        """Make a stored record the active one of its (name, stage), e.g. to roll back."""
        promotion_id = checks.integer("promotion_id", promotion_id)
        with self._db.write(f"activate promotion {promotion_id}", None) as tx:
            _activate(tx, promotion_id)
            return Promotion.from_row(_promotion_row(tx, promotion_id))

    def promotion(self, promotion_id: int) -> Promotion:
        """Return the stored promotion record with this id (UnknownNameError if none)."""
        promotion_id = checks.integer("promotion_id", promotion_id)
        with self._db.read("read promotion") as tx:
            return Promotion.from_row(_promotion_row(tx, promotion_id))

    def active_promotion(self, name: str, stage: str) -> Promotion | None:
        """Return the active promotion record of (name, stage), or None."""
        with self._db.read("read promotion") as tx:
            row = tx.one(
                "SELECT * FROM promotions WHERE name = ? AND stage = ? AND active = 1",
                (name, stage),
            )
        return None if row is None else Promotion.from_row(row)

    def promotions(self, name: str | None = None) -> list[Promotion]:
        """Return promotion records (of one name, or all), oldest first."""
        sql, params = "SELECT * FROM promotions", ()
        if name is not None:
            sql, params = sql + " WHERE name = ?", (name,)
        with self._db.read("read promotions") as tx:
            return [Promotion.from_row(r) for r in tx.all(sql + " ORDER BY promotion_id", params)]

    # ------------------------------------------------------------------ performance
    def update_performance(
        self, sleeve: str, *, periods_per_year: float = 252.0, ts_ns: int | None = None
    ) -> Performance:
        """Recompute a sleeve's performance row from its stored trades and equity snapshots
        (see :func:`~live.store.performance.compute_performance`), store and return it."""
        sleeve = checks.text("sleeve", sleeve)
        ppy = checks.finite("periods_per_year", periods_per_year, positive=True)
        now = time.time_ns() if ts_ns is None else checks.integer("ts_ns", ts_ns)
        # Read, compute, then write: the computation can take seconds the first time in a
        # process (its kernels load), longer than PostgreSQL lets a transaction sit idle.
        with self._db.read(f"performance of {sleeve}") as tx:
            pnl = tx.all(
                "SELECT pnl FROM trades WHERE sleeve = ? ORDER BY exit_ts_ns, trade_id",
                (sleeve,),
            )
            equity = tx.all(
                "SELECT equity FROM equity_snapshots WHERE sleeve = ? ORDER BY ts_ns",
                (sleeve,),
            )
        values = compute_performance([r["pnl"] for r in pnl], [r["equity"] for r in equity], ppy)
        with self._db.write(f"performance of {sleeve}", None) as tx:
            # NaN is stored as NULL (SQLite cannot hold NaN); inf is kept.
            stored = [None if _is_nan(values[k]) else values[k] for k in PERFORMANCE_FIELDS]
            columns = ", ".join(PERFORMANCE_FIELDS)
            updates = ", ".join(
                f"{k} = excluded.{k}" for k in (*PERFORMANCE_FIELDS, "ts_updated_ns")
            )
            tx.run(
                f"INSERT INTO sleeve_performance (sleeve, {columns}, periods_per_year, "
                f"ts_updated_ns) VALUES ({', '.join('?' * (len(PERFORMANCE_FIELDS) + 3))}) "
                f"ON CONFLICT (sleeve) DO UPDATE SET {updates}, "
                "periods_per_year = excluded.periods_per_year",
                (sleeve, *stored, ppy, now),
            )
            row = tx.one("SELECT * FROM sleeve_performance WHERE sleeve = ?", (sleeve,))
        return Performance.from_row(row)

    def performance(self, sleeve: str | None = None) -> list[Performance]:
        """Return stored performance rows (of one sleeve, or all)."""
        sql, params = "SELECT * FROM sleeve_performance", ()
        if sleeve is not None:
            sql, params = sql + " WHERE sleeve = ?", (sleeve,)
        with self._db.read("read performance") as tx:
            return [Performance.from_row(r) for r in tx.all(sql + " ORDER BY sleeve", params)]

    # ------------------------------------------------------------------ status
    def status(self) -> StoreStatus:
        """Return what ``live status`` prints, read in one consistent snapshot.

        ``leader`` is the heartbeat with role ``"leader"`` and the highest epoch (its epoch
        below ``fence_epoch`` means it has been deposed); ``equity`` the latest portfolio
        snapshot; ``realized_pnl`` the sum over closed trades; ``day_pnl`` the portfolio
        equity change since the last snapshot of the previous UTC day (or the day's first).
        """
        with self._db.read("status") as tx:
            fence = tx.one("SELECT epoch FROM leader_fence WHERE id = 1")["epoch"]
            beats = [
                Heartbeat.from_row(r)
                for r in tx.all("SELECT * FROM heartbeats ORDER BY ts_ns DESC, host")
            ]
            positions = tx.all("SELECT * FROM positions WHERE qty <> 0 ORDER BY sleeve, symbol")
            last = tx.one(
                "SELECT * FROM equity_snapshots WHERE sleeve = ? ORDER BY ts_ns DESC LIMIT 1",
                (PORTFOLIO,),
            )
            day_pnl = None if last is None else _day_pnl(tx, last)
            realized = tx.one("SELECT SUM(pnl) AS pnl FROM trades")["pnl"]
            terminal = tuple(s.value for s in TERMINAL_STATES)
            open_orders = tx.one(
                "SELECT COUNT(*) AS n FROM order_intents WHERE state NOT IN "
                f"({', '.join('?' * len(terminal))})",
                terminal,
            )["n"]
            halt = _active_halt(tx)
            performance = tx.all("SELECT * FROM sleeve_performance ORDER BY sleeve")
        leaders = [b for b in beats if b.role == LEADER]
        return StoreStatus(
            store=self._db.url.shown,
            schema_version=self._schema_version,
            fence_epoch=int(fence),
            leader=max(leaders, key=lambda b: (b.epoch, b.ts_ns)) if leaders else None,
            heartbeats=beats,
            last_heartbeat_ns=beats[0].ts_ns if beats else None,
            positions=[Position.from_row(r) for r in positions],
            equity=None if last is None else EquitySnapshot.from_row(last),
            realized_pnl=float(realized or 0.0),
            day_pnl=day_pnl,
            open_orders=int(open_orders),
            halt=None if halt is None else Halt.from_row(halt),
            performance=[Performance.from_row(r) for r in performance],
        )


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _active_halt(tx: Any) -> dict[str, Any] | None:
    return tx.one("SELECT * FROM halts WHERE ts_cleared_ns IS NULL ORDER BY halt_id LIMIT 1")


def _day_pnl(tx: Any, last: dict[str, Any]) -> float:
    day_start = last["ts_ns"] - last["ts_ns"] % DAY_NS
    base = tx.one(
        "SELECT equity FROM equity_snapshots WHERE sleeve = ? AND ts_ns < ? "
        "ORDER BY ts_ns DESC LIMIT 1",
        (PORTFOLIO, day_start),
    ) or tx.one(
        "SELECT equity FROM equity_snapshots WHERE sleeve = ? AND ts_ns >= ? "
        "ORDER BY ts_ns LIMIT 1",
        (PORTFOLIO, day_start),
    )
    return float(last["equity"] - base["equity"])


def _record_text(record: str | Mapping[str, Any]) -> str:
    if isinstance(record, Mapping):
        return checks.dumps("record", record)
    try:
        parsed = json.loads(checks.text("record", record))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"promotion record is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ConfigError("promotion record must be a JSON object")
    return record


def _promotion_row(tx: Any, promotion_id: int) -> dict[str, Any]:
    row = tx.one("SELECT * FROM promotions WHERE promotion_id = ?", (promotion_id,))
    if row is None:
        raise UnknownNameError(f"no promotion record with id {promotion_id}")
    return row


def _activate(tx: Any, promotion_id: int) -> None:
    row = _promotion_row(tx, promotion_id)
    # Deactivate first: the partial unique index allows one active record per (name, stage).
    tx.run(
        "UPDATE promotions SET active = 0 WHERE name = ? AND stage = ? AND active = 1",
        (row["name"], row["stage"]),
    )
    tx.run("UPDATE promotions SET active = 1 WHERE promotion_id = ?", (promotion_id,))
