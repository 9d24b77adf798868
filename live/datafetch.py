"""`quantshift data fetch`: download a venue's historical bars into the Parquet cache, one file per
venue, timeframe and symbol, resuming from what is cached and saving after every page.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from live.broker import TIMEFRAME_SECONDS, VENUES
from quantshift.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

# pandas, quantshift.data and the venue SDKs are imported inside the functions that use them:
# quantshift.cli loads this module at start-up for every command, and they take seconds.

DEFAULT_MODES = {"alpaca": "paper", "coinbase": "live"}
"""Coinbase Advanced has no paper venue for market data; fetching bars never trades."""
NS = 1_000_000_000
# Alpaca's daily bars open at midnight New York time: 23 h apart across a DST change.
_SHORTEST_DAY_NS = 23 * 3600 * NS

ProgressHook = Callable[[str, int, int, int, "int | None"], None]
"""``progress(symbol, bars_added, done_ns, total_ns, last_ns)``: at a symbol's start, per page."""


def cache_path(venue: str, timeframe: str, symbol: str) -> Path:
    """Return the cache file of one symbol, ``data_dir()/VENUE/TIMEFRAME/SYMBOL.parquet``.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` (``BRK/B`` ->
    ``BRK_B.parquet``) and a leading dot too; the file's symbol column keeps the real name.
    """
    from quantshift.data import data_dir

    safe = re.sub(r"[^A-Za-z0-9._-]", "_", symbol)
    safe = f"_{safe[1:]}" if safe.startswith(".") else safe
    return data_dir() / venue / timeframe / f"{safe}.parquet"


def fetch_bars(
    venue: str,
    symbols: Sequence[str],
    start: Any,
    end: Any = None,
    timeframe: str = "1d",
    *,
    options: Mapping[str, Any] | None = None,
    mode: str | None = None,
    progress: ProgressHook | None = None,
    now_ns: int | None = None,
) -> dict[str, Any]:
    """Download the bars of ``symbols`` with open time in ``[start, end)`` into the cache.

    A cached file stays one contiguous run of bars: only the time before its first bar and
    after its last is fetched (a request beyond the cached run also fills the gap up to it).
    Later bars are saved after every page, so an interruption loses nothing already fetched;
    earlier bars are saved once they reach the cached run. Bars that are not complete at
    ``now_ns`` are not stored.

    Parameters
    ----------
    venue : {"alpaca", "coinbase"}
    symbols : sequence of str
        Tickers or product ids (upper-cased), e.g. ``["AAPL"]`` or ``["BTC-USD"]``.
    start, end : anything ``pandas.Timestamp`` accepts
        Naive times are UTC; ``end`` (excluded) defaults to now and is capped at now.
    timeframe : {"1m", "5m", "15m", "1h", "1d"}
    options : mapping, optional
        Keys of the venue's config (``AlpacaConfig`` / ``CoinbaseConfig``: key environment
        variables, ``secrets_file``, endpoint overrides, timeouts, backoff).
    mode : {"paper", "live"}, optional
        Default ``paper`` for Alpaca, ``live`` for Coinbase. Coinbase candles are public: without
        keys in the environment or a secrets file the public endpoint is read.
    progress : callable, optional
        ``ProgressHook``: ``bars_added`` counts saved bars, ``done_ns`` of ``total_ns`` of the
        missing time is covered, ``last_ns`` is the last bar fetched.
    now_ns : int, optional
        The current time in UTC ns (tests fix it).

    Returns
    -------
    dict
        ``venue, timeframe, start, end`` and ``symbols``: per symbol ``symbol, path, bars_added,
        bars_total, first, last`` (ISO UTC); ``path`` is None when there are no bars at all.

    Raises
    ------
    ConfigError
        Unknown venue, timeframe or option, bad dates, or missing keys (naming where looked).
    BrokerAuthError, BrokerRateLimitedError, BrokerUnavailableError
        When the venue refuses; pages saved before stay in the cache.
    DataError
        A cache file that cannot be read or holds another symbol, or bars that fail validation.
    """
    from quantshift.data.validate import iso_utc

    if venue not in VENUES:
        raise ConfigError(f"unknown venue {venue!r}; available: {', '.join(VENUES)}")
    if timeframe not in TIMEFRAME_SECONDS:
        raise ConfigError(
            f"unknown timeframe {timeframe!r}; use one of {', '.join(TIMEFRAME_SECONDS)}"
        )
    now_ns = time.time_ns() if now_ns is None else int(now_ns)
    start_ns = _to_ns(start, "start")
    end_ns = now_ns if end is None else _to_ns(end, "end")
    if start_ns >= now_ns:
        raise ConfigError(f"start {iso_utc(start_ns)} is in the future; no bars yet")
    if end_ns <= start_ns:
        raise ConfigError(f"end {iso_utc(end_ns)} must be after start {iso_utc(start_ns)}")
    names = list(dict.fromkeys(str(s).strip().upper() for s in symbols))
    if not names or not all(names):
        raise ConfigError(f"give one or more symbols, got {list(symbols)!r}")
    source, bar_pages, close = _open_venue(venue, dict(options or {}), mode or DEFAULT_MODES[venue])
    try:
        window = (start_ns, min(end_ns, now_ns))

        def pages(symbol: str, lo: int, hi: int) -> Iterator[pd.DataFrame]:
            step_ns = TIMEFRAME_SECONDS[timeframe] * NS
            for page in bar_pages(source, symbol, lo, hi, timeframe):
                page = page[page["ts_ns"].to_numpy() + step_ns <= now_ns]  # complete bars only
                if len(page):
                    yield page

        rows = [
            _fetch_symbol(pages, cache_path(venue, timeframe, s), s, window, timeframe, progress)
            for s in names
        ]
    finally:
        close()
    times = {"start": iso_utc(start_ns), "end": iso_utc(end_ns)}
    return {"venue": venue, "timeframe": timeframe, **times, "symbols": rows}


def _fetch_symbol(pages, path: Path, symbol: str, window, timeframe: str, progress) -> dict:
    from quantshift.data.validate import iso_utc

    cached = _read_cache(path, symbol)
    start_ns, end_ns = window
    gap_ns = _SHORTEST_DAY_NS if timeframe == "1d" else TIMEFRAME_SECONDS[timeframe] * NS
    head = tail = None
    if len(cached) == 0:
        tail = window
    else:
        first, last = int(cached["ts_ns"].iloc[0]), int(cached["ts_ns"].iloc[-1])
        # A bar before the first (after the last) cached one opens at least gap_ns away.
        head = (start_ns, first) if first - gap_ns >= start_ns else None
        # From 1 µs after the last bar: the SDKs send times in whole microseconds at best.
        tail = (last + 1_000, end_ns) if last + gap_ns < end_ns else None
    spans = [(span, span is head) for span in (head, tail) if span is not None]
    total_ns = sum(hi - lo for (lo, hi), _ in spans)
    initial, added, done_ns, last_ns = len(cached), 0, 0, None
    report = progress or (lambda *args: None)
    report(symbol, 0, 0, total_ns, None)
    for (lo, hi), before_cached in spans:
        earlier = []
        for page in pages(symbol, lo, hi):
            last_ns = int(page["ts_ns"].iloc[-1])
            if before_cached:
                earlier.append(page)  # saved once it joins the cached run: no hole in between
            else:
                cached = _save(path, symbol, [cached, page])
                added = len(cached) - initial
            report(symbol, added, done_ns + min(last_ns + 1 - lo, hi - lo), total_ns, last_ns)
        if earlier:
            cached = _save(path, symbol, [cached, *earlier])
            added = len(cached) - initial
        done_ns += hi - lo
    report(symbol, added, total_ns, total_ns, last_ns)
    ends = [iso_utc(t) for t in cached["ts_ns"].iloc[[0, -1]]] if len(cached) else [None, None]
    return {
        "symbol": symbol,
        "path": str(path) if len(cached) else None,
        "bars_added": added,
        "bars_total": len(cached),
        "first": ends[0],
        "last": ends[1],
    }


def _read_cache(path: Path, symbol: str) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    from quantshift.data import FIELDS, load_bars

    if not path.is_file():
        empty = {f: np.empty(0) for f in FIELDS}
        return pd.DataFrame({"ts_ns": np.empty(0, dtype=np.int64), **empty})
    bars = load_bars(f"parquet:{path}")
    if bars.symbols != (symbol,):
        raise DataError(
            f"{path}: holds symbol(s) {', '.join(bars.symbols)}, not {symbol} (names that "
            "differ only in characters other than letters, digits, '.', '_' and '-' share a "
            "file); move it away or use another data folder"
        )
    return pd.DataFrame({"ts_ns": bars.ts_ns, **{f: getattr(bars, f)[:, 0] for f in FIELDS}})


def _save(path: Path, symbol: str, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Merge ``parts`` (later ones win on equal times), validate and write atomically."""
    import pandas as pd

    from quantshift.data import FIELDS, Bars, validate_bars, write_parquet

    frame = pd.concat(parts, ignore_index=True).drop_duplicates("ts_ns", keep="last")
    frame = frame.sort_values("ts_ns", kind="stable").reset_index(drop=True)
    values = {f: frame[f].to_numpy() for f in FIELDS}
    bars = Bars(ts_ns=frame["ts_ns"].to_numpy(), symbols=(symbol,), source=str(path), **values)
    write_parquet(validate_bars(bars), path)
    return frame


def _to_ns(value: Any, name: str) -> int:
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
        if not pd.isna(stamp):
            utc = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
            return int(utc.as_unit("ns").value)
    except (TypeError, ValueError, OverflowError):
        pass
    raise ConfigError(
        f"--{name} {value!r} is not a date or time between 1677 and 2262; use e.g. 2024-01-01"
    )


def _open_venue(name: str, options: dict[str, Any], mode: str):
    """Return ``(source for bar_pages, bar_pages, close)`` of the venue."""
    from live.venues import venue

    package = venue(name)
    config = package.settings.from_options(options, f"data fetch {name} --option", mode=mode)
    # Coinbase candles are public: without keys the unsigned endpoint serves them.
    if name == "coinbase" and not (
        config.secrets_file or os.environ.get(config.api_key_env, "").strip()
    ):
        return config, package.bar_pages, lambda: None
    broker = package.adapter(config)
    return broker, package.bar_pages, broker.close


def _option_value(text: str) -> Any:
    # TOML value syntax (numbers, booleans, quoted strings, arrays); anything else is a string.
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def fetch_command(
    venue: Annotated[str, typer.Argument(help="alpaca or coinbase.")],
    symbols: Annotated[list[str], typer.Argument(help="Symbols, e.g. AAPL MSFT or BTC-USD.")],
    start: Annotated[str, typer.Option(help="First bar time (UTC), e.g. 2024-01-01.")],
    end: Annotated[str | None, typer.Option(help="End, excluded (UTC); default now.")] = None,
    timeframe: Annotated[str, typer.Option(help="1m, 5m, 15m, 1h or 1d.")] = "1d",
    secrets_file: Annotated[
        Path | None, typer.Option(help="TOML file with the venue's keys (mode 600).")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="KEY=VALUE of the venue config; repeatable."),
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="paper or live (default paper; coinbase: live).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON summary.")] = False,
) -> None:
    """Download bars into the data folder (VENUE/TIMEFRAME/SYMBOL.parquet), resuming."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from quantshift.cli import parse_assignments
    from quantshift.data.validate import iso_utc

    options = {k: _option_value(v) for k, v in parse_assignments(option or [], "--option").items()}
    if secrets_file is not None:
        options["secrets_file"] = str(secrets_file)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% of the time, {task.fields[bars]} bars"),
        TextColumn("to {task.fields[to]}"),
        TimeElapsedColumn(),
        console=(stderr := Console(stderr=True)),
        transient=True,
        disable=json_out or not stderr.is_terminal,
    )
    tasks: dict[str, Any] = {}
    saved: dict[str, int] = {}

    def report(symbol: str, added: int, done_ns: int, total_ns: int, last_ns: int | None) -> None:
        if symbol not in tasks:
            tasks[symbol] = bar.add_task(symbol, total=max(total_ns, 1), bars=0, to="-")
        to = iso_utc(last_ns)[:19] if last_ns is not None else "-"
        bar.update(tasks[symbol], completed=done_ns, bars=added, to=to)
        saved[symbol] = added

    try:
        with bar:
            summary = fetch_bars(
                venue, symbols, start, end, timeframe, options=options, mode=mode, progress=report
            )
    except BaseException:
        symbol, added = list(saved.items())[-1] if saved else ("", 0)
        if added:  # the symbol being fetched when it stopped; the ones before it are complete
            where = cache_path(venue, timeframe, symbol)
            note = f"note: {symbol}: {added} bars saved in {where}; run the same command again"
            typer.echo(f"{note} to fetch the rest", err=True)
        raise
    rows = summary["symbols"]
    if json_out:
        typer.echo(json.dumps(summary))
    for row in [] if json_out else rows:
        if row["path"] is None:
            typer.echo(f"{row['symbol']}: no bars; nothing written")
            continue
        news = f"+{row['bars_added']} bars" if row["bars_added"] else "up to date"
        span = f"{row['first'][:19]} .. {row['last'][:19]} UTC"
        typer.echo(f"{row['symbol']}: {news}, {row['bars_total']} in {row['path']} ({span})")
    empty = [row["symbol"] for row in rows if row["path"] is None]
    if empty:
        raise DataError(
            f"no bars for {', '.join(empty)} from {summary['start']} to {summary['end']} at "
            f"{venue} ({timeframe}); check the symbol names and the dates"
        )
