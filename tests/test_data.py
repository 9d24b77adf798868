"""Tests of quantshift.data: sources, synthetic data, validation, cache and catalog.

Every test writes under tmp_path; QUANTSHIFT_DATA_DIR points the data folder there.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantshift.data import (
    FIELDS,
    Bars,
    describe,
    import_file,
    list_sources,
    load_bars,
    synthetic_bars,
    validate_bars,
    write_parquet,
)
from quantshift.data import sources as sources_module
from quantshift.errors import DataError, UnknownNameError


@pytest.fixture(autouse=True)
def data_folder(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    monkeypatch.setenv("QUANTSHIFT_DATA_DIR", str(folder))
    return folder


def _ohlcv(n_bars: int = 8, seed: int = 0) -> pd.DataFrame:
    """Valid daily bars of one symbol with the columns Date, Open, High, Low, Close, Volume."""
    frame = synthetic_bars(1, n_bars, seed, start="2021-03-01", gap_rate=0.0).to_frame()
    frame = frame.rename(columns=str.title).rename_axis("Date").reset_index()
    frame["Date"] = frame["Date"].dt.strftime("%Y-%m-%d")
    return frame


def _long(symbols=("AAA", "BBB"), n_bars: int = 6) -> pd.DataFrame:
    parts = [_ohlcv(n_bars, seed=i).assign(Ticker=s) for i, s in enumerate(symbols)]
    return pd.concat(parts, ignore_index=True)


def _same_arrays(a: Bars, b: Bars) -> bool:
    return a.symbols == b.symbols and all(
        getattr(a, f).tobytes() == getattr(b, f).tobytes() for f in ("ts_ns", *FIELDS)
    )


# ----------------------------------------------------------------- builtin
@pytest.mark.parametrize(("name", "symbol"), [("sp500", "SP500"), ("nasdaq", "NASDAQ")])
def test_builtin_equals_arch_frame(name, symbol):
    import importlib

    expected = importlib.import_module(f"arch.data.{name}").load()
    bars = load_bars(f"builtin:{name}")
    assert bars.symbols == (symbol,)
    assert bars.n_bars == 5031
    assert bars.index[0] == pd.Timestamp("1999-01-04", tz="UTC")
    assert bars.index[-1] == pd.Timestamp("2018-12-31", tz="UTC")
    for field in FIELDS:
        np.testing.assert_array_equal(bars.__getattribute__(field)[:, 0], expected[field.title()])


def test_builtin_pair_is_aligned():
    bars = load_bars("builtin:sp500,nasdaq")
    assert bars.symbols == ("SP500", "NASDAQ")
    assert bars.close.shape == (5031, 2)
    assert not np.isnan(bars.close).any()
    np.testing.assert_array_equal(bars.close[:, 0], load_bars("builtin:sp500").close[:, 0])


def test_unknown_builtin_lists_available():
    with pytest.raises(UnknownNameError, match=r"unknown builtin data set 'dax'.*sp500.*nasdaq"):
        load_bars("builtin:dax")


@pytest.mark.parametrize("spec", ["ftp:prices.csv", "prices.txt"])
def test_unknown_scheme_lists_schemes(spec):
    with pytest.raises(UnknownNameError, match=r"builtin:NAME.*synthetic:.*csv:PATH.*parquet:PATH"):
        load_bars(spec)


# ----------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_per_seed():
    spec = "synthetic:symbols=4,bars=300,seed=42,gaps=0.05"
    first, second = load_bars(spec), load_bars(spec)
    assert _same_arrays(first, second)
    assert first.fingerprint() == second.fingerprint()
    assert _same_arrays(load_bars(first.source), first)  # the source spec is canonical
    other = load_bars("synthetic:symbols=4,bars=300,seed=43,gaps=0.05")
    assert other.close.tobytes() != first.close.tobytes()


def test_synthetic_names_calendar_and_shape():
    bars = load_bars("synthetic:symbols=3,bars=60,seed=1,start=2020-01-01")
    assert bars.symbols == ("SYN000", "SYN001", "SYN002")
    assert bars.close.shape == (60, 3)
    assert bars.index[0] == pd.Timestamp("2020-01-01", tz="UTC")
    assert (bars.index.day_of_week < 5).all()


def test_synthetic_intraday_spacing():
    bars = load_bars("synthetic:symbols=1,bars=20,seed=1,start=2021-05-01 09:00,freq=15min")
    assert np.all(np.diff(bars.ts_ns) == 15 * 60 * 10**9)
    assert _same_arrays(load_bars(bars.source), bars)
    assert bars.index[0] == pd.Timestamp("2021-05-01 09:00", tz="UTC")


def test_synthetic_bars_are_realistic():
    bars = synthetic_bars(20, 1500, 5, gap_rate=0.0)
    o, h, l, c, v = (getattr(bars, f) for f in FIELDS)
    assert np.all(h >= np.maximum(o, c)) and np.all(l <= np.minimum(o, c))
    assert np.all(v > 0) and np.all(h > l)
    # Opens gap against the previous close, and volume rises with the size of the move.
    assert np.mean(o[1:] != c[:-1]) > 0.99
    move = np.abs(np.diff(np.log(c), axis=0))
    log_volume = np.log(v[1:]) - np.log(v[1:]).mean(axis=0)
    corr = [np.corrcoef(move[:, s], log_volume[:, s])[0, 1] for s in range(20)]
    assert np.mean(corr) > 0.2
    # Regime switching: rolling volatility varies far more than one regime's noise would allow.
    vol = pd.DataFrame(np.log(c)).diff().rolling(60).std().mean(axis=1).dropna()
    assert vol.max() / vol.min() > 2


def test_synthetic_gaps():
    bars = synthetic_bars(50, 1000, 3, gap_rate=0.05)
    missing = np.isnan(bars.close)
    assert 0.04 < missing.mean() < 0.06
    assert not missing[0].any()
    for field in FIELDS:
        np.testing.assert_array_equal(np.isnan(getattr(bars, field)), missing)
    assert not np.isnan(load_bars("synthetic:symbols=5,bars=500,seed=3,gaps=0").close).any()


def test_synthetic_is_fast():
    def seconds() -> float:
        started = time.perf_counter()
        synthetic_bars(500, 2520, 0)
        return time.perf_counter() - started

    # The better of two runs, so that a busy test machine does not fail it.
    assert min(seconds(), seconds()) < 1.0


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n_symbols=st.integers(1, 6),
    n_bars=st.integers(1, 400),
    gap_rate=st.floats(0.0, 0.3),
    freq=st.sampled_from(["1d", "2d", "1h", "5min", "30s"]),
)
def test_synthetic_always_validates(seed, n_symbols, n_bars, gap_rate, freq):
    bars = synthetic_bars(n_symbols, n_bars, seed, freq=freq, gap_rate=gap_rate)
    assert validate_bars(bars) is bars
    assert bars.close.shape == (n_bars, n_symbols)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("synthetic:symbols=x,bars=5,seed=1", ["'symbols'", "whole number", "'x'"]),
        ("synthetic:symbols=2,bars=5", ["missing", "seed"]),
        ("synthetic:symbols=2,bars=5,seed=1,colour=red", ["colour=red", "symbols, bars, seed"]),
        ("synthetic:symbols=2,bars=5,seed=1,gaps=lots", ["'gaps'", "fraction"]),
        ("synthetic:symbols=2,bars=5,seed=1,gaps=1.5", ["gap_rate", "[0, 1)"]),
        ("synthetic:symbols=0,bars=5,seed=1", ["n_symbols", ">= 1"]),
        ("synthetic:symbols=2,bars=5,seed=1,freq=3y", ["freq '3y'", "15min"]),
        ("synthetic:symbols=2,bars=5,seed=1,start=someday", ["start 'someday'", "date"]),
        ("synthetic:symbols=2,symbols=3,bars=5,seed=1", ["'symbols' given twice"]),
    ],
)
def test_malformed_synthetic_spec(spec, words):
    with pytest.raises(DataError) as err:
        load_bars(spec)
    for word in [spec, *words]:
        assert word in str(err.value)


# ----------------------------------------------------------------- CSV files
@pytest.mark.parametrize("name", ["AAPL.csv", "AAPL.csv.gz"])
def test_csv_single_symbol_round_trip(tmp_path, name):
    frame = _ohlcv().assign(**{"Adj Close": 1.0})
    frame.to_csv(tmp_path / name, index=False)
    bars = load_bars(tmp_path / name)
    assert bars.symbols == ("AAPL",)
    assert bars.source == str(tmp_path / name)
    np.testing.assert_array_equal(bars.index, pd.to_datetime(frame["Date"], utc=True))
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(bars, field)[:, 0], frame[field.title()])


@pytest.mark.parametrize(
    "columns",
    [
        ["ts", "O", "H", "L", "C", "V"],
        ["Timestamp", "open", "HIGH", "Low", "close", "Vol"],
        ["ts_event", "o", "h", "l", "c", "volume"],
        ["DateTime", " Open ", "High", "Low", "Close", "VOLUME"],
        ["time", "open", "high", "low", "close", "volume"],
    ],
)
def test_csv_column_spellings(tmp_path, columns):
    frame = _ohlcv()
    frame.columns = columns
    frame.to_csv(tmp_path / "x.csv", index=False)
    bars = load_bars(f"csv:{tmp_path / 'x.csv'}")
    np.testing.assert_array_equal(bars.close[:, 0], _ohlcv()["Close"])


def test_csv_multi_symbol_long_file_is_aligned(tmp_path):
    frame = _long(("BBB", "AAA"))
    frame = frame.drop(index=8).sample(frac=1.0, random_state=1)  # AAA misses its third bar
    frame.to_csv(tmp_path / "many.csv", index=False)
    bars = load_bars(tmp_path / "many.csv")
    assert bars.symbols == ("AAA", "BBB")
    assert bars.n_bars == 6
    np.testing.assert_array_equal(bars.close[:, 1], _ohlcv(6, seed=0)["Close"])
    assert np.isnan(bars.close[2, 0]) and np.isnan(bars.volume[2, 0])
    assert not np.isnan(bars.close[2, 1])


def test_csv_symbol_column_names_single_symbol(tmp_path):
    _ohlcv().assign(symbol="MSFT").to_csv(tmp_path / "prices.csv", index=False)
    assert load_bars(tmp_path / "prices.csv").symbols == ("MSFT",)


@pytest.mark.parametrize(
    ("unit", "per_second"), [("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)]
)
def test_csv_epoch_timestamps(tmp_path, unit, per_second):
    frame = _ohlcv()
    seconds = pd.DatetimeIndex(pd.to_datetime(frame["Date"], utc=True)).as_unit("s").asi8
    frame["Date"] = seconds * per_second
    frame.to_csv(tmp_path / "epoch.csv", index=False)
    bars = load_bars(tmp_path / "epoch.csv")
    assert bars.index[0] == pd.Timestamp("2021-03-01", tz="UTC")
    np.testing.assert_array_equal(bars.ts_ns, seconds * 10**9)


def test_csv_float_epoch_and_yyyymmdd(tmp_path):
    frame = _ohlcv()
    frame["Date"] = pd.to_datetime(frame["Date"]).dt.strftime("%Y%m%d").astype(int)
    frame.to_csv(tmp_path / "ymd.csv", index=False)
    assert load_bars(tmp_path / "ymd.csv").index[0] == pd.Timestamp("2021-03-01", tz="UTC")
    frame["Date"] = 1_614_556_800.5 + np.arange(len(frame)) * 86_400
    frame.to_csv(tmp_path / "float.csv", index=False)
    first = load_bars(tmp_path / "float.csv").index[0]
    assert first == pd.Timestamp("2021-03-01 00:00:00.5", tz="UTC")


def test_csv_time_zones_become_utc(tmp_path):
    frame = _ohlcv(3)
    frame["Date"] = ["2021-03-01T09:30:00-05:00", "2021-03-02 09:30", "2021-03-03T15:30:00+01:00"]
    frame.to_csv(tmp_path / "tz.csv", index=False)
    times = load_bars(tmp_path / "tz.csv").index
    assert list(times.strftime("%d %H:%M")) == ["01 14:30", "02 09:30", "03 14:30"]


# ----------------------------------------------------------------- file errors
def _error(path, *words):
    with pytest.raises(DataError) as err:
        load_bars(path)
    for word in words:
        assert word in str(err.value), str(err.value)
    return str(err.value)


def test_unknown_column_names_allowed_spellings(tmp_path):
    _ohlcv().assign(Foo=1, Bar=2).to_csv(tmp_path / "x.csv", index=False)
    _error(tmp_path / "x.csv", "unknown column(s) 'Foo', 'Bar' in", "x.csv", "ticker", "ts_event")


def test_missing_column_is_named(tmp_path):
    _ohlcv().drop(columns="Volume").to_csv(tmp_path / "x.csv", index=False)
    _error(tmp_path / "x.csv", "x.csv", "missing column(s) volume", "v, vol, volume")


def test_duplicate_time_and_symbol_rows(tmp_path):
    frame = _long()
    frame = pd.concat([frame, frame.iloc[[7]]], ignore_index=True)
    frame.to_csv(tmp_path / "dup.csv", index=False)
    _error(tmp_path / "dup.csv", "dup.csv", "duplicate rows for symbol 'BBB'", "line 9 and line 14")


@pytest.mark.parametrize(
    ("cell", "words"), [("soon", ["cannot read time 'soon'"]), ("", ["missing time"])]
)
def test_unreadable_time_names_file_and_line(tmp_path, cell, words):
    frame = _ohlcv()
    frame.loc[2, "Date"] = cell
    frame.to_csv(tmp_path / "t.csv", index=False)
    _error(tmp_path / "t.csv", "t.csv line 4", "column 'Date'", *words)


def test_non_numeric_price_names_line_and_column(tmp_path):
    frame = _ohlcv().astype({"Close": object})
    frame.loc[[1, 4], "Close"] = "n/a?"
    frame.to_csv(tmp_path / "p.csv", index=False)
    _error(tmp_path / "p.csv", "p.csv line 3", "column 'Close'", "'n/a?'", "2 row(s)")


def test_invalid_bar_in_file_names_line_time_and_symbol(tmp_path):
    frame = _long()
    frame.loc[8, "High"] = frame.loc[8, "Low"] * 0.5
    frame.to_csv(tmp_path / "bad.csv", index=False)
    _error(tmp_path / "bad.csv", "bad.csv", "line 10", "2021-03-03T00:00:00+00:00", "'BBB'", "high")


def test_missing_and_empty_files(tmp_path):
    _error(tmp_path / "nowhere.csv", "nowhere.csv", "not found")
    (tmp_path / "empty.csv").write_text("")
    _error(tmp_path / "empty.csv", "empty.csv", "empty")
    (tmp_path / "header.csv").write_text("date,open,high,low,close,volume\n")
    _error(tmp_path / "header.csv", "header.csv", "no data rows")


# ----------------------------------------------------------------- validation
def _valid(n_bars: int = 6) -> Bars:
    return synthetic_bars(3, n_bars, 9, start="2022-01-03", gap_rate=0.0)


def _changed(bars: Bars, field: str, bar: int, symbol: int, value) -> Bars:
    array = getattr(bars, field).copy()
    array[bar, symbol] = value(bars) if callable(value) else value
    return dataclasses.replace(bars, **{field: array}, source="test.csv")


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("high", lambda b: max(b.open[3, 1], b.close[3, 1]) * 0.999, ["high < max(open, close)"]),
        ("low", lambda b: min(b.open[3, 1], b.close[3, 1]) * 1.001, ["low > min(open, close)"]),
        ("low", lambda b: b.high[3, 1] * 1.1, ["high < low"]),
        ("close", 0.0, ["price <= 0", "close is 0.0"]),
        ("open", -1.0, ["price <= 0", "open is -1.0"]),
        ("volume", -5.0, ["negative volume", "-5.0"]),
        ("open", np.nan, ["partially missing bar", "open NaN"]),
        ("high", np.inf, ["infinite value", "high is inf"]),
    ],
)
def test_validation_names_source_bar_time_and_symbol(field, value, words):
    with pytest.raises(DataError) as err:
        validate_bars(_changed(_valid(), field, 3, 1, value))
    message = str(err.value)
    for word in ["test.csv", "bar 3", "2022-01-06T00:00:00+00:00", "'SYN001'", "1 bar(s)", *words]:
        assert word in message, message


def test_validation_counts_offending_bars():
    bars = _changed(_changed(_valid(), "volume", 4, 2, -1.0), "volume", 1, 0, -2.0)
    with pytest.raises(DataError, match=r"bar 1 .*'SYN000'.*2 bar\(s\) in 2 symbol\(s\)"):
        validate_bars(bars)


def test_validation_rejects_symbol_without_bars():
    bars = _valid()
    arrays = {f: getattr(bars, f).copy() for f in FIELDS}
    for array in arrays.values():
        array[:, 2] = np.nan
    with pytest.raises(DataError, match="symbol 'SYN002' has no bars"):
        validate_bars(dataclasses.replace(bars, **arrays))


@pytest.mark.parametrize(("offset", "kind"), [(0, "duplicate timestamp"), (-1, "not increasing")])
def test_validation_rejects_bad_timestamps(offset, kind):
    bars = _valid()
    ts = bars.ts_ns.copy()
    ts[4] = ts[3] + offset
    with pytest.raises(DataError) as err:
        validate_bars(dataclasses.replace(bars, ts_ns=ts))
    assert kind in str(err.value) and "at bar 4" in str(err.value)
    assert pd.Timestamp(int(ts[3]), tz="UTC").isoformat() in str(err.value)


def test_validation_rejects_empty_bars():
    bars = _valid()
    with pytest.raises(DataError, match="no bars"):
        validate_bars(bars[0:0])
    no_symbols = {f: np.empty((bars.n_bars, 0)) for f in FIELDS}
    with pytest.raises(DataError, match="no symbols"):
        validate_bars(Bars(ts_ns=bars.ts_ns, symbols=(), **no_symbols))


def test_validation_allows_missing_bars_and_is_fast():
    bars = synthetic_bars(500, 2520, 1, gap_rate=0.02)
    started = time.perf_counter()
    assert validate_bars(bars) is bars
    assert time.perf_counter() - started < 0.5


# ----------------------------------------------------------------- Parquet and import
def test_import_file_round_trip(tmp_path, data_folder):
    _long(("AAA", "BBB", "CCC")).drop(index=3).to_csv(tmp_path / "three.csv", index=False)
    original = load_bars(tmp_path / "three.csv", cache=False)
    target = import_file(tmp_path / "three.csv", name="trio")
    assert target == data_folder / "trio.parquet"
    assert _same_arrays(load_bars(target), original)
    with pytest.raises(DataError, match="already exists; pass overwrite=True"):
        import_file(tmp_path / "three.csv", name="trio")
    assert import_file(tmp_path / "three.csv", name="trio", overwrite=True) == target
    with pytest.raises(DataError, match="data set name"):
        import_file(tmp_path / "three.csv", name="../escape")


@pytest.mark.parametrize("spec", ["builtin:sp500,nasdaq", "synthetic:symbols=4,bars=500,seed=2"])
def test_write_parquet_keeps_symbol_order_and_values(tmp_path, spec):
    bars = load_bars(spec)
    path = write_parquet(bars, tmp_path / "out.parquet")
    again = load_bars(f"parquet:{path}")
    assert _same_arrays(again, bars)
    assert len(pq.read_table(path)) == int((~np.isnan(bars.close)).sum())


def test_parquet_with_datetime_index(tmp_path):
    frame = _ohlcv().assign(Date=lambda f: pd.to_datetime(f["Date"])).set_index("Date")
    frame.to_parquet(tmp_path / "spy.parquet")
    bars = load_bars(tmp_path / "spy.parquet")
    assert bars.symbols == ("spy",)
    np.testing.assert_array_equal(bars.open[:, 0], frame["Open"])


# ----------------------------------------------------------------- cache
def _cache_files(data_folder):
    return sorted((data_folder / "cache").glob("*.parquet"))


def test_cache_hit_skips_csv_parsing(tmp_path, data_folder, monkeypatch):
    _long().to_csv(tmp_path / "c.csv", index=False)
    first = load_bars(tmp_path / "c.csv")
    assert len(_cache_files(data_folder)) == 1

    def no_csv(*args, **kwargs):
        raise AssertionError("CSV parsed despite a cache hit")

    monkeypatch.setattr(sources_module.pd, "read_csv", no_csv)
    second = load_bars(tmp_path / "c.csv")
    assert _same_arrays(first, second) and second.source == str(tmp_path / "c.csv")


def test_cache_follows_file_changes(tmp_path, data_folder):
    path = tmp_path / "c.csv"
    frame = _ohlcv()
    frame.to_csv(path, index=False)
    load_bars(path)
    stat = path.stat()
    frame.loc[0, "Volume"] += 1  # same width, so the size alone would not notice
    frame.to_csv(path, index=False)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert path.stat().st_size == stat.st_size
    assert load_bars(path).volume[0, 0] == frame.loc[0, "Volume"]
    assert len(_cache_files(data_folder)) == 1


def test_corrupt_cache_is_rebuilt(tmp_path, data_folder):
    _long().to_csv(tmp_path / "c.csv", index=False)
    expected = load_bars(tmp_path / "c.csv")
    (cached,) = _cache_files(data_folder)
    cached.write_bytes(b"not parquet")
    assert _same_arrays(load_bars(tmp_path / "c.csv"), expected)
    assert pq.read_table(cached).num_rows == 12


def test_cache_false_writes_nothing(tmp_path, data_folder):
    _long().to_csv(tmp_path / "c.csv", index=False)
    load_bars(tmp_path / "c.csv", cache=False)
    assert not data_folder.exists()


# ----------------------------------------------------------------- filters
def test_filters_by_symbol_and_time():
    spec = "synthetic:symbols=3,bars=100,seed=4,start=2020-01-01"
    full = load_bars(spec)
    picked = load_bars(spec, symbols=["SYN002", "SYN000"], start="2020-02-03", end="2020-03-02")
    assert picked.symbols == ("SYN002", "SYN000")
    assert picked.index[0] == pd.Timestamp("2020-02-03", tz="UTC")
    assert picked.index[-1] == pd.Timestamp("2020-02-28", tz="UTC")
    row = full.index.get_loc(picked.index[0])
    np.testing.assert_array_equal(picked.close[0], full.close[row, [2, 0]])
    assert load_bars(spec, symbols="SYN001").symbols == ("SYN001",)


def test_filter_errors():
    spec = "synthetic:symbols=2,bars=10,seed=4,start=2020-01-01"
    with pytest.raises(UnknownNameError, match="unknown symbol 'SPY'; available: SYN000, SYN001"):
        load_bars(spec, symbols="SPY")
    with pytest.raises(DataError, match=r"no bars from 2030-01-01 .*data covers 2020-01-01"):
        load_bars(spec, start="2030-01-01")


# ----------------------------------------------------------------- catalog
def test_list_sources_shows_builtins_and_data_files(tmp_path, data_folder):
    _long().to_csv(tmp_path / "c.csv", index=False)
    import_file(tmp_path / "c.csv", name="pair")
    load_bars(tmp_path / "c.csv")  # fills data/cache, which must not be listed
    (data_folder / "notes.txt").write_text("not data")
    entries = {e["name"]: e for e in list_sources()}
    assert set(entries) == {"builtin:sp500", "builtin:nasdaq", "pair"}
    assert entries["builtin:sp500"]["start"].startswith("1999-01-04")
    assert entries["builtin:nasdaq"]["symbols"] == ["NASDAQ"]
    assert load_bars(entries["pair"]["spec"]).symbols == ("AAA", "BBB")


def test_describe_counts_bars_and_gaps():
    bars = _changed(_valid(10), "close", 0, 0, np.nan)
    arrays = {f: getattr(bars, f).copy() for f in FIELDS}
    for array in arrays.values():
        array[[0, 4], 0] = np.nan
    info = describe(dataclasses.replace(bars, **arrays))
    assert (info["n_bars"], info["n_symbols"]) == (10, 3)
    first = info["symbols"][0]
    assert first["symbol"] == "SYN000" and first["first"].startswith("2022-01-04")
    assert (first["bars"], first["missing_bars"]) == (8, 1)
    assert first["min_close"] == np.nanmin(arrays["close"][:, 0])
    assert first["mean_volume"] == pytest.approx(np.nanmean(arrays["volume"][:, 0]))


def test_regression_synthetic_past_year_2262_is_a_clear_error():
    # 100,000 daily bars from 2000 used to fail deep inside pandas (OutOfBoundsDatetime).
    with pytest.raises(DataError, match="run past 2262"):
        load_bars("synthetic:symbols=1,bars=100000,seed=1")
    assert load_bars("synthetic:symbols=1,bars=100000,seed=1,freq=1h").n_bars == 100_000


# ----------------------------------------------------------------- ambiguous dates (issue 17)
def test_regression_excel_serial_dates_are_refused_not_read_as_1970_seconds(tmp_path):
    frame = _ohlcv()
    frame["Date"] = 44_256.0 + np.arange(len(frame))  # Excel's serial days from 2021-03-01
    path = tmp_path / "excel.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load_bars(path)
    message = str(err.value)
    assert str(path) in message and "line 2" in message and "column 'Date'" in message
    assert "ambiguous time 44256.0" in message and "1970-01-01 12:17:36" in message
    assert "2021-03-01" in message and "--date-format excel" in message
    bars = load_bars(path, date_format="excel")
    assert bars.index[0] == pd.Timestamp("2021-03-01", tz="UTC")
    assert np.all(np.diff(bars.ts_ns) == 86_400 * 10**9)
    frame["Date"] = frame["Date"] + 0.5  # a time of day: noon
    frame.to_csv(path, index=False)
    noon = load_bars(path, date_format="excel", cache=False).index[0]
    assert noon == pd.Timestamp("2021-03-01 12:00", tz="UTC")


def test_regression_day_first_dates_that_fit_month_first_are_refused(tmp_path):
    frame = _ohlcv()  # 2021-03-01 .. 2021-03-08: every day <= 12
    frame["Date"] = pd.to_datetime(frame["Date"]).dt.strftime("%d/%m/%Y")
    path = tmp_path / "dayfirst.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load_bars(path)
    message = str(err.value)
    assert str(path) in message and "column 'Date'" in message and "\n" not in message
    assert "ambiguous date '01/03/2021'" in message and "--date-format '%d/%m/%Y'" in message
    assert "2021-01-03 month first or 2021-03-01 day first" in message
    bars = load_bars(path, date_format="%d/%m/%Y")
    expected = pd.DatetimeIndex(pd.to_datetime(_ohlcv()["Date"], utc=True)).as_unit("ns")
    np.testing.assert_array_equal(bars.ts_ns, expected.asi8)
    with pytest.raises(DataError, match="ambiguous date"):
        load_bars(path)  # the cache of the explicit read is not reused without the format
    with pytest.raises(DataError, match=r"cannot read time '01/03/2021' .* with --date-format"):
        load_bars(path, date_format="%Y-%m-%d")


def test_dates_with_a_day_above_12_or_year_first_are_read_without_a_format(tmp_path):
    frame = _ohlcv(20)  # 2021-03-01 .. 2021-03-20
    days = pd.to_datetime(frame["Date"])
    for text, name in (
        (days.dt.strftime("%d/%m/%Y"), "d.csv"),
        (days.dt.strftime("%Y/%m/%d"), "y.csv"),
    ):
        frame["Date"] = text
        frame.to_csv(tmp_path / name, index=False)
        bars = load_bars(tmp_path / name)
        assert bars.index[0] == pd.Timestamp("2021-03-01", tz="UTC") and bars.n_bars == 20
