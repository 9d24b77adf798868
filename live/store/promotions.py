"""Promotion records in the live store: adoptions by runners, promotion events, paper evidence.

``PromotionBook`` is the store's side; ``open_promotion_store`` gives the promotion script (in
research, which does not import live) the ``quantshift.promotion.PromotionStore`` it needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from live.store import checks
from live.store.outbox import enqueue
from live.store.records import Promotion
from quantshift.errors import ConfigError
from quantshift.promotion import (
    PaperEvidence,
    PaperStretch,
    PromotionRecord,
    StoredPromotion,
    paper_evidence,
)

EVENT_ACTIONS = ("promote", "rollback", "force", "refuse")


@dataclass(frozen=True, kw_only=True)
class Adoption:
    """A runner's sleeve trading a promotion record from ``bar_ts_ns`` on."""

    runner: str
    sleeve: str
    promotion_id: int
    record_id: str
    bar_ts_ns: int
    epoch: int | None
    ts_adopted_ns: int


class PromotionBook:
    """Store methods behind promotion: who adopted which record when, and what it earned."""

    _db: Any

    def record_adoption(
        self,
        *,
        runner: str,
        sleeve: str,
        promotion_id: int,
        record_id: str,
        bar_ts_ns: int,
        epoch: int | None,
    ) -> bool:
        """Note that ``sleeve`` of ``runner`` trades ``promotion_id`` from bar ``bar_ts_ns``;
        fenced, and idempotent for a leader redoing the bar (False: already noted)."""
        epoch = checks.epoch_of(epoch)
        values = (
            checks.text("runner", runner), checks.text("sleeve", sleeve),
            checks.integer("promotion_id", promotion_id), checks.text("record_id", record_id),
            checks.integer("bar_ts_ns", bar_ts_ns), epoch, time.time_ns(),
        )  # fmt: skip
        with self._db.write(f"adoption {runner}/{sleeve}", epoch) as tx:
            added = tx.run(
                "INSERT INTO promotion_adoptions (runner, sleeve, promotion_id, record_id, "
                "bar_ts_ns, epoch, ts_adopted_ns) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (runner, sleeve, bar_ts_ns) DO NOTHING RETURNING runner",
                values,
            )
            if added:
                enqueue(
                    tx, key=f"adoption:{runner}:{sleeve}:{bar_ts_ns}", kind="adoption",
                    title=f"{runner}: sleeve {sleeve} adopted promotion {promotion_id}",
                    body=f"record {record_id}, trading from bar {bar_ts_ns} (epoch {epoch})",
                    ts_ns=values[-1],
                )  # fmt: skip
            return bool(added)

    def adoptions(self, promotion_id: int | None = None) -> list[Adoption]:
        """Adoptions (of one record, or all) in bar order."""
        sql, params = "SELECT * FROM promotion_adoptions", ()
        if promotion_id is not None:
            sql, params = sql + " WHERE promotion_id = ?", (int(promotion_id),)
        with self._db.read("read adoptions") as tx:
            rows = tx.all(sql + " ORDER BY bar_ts_ns, runner, sleeve", params)
        return [Adoption(**{k: r[k] for k in Adoption.__dataclass_fields__}) for r in rows]

    def current_adoptions(self, runner: str) -> dict[str, Adoption]:
        """The last adoption of each sleeve of ``runner``: the record each one trades."""
        return {a.sleeve: a for a in self.adoptions() if a.runner == runner}

    def record_promotion_event(
        self, promotion_id: int, action: str, *, by: str, reason: str
    ) -> None:
        """Log a promotion, rollback, forced gate or refusal (who, when, why)."""
        if action not in EVENT_ACTIONS:
            raise ConfigError(f"promotion event: action must be one of {EVENT_ACTIONS}")
        values = (
            checks.integer("promotion_id", promotion_id), action, checks.text("by", by),
            str(reason), time.time_ns(),
        )  # fmt: skip
        with self._db.write(f"promotion event {action}", None) as tx:
            row = tx.one(
                "INSERT INTO promotion_events (promotion_id, action, created_by, reason, ts_ns) "
                "VALUES (?, ?, ?, ?, ?) RETURNING event_id",
                values,
            )
            if action == "refuse":
                enqueue(
                    tx, key=f"refusal:{row['event_id']}", kind="refusal",
                    title=f"promotion {promotion_id} refused by {by}", body=str(reason),
                    ts_ns=values[-1],
                )  # fmt: skip

    def promotion_events(self, promotion_id: int | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM promotion_events", ()
        if promotion_id is not None:
            sql, params = sql + " WHERE promotion_id = ?", (int(promotion_id),)
        with self._db.read("read promotion events") as tx:
            return [dict(r) for r in tx.all(sql + " ORDER BY event_id", params)]

    def paper_evidence(self, promotion_id: int) -> PaperEvidence:
        """The paper-trading record of one promotion record: the trades its sleeves entered
        while it was adopted, their equity over those windows, and HALTs written since."""
        promotion_id = int(promotion_id)
        with self._db.read("read paper evidence") as tx:
            rows = tx.all(
                "SELECT a.* FROM promotion_adoptions a JOIN (SELECT DISTINCT runner, sleeve FROM "
                "promotion_adoptions WHERE promotion_id = ?) m ON a.runner = m.runner AND "
                "a.sleeve = m.sleeve ORDER BY a.runner, a.sleeve, a.bar_ts_ns",
                (promotion_id,),
            )
            stretches = []
            for runner, sleeve, start, end, adopted in _windows(rows, promotion_id):
                pnls = [
                    float(t["pnl"])
                    for t in tx.all(
                        "SELECT pnl FROM trades WHERE sleeve = ? AND entry_ts_ns >= ? AND "
                        "entry_ts_ns < ? AND exit_ts_ns < ? ORDER BY exit_ts_ns",
                        (sleeve, start, end, end),
                    )
                ]
                snaps = tx.all(
                    "SELECT ts_ns, equity FROM equity_snapshots WHERE sleeve = ? AND ts_ns >= ? "
                    "AND ts_ns < ? ORDER BY ts_ns",
                    (sleeve, start, end),
                )
                stretches.append(
                    PaperStretch(
                        runner=runner,
                        sleeve=sleeve,
                        first_bar_ts_ns=start,
                        last_bar_ts_ns=int(snaps[-1]["ts_ns"]) if snaps else None,
                        ts_adopted_ns=adopted,
                        trade_pnls=tuple(pnls),
                        equity=tuple(float(s["equity"]) for s in snaps),
                    )
                )
            since = [int(r["ts_adopted_ns"]) for r in rows if r["promotion_id"] == promotion_id]
            halts = 0
            if since:
                found = tx.one(
                    "SELECT COUNT(*) AS n FROM halts WHERE ts_created_ns >= ?", (min(since),)
                )
                halts = int(found["n"])
        row = self.promotion(promotion_id)
        last_bar = PromotionRecord.from_json(row.record).data.get("last_bar")
        return paper_evidence(
            stretches,
            published_ts_ns=int(row.ts_created_ns),
            data_last_bar_ts_ns=None if last_bar is None else pd.Timestamp(last_bar).value,
            halts=halts,
        )


def _windows(rows, promotion_id: int):
    """Yield (runner, sleeve, first bar, end bar exclusive, wall-clock time of the adoption) of
    each stretch a (runner, sleeve) traded ``promotion_id``: from an adoption of it to the next
    adoption of another record."""
    open_at: dict[tuple[str, str], tuple[int, int]] = {}
    for row in rows:
        key = (row["runner"], row["sleeve"])
        if row["promotion_id"] == promotion_id:
            # A redo/takeover re-adopting: the same stretch.
            open_at.setdefault(key, (int(row["bar_ts_ns"]), int(row["ts_adopted_ns"])))
        elif key in open_at:
            start, adopted = open_at.pop(key)
            yield *key, start, int(row["bar_ts_ns"]), adopted
    for key, (start, adopted) in open_at.items():
        yield *key, start, 2**62, adopted


class StorePromotions:
    """The live store as the promotion script sees it (``quantshift.promotion.PromotionStore``)."""

    def __init__(self, url: str) -> None:
        from live.store import Store

        self.store = Store.open(url)
        self.url = url

    def close(self) -> None:
        self.store.close()

    def add(self, record: PromotionRecord, *, by: str, reason: str) -> StoredPromotion:
        row = self.store.add_promotion(
            name=record.name,
            stage=record.stage,
            code_fingerprint=dict(record.code),
            record=record.to_json(),
            created_by=by,
        )
        self.store.record_promotion_event(
            row.promotion_id, "force" if record.forced else "promote", by=by, reason=reason
        )
        return _stored(row)

    def active(self, name: str, stage: str) -> StoredPromotion | None:
        row = self.store.active_promotion(name, stage)
        return None if row is None else _stored(row)

    def history(self, name: str | None = None) -> list[StoredPromotion]:
        return [_stored(r) for r in self.store.promotions(name)]

    def get(self, promotion_id: int) -> StoredPromotion:
        return _stored(self.store.promotion(promotion_id))

    def activate(self, promotion_id: int, *, by: str, reason: str) -> StoredPromotion:
        row = self.store.activate_promotion(promotion_id)
        self.store.record_promotion_event(promotion_id, "rollback", by=by, reason=reason)
        return _stored(row)

    def events(self, promotion_id: int | None = None) -> list[dict[str, Any]]:
        return self.store.promotion_events(promotion_id)

    def paper_evidence(self, promotion_id: int) -> PaperEvidence:
        return self.store.paper_evidence(promotion_id)

    def adoptions(self, promotion_id: int) -> list[dict[str, Any]]:
        return [a.__dict__ for a in self.store.adoptions(promotion_id)]


def open_promotion_store(url: str) -> StorePromotions:
    """Entry point of ``quantshift.promotion_stores``: the live store at ``url``."""
    return StorePromotions(url)


def _stored(row: Promotion) -> StoredPromotion:
    where = f"promotion record {row.promotion_id} ({row.name}/{row.stage})"
    return StoredPromotion(
        promotion_id=row.promotion_id,
        active=row.active,
        created_by=row.created_by,
        ts_created_ns=row.ts_created_ns,
        record=PromotionRecord.from_json(row.record, where),
    )
