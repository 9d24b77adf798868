"""What ``live status`` reports and what ``live halt`` writes, for the CLI and the status page.

One place reads the store (and the Redis lease, if configured) into the status dict and renders
it for people, and one place writes the kill switch's HALT, so the front ends cannot drift apart.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("quantshift.live")

FLATTEN_MARK = "(flatten)"
"""Ends the reason of a HALT that also closes every position (the runner reads it back)."""

STANDBY_STALE_S = 60.0
"""A standby, and a replay's leader, write a heartbeat every poll or bar: older is stale (the
alert rule QuantShiftHeartbeatStale uses the same bound)."""


def now_ns() -> int:
    """The wall clock that heartbeat ages are measured on (one place, so a test can fix it)."""
    return time.time_ns()


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
    now = now_ns()
    info["now_ns"] = now
    for beat in [*info["heartbeats"], *([info["leader"]] if info["leader"] else [])]:
        beat["age_s"] = max(0.0, (now - beat["ts_ns"]) / 1e9)
    info["leader_stale"] = _leader_stale(cfg, info, now)
    return info


def _leader_stale(cfg, info: dict[str, Any], now: int) -> str | None:
    """Why the last leader looks stopped or stuck (None: it does not, or there is none).

    A leader heartbeats every bar: a replay's bars come at least every ``STANDBY_STALE_S``
    (or its ``speed``); on a venue's feed it is stale once more than two bar intervals passed
    and the market traded more than one since (a closed market sends no bar).
    """
    leader = info["leader"]
    if leader is None:
        return None
    from quantshift.formatting import duration

    age_s = leader["age_s"]
    if leader["epoch"] < info["fence_epoch"]:
        return f"deposed: epoch {leader['epoch']} is below the fence epoch {info['fence_epoch']}"
    if cfg.feed.kind == "replay":
        bound = max(STANDBY_STALE_S, 3.0 / cfg.feed.speed if cfg.feed.speed > 0 else 0.0)
        if age_s <= bound:
            return None
        return f"stopped: no heartbeat for {duration(age_s)} (a replay heartbeats every bar)"
    if age_s <= 2 * cfg.bar_interval_s:
        return None
    from live.clock import MarketClock

    traded = MarketClock(cfg.market, cfg.bar_interval_s).intervals_between(leader["ts_ns"], now)
    if traded <= 1:
        return None
    return (
        f"stopped or stuck: no heartbeat for {duration(age_s)} while the market traded "
        f"{traded:.0f} bar intervals"
    )


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


class HaltWatch:
    """Log a HALT when it takes effect in the runner's cycle, and the resume when a person
    cleared it: once each, also when the cycle redoes a bar or the runner restarts halted."""

    def __init__(self, store) -> None:
        self.store = store
        self._active = None  # the HALT in effect at the last cycle

    def observe(self, halt, ts_ns: int, epoch: int | None) -> None:
        """Note the active HALT (None: none) that governs the cycle of bar ``ts_ns``."""
        seen, self._active = self._active, halt
        extra = {"cycle": ts_ns, "epoch": epoch}
        if halt is not None and (seen is None or seen.halt_id != halt.halt_id):
            log.warning(
                "HALT %s in effect from bar %s: %s (by %s at %s UTC); no new orders until "
                "`live resume`",
                halt.halt_id, utc_time(ts_ns), halt.reason, halt.created_by,
                utc_time(halt.ts_created_ns), extra=extra,
            )  # fmt: skip
        elif halt is None and seen is not None:
            cleared = next((h for h in self.store.halts() if h.halt_id == seen.halt_id), seen)
            log.warning(
                "HALT %s cleared by %s: trading resumes at bar %s",
                seen.halt_id, cleared.cleared_by or "a person", utc_time(ts_ns), extra=extra,
            )  # fmt: skip


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
    from live.adoption import adoption_problem, record_forced

    latest = store.current_adoptions(cfg.name)
    out: dict[str, Any] = {}
    for sleeve in cfg.portfolio.sleeve_names:
        adoption = latest.get(sleeve)
        if adoption is None:
            out[sleeve] = None
            continue
        row = store.promotion(adoption.promotion_id)
        problem = adoption_problem(row, adoption.record_id)
        record = row.record_dict()
        out[sleeve] = {
            "record_id": adoption.record_id,
            "name": row.name,
            "stage": row.stage,
            "params": record["params"],
            "forced": record_forced(record),
            "bar_ts_ns": adoption.bar_ts_ns,
            "verified": problem is None,
            "problem": problem,
        }
    return out


# --------------------------------------------------------------------------- for people
def status_lines(info: dict[str, Any]) -> list[tuple[str, bool]]:
    """Render :func:`gather_status` for a person: ``(line, alarming)`` pairs, where alarming
    lines (a stale leader, a foreign store, a HALT, a record that does not verify) stand out."""
    from quantshift.formatting import count, duration, money, number, table

    out: list[tuple[str, bool]] = [
        (
            f"runner {info['runner']}: store {info['store']} (schema v{info['schema_version']}), "
            f"fence epoch {info['fence_epoch']}",
            False,
        )
    ]
    owner = info.get("owner")
    if owner is None:
        out.append(("no runner has started on this store yet", False))
    elif owner["runner"] != info["runner"]:
        out.append(
            (
                f"this store belongs to runner {owner['runner']!r} (lease "
                f"{owner['lease_name']!r}), not to this config's runner {info['runner']!r}",
                True,
            )
        )
    leader = info.get("leader")
    if leader is None:
        out.append(("no leader heartbeat" + ("" if info.get("heartbeats") else " yet"), False))
    else:
        age = duration(leader["age_s"])
        line = f"leader {leader['host']}, epoch {leader['epoch']}, heartbeat {age} ago"
        out.append((line, False))
        if info.get("leader_stale"):
            out.append((f"WARNING: leader {leader['host']} looks {info['leader_stale']}", True))
    beats = info.get("heartbeats") or []
    if beats:
        # A standby has no epoch (stored as 0).
        rows = [
            [b["host"], b["role"], number(b["epoch"] or None), utc_time(b["ts_ns"]),
             duration(b["age_s"])]
            for b in beats
        ]  # fmt: skip
        headers = ["host", "role", "epoch", "last heartbeat (UTC)", "age"]
        out += [(line, False) for line in table(headers, rows, right=(2, 4))]
    if "lease" in info:
        out.append((_lease_line(info["lease"]), "error" in info["lease"]))
    halt = info.get("halt")
    if halt:
        out.append(
            (
                f"HALT since {utc_time(halt['ts_created_ns'])} UTC: {halt['reason']} (by "
                f"{halt['created_by']}); clear with `live resume`",
                True,
            )
        )
    for sleeve, row in (info.get("promotions") or {}).items():
        if row is None:
            out.append((f"sleeve {sleeve}: parameters from the config", False))
            continue
        params = ", ".join(f"{k}={number(v)}" for k, v in row["params"].items())
        verdict = "verified" if row["verified"] else f"NOT VERIFIED: {row['problem']}"
        forced = ", FORCED past a failed gate" if row.get("forced") else ""
        out.append(
            (
                f"sleeve {sleeve}: promotion record {row['record_id']} ({row['name']} "
                f"{row['stage']}, {params}{forced}) since bar {utc_time(row['bar_ts_ns'])}, "
                + verdict,
                not row["verified"] or bool(forced),
            )
        )
    equity = info.get("equity") or {}
    day_pnl = info.get("day_pnl")
    out.append(
        (
            f"equity {money(equity.get('equity'))}, realized P&L {money(info.get('realized_pnl'))}"
            f", day P&L {money(day_pnl)}, open orders {count(info.get('open_orders'))}",
            False,
        )
    )
    positions = info.get("positions") or []
    if positions:
        rows = [
            [p["sleeve"], p["symbol"], number(p["qty"]), money(p.get("avg_price"))]
            for p in positions
        ]
        out.append(("positions:", False))
        headers = ["sleeve", "symbol", "units", "average price"]
        out += [(line, False) for line in table(headers, rows, right=(2, 3))]
    else:
        out.append(("no open positions", False))
    return out


def _lease_line(lease: dict[str, Any]) -> str:
    from quantshift.formatting import duration

    if "error" in lease:
        return f"lease: cannot read it: {lease['error']}"
    if not lease["held"]:
        return f"lease: free (last epoch {lease['last_epoch']})"
    left = lease["ttl_left_ms"] / 1000.0
    shown = f"{left:.1f} s" if left < 60 else duration(left)
    return f"lease: held by epoch {lease['epoch']}, {shown} left (last epoch {lease['last_epoch']})"


def utc_time(ts_ns: int | None) -> str:
    """``2026-12-06 18:00:00``: a UTC time for people (``-`` if None)."""
    if ts_ns is None:
        return "-"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S")
