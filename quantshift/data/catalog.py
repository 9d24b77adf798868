"""List, describe and import the data sets a user can load.

Small helpers behind the data commands of the CLI; parsing and loading live in ``sources``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from quantshift.data.bars import Bars
from quantshift.data.sources import (
    BUILTIN_DATASETS,
    data_dir,
    data_file_kind,
    load_bars,
    write_parquet,
)
from quantshift.data.validate import iso_utc
from quantshift.errors import DataError

__all__ = ["describe", "import_file", "list_sources", "write_parquet"]

_SYMBOL_KEYS = (
    "symbol",
    "first",
    "last",
    "bars",
    "missing_bars",
    "min_close",
    "max_close",
    "mean_volume",
)


def list_sources() -> list[dict]:
    """List the builtin data sets and the CSV/Parquet files in the data folder.

    Returns
    -------
    list of dict
        One entry per source with keys ``name``, ``spec`` (what ``load_bars`` takes), ``kind``
        (``builtin`` or ``file``), ``description``, ``symbols``, ``start``, ``end``, ``bars``,
        ``path`` and ``size_bytes``. Files are not opened, so their ``symbols``, ``start``,
        ``end`` and ``bars`` are None. The cache folder is skipped.
    """
    entries = []
    for key, (_, description) in BUILTIN_DATASETS.items():
        spec = f"builtin:{key}"
        bars = load_bars(spec)
        entries.append(
            {
                "name": spec,
                "spec": spec,
                "kind": "builtin",
                "description": description,
                "symbols": list(bars.symbols),
                "start": iso_utc(bars.ts_ns[0]),
                "end": iso_utc(bars.ts_ns[-1]),
                "bars": bars.n_bars,
                "path": None,
                "size_bytes": None,
            }
        )
    root = data_dir()
    cache = root / "cache"
    for path in sorted(root.rglob("*")) if root.is_dir() else []:
        kind = data_file_kind(path.name)
        if kind is None or path.name.startswith(".") or not path.is_file():
            continue
        if path.is_relative_to(cache):
            continue
        fmt, stem = kind
        entries.append(
            {
                "name": path.relative_to(root).with_name(stem).as_posix(),
                "spec": str(path),
                "kind": "file",
                "description": f"{fmt.upper()} file",
                "symbols": None,
                "start": None,
                "end": None,
                "bars": None,
                "path": str(path),
                "size_bytes": path.stat().st_size,
            }
        )
    return entries


def describe(bars: Bars) -> dict:
    """Summarise bars overall and per symbol.

    Parameters
    ----------
    bars : Bars
        Bars to summarise.

    Returns
    -------
    dict
        ``source``, ``n_bars``, ``n_symbols``, ``start``, ``end`` (ISO 8601 UTC) and ``symbols``:
        a list with, per symbol, ``symbol``, ``first``, ``last``, ``bars`` (bars present),
        ``missing_bars`` (times between its first and last bar where it has none),
        ``min_close``, ``max_close`` and ``mean_volume``. A symbol without bars has None
        in place of times and statistics.
    """
    present = bars.valid
    counts = present.sum(axis=0)
    first = np.argmax(present, axis=0)
    last = bars.n_bars - 1 - np.argmax(present[::-1], axis=0)
    # Fill missing bars so that empty columns reduce without warnings; they are reported as None.
    close = np.where(present, bars.close, 0.0)
    volume = np.where(present, bars.volume, 0.0)
    per_symbol = []
    for s, symbol in enumerate(bars.symbols):
        if counts[s] == 0:
            per_symbol.append(dict.fromkeys(_SYMBOL_KEYS) | {"symbol": symbol, "bars": 0})
            continue
        column = close[present[:, s], s]
        per_symbol.append(
            {
                "symbol": symbol,
                "first": iso_utc(bars.ts_ns[first[s]]),
                "last": iso_utc(bars.ts_ns[last[s]]),
                "bars": int(counts[s]),
                "missing_bars": int(last[s] - first[s] + 1 - counts[s]),
                "min_close": float(column.min()),
                "max_close": float(column.max()),
                "mean_volume": float(volume[:, s].sum() / counts[s]),
            }
        )
    return {
        "source": bars.source,
        "n_bars": bars.n_bars,
        "n_symbols": bars.n_symbols,
        "start": iso_utc(bars.ts_ns[0]) if bars.n_bars else None,
        "end": iso_utc(bars.ts_ns[-1]) if bars.n_bars else None,
        "symbols": per_symbol,
    }


def import_file(
    path: str | os.PathLike,
    name: str | None = None,
    *,
    overwrite: bool = False,
    date_format: str | None = None,
) -> Path:
    """Load and validate a CSV/Parquet file and store it in the data folder as Parquet.

    Parameters
    ----------
    path : str or path
        File to import (``.csv``, ``.csv.gz``, ``.parquet`` or ``.pq``).
    name : str, optional
        Name of the stored data set; defaults to the file name without its suffix.
    overwrite : bool
        Replace an existing data set of that name.
    date_format : str, optional
        How the file's times are written (see :func:`quantshift.data.load_bars`); the stored
        Parquet holds UTC times, so it needs none.

    Returns
    -------
    Path
        ``<data folder>/<name>.parquet``, which ``load_bars`` reads back identically.

    Raises
    ------
    DataError
        If the file is not CSV/Parquet, fails to load or validate, the name is not a plain
        file name, or the data set exists and ``overwrite`` is false.
    """
    source = Path(path)
    kind = data_file_kind(source.name)
    if kind is None:
        raise DataError(f"{source}: cannot import; expected a .csv, .csv.gz, .parquet or .pq file")
    fmt, stem = kind
    name = stem if name is None else name
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        raise DataError(
            f"data set name '{name}' for {source} must start with a letter or digit and contain "
            "only letters, digits, '_', '.' and '-'"
        )
    target = data_dir() / f"{name}.parquet"
    if target.exists() and not overwrite:
        raise DataError(f"{target} already exists; pass overwrite=True to replace it")
    bars = load_bars(f"{fmt}:{source}", cache=False, date_format=date_format)
    return write_parquet(bars, target)
