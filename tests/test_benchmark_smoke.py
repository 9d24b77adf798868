"""The benchmark script still runs and its contenders still agree (slow: run with -m slow).

Speed goals live in the benchmark's own report, never in a timed test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_quick_run_agrees(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_engine.py"),
            "--quick",
            "--json",
            str(tmp_path / "bench.json"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "WARNING" not in done.stdout, done.stdout
    assert done.stdout.count("all contenders match limit") == 3, done.stdout


@pytest.mark.slow
def test_research_benchmark_quick_run(tmp_path):
    target = tmp_path / "research.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_research.py"),
            "--quick",
            "--json",
            target,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(target.read_text())
    assert set(report) == {"quick", "optuna", "walk_forward", "monte_carlo"}
    assert report["walk_forward"]["folds"] == 2 and report["monte_carlo"]["reshuffle_s"] > 0


@pytest.mark.slow
def test_live_benchmark_quick_run(tmp_path):
    target = tmp_path / "live.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_live.py"), "--quick", "--json", target],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(target.read_text())
    assert report["latency"]["p50_ms"] > 0 and report["replay"]["bars"] == 100
    assert len(report["orders"]) == 3  # the paper broker and both SDKs against the fake venues
    assert all(row["median_ms"] > 0 for row in report["orders"].values())


@pytest.mark.slow
def test_streaming_benchmark_quick_run(tmp_path):
    target = tmp_path / "streaming.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_streaming.py"),
            "--quick",
            "--json",
            target,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(target.read_text())
    for feed in ("stream", "poll"):
        assert report[feed]["bars"] == 6 and report[feed]["to_decision_ms"]["median"] > 0
        assert report[feed]["bars_with_orders"] > 0


@pytest.mark.slow
def test_startup_benchmark_runs(tmp_path):
    target = tmp_path / "startup.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_startup.py"), "--runs", "1",
         "--json", target],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(target.read_text())
    assert set(report) == {"warm", "lazy"}
    assert all(
        run["first_ms"] > 0 and run["open_s"] > 0 for runs in report.values() for run in runs
    )
