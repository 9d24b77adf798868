"""Deterministic client order ids: the same decision always maps to the same id.

A leader that re-decides a bar after a crash or failover sends the id the broker already knows.
"""

from __future__ import annotations

import hashlib
import json
import operator

from quantshift.errors import ConfigError

PREFIX = "qs"
HASH_CHARS = 32
"""Hex characters of the SHA-256 digest kept by default (128 bits)."""
MIN_HASH_CHARS = 16
"""Fewest hex characters allowed (64 bits): collisions among one store's orders stay negligible."""
SIDES = ("buy", "sell")


def client_order_id(
    sleeve: str, symbol: str, bar_ts_ns: int, side: str, venue_max_len: int = 128
) -> str:
    """Return the client order id of one decision: (sleeve, symbol, bar time, side).

    The id is ``"qs"`` followed by hex digits of a SHA-256 over a canonical JSON encoding of the
    four values, so it is the same in every process and on every host, contains only ASCII
    letters and digits (accepted by Alpaca, Coinbase and FIX venues alike), is never empty, and
    is at most ``venue_max_len`` characters long (34 when the venue allows that many). The
    leader epoch is deliberately not part of it: a new leader re-deciding the same bar must
    produce the same id, which the broker then refuses as a duplicate.

    Parameters
    ----------
    sleeve, symbol : str
        Non-empty names; case matters.
    bar_ts_ns : int
        UTC nanosecond timestamp of the bar the decision was made on.
    side : str
        ``"buy"`` or ``"sell"`` (case-insensitive).
    venue_max_len : int
        Longest id the venue accepts (Alpaca: 128); at least 18.

    Raises
    ------
    ConfigError
        On an empty name, a non-integer time, an unknown side or a too small ``venue_max_len``.
    """
    for what, value in (("sleeve", sleeve), ("symbol", symbol)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"client_order_id: {what} must be a non-empty string, got {value!r}")
    if isinstance(bar_ts_ns, bool):
        raise ConfigError(f"client_order_id: bar_ts_ns must be an integer, got {bar_ts_ns!r}")
    try:
        ts = operator.index(bar_ts_ns)
    except TypeError:
        raise ConfigError(
            f"client_order_id: bar_ts_ns must be integer nanoseconds, got {bar_ts_ns!r}"
        ) from None
    side_name = side.lower() if isinstance(side, str) else side
    if side_name not in SIDES:
        raise ConfigError(f"client_order_id: side must be one of {SIDES}, got {side!r}")
    n_hex = min(HASH_CHARS, venue_max_len - len(PREFIX))
    if n_hex < MIN_HASH_CHARS:
        raise ConfigError(
            f"client_order_id: venue_max_len={venue_max_len} is too short; at least "
            f"{len(PREFIX) + MIN_HASH_CHARS} characters are needed for a collision-safe id"
        )
    canonical = json.dumps([sleeve, symbol, ts, side_name], separators=(",", ":"))
    return PREFIX + hashlib.sha256(canonical.encode()).hexdigest()[:n_hex]
