"""Human-facing numbers, formatted one way: money, percentages, ratios, counts and ages.

Every command, report and status line that a person reads formats its numbers here; JSON output
keeps the raw values. A missing value (None, NaN) reads ``-``.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "-"
COUNT_WORDS = ("trades", "trials", "folds", "bars", "orders", "positions", "paths", "splits")
"""Metric names (or their last word) that count things: shown as whole numbers."""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _infinite(value: float) -> str | None:
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return None


def money(value: float | None, currency: str = "") -> str:
    """Return an amount with thousands separators and 2 decimals: ``97,687.50`` (``USD 12.00``
    with a currency)."""
    if _missing(value):
        return MISSING
    text = _infinite(value) or f"{value:,.2f}"
    return f"{currency} {text}" if currency else text


def percent(value_pct: float | None, decimals: int = 2, *, sign: bool = True) -> str:
    """Return a value already in percent units: ``12.34%`` (``12.34`` without ``sign``, in a
    column whose header says %)."""
    if _missing(value_pct):
        return MISSING
    return (_infinite(value_pct) or f"{value_pct:,.{decimals}f}") + ("%" if sign else "")


def ratio(value: float | None) -> str:
    """Return a ratio (Sharpe, PSR, DSR, PBO, efficiency) with 3 decimals: ``0.937``."""
    if _missing(value):
        return MISSING
    return _infinite(value) or f"{value:,.3f}"


def count(value: float | None) -> str:
    """Return a count as a whole number with thousands separators: ``4,263``."""
    if _missing(value):
        return MISSING
    return _infinite(value) or f"{round(value):,d}"


def number(value: Any) -> str:
    """Return a threshold or a loose number in its shortest form, at most 3 decimals, with
    thousands separators: ``0.95``, ``20``, ``1,250.5``; booleans read ``yes`` / ``no``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _missing(value):
        return MISSING
    if isinstance(value, int):
        return f"{value:,d}"
    if not isinstance(value, float):
        return str(value)
    text = _infinite(value) or f"{value:,.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def duration(seconds: float | None) -> str:
    """Return a duration or an age, rounded down to one unit: ``12 s``, ``3 min``, ``5 h``,
    ``2 d`` (a negative one, e.g. from clock skew, reads as ``0 s``)."""
    if _missing(seconds):
        return MISSING
    seconds = max(0.0, float(seconds))
    # Two of a unit before switching to it: "90 min" and "36 h" say more than "1 h", "1 d".
    for unit, size, from_s in (("d", 86_400, 172_800), ("h", 3_600, 7_200), ("min", 60, 60)):
        if seconds >= from_s:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def elapsed(seconds: float | None) -> str:
    """Return a wall time measured by a command: ``0.84 s``, ``12.3 s``, ``3 min 05 s``."""
    if _missing(seconds):
        return MISSING
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def metric(name: str, value: Any) -> str:
    """Return a named metric formatted by what its name says it is: ``*_pct`` a percentage,
    counts (``trades``, ``trials``, ...) whole numbers, money (``equity``, ``pnl``, wins and
    losses) 2 decimals, ``*_s`` a wall time, anything else a ratio."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return number(value)
    if "_pct" in name or name.endswith("pct"):
        return percent(value)
    last = name.rsplit("_", 1)[-1]
    if name in COUNT_WORDS or last in COUNT_WORDS:
        return count(value)
    if name.endswith("_s"):
        return elapsed(value)
    if any(word in name for word in ("equity", "pnl", "_win", "_loss", "cash", "notional")):
        return money(value)
    return ratio(value)


def table(headers: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> list[str]:
    """Return a plain-text table as lines: a header, a rule, then one line per row, columns
    padded to their widest cell (those in ``right`` aligned right, for numbers)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]
