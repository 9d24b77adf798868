"""The ``quantshift`` command: JSON contracts scripts rely on, readable output, clear errors.

Most calls run in-process (fast); one runs the installed console script end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import quantshift as qs
from quantshift.cli import app

SYN = "synthetic:symbols=2,bars=600,seed=5"
runner = CliRunner()


def invoke(*args: str):
    # main() maps QuantShiftError to exit 2; the runner calls the app, so mirror that here.
    from quantshift.errors import QuantShiftError

    result = runner.invoke(app, list(args))
    if isinstance(result.exception, QuantShiftError):
        return 2, f"error: {result.exception}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_backtest_json_has_the_documented_keys_and_matches_python():
    code, out = invoke(
        "backtest",
        "ma_crossover",
        "--data",
        "builtin:sp500",
        "--param",
        "fast=10",
        "--param",
        "slow=50",
        "--fees-bps",
        "1",
        "--json",
    )
    assert code == 0, out
    payload = json.loads(out)
    for key in (
        "trades",
        "final_equity",
        "total_return_pct",
        "sharpe",
        "max_drawdown_pct",
        "win_rate_pct",
    ):
        assert key in payload
    expected = qs.backtest(
        "ma_crossover", "builtin:sp500", {"fast": 10, "slow": 50}, fees_bps=1
    ).metrics
    assert payload["final_equity"] == pytest.approx(expected["final_equity"], rel=1e-12)
    assert payload["trades"] == expected["trades"] > 0
    assert payload["config"]["cash"] == 100_000 and payload["config"]["fill"] == "next-open"


def test_backtest_human_output_and_plot(tmp_path):
    target = tmp_path / "eq.png"
    code, out = invoke(
        "backtest", "rsi_reversion", "--data", SYN, "--symbol", "SYN001", "--plot", str(target)
    )
    assert code == 0, out
    assert "sharpe" in out and "SYN001" in out and "last" in out
    assert target.stat().st_size > 10_000


def test_sweep_json_ranks_and_counts(tmp_path):
    csv = tmp_path / "grid.csv"
    code, out = invoke(
        "sweep",
        "ma_crossover",
        "--data",
        SYN,
        "--grid",
        "fast=2:10:2",
        "--grid",
        "slow=12:30:6",
        "--top",
        "3",
        "--csv",
        str(csv),
        "--json",
    )
    assert code == 0, out
    payload = json.loads(out)
    assert payload["evaluated"] == 5 * 4 * 2  # 5 fast x 4 slow, all fast < slow, 2 symbols
    sharpes = [row["sharpe"] for row in payload["top"]]
    assert sharpes == sorted(sharpes, reverse=True) and len(sharpes) == 3
    assert csv.read_text().count("\n") == 41


def test_sweep_human_output():
    code, out = invoke(
        "sweep", "ma_crossover", "--data", SYN, "--grid", "fast=3,5", "--grid", "slow=20"
    )
    assert code == 0, out
    assert "top 4 of 4" in out


def test_strategies_and_data_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTSHIFT_DATA_DIR", str(tmp_path))
    code, out = invoke("strategies", "list", "--json")
    names = {row["name"] for row in json.loads(out)}
    assert {"ma_crossover", "rsi_reversion", "bollinger_bounce", "breakout_momentum"} <= names
    code, out = invoke("strategies", "show", "ma_crossover")
    assert code == 0 and "fast < slow" in out
    code, out = invoke("data", "validate", SYN)
    assert code == 0 and "ok:" in out
    code, out = invoke("data", "show", "builtin:sp500", "--json")
    assert code == 0 and "SP500" in out
    csv = tmp_path / "mine.csv"
    qs.load_bars(SYN).to_frame("SYN000").rename_axis("date").to_csv(csv)
    code, out = invoke("data", "import", str(csv), "--name", "mine")
    assert code == 0, out
    code, out = invoke("backtest", "ma_crossover", "--data", "mine", "--json")
    assert code == 0 and json.loads(out)["symbols"] == ["mine"]
    code, out = invoke("data", "list")
    assert code == 0 and "mine" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backtest", "nope"], "unknown strategy 'nope'"),
        (["backtest", "ma_crossover", "--param", "fast"], "not NAME=VALUE"),
        (["backtest", "ma_crossover", "--param", "speed=3"], "no parameter 'speed'"),
        (["backtest", "ma_crossover", "--param", "fast=30"], "fast < slow"),
        (["backtest", "ma_crossover", "--data", "builtin:dax"], "dax"),
        (["backtest", "ma_crossover", "--data", "missing.csv"], "missing.csv"),
        (["backtest", "ma_crossover", "--fill", "vwap"], "fill='vwap'"),
        (["backtest", "ma_crossover", "--sizing", "risk"], "needs stop distances"),
        (["backtest", "ma_crossover", "--symbol", "AAPL"], "unknown symbol 'AAPL'"),
        (["sweep", "ma_crossover", "--grid", "fast=a:b"], "START:STOP"),
        (["sweep", "rsi_reversion", "--grid", "stop_atr=1:3"], "give a STEP"),
        (["sweep", "ma_crossover", "--grid", "fast=3:5", "--rank-by", "luck"], "not a metric"),
    ],
)
def test_errors_are_one_clear_line(args, message):
    code, out = invoke(*args)
    assert code == 2, out
    assert message in out


def test_console_script_end_to_end():
    exe = shutil.which("quantshift", path=str(Path(sys.executable).parent))
    assert exe, "the quantshift console script is not installed"
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [exe, "backtest", "breakout_momentum", "--data", SYN, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["strategy"] == "breakout_momentum"
    bad = subprocess.run(
        [exe, "backtest", "nope"], capture_output=True, text=True, env=env, timeout=300
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown strategy")


# Regressions (issue 17) ---------------------------------------------------------------------


def _run_capped(args: list[str], memory_gb: float = 2.0, timeout_s: float = 120.0, **env: str):
    """Run the console script with its address space capped (a runaway grid dies, not the host)."""
    import resource

    cap = int(memory_gb * 2**30)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    exe = shutil.which("quantshift", path=str(Path(sys.executable).parent))
    started = time.perf_counter()
    done = subprocess.run(
        [exe, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **env},
        timeout=timeout_s,
        preexec_fn=limit,
    )
    return done, time.perf_counter() - started


@pytest.mark.parametrize(
    ("args", "count"),
    [
        (["bollinger_bounce", "--grid", "bb_std=0.5:4:1e-9"], "3,500,000,001"),
        (
            [
                "breakout_momentum",
                "--grid",
                "entry_window=5:200",
                "--grid",
                "exit_window=2:100",
                "--grid",
                "volume_window=5:100",
                "--grid",
                "atr_window=2:50",
            ],
            f"{196 * 99 * 96 * 49:,}",
        ),
    ],
    ids=["one-fine-axis", "four-axes"],
)
def test_regression_sweep_grid_over_the_limit_is_refused_with_its_count_before_building(
    args, count
):
    done, elapsed_s = _run_capped(["sweep", *args, "--data", SYN])
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and count in done.stderr, done.stderr
    assert "over the limit of 1,000,000" in done.stderr
    assert elapsed_s < 30


def test_regression_sweep_grid_limit_is_configurable():
    grid = ["sweep", "ma_crossover", "--data", SYN, "--grid", "fast=2:5", "--grid", "slow=10:14"]
    code, out = invoke(*grid, "--max-sets", "19", "--json")
    assert code == 2 and "20 parameter sets" in out and "limit of 19" in out
    code, out = invoke(*grid, "--max-sets", "20", "--json")
    assert code == 0 and json.loads(out)["evaluated"] == 20 * 2
    done, _ = _run_capped([*grid, "--json"], QUANTSHIFT_MAX_GRID_SETS="12")
    assert done.returncode == 2 and "limit of 12" in done.stderr


def test_regression_duplicate_grid_values_are_evaluated_and_counted_once():
    code, out = invoke(
        "sweep", "ma_crossover", "--data", SYN, "--grid", "fast=3,5,3,5.0", "--grid", "slow=20,20",
        "--json",
    )  # fmt: skip
    assert code == 0, out
    assert json.loads(out)["evaluated"] == 2 * 2  # fast 3 and 5, slow 20, on 2 symbols


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backtest", "ma_crossover", "-p", "fast=5", "-p", "fast=8"], "'fast' is given twice"),
        (["sweep", "ma_crossover", "-g", "fast=3,5", "-g", "fast=4"], "'fast' is given twice"),
        (["sweep", "ma_crossover", "-g", "fast=3,5", "--top", "-3"], "--top must be at least 1"),
        (["backtest", "ma_crossover", "--trades", "-1"], "--trades must be at least 0"),
        (["sweep", "ma_crossover", "-g", "fast=3", "--max-sets", "0"], "--max-sets must be"),
    ],
)
def test_regression_repeated_or_negative_options_are_refused(args, message):
    code, out = invoke(*args, "--data", SYN)
    assert code == 2, out
    assert message in out and out.count("\n") == 0


def test_regression_bad_csv_path_is_refused_before_the_sweep(tmp_path):
    (tmp_path / "file").write_text("x")
    sweep = ["sweep", "ma_crossover", "--data", SYN, "--grid", "fast=3,5", "--grid", "slow=20"]
    for target, problem in (
        (tmp_path / "missing" / "t.csv", "does not exist"),
        (tmp_path / "file" / "t.csv", "is not a directory"),
        (tmp_path, "is a directory"),
    ):
        code, out = invoke(*sweep, "--csv", str(target))
        assert code == 2, out
        assert str(target) in out and problem in out and out.count("\n") == 0


def test_regression_bad_out_directory_is_refused_before_the_demo(tmp_path):
    (tmp_path / "file").write_text("x")
    started = time.perf_counter()
    code, out = invoke("demo", "--out", str(tmp_path / "file" / "plots"), "--json")
    assert code == 2 and "is not a directory" in out and out.count("\n") == 0
    assert time.perf_counter() - started < 5  # refused before the demo's backtests and sweep


def test_regression_plot_into_a_directory_prints_the_file_it_wrote(tmp_path):
    plots = tmp_path / "plots"
    plots.mkdir()
    code, out = invoke("backtest", "ma_crossover", "--data", SYN, "--plot", str(plots))
    assert code == 0, out
    written = [plots / "ma_crossover_SYN000.png", plots / "ma_crossover_SYN001.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
    assert all(f"plot written to {p}" in out.replace("\n", "") for p in written)
    code, out = invoke(
        "backtest", "ma_crossover", "--data", SYN, "-s", "SYN000", "--plot", str(tmp_path / "eq")
    )
    assert code == 0 and (tmp_path / "eq.png").is_file()
    assert f"plot written to {tmp_path / 'eq.png'}" in out.replace("\n", "")
    code, out = invoke(
        "backtest", "ma_crossover", "--data", SYN, "--plot", str(tmp_path / "eq.png" / "x.png")
    )
    assert code == 2 and "is not a directory" in out
    new_dir = f"{tmp_path / 'new' / 'plots'}/"
    code, out = invoke("backtest", "ma_crossover", "--data", SYN, "-s", "SYN001", "--plot", new_dir)
    assert code == 0 and (tmp_path / "new" / "plots" / "ma_crossover.png").is_file()


def test_regression_data_validate_refuses_excel_serial_dates_unless_told(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTSHIFT_DATA_DIR", str(tmp_path))
    frame = qs.load_bars(SYN).to_frame("SYN000").rename_axis("date").reset_index()
    frame["date"] = 43_831.0 + np.arange(len(frame))  # Excel's 2020-01-01 onwards
    csv = tmp_path / "excel.csv"
    frame.to_csv(csv, index=False)
    code, out = invoke("data", "validate", str(csv))
    assert code == 2 and "ambiguous time 43831.0" in out and out.count("\n") == 0
    code, out = invoke("data", "validate", str(csv), "--date-format", "excel")
    assert code == 0 and out.startswith("ok:"), out
    code, out = invoke("data", "import", str(csv), "--name", "xl", "--date-format", "excel")
    assert code == 0, out
    assert qs.load_bars("xl").index[0] == pd.Timestamp("2020-01-01", tz="UTC")
