"""The notification outbox of the live store: events written in the transaction of the fact they
report, each claimed by exactly one notifier, so hosts sharing a store send each event once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from live.store import checks
from live.store.records import _Row

KINDS = ("halt", "takeover", "adoption", "refusal", "auth_failure", "summary")
"""What a notification reports (the notifier's ``events`` filter names these)."""


@dataclass(frozen=True, kw_only=True)
class Notification(_Row):
    """One event in the outbox; ``claimed_by`` is the host sending it, ``outcome`` how it went."""

    _json_fields = ()

    notification_id: int
    event_key: str
    kind: str
    title: str
    body: str
    ts_created_ns: int
    claimed_by: str | None
    ts_claimed_ns: int | None
    outcome: str | None
    ts_done_ns: int | None


def enqueue(tx: Any, *, key: str, kind: str, title: str, body: str, ts_ns: int) -> bool:
    """Add an event to the outbox inside the open transaction ``tx``; False if ``key`` is there
    already (the same event written again by a redo, or by the other host)."""
    if kind not in KINDS:
        raise ValueError(f"notification kind must be one of {KINDS}, got {kind!r}")
    return bool(
        tx.run(
            "INSERT INTO notifications (event_key, kind, title, body, ts_created_ns) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_key) DO NOTHING "
            "RETURNING notification_id",
            (checks.text("key", key), kind, checks.text("title", title), str(body), ts_ns),
        )
    )


class Outbox:
    """Store methods of the notification outbox (a mixin of :class:`live.store.Store`)."""

    _db: Any

    def notify(
        self, *, key: str, kind: str, title: str, body: str, ts_ns: int | None = None
    ) -> bool:
        """Add an event that is not part of another write (a venue auth failure, a daily
        summary); return False if an event with ``key`` exists already. Not fenced."""
        now = time.time_ns() if ts_ns is None else checks.integer("ts_ns", ts_ns)
        with self._db.transaction(f"notification {key}") as tx:
            return enqueue(tx, key=key, kind=kind, title=title, body=body, ts_ns=now)

    def claim_notifications(
        self, host: str, *, limit: int = 50, not_before_ns: int = 0, reclaim_before_ns: int = 0
    ) -> list[Notification]:
        """Claim up to ``limit`` events for ``host``, oldest first, and return them.

        An event is free when unclaimed, or claimed before ``reclaim_before_ns`` and never
        finished (its host died holding it: better a late alert than none). Each row moves to
        ``host`` by a compare-and-set, so of two notifiers claiming at once exactly one gets it.
        Events created before ``not_before_ns`` are claimed as ``expired`` and not returned (a
        notifier started after a long silence does not replay old alerts).
        """
        host = checks.text("host", host)
        free = "(claimed_by IS NULL OR (outcome IS NULL AND ts_claimed_ns < ?))"
        reclaim = (int(reclaim_before_ns),)
        # Look before taking the write lock: most polls find nothing, and SQLite has one writer.
        with self._db.read("look for notifications") as tx:
            waiting = tx.one(f"SELECT 1 AS found FROM notifications WHERE {free} LIMIT 1", reclaim)
        if waiting is None:
            return []
        now = time.time_ns()
        claimed = []
        with self._db.transaction("claim notifications") as tx:
            skip = " FOR UPDATE SKIP LOCKED" if self._db.for_update else ""
            rows = tx.all(
                f"SELECT * FROM notifications WHERE {free} ORDER BY notification_id LIMIT ?" + skip,
                (*reclaim, int(limit)),
            )
            for row in rows:
                expired = row["ts_created_ns"] < not_before_ns
                won = tx.run(
                    "UPDATE notifications SET claimed_by = ?, ts_claimed_ns = ?, outcome = ?, "
                    f"ts_done_ns = ? WHERE notification_id = ? AND {free}",
                    (
                        host,
                        now,
                        "expired" if expired else None,
                        now if expired else None,
                        row["notification_id"],
                        *reclaim,
                    ),
                )
                if won and not expired:
                    claimed.append(Notification.from_row({**row, "claimed_by": host,
                                                          "ts_claimed_ns": now}))  # fmt: skip
        return claimed

    def finish_notification(self, notification_id: int, outcome: str) -> None:
        """Record how sending a claimed event went (``sent``, or what failed, masked)."""
        with self._db.transaction("finish notification") as tx:
            tx.run(
                "UPDATE notifications SET outcome = ?, ts_done_ns = ? WHERE notification_id = ?",
                (checks.text("outcome", outcome), time.time_ns(), int(notification_id)),
            )

    def notifications(self, kind: str | None = None) -> list[Notification]:
        """Every event in the outbox (of one ``kind``, or all), oldest first."""
        sql, params = "SELECT * FROM notifications", ()
        if kind is not None:
            sql, params = sql + " WHERE kind = ?", (kind,)
        with self._db.read("read notifications") as tx:
            rows = tx.all(sql + " ORDER BY notification_id", params)
        return [Notification.from_row(r) for r in rows]
