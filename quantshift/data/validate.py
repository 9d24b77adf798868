"""Check loaded bars before anything trades on them.

Every problem is reported with its source, bar position, UTC time, symbol and what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from quantshift.data.bars import FIELDS, Bars
from quantshift.errors import DataError

_PRICES = ("open", "high", "low", "close")


def iso_utc(ts_ns: int) -> str:
    """Format a UTC nanosecond timestamp as ISO 8601."""
    return pd.Timestamp(int(ts_ns), unit="ns", tz="UTC").isoformat()


def validate_bars(bars: Bars, *, locate: Callable[[int, int], str] | None = None) -> Bars:
    """Check bars for impossible or inconsistent values and return them unchanged.

    Parameters
    ----------
    bars : Bars
        Bars to check.
    locate : callable, optional
        ``locate(bar, column)`` returns where that bar came from (e.g. ``"line 57"``), added to
        error messages of per-bar checks.

    Returns
    -------
    Bars
        The same object, if every check passes.

    Raises
    ------
    DataError
        On the first failing check: no bars or symbols, timestamps that are not strictly
        increasing, infinite values, bars with some but not all fields NaN, a symbol without
        any bar, prices <= 0, negative volume, high < low, high < max(open, close) or
        low > min(open, close). The message names the first offending bar and counts all
        bars that fail the same check.
    """
    src = bars.source
    if bars.n_bars == 0:
        raise DataError(f"{src}: no bars")
    if bars.n_symbols == 0:
        raise DataError(f"{src}: no symbols")
    _check_time(bars)

    fields = {name: getattr(bars, name) for name in FIELDS}
    o, h, l, c, v = fields.values()

    def first_field(t: int, s: int, test: Callable[[float], bool], names=FIELDS) -> str:
        name = next(f for f in names if test(fields[f][t, s]))
        return f"{name} is {float(fields[name][t, s])}"

    inf = np.isinf(o) | np.isinf(h) | np.isinf(l) | np.isinf(c) | np.isinf(v)
    _fail_if(bars, inf, "infinite value", lambda t, s: first_field(t, s, np.isinf), locate)

    n_nan = sum(np.isnan(a).astype(np.int8) for a in fields.values())
    partial = (n_nan > 0) & (n_nan < len(FIELDS))

    def which_nan(t: int, s: int) -> str:
        missing = [f for f in FIELDS if np.isnan(fields[f][t, s])]
        return f"{', '.join(missing)} NaN but not the other fields (a missing bar is all NaN)"

    _fail_if(bars, partial, "partially missing bar", which_nan, locate)

    empty = n_nan.min(axis=0) == len(FIELDS)
    if empty.any():
        sym = bars.symbols[int(np.argmax(empty))]
        raise DataError(
            f"{src}: symbol '{sym}' has no bars (NaN at all {bars.n_bars} bars); "
            f"{int(empty.sum())} symbol(s) have no bars"
        )

    nonpositive = (o <= 0) | (h <= 0) | (l <= 0) | (c <= 0)
    _fail_if(
        bars,
        nonpositive,
        "price <= 0",
        lambda t, s: first_field(t, s, lambda x: x <= 0, _PRICES),
        locate,
    )
    _fail_if(bars, v < 0, "negative volume", lambda t, s: f"volume is {float(v[t, s])}", locate)
    _fail_if(
        bars,
        h < l,
        "high < low",
        lambda t, s: f"high {float(h[t, s])} < low {float(l[t, s])}",
        locate,
    )
    _fail_if(
        bars,
        h < np.maximum(o, c),
        "high < max(open, close)",
        lambda t, s: f"high {float(h[t, s])} < max(open {float(o[t, s])}, close {float(c[t, s])})",
        locate,
    )
    _fail_if(
        bars,
        l > np.minimum(o, c),
        "low > min(open, close)",
        lambda t, s: f"low {float(l[t, s])} > min(open {float(o[t, s])}, close {float(c[t, s])})",
        locate,
    )
    return bars


def _check_time(bars: Bars) -> None:
    ts = bars.ts_ns
    step = np.diff(ts)
    bad = step <= 0
    if not bad.any():
        return
    i = int(np.argmax(bad))
    kind = "duplicate timestamp" if step[i] == 0 else "timestamp not increasing"
    raise DataError(
        f"{bars.source}: {kind} at bar {i + 1}: {iso_utc(ts[i + 1])} follows "
        f"{iso_utc(ts[i])} at bar {i}; {int(bad.sum())} bar(s) fail this check"
    )


def _fail_if(
    bars: Bars,
    mask: np.ndarray,
    check: str,
    detail: Callable[[int, int], str],
    locate: Callable[[int, int], str] | None,
) -> None:
    if not mask.any():
        return
    # Row-major argmax finds the earliest bar in time, which is where a reader looks first.
    t, s = divmod(int(np.argmax(mask)), bars.n_symbols)
    where = f", {locate(t, s)}" if locate is not None else ""
    n_bad, n_symbols = int(mask.sum()), int(mask.any(axis=0).sum())
    raise DataError(
        f"{bars.source}: {check} at bar {t} ({iso_utc(bars.ts_ns[t])}), symbol "
        f"'{bars.symbols[s]}'{where}: {detail(t, s)}; "
        f"{n_bad} bar(s) in {n_symbols} symbol(s) fail this check"
    )
