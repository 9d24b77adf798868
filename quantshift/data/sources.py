"""Load validated bars from one spec string: a CSV or Parquet file, a builtin or synthetic data set.

Files are parsed once and cached as long-format Parquet under the data folder (``data/cache/``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.tseries.api import guess_datetime_format

from quantshift.data.bars import FIELDS, Bars, concat_symbols
from quantshift.data.synthetic import synthetic_from_spec
from quantshift.data.validate import iso_utc, validate_bars
from quantshift.errors import DataError, UnknownNameError

SCHEMES = ("builtin", "synthetic", "csv", "parquet")
BUILTIN_DATASETS = {
    "sp500": ("SP500", "S&P 500 index, daily OHLCV (arch package)"),
    "nasdaq": ("NASDAQ", "NASDAQ Composite index, daily OHLCV (arch package)"),
}
_SPEC_FORMS = (
    "builtin:NAME[,NAME] (sp500, nasdaq), synthetic:symbols=N,bars=M,seed=S[,start=DATE]"
    "[,freq=1d|1h|15min][,gaps=0.01], csv:PATH, parquet:PATH, or a path ending in .csv, "
    ".csv.gz or .parquet"
)
FILE_SUFFIXES = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}

_ALIASES = {
    "time": ("date", "datetime", "time", "timestamp", "ts", "ts_event"),
    "open": ("o", "open"),
    "high": ("h", "high"),
    "low": ("l", "low"),
    "close": ("c", "close"),
    "volume": ("v", "vol", "volume"),
    "symbol": ("symbol", "ticker", "asset"),
}
_COLUMN_FIELD = {alias: field for field, aliases in _ALIASES.items() for alias in aliases}
_IGNORED_COLUMNS = ("adj_close",)
_EXPECTED_COLUMNS = (
    "; ".join(f"{field} ({', '.join(aliases)})" for field, aliases in _ALIASES.items())
    + " (symbol is optional; 'adj close' is ignored; case-insensitive)"
)

_CACHE_FORMAT = 1
_EPOCH_FORMATS = {"epoch-s": 10**9, "epoch-ms": 10**6, "epoch-us": 10**3, "epoch-ns": 1}
_EXCEL_EPOCH_DAYS = 25_569  # Excel's serial day of 1970-01-01 (its day 0 is 1899-12-30)
# Numeric times below this many seconds fall in 1970's first four months: far more likely
# Excel serial days (43831 is 2020-01-01) or some other unit than real epoch seconds.
_PLAUSIBLE_EPOCH = 1e7


def data_dir() -> Path:
    """Return the data folder: ``$QUANTSHIFT_DATA_DIR`` if set, else ``./data``."""
    env = os.environ.get("QUANTSHIFT_DATA_DIR")
    return Path(env) if env else Path.cwd() / "data"


def data_file_kind(name: str) -> tuple[str, str] | None:
    """Return ``(format, stem)`` of a CSV or Parquet file name, or None for any other name."""
    for suffix, fmt in FILE_SUFFIXES.items():
        if name.lower().endswith(suffix):
            return fmt, name[: -len(suffix)]
    return None


def load_bars(
    spec: str | os.PathLike,
    *,
    symbols: str | Sequence[str] | None = None,
    start=None,
    end=None,
    cache: bool = True,
    date_format: str | None = None,
) -> Bars:
    """Load and validate bars described by one spec string.

    Parameters
    ----------
    spec : str or path
        ``builtin:sp500``, ``builtin:nasdaq`` or ``builtin:sp500,nasdaq`` (real daily data
        1999-2018); ``synthetic:symbols=N,bars=M,seed=S[,start=DATE][,freq=1d][,gaps=0.01]``;
        ``csv:PATH``, ``parquet:PATH`` or a path ending in ``.csv``, ``.csv.gz`` or ``.parquet``.
        A file holds one symbol (named after the file, or by a ``symbol`` column) or many in
        long format (one row per time and symbol).
    symbols : str or sequence of str, optional
        Keep only these symbols.
    start, end : optional
        Keep bars with ``start <= time < end`` (anything ``pandas.Timestamp`` accepts; naive
        times are UTC).
    cache : bool
        Reuse (and write) the Parquet copy of a CSV file under ``data/cache/``; the copy is keyed
        by the file's absolute path, size and modification time (and ``date_format``).
    date_format : str, optional
        How a file's times are written: a strftime format (``"%d/%m/%Y"``), ``"excel"``
        (serial days since 1899-12-30) or ``"epoch-s"``, ``"epoch-ms"``, ``"epoch-us"``,
        ``"epoch-ns"``. Without it ISO 8601 text, YYYYMMDD numbers and epoch times are read
        as such, other text formats are inferred, and an ambiguous column (day and month that
        can be swapped, numbers that may be Excel days or 1970 seconds) is refused.

    Returns
    -------
    Bars
        Validated bars.

    Raises
    ------
    DataError
        If the data cannot be read or fails validation; the message names file, row, time,
        symbol and column where they apply.
    UnknownNameError
        For an unknown scheme, builtin data set or symbol.
    """
    text = os.fspath(spec)
    scheme, rest = _split_spec(text)
    if scheme == "builtin":
        bars = _load_builtin(rest, text)
    elif scheme == "synthetic":
        bars = synthetic_from_spec(text)
    else:
        bars = _load_file(Path(rest), scheme, cache=cache, date_format=date_format)
    if symbols is not None:
        bars = bars.select(symbols)
    if start is not None or end is not None:
        window = bars.between(start, end)
        if window.n_bars == 0:
            raise DataError(
                f"{bars.source}: no bars from {start} to {end} (end excluded); data covers "
                f"{iso_utc(bars.ts_ns[0])} to {iso_utc(bars.ts_ns[-1])}"
            )
        bars = window
    return validate_bars(bars)


def write_parquet(bars: Bars, path: str | os.PathLike) -> Path:
    """Write bars as long-format Parquet that ``load_bars`` reads back identically.

    Columns are ``time`` (UTC ns), ``symbol`` (dictionary-encoded in the order of
    ``bars.symbols``), ``open``, ``high``, ``low``, ``close`` and ``volume``; one row per bar
    a symbol has, ordered by time and then symbol. The file is replaced atomically.

    Parameters
    ----------
    bars : Bars
        Bars to write.
    path : str or path
        Destination file; its folder is created if needed.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    n_nan = sum(np.isnan(getattr(bars, f)).astype(np.int8) for f in FIELDS)
    t, s = np.nonzero(n_nan < len(FIELDS))
    columns = {
        "time": pa.array(bars.ts_ns[t], type=pa.timestamp("ns", tz="UTC")),
        "symbol": pa.DictionaryArray.from_arrays(
            pa.array(s.astype(np.int32)), pa.array(list(bars.symbols), type=pa.string())
        ),
    }
    columns.update({f: pa.array(getattr(bars, f)[t, s]) for f in FIELDS})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        pq.write_table(pa.table(columns), partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _split_spec(text: str) -> tuple[str, str]:
    # Two or more letters before the colon, so that a Windows drive (C:\...) stays a path.
    match = re.match(r"([A-Za-z][\w+.-]+):(.*)", text, re.DOTALL)
    if match:
        scheme = match.group(1).lower()
        if scheme not in SCHEMES:
            raise UnknownNameError(
                f"unknown data source scheme '{scheme}' in '{text}'; available: {_SPEC_FORMS}"
            )
        return scheme, match.group(2)
    kind = data_file_kind(text)
    if kind is not None:
        return kind[0], text
    # A bare name is a data set in the data folder (what `quantshift data import` writes).
    for suffix, fmt in FILE_SUFFIXES.items():
        candidate = data_dir() / f"{text}{suffix}"
        if candidate.is_file():
            return fmt, str(candidate)
    raise UnknownNameError(
        f"data source '{text}' not understood (and no {text}.parquet or {text}.csv in "
        f"{data_dir()}); use {_SPEC_FORMS}"
    )


def _load_builtin(names: str, spec: str) -> Bars:
    # arch ships the data as CSV next to its loader; reading the file directly spares importing
    # arch itself (scipy, statsmodels: about 3 s).
    arch_dir = Path(importlib.util.find_spec("arch").submodule_search_locations[0])
    parts = []
    for key in dict.fromkeys(name.strip().lower() for name in names.split(",")):
        if key not in BUILTIN_DATASETS:
            available = ", ".join(f"{k} ({d})" for k, (_, d) in BUILTIN_DATASETS.items())
            raise UnknownNameError(
                f"{spec}: unknown builtin data set '{key}'; available: {available}"
            )
        symbol = BUILTIN_DATASETS[key][0]
        parts.append(_read_file(arch_dir / "data" / key / f"{key}.csv.gz", "csv", symbol=symbol))
    bars = parts[0] if len(parts) == 1 else concat_symbols(parts)
    return replace(bars, source=spec)


def _load_file(path: Path, fmt: str, *, cache: bool, date_format: str | None) -> Bars:
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise DataError(f"{path}: data file {what} (absolute path {path.absolute()})")
    if fmt == "parquet" or not cache:
        return _read_file(path, fmt, date_format=date_format)
    target = _cache_path(path, date_format)
    if target.is_file():
        try:
            return _read_file(target, "parquet", source=str(path))
        except (OSError, ValueError, pa.ArrowException):
            pass  # a damaged or outdated cache file is rebuilt below
    bars = _read_file(path, fmt, date_format=date_format)
    if _cache_path(path, date_format) == target:  # the file did not change while it was parsed
        try:
            for stale in target.parent.glob(f"{target.name.rsplit('-', 1)[0]}-*.parquet"):
                stale.unlink(missing_ok=True)
            write_parquet(bars, target)
        except OSError as exc:
            warnings.warn(f"{path}: could not write cache file {target}: {exc}", stacklevel=3)
    return bars


def _cache_path(path: Path, date_format: str | None) -> Path:
    resolved = path.resolve()
    stat = resolved.stat()
    ident = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    state = f"{stat.st_size}:{stat.st_mtime_ns}:{_CACHE_FORMAT}:{date_format}"
    version = hashlib.sha256(state.encode()).hexdigest()[:12]
    stem = re.sub(r"[^\w.]+", "_", _stem(path))
    return data_dir() / "cache" / f"{stem}-{ident}-{version}.parquet"


def _stem(path: Path) -> str:
    kind = data_file_kind(path.name)
    return kind[1] if kind else path.stem


def _read_file(
    path: Path,
    fmt: str,
    *,
    source: str | None = None,
    symbol: str | None = None,
    date_format: str | None = None,
) -> Bars:
    source = source or str(path)
    try:
        frame = pd.read_csv(path, skip_blank_lines=False) if fmt == "csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{source}: file is empty") from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{source}: cannot read as {fmt.upper()}: {exc}") from exc
    if not isinstance(frame.index, pd.RangeIndex):
        if isinstance(frame.index, pd.DatetimeIndex) and frame.index.name is None:
            frame.index.name = "time"
        frame = frame.reset_index()

    def where(row: int) -> str:
        # CSV rows are reported as editor line numbers (the header is line 1).
        return f"line {row + 2}" if fmt == "csv" else f"row {row + 1}"

    return _frame_to_bars(frame, source, where, symbol or _stem(path), date_format)


def _frame_to_bars(
    frame: pd.DataFrame,
    source: str,
    where: Callable[[int], str],
    default_symbol: str,
    date_format: str | None = None,
) -> Bars:
    columns = _map_columns(frame.columns, source)
    blank = frame.isna().all(axis=1).to_numpy()
    rows = np.flatnonzero(~blank)
    if blank.any():
        frame = frame.iloc[rows]
    if len(rows) == 0:
        raise DataError(f"{source}: no data rows")

    def fail(i: int, problem: str, count: int) -> DataError:
        more = f"; {count} row(s) have this problem" if count > 1 else ""
        return DataError(f"{source} {where(int(rows[i]))}: {problem}{more}")

    ts = _parse_time(frame[columns["time"]], fail, date_format)
    if "symbol" in columns:
        codes, names = _parse_symbols(frame[columns["symbol"]], fail)
    else:
        codes, names = np.zeros(len(rows), dtype=np.intp), (default_symbol,)
    values = {f: _parse_numbers(frame[columns[f]], fail) for f in FIELDS}

    order = np.lexsort((ts, codes))
    same = (np.diff(ts[order]) == 0) & (np.diff(codes[order]) == 0)
    if same.any():
        later = np.flatnonzero(same)
        j = later[np.argmin(order[later + 1])]
        first, second = order[j], order[j + 1]
        raise DataError(
            f"{source}: duplicate rows for symbol '{names[codes[first]]}' at "
            f"{iso_utc(ts[first])}: {where(int(rows[first]))} and {where(int(rows[second]))}; "
            f"{int(same.sum())} duplicate row(s)"
        )

    times, t_pos = np.unique(ts, return_inverse=True)
    shape = (len(times), len(names))
    arrays = {}
    for f in FIELDS:
        arrays[f] = np.full(shape, np.nan)
        arrays[f][t_pos, codes] = values[f]
    row_of = np.full(shape, -1, dtype=np.int64)
    row_of[t_pos, codes] = rows
    bars = Bars(ts_ns=times, symbols=names, source=source, **arrays)
    return validate_bars(bars, locate=lambda t, s: where(int(row_of[t, s])))


def _map_columns(columns: pd.Index, source: str) -> dict[str, str]:
    found: dict[str, str] = {}
    unknown = []
    for column in columns:
        key = re.sub(r"[\s-]+", "_", str(column).strip().lower())
        if key in _IGNORED_COLUMNS:
            continue
        field = _COLUMN_FIELD.get(key)
        if field is None:
            unknown.append(repr(str(column)))
        elif field in found:
            raise DataError(f"{source}: columns '{found[field]}' and '{column}' both give {field}")
        else:
            found[field] = column
    if unknown:
        raise DataError(
            f"unknown column(s) {', '.join(unknown)} in {source}; expected {_EXPECTED_COLUMNS}"
        )
    missing = [f for f in ("time", *FIELDS) if f not in found]
    if missing:
        spellings = "; ".join(f"{f}: {', '.join(_ALIASES[f])}" for f in missing)
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)} (accepted spellings {spellings})"
        )
    return found


def _parse_time(column: pd.Series, fail, date_format: str | None) -> np.ndarray:
    name = column.name
    absent = column.isna().to_numpy()
    if absent.any():
        raise fail(int(np.argmax(absent)), f"missing time in column '{name}'", int(absent.sum()))
    if date_format is not None and pd.api.types.is_datetime64_any_dtype(column):
        date_format = None  # already times (Parquet): nothing to interpret
    if date_format in _EPOCH_FORMATS or date_format == "excel":
        return _epoch_ns(_numbers(column, fail, date_format), fail, date_format)
    what = ""
    if date_format is not None:
        text = column.astype(str) if pd.api.types.is_numeric_dtype(column) else column
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format=date_format)
        what = f" with --date-format {date_format!r}"
    elif pd.api.types.is_datetime64_any_dtype(column):
        parsed = pd.to_datetime(column, utc=True)
    elif pd.api.types.is_numeric_dtype(column):
        return _epoch_ns(column, fail)
    else:
        parsed = _parse_time_text(column, fail)
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        value = column.iloc[i]
        raise fail(
            i, f"cannot read time {value!r} in column '{name}' {what}".rstrip(), int(bad.sum())
        )
    return pd.DatetimeIndex(parsed).as_unit("ns").asi8.astype(np.int64)


def _parse_time_text(column: pd.Series, fail) -> pd.Series:
    # ISO 8601 accepts mixed precisions and offsets in one column; anything else is read
    # month first and day first (pandas infers the rest of the format from the first value),
    # and a column both read completely, differently, is refused rather than guessed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(column, utc=True, errors="coerce", format="ISO8601")
        if not parsed.isna().any():
            return parsed
        first = str(column.iloc[0]).strip()
        month_first = pd.to_datetime(column, utc=True, errors="coerce", dayfirst=False)
        year_first = (guess_datetime_format(first) or "").startswith("%Y")
        day_first = (
            month_first
            if year_first
            else pd.to_datetime(column, utc=True, errors="coerce", dayfirst=True)
        )
    complete = [p for p in (month_first, day_first) if not p.isna().any()]
    if len(complete) == 2 and not month_first.equals(day_first):
        i = int(np.argmax((month_first != day_first).to_numpy()))
        suggestion = guess_datetime_format(first, dayfirst=True) or "%d/%m/%Y"
        problem = (
            f"ambiguous date {column.iloc[i]!r} in column '{column.name}': "
            f"{month_first.iloc[i]:%Y-%m-%d} month first or {day_first.iloc[i]:%Y-%m-%d} day "
            f"first (no day in the column is above 12); give the format, e.g. "
            f"--date-format '{suggestion}' (data validate/import) or load_bars(date_format=...)"
        )
        raise fail(i, problem, 1)
    return min((parsed, month_first, day_first), key=lambda p: int(p.isna().sum()))


def _numbers(column: pd.Series, fail, date_format: str) -> pd.Series:
    numbers = pd.to_numeric(column, errors="coerce")
    bad = numbers.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        problem = (
            f"time {column.iloc[i]!r} in column '{column.name}' is not a number "
            f"(--date-format {date_format})"
        )
        raise fail(i, problem, int(bad.sum()))
    return numbers


def _epoch_ns(column: pd.Series, fail, date_format: str | None = None) -> np.ndarray:
    values = column.to_numpy(dtype=np.float64)
    if date_format == "excel":
        # Whole microseconds: float days times 86,400e9 would lose the last bits of a time.
        micros = np.round((values - _EXCEL_EPOCH_DAYS) * 86_400e6)
        return _checked_ns(column, fail, micros, 1_000)
    if date_format is not None:
        per_unit = _EPOCH_FORMATS[date_format]
        return _checked_ns(column, fail, values, per_unit)
    integral = bool(np.all(values == np.round(values)))
    if integral and values.min() >= 1800_01_01 and values.max() <= 2200_12_31:
        # YYYYMMDD integers; as epoch seconds they would all fall in 1970.
        text = pd.Series(values.astype(np.int64).astype(str), index=column.index, name=column.name)
        parsed = pd.to_datetime(text, format="%Y%m%d", utc=True, errors="coerce")
        bad = parsed.isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            problem = f"cannot read time {text.iloc[i]!r} in column '{column.name}' as YYYYMMDD"
            raise fail(i, problem, int(bad.sum()))
        return pd.DatetimeIndex(parsed).as_unit("ns").asi8.astype(np.int64)
    magnitude = np.abs(values).max()
    if magnitude < _PLAUSIBLE_EPOCH:
        excel = pd.Timestamp(_epoch_ns(column.iloc[:1], fail, "excel")[0], tz="UTC")
        problem = (
            f"ambiguous time {float(values[0])!r} in column '{column.name}': as epoch seconds "
            f"{pd.Timestamp(values[0], unit='s', tz='UTC'):%Y-%m-%d %H:%M:%S}, as an Excel "
            f"serial date {excel:%Y-%m-%d}; give the format, e.g. --date-format excel or "
            "epoch-s (data validate/import) or load_bars(date_format=...)"
        )
        raise fail(0, problem, 1)
    # Epoch unit by magnitude: seconds reach 1e11 only after the year 5000.
    per_unit = 1
    for limit, factor in ((1e11, 10**9), (1e14, 10**6), (1e17, 10**3)):
        if magnitude < limit:
            per_unit = factor
            break
    if pd.api.types.is_integer_dtype(column):
        _checked_ns(column, fail, values, per_unit)
        return column.to_numpy(dtype=np.int64) * per_unit
    return _checked_ns(column, fail, values, per_unit)


def _checked_ns(column: pd.Series, fail, values: np.ndarray, per_unit: int) -> np.ndarray:
    """``values * per_unit`` as int64 nanoseconds; a value out of int64's range fails."""
    out_of_range = np.abs(values) * per_unit >= 2**63
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        problem = f"time {float(values[i])!r} in column '{column.name}' is out of range"
        raise fail(i, problem, int(out_of_range.sum()))
    return np.round(values * per_unit).astype(np.int64)


def _parse_symbols(column: pd.Series, fail) -> tuple[np.ndarray, tuple[str, ...]]:
    absent = column.isna().to_numpy()
    if absent.any():
        problem = f"missing symbol in column '{column.name}'"
        raise fail(int(np.argmax(absent)), problem, int(absent.sum()))
    if isinstance(column.dtype, pd.CategoricalDtype):
        # Files written by write_parquet keep their symbol order in the dictionary.
        used = column.cat.remove_unused_categories()
        codes = used.cat.codes.to_numpy().astype(np.intp)
        return codes, tuple(str(c) for c in used.cat.categories)
    codes, names = pd.factorize(column.astype(str).str.strip(), sort=True)
    return codes.astype(np.intp), tuple(names)


def _parse_numbers(column: pd.Series, fail) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    numbers = pd.to_numeric(column, errors="coerce")
    bad = (numbers.isna() & column.notna()).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        problem = f"column '{column.name}' has non-numeric value {column.iloc[i]!r}"
        raise fail(i, problem, int(bad.sum()))
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)
