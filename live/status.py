"""What ``live status`` reports and what ``live halt`` writes, for the CLI and the status page.

One place reads the store (and the Redis lease, if configured) into the status dict, and one
place writes the kill switch's HALT, so the two front ends cannot drift apart.
"""

from __future__ import annotations

from typing import Any

FLATTEN_MARK = "(flatten)"
"""Ends the reason of a HALT that also closes every position (the runner reads it back)."""


def gather_status(cfg, store) -> dict[str, Any]:
    """Return the runner's status: the store's snapshot, its owner, promotions in use, lease.

    Parameters
    ----------
    cfg : live.config.LiveConfig
        The runner's config.
    store : live.store.Store
        Its store, open.

    Returns
    -------
    dict
        ``Store.status()`` as plain data plus ``owner``, ``promotions`` (per sleeve, the
        promotion record it trades, None for the config's parameters), ``runner`` and, with a
        Redis lease, ``lease`` (holder and epoch, or the error reaching Redis).
    """
    info = store.status().to_dict()
    info["owner"] = store.owner()
    info["promotions"] = _promotions_in_use(cfg, store)
    info["runner"] = cfg.name
    if cfg.lease.redis_url is not None:
        info["lease"] = _lease_info(cfg)
    return info


def halt_trading(store, reason: str, *, flatten: bool, by: str):
    """Persist a HALT (the kill switch): no new orders from the next cycle on.

    Parameters
    ----------
    store : live.store.Store
        The runner's store, open.
    reason : str
        Why, kept in the store's history.
    flatten : bool
        Whether the runner also closes every position at its next cycle.
    by : str
        Who halted.

    Returns
    -------
    live.store.records.Halt
        The active HALT (an earlier one if trading was already halted).
    """
    text = f"{reason} {FLATTEN_MARK}" if flatten else reason
    return store.halt(text, by=by)


def _lease_info(cfg) -> dict[str, Any]:
    from live.lease import LeaseUnavailableError, RedisLease

    lease = RedisLease(cfg.lease.redis_url, cfg.lease.name, ttl_ms=cfg.lease.ttl_ms)
    try:
        holder = lease.current_holder()
    except LeaseUnavailableError as exc:
        return {"error": str(exc)}
    finally:
        lease.close()
    return {
        "held": holder.held,
        "epoch": holder.epoch,
        "ttl_left_ms": holder.ttl_left_ms,
        "last_epoch": holder.last_epoch,
    }


def _promotions_in_use(cfg, store) -> dict[str, Any]:
    """Per sleeve: the promotion record its runner adopted last (None: config parameters), and
    whether the stored record still verifies against the id saved with the adoption."""
    from live.adoption import adoption_problem

    latest = store.current_adoptions(cfg.name)
    out: dict[str, Any] = {}
    for sleeve in cfg.portfolio.sleeve_names:
        adoption = latest.get(sleeve)
        if adoption is None:
            out[sleeve] = None
            continue
        row = store.promotion(adoption.promotion_id)
        problem = adoption_problem(row, adoption.record_id)
        out[sleeve] = {
            "record_id": adoption.record_id,
            "name": row.strategy,
            "stage": row.stage,
            "params": row.record_dict()["params"],
            "bar_ts_ns": adoption.bar_ts_ns,
            "verified": problem is None,
            "problem": problem,
        }
    return out
