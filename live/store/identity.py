"""Which store this is and which runner owns it: one store, one runner identity.

A mixin of :class:`live.store.Store`; the owner is the runner name with its lease name, so the
store's fence follows one lease's epochs, never two.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from live.store import checks
from live.store.errors import StoreOwnerError

if TYPE_CHECKING:
    from live.store.db import Database


def pin_instance(db: Database) -> str:
    """Draw the store's instance id if it has none yet, pin ``db`` to it and return it."""
    with db.transaction("store identity") as tx:
        tx.run(
            "INSERT INTO store_identity (id, instance_id, ts_created_ns) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (uuid.uuid4().hex, time.time_ns()),
        )
        instance_id = tx.one("SELECT instance_id FROM store_identity WHERE id = 1")["instance_id"]
    db.pin(instance_id)
    return instance_id


class Identity:
    """The store's instance id and its owning runner."""

    _db: Database

    @property
    def instance_id(self) -> str:
        """The id drawn when this store was created (a new database gets a new one)."""
        return self._db.instance_id

    def owner(self) -> dict[str, Any] | None:
        """Return ``{runner, lease_name, ts_claimed_ns}`` of the owning runner, or None."""
        with self._db.read("read store owner") as tx:
            row = tx.one("SELECT * FROM store_identity WHERE id = 1")
        if row is None or row["runner"] is None:
            return None
        return {k: row[k] for k in ("runner", "lease_name", "ts_claimed_ns")}

    def claim_owner(self, runner: str, lease_name: str) -> None:
        """Make (``runner``, ``lease_name``) the store's owner at a runner's start, or check it is.

        The first runner to start on a store owns it. Another runner name, or the owner's name
        with another lease name (another epoch sequence against the same fence), is refused
        with :class:`~live.store.errors.StoreOwnerError` naming the owner; nothing is written.
        A store used before owners were recorded is claimed by the runner whose state it holds.
        """
        runner, lease_name = checks.text("runner", runner), checks.text("lease_name", lease_name)
        with self._db.write("claim of the store", None) as tx:
            row = tx.one("SELECT runner, lease_name FROM store_identity WHERE id = 1")
            owner = (row["runner"], row["lease_name"])
            if owner[0] is None:
                other = tx.one(
                    "SELECT runner FROM runner_state WHERE runner <> ? LIMIT 1", (runner,)
                )
                if other is None:
                    tx.run(
                        "UPDATE store_identity SET runner = ?, lease_name = ?, ts_claimed_ns = ? "
                        "WHERE id = 1",
                        (runner, lease_name, time.time_ns()),
                    )
                    return
                owner = (other["runner"], None)
            if owner == (runner, lease_name):
                return
            lease = "" if owner[1] is None else f" (lease {owner[1]!r})"
            raise StoreOwnerError(
                f"store {self._db.url.shown} belongs to runner {owner[0]!r}{lease}, not to "
                f"runner {runner!r} (lease {lease_name!r}): one store serves one runner; give "
                "this runner its own [store] url, or use the owner's [runner] and [lease] names"
            )
