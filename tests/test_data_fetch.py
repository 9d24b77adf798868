"""`quantshift data fetch` against the local fake venues through the real SDK clients: pages into
the Parquet cache, resume after failures, 429s, auth errors, input errors, Coinbase candles.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from live.broker import BrokerAuthError, BrokerUnavailableError
from live.coinbase import CoinbaseConfig
from live.coinbase import bar_pages as coinbase_bar_pages
from live.datafetch import cache_path, fetch_bars
from quantshift.cli import app
from quantshift.data import load_bars
from quantshift.errors import ConfigError, DataError, QuantShiftError
from tests.fakes.alpaca_server import FakeAlpaca
from tests.fakes.coinbase_server import FakeCoinbase
from tests.test_broker_coinbase import new_key, pem_body

KEY_ENV, SECRET_ENV = "QS_TEST_FETCH_KEY_ID", "QS_TEST_FETCH_SECRET"
WRONG_SECRET = "wrong-secret-must-never-be-printed"
BARS = "/v2/stocks/bars"
DAYS = ["--start", "2024-01-02", "--end", "2024-02-01"]
DEAD_URL = "http://127.0.0.1:9"  # the discard port: connection refused
runner = CliRunner()


@pytest.fixture(autouse=True)
def data_folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("QUANTSHIFT_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def fake(monkeypatch):
    venue = FakeAlpaca().start()
    monkeypatch.setenv(KEY_ENV, venue.key_id)
    monkeypatch.setenv(SECRET_ENV, venue.secret_key)
    venue.bars["AAPL"] = venue_bars(30)  # 2024-01-02 .. 2024-01-31, three pages of 10
    yield venue
    venue.stop()


def venue_bars(n: int, start: str = "2024-01-02T05:00:00Z", step: str = "1D") -> list[dict]:
    rng = np.random.default_rng(n)
    rows = []
    for t in pd.date_range(start, periods=n, freq=step):
        o, c = rng.uniform(100, 110, 2).round(2)
        high, low = max(o, c) + rng.uniform(0, 2), min(o, c) - rng.uniform(0, 2)
        row = {"t": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "o": o, "h": high, "l": low, "c": c}
        rows.append(row | {"v": float(rng.integers(1, 10**6)), "n": 7, "vw": (o + c) / 2})
    return rows


def options(fake: FakeAlpaca, **overrides) -> dict:
    return {
        "key_id_env": KEY_ENV,
        "secret_key_env": SECRET_ENV,
        "trading_url": fake.url,
        "data_url": fake.url,
        "timeout_s": 2.0,
        "retry_base_s": 0.001,
        "max_backoff_s": 0.01,
        "bars_page_limit": 10,
    } | overrides


def as_args(settings: dict) -> list[str]:
    return [arg for k, v in settings.items() for arg in ("-o", f"{k}={v}")]


def invoke(*args: str):
    """Run ``quantshift data fetch ARGS``; QuantShiftError becomes exit 2 as in main()."""
    result = runner.invoke(app, ["data", "fetch", *args])
    if isinstance(result.exception, QuantShiftError):
        return 2, result.stdout, f"{result.stderr}error: {result.exception}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def fetch_alpaca(fake, *args: str, **overrides):
    return invoke("alpaca", *args, *as_args(options(fake, **overrides)))


def fail_bars_after(fake: FakeAlpaca, pages: int, status: int, count: int = 1) -> None:
    """The bars requests after the first ``pages`` answer ``status`` (``count`` of them)."""
    original, seen = fake.handle, []

    def handle(method, path, *rest):
        if path == BARS:
            seen.append(path)
            if len(seen) == pages + 1:
                if status == 429:
                    fake.rate_limit("GET", BARS, count=count)
                else:
                    fake.fail("GET", BARS, status, count=count)
        return original(method, path, *rest)

    fake.handle = handle


def assert_file_equals(path: Path, rows: list[dict], symbol: str = "AAPL") -> None:
    bars = load_bars(path)
    assert bars.symbols == (symbol,)
    expected_ts = pd.DatetimeIndex([r["t"] for r in rows]).as_unit("ns").asi8
    np.testing.assert_array_equal(bars.ts_ns, expected_ts)
    for field, key in zip(("open", "high", "low", "close", "volume"), "ohlcv", strict=True):
        np.testing.assert_array_equal(getattr(bars, field)[:, 0], [r[key] for r in rows])


def bar_queries(fake: FakeAlpaca) -> list[dict]:
    return [q for _, p, q in fake.requests if p == BARS]


# ----------------------------------------------------------------------------- alpaca
def test_pages_land_in_one_file_equal_to_the_venue_bars(fake, data_folder):
    code, out, err = fetch_alpaca(fake, "AAPL", *DAYS, "--json")
    assert code == 0 and err == ""  # no progress bar with --json
    path = data_folder / "alpaca" / "1d" / "AAPL.parquet"
    summary = json.loads(out)
    assert summary["symbols"] == [
        {
            "symbol": "AAPL",
            "path": str(path),
            "bars_added": 30,
            "bars_total": 30,
            "first": "2024-01-02T05:00:00+00:00",
            "last": "2024-01-31T05:00:00+00:00",
        }
    ]
    assert fake.calls("GET", BARS) == 3
    assert_file_equals(path, fake.bars["AAPL"])
    shown = runner.invoke(app, ["data", "show", str(path), "--json"])
    assert json.loads(shown.stdout)["symbols"][0]["bars"] == 30


def test_a_second_identical_run_fetches_nothing(fake, data_folder):
    assert fetch_alpaca(fake, "AAPL", *DAYS)[0] == 0
    path = data_folder / "alpaca" / "1d" / "AAPL.parquet"
    before, calls = path.read_bytes(), fake.calls("GET", BARS)
    code, out, _ = fetch_alpaca(fake, "AAPL", *DAYS)
    assert code == 0 and out.startswith("AAPL: up to date, 30 in")
    assert fake.calls("GET", BARS) == calls and path.read_bytes() == before
    # A start before the first bar (a holiday) costs one request that adds nothing.
    code, out, _ = fetch_alpaca(fake, "AAPL", "--start", "2024-01-01", "--end", "2024-02-01")
    assert code == 0 and "up to date" in out and fake.calls("GET", BARS) == calls + 1


@pytest.mark.parametrize("status", [401, 503])
def test_a_failure_midway_keeps_the_pages_before_it_and_a_rerun_fetches_the_rest(
    fake, data_folder, status
):
    fail_bars_after(fake, pages=2, status=status, count=3)
    code, _, err = fetch_alpaca(fake, "AAPL", *DAYS)
    path = data_folder / "alpaca" / "1d" / "AAPL.parquet"
    assert code == 2 and f"note: AAPL: 20 bars saved in {path}" in err
    assert ("check the paper key id" in err) == (status == 401)
    assert_file_equals(path, fake.bars["AAPL"][:20])
    fake.faults.clear()
    fake.requests.clear()
    code, out, _ = fetch_alpaca(fake, "AAPL", *DAYS)
    assert code == 0 and out.startswith("AAPL: +10 bars, 30 in")
    assert len(bar_queries(fake)) == 1 and bar_queries(fake)[0]["start"] == [
        "2024-01-21T05:00:00.000001+00:00"
    ]
    assert_file_equals(path, fake.bars["AAPL"])


def test_ctrl_c_midway_keeps_every_saved_page(fake, data_folder):
    def interrupt(symbol, added, done_ns, total_ns, last_ns):
        if added == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_bars(
            "alpaca",
            ["AAPL"],
            "2024-01-02",
            "2024-02-01",
            options=options(fake),
            progress=interrupt,
        )
    path = cache_path("alpaca", "1d", "AAPL")
    assert_file_equals(path, fake.bars["AAPL"][:10])
    assert [p.name for p in path.parent.iterdir()] == ["AAPL.parquet"]  # no partial files
    summary = fetch_bars("alpaca", ["AAPL"], "2024-01-02", "2024-02-01", options=options(fake))
    assert summary["symbols"][0]["bars_added"] == 20 and fake.calls("GET", BARS) == 1 + 2
    assert_file_equals(path, fake.bars["AAPL"])


def test_a_429_midway_is_waited_out_and_the_fetch_completes(fake, data_folder):
    fail_bars_after(fake, pages=1, status=429, count=2)
    code, out, _ = fetch_alpaca(fake, "AAPL", *DAYS, "--json")
    assert code == 0 and json.loads(out)["symbols"][0]["bars_added"] == 30
    assert fake.calls("GET", BARS) == 3 + 2
    assert_file_equals(data_folder / "alpaca" / "1d" / "AAPL.parquet", fake.bars["AAPL"])


def test_wrong_keys_fail_with_one_line_naming_the_variable_never_the_secret(
    fake, data_folder, monkeypatch
):
    monkeypatch.setenv(SECRET_ENV, WRONG_SECRET)
    code, _, err = fetch_alpaca(fake, "AAPL", *DAYS)
    assert code == 2 and f"${SECRET_ENV}" in err and WRONG_SECRET not in err
    assert err.count("\n") == 0 and not any(data_folder.rglob("*.parquet"))
    monkeypatch.delenv(KEY_ENV)
    code, _, err = fetch_alpaca(fake, "AAPL", *DAYS)
    assert code == 2 and f"environment variable {KEY_ENV}" in err and fake.calls("GET", BARS) == 1


def test_the_console_script_exits_2_with_one_line_on_stderr(fake, data_folder):
    exe = shutil.which("quantshift", path=str(Path(sys.executable).parent))
    assert exe, "the quantshift console script is not installed"
    env = {**os.environ, SECRET_ENV: WRONG_SECRET}
    args = [exe, "data", "fetch", "alpaca", "AAPL", *DAYS, *as_args(options(fake))]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: alpaca: bars AAPL 1d page 1: HTTP 401")
    assert done.stderr.count("\n") == 1 and WRONG_SECRET not in done.stderr


def test_keys_from_a_secrets_file(fake, data_folder, monkeypatch, tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        f'alpaca_key_id = "{fake.key_id}"\nalpaca_secret_key = "{fake.secret_key}"\n'
    )
    secrets.chmod(0o600)
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.delenv(SECRET_ENV)
    code, out, _ = fetch_alpaca(fake, "AAPL", *DAYS, "--secrets-file", str(secrets))
    assert code == 0 and out.startswith("AAPL: +30 bars")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["kraken", "AAPL", *DAYS], "unknown venue 'kraken'; available: alpaca, coinbase"),
        (["alpaca", "AAPL", "--start", "2024-02-01", "--end", "2024-02-01"], "must be after"),
        (["alpaca", "AAPL", "--start", "2024-13-45"], "--start '2024-13-45' is not a date"),
        (["alpaca", "AAPL", *DAYS, "--timeframe", "2h"], "unknown timeframe '2h'; use one of 1m"),
        (["alpaca", "AAPL", "--start", "2200-01-01"], "is in the future"),
        (["alpaca", "AAPL", "--start", "2999-01-01"], "between 1677 and 2262"),
        (["alpaca", "AAPL", *DAYS, "-o", "colour=red"], "colour: unknown key for the alpaca"),
        (["alpaca", "AAPL", *DAYS, "-o", "colour"], "--option 'colour' is not NAME=VALUE"),
        (["alpaca", "AAPL", *DAYS, "-o", "read_attempts=many"], "read_attempts must be an integer"),
        (["alpaca", "AAPL", *DAYS, "--mode", "demo"], "mode must be one of"),
        (["coinbase", "BTC-USD", *DAYS, "--mode", "paper"], "no paper account"),
    ],
)
def test_bad_input_is_one_clear_error_before_any_request(fake, data_folder, args, message):
    settings = options(fake) if args[0] == "alpaca" else {}
    code, _, err = invoke(*args, *as_args(settings))
    assert code == 2 and message in err, err
    assert fake.requests == [] and not any(data_folder.rglob("*"))


def test_a_symbol_without_bars_is_named_and_gets_no_file(fake, data_folder):
    code, out, err = fetch_alpaca(fake, "aapl", "MSFT", *DAYS, "--json")
    rows = json.loads(out)["symbols"]
    assert [(r["symbol"], r["bars_total"], r["path"]) for r in rows][1] == ("MSFT", 0, None)
    assert code == 2 and "no bars for MSFT from 2024-01-02" in err and "(1d)" in err
    assert sorted(p.name for p in data_folder.rglob("*.parquet")) == ["AAPL.parquet"]


def test_symbols_with_slashes_and_dashes_get_safe_file_names(fake, data_folder):
    fake.bars["BRK/B"], fake.bars["BF-B"] = venue_bars(3), venue_bars(4)
    code, out, _ = fetch_alpaca(fake, "BRK/B", "BF-B", *DAYS)
    assert code == 0, out
    folder = data_folder / "alpaca" / "1d"
    assert sorted(p.name for p in folder.iterdir()) == ["BF-B.parquet", "BRK_B.parquet"]
    assert_file_equals(folder / "BRK_B.parquet", fake.bars["BRK/B"], symbol="BRK/B")
    assert cache_path("alpaca", "1d", "../../x").parent == folder
    assert cache_path("alpaca", "1d", "..").name == "_..parquet"  # not hidden
    fake.bars["BRK_B"] = venue_bars(2)
    with pytest.raises(DataError, match=r"BRK_B.parquet: holds symbol\(s\) BRK/B, not BRK_B"):
        fetch_bars("alpaca", ["BRK_B"], "2024-01-02", "2024-02-01", options=options(fake))


def test_earlier_and_later_requests_keep_the_file_one_contiguous_run(fake):
    run = dict(options=options(fake, bars_page_limit=5))
    fetch_bars("alpaca", ["AAPL"], "2024-01-12", "2024-01-15", **run)
    path = cache_path("alpaca", "1d", "AAPL")
    fail_bars_after(fake, pages=1, status=503, count=3)
    with pytest.raises(BrokerUnavailableError):
        fetch_bars("alpaca", ["AAPL"], "2024-01-02", "2024-01-05", **run)
    assert_file_equals(path, fake.bars["AAPL"][10:13])  # earlier pages wait: no hole
    fake.faults.clear()
    summary = fetch_bars("alpaca", ["AAPL"], "2024-01-02", "2024-01-05", **run)
    assert summary["symbols"][0]["bars_added"] == 10  # Jan 2 .. Jan 11: up to the cached run
    summary = fetch_bars("alpaca", ["AAPL"], "2024-01-25", "2024-02-01", **run)
    assert summary["symbols"][0]["bars_added"] == 17  # Jan 15 .. Jan 31: from the cached run
    assert_file_equals(path, fake.bars["AAPL"])


def test_bars_still_open_are_not_cached_and_progress_reports_pages(fake):
    fake.bars["AAPL"] = venue_bars(30, start="2024-01-02T00:00:00Z", step="1h")
    now_ns = pd.Timestamp("2024-01-02T20:30:00Z").value  # the 20:00 bar is still open
    seen = []
    summary = fetch_bars(
        "alpaca",
        ["AAPL"],
        "2024-01-02",
        None,
        "1h",
        options=options(fake),
        now_ns=now_ns,
        progress=lambda *args: seen.append(args),
    )
    assert summary["end"] == "2024-01-02T20:30:00+00:00"
    assert summary["symbols"][0]["last"] == "2024-01-02T19:00:00+00:00"
    assert_file_equals(cache_path("alpaca", "1h", "AAPL"), fake.bars["AAPL"][:20])
    assert [s[1] for s in seen] == [0, 10, 20, 20]
    total = seen[0][3]
    assert [s[2] == total for s in seen] == [False, False, False, True]


def test_the_progress_bar_goes_to_stderr(fake, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    code, out, err = fetch_alpaca(fake, "AAPL", *DAYS)
    assert code == 0 and out.startswith("AAPL: +30 bars") and "━" not in out
    assert "AAPL" in err and "━" in err


# ----------------------------------------------------------------------------- coinbase
START = "2023-11-14T22:00:00Z"
END = "2023-11-15T14:40:00Z"  # 1000 minutes
PUBLIC = "/market/products/BTC-USD/candles"


@pytest.fixture
def coinbase():
    venue = FakeCoinbase().start()
    yield venue
    venue.stop()


def coinbase_options(venue: FakeCoinbase, **overrides) -> dict:
    return {
        "api_key_env": "QS_TEST_FETCH_CB_KEY",
        "api_secret_env": "QS_TEST_FETCH_CB_SECRET",
        "base_url": venue.base_url,
        "ca_file": venue.ca_file,
        "timeout_s": 2.0,
        "retry_base_s": 0.001,
        "max_backoff_s": 0.01,
    } | overrides


def fetch_coinbase(venue, *args: str, **overrides):
    settings = coinbase_options(venue, **overrides)
    window = ["--start", START, "--end", END, "--timeframe", "1m"]
    return invoke("coinbase", "BTC-USD", *window, *args, *as_args(settings))


def test_coinbase_candles_come_in_windows_of_350_and_equal_the_venue(coinbase, data_folder):
    code, out, _ = fetch_coinbase(coinbase, "--json")
    assert code == 0 and json.loads(out)["symbols"][0]["bars_added"] == 1000
    assert coinbase.count("GET", PUBLIC) == 3  # no keys: the public endpoint
    config = CoinbaseConfig(mode="live", **coinbase_options(coinbase))
    start, end = pd.Timestamp(START).value, pd.Timestamp(END).value
    venue = pd.concat(coinbase_bar_pages(config, "BTC-USD", start, end, "1m"), ignore_index=True)
    bars = load_bars(data_folder / "coinbase" / "1m" / "BTC-USD.parquet")
    assert bars.symbols == ("BTC-USD",) and bars.n_bars == 1000
    np.testing.assert_array_equal(bars.ts_ns, venue["ts_ns"])
    np.testing.assert_array_equal(bars.close[:, 0], venue["close"])
    assert np.all(np.diff(bars.ts_ns) == 60 * 10**9)


def test_coinbase_resume_after_a_failure_and_a_429_midway(coinbase, data_folder):
    coinbase.fail("GET", PUBLIC, 500, after=1)
    code, _, err = fetch_coinbase(coinbase)
    assert code == 2 and "note: BTC-USD: 350 bars saved" in err and "HTTP 500" in err
    assert load_bars(data_folder / "coinbase" / "1m" / "BTC-USD.parquet").n_bars == 350
    coinbase.fail("GET", PUBLIC, 429, after=1, count=2)
    code, out, _ = fetch_coinbase(coinbase)
    assert code == 0 and out.startswith("BTC-USD: +650 bars, 1000 in")
    assert coinbase.count("GET", PUBLIC) == 2 + 4  # two windows left, one of them 429 twice


def test_coinbase_keys_use_the_signed_endpoint_and_bad_ones_fail_cleanly(
    coinbase, data_folder, monkeypatch
):
    pem, public = new_key()
    coinbase.add_key("organizations/o/apiKeys/k", public)
    monkeypatch.setenv("QS_TEST_FETCH_CB_KEY", "organizations/o/apiKeys/k")
    monkeypatch.setenv("QS_TEST_FETCH_CB_SECRET", pem)
    assert fetch_coinbase(coinbase)[0] == 0
    assert coinbase.count("GET", "/products/BTC-USD/candles") == 3
    wrong, _ = new_key()
    monkeypatch.setenv("QS_TEST_FETCH_CB_SECRET", wrong)
    code, _, err = fetch_coinbase(coinbase, "--end", "2023-11-16")
    assert code == 2 and "HTTP 401" in err and "$QS_TEST_FETCH_CB_SECRET" in err
    assert pem_body(wrong) not in err and pem_body(pem) not in err


def test_python_and_cli_agree(fake, data_folder):
    summary = fetch_bars("alpaca", ["AAPL"], "2024-01-02", "2024-02-01", options=options(fake))
    assert summary["symbols"][0]["path"] == str(data_folder / "alpaca" / "1d" / "AAPL.parquet")
    out = fetch_alpaca(fake, "AAPL", *DAYS, "--json")[1]
    assert json.loads(out)["symbols"][0] == summary["symbols"][0] | {"bars_added": 0}
    with pytest.raises(BrokerUnavailableError):
        fetch_bars("alpaca", ["AAPL"], "2024-01-02", options=options(fake, data_url=DEAD_URL))
    with pytest.raises(ConfigError, match="give one or more symbols"):
        fetch_bars("alpaca", [" "], "2024-01-02", options=options(fake))
    with pytest.raises(BrokerAuthError, match=rf"secret key from \${KEY_ENV}"):
        fetch_bars("alpaca", ["AAPL"], "2024-01-02", options=options(fake, secret_key_env=KEY_ENV))
