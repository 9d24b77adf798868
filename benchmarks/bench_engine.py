"""Engine benchmark: QuantShift against a hand-written numba loop, vectorbt and backtrader.

Run ``uv run python benchmarks/bench_engine.py --help``; benchmarks/README.md explains the output.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from contenders import CONTENDERS, Workload, build_workloads, make_ohlcv, setup_public

EQUITY_RTOL = 1e-9
METRIC_RTOL = 1e-6
MIN_SAMPLE_S = 0.05


# --------------------------------------------------------------------------------- measuring


def _status_kb(key: str) -> int:
    """Return a ``/proc/self/status`` memory field (VmRSS, VmHWM) in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def measure(workload: Workload, contender: str, repeat: int) -> dict:
    """Time one contender on one workload; runs in a fresh process (see README, "Memory")."""
    import resource

    setup = CONTENDERS[contender]
    run, summarize = setup(workload, make_ohlcv(workload.warmup_bars, workload.n_symbols))
    summarize(run())  # warm-up: lazy imports, JIT compilation or cache loading
    del run, summarize
    run, summarize = setup(workload, make_ohlcv(workload.n_bars, workload.n_symbols))
    gc.collect()
    exact_peak = _reset_peak_rss()
    baseline_kb = _status_kb("VmRSS")
    start = time.perf_counter()
    result = run()
    first_s = time.perf_counter() - start
    peak_kb = _status_kb("VmHWM") - baseline_kb
    check = summarize(result)
    del result
    # Fast runs are timed in batches of `calls` back-to-back calls so a sample lasts
    # >= MIN_SAMPLE_S; a slow first run already is the first sample.
    calls = 1 if first_s >= MIN_SAMPLE_S else math.ceil(MIN_SAMPLE_S / max(first_s, 1e-7))
    samples = [first_s] if calls == 1 else []
    while len(samples) < repeat:
        gc.collect()
        start = time.perf_counter()
        for _ in range(calls):
            run()
        samples.append((time.perf_counter() - start) / calls)
    return {
        "contender": contender,
        "threading_layer": _threading_layer(),
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "samples_s": samples,
        "calls_per_sample": calls,
        "peak_mb": peak_kb / 1024.0,
        "peak_exact": exact_peak,
        "baseline_mb": baseline_kb / 1024.0,
        "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "check": check,
    }


def _threading_layer() -> str | None:
    """Return the numba threading layer if a parallel kernel ran in this process."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return None


def run_isolated(
    workload: Workload, contender: str, repeat: int, numba_threads: int | None = None
) -> dict:
    """Run :func:`measure` in a fresh spawned process; return its result or the error."""
    start = time.perf_counter()
    saved = os.environ.get("NUMBA_NUM_THREADS")
    if numba_threads:
        # The child reads it when it imports numba. Set only while the pool lives: this
        # process's numba rejects a changed value once its own threads have started.
        os.environ["NUMBA_NUM_THREADS"] = str(numba_threads)
    try:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            result = pool.submit(measure, workload, contender, repeat).result()
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        result = {"contender": contender, "error": detail}
    finally:
        if saved is None:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = saved
    result["process_wall_s"] = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------------- agreement


def _close(a, b, rtol: float) -> bool:
    if a is None or b is None:
        return True
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)


_TOLERANCE = {"final_equity": EQUITY_RTOL, "final_equity_sum": EQUITY_RTOL}


def disagreements(reference: dict, other: dict) -> list[str]:
    """Return how ``other``'s check values differ from ``reference``'s (empty if they agree)."""
    out = []
    for key, ref in reference.items():
        value = other.get(key)
        if isinstance(ref, dict):
            out += [f"{key}[{k}]: {d}" for k, d in _dict_disagreements(ref, value or {})]
        elif isinstance(ref, int) and not isinstance(ref, bool):
            if value is not None and value != ref:
                out.append(f"{key}: {value} != {ref}")
        elif not _close(value, ref, _TOLERANCE.get(key, METRIC_RTOL)):
            out.append(f"{key}: {value!r} vs {ref!r} (rel {abs(value / ref - 1):.1e})")
    return out


def _dict_disagreements(reference: dict, other: dict):
    for key, ref in reference.items():
        value = other.get(key)
        if not _close(value, ref, EQUITY_RTOL):
            yield key, f"{value!r} vs {ref!r}"


# --------------------------------------------------------------------------------- reporting

GOALS = {
    "W1": [
        ("kernel", "limit", "time", 2.0),
        ("public", "vectorbt", "speedup", 40.0),
        ("public", "backtrader", "speedup", 1000.0),
    ],
    "W2": [
        ("kernel", "limit", "time", 2.0),
        ("public", "vectorbt", "speedup", 50.0),
        ("public", "vectorbt", "memory", 1 / 20),
    ],
    "W3": [("kernel", "limit", "time", 2.0), ("public", "vectorbt", "speedup", 20.0)],
}
CLI_WARM_GOAL_S = 3.0


def describe(wl: Workload) -> str:
    shape = f"{wl.n_bars:,} bars x {wl.n_symbols:,} symbol{'s' if wl.n_symbols > 1 else ''}"
    if wl.is_sweep:
        return f"{wl.name}  {wl.title}: {len(wl.grid()):,} sets, {shape}"
    return f"{wl.name}  {wl.title}: {shape}"


def table(rows: list[dict]) -> str:
    """Format the results of one workload as a text table."""
    by_name = {r["contender"]: r for r in rows if "error" not in r}
    vbt_s = by_name.get("vectorbt", {}).get("median_s")
    limit_s = by_name.get("limit", {}).get("median_s")
    lines = [
        f"  {'contender':<11}{'median s':>12}{'x vectorbt':>12}{'x limit':>10}"
        f"{'peak MB':>10}{'proc MB':>10}  runs"
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"  {r['contender']:<11}  failed: {r['error'][:200]}")
            continue
        t = r["median_s"]
        r["x_vectorbt"] = vbt_s / t if vbt_s else None
        r["x_limit"] = t / limit_s if limit_s else None
        runs = f"{len(r['samples_s'])}" + (
            f"x{r['calls_per_sample']}" if r["calls_per_sample"] > 1 else ""
        )
        peak = f"{r['peak_mb']:.1f}" + ("" if r["peak_exact"] else "*")
        lines.append(
            f"  {r['contender']:<11}{t:>12.6f}{_ratio(r['x_vectorbt']):>12}"
            f"{_ratio(r['x_limit']):>10}{peak:>10}{r['process_peak_mb']:>10.0f}  {runs}"
        )
    return "\n".join(lines)


def _ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}"


def goal_lines(name: str, rows: list[dict]) -> list[str]:
    by_name = {r["contender"]: r for r in rows if "error" not in r}
    out = []
    for subject, other, kind, target in GOALS.get(name, []):
        if subject not in by_name or other not in by_name:
            continue
        a, b = by_name[subject], by_name[other]
        if kind == "time":
            value, ok = a["median_s"] / b["median_s"], a["median_s"] <= target * b["median_s"]
            text = f"{subject} takes {value:.2f}x the time of {other} (goal <= {target:g}x)"
        elif kind == "speedup":
            value = b["median_s"] / a["median_s"]
            ok = value >= target
            text = f"{subject} is {value:,.1f}x faster than {other} (goal >= {target:g}x)"
        else:
            value = a["peak_mb"] / b["peak_mb"] if b["peak_mb"] > 0 else math.inf
            ok = value <= target
            text = (
                f"{subject} peak memory is 1/{1 / value if value else math.inf:,.0f} of {other}'s "
                f"(goal <= 1/{1 / target:g})"
            )
        out.append(f"  goal {'met ' if ok else 'MISSED'}  {text}")
    return out


def agreement_lines(rows: list[dict]) -> list[str]:
    ok_rows = [r for r in rows if "error" not in r]
    if not ok_rows:
        return []
    reference = next((r for r in ok_rows if r["contender"] == "limit"), ok_rows[0])
    out = []
    for r in ok_rows:
        if r is reference:
            continue
        diffs = disagreements(reference["check"], r["check"])
        r["agrees"] = not diffs
        if diffs:
            out.append(
                f"  WARNING: {r['contender']} disagrees with {reference['contender']}: "
                + "; ".join(diffs[:6])
            )
    if not out:
        shown = {k: v for k, v in reference["check"].items() if not isinstance(v, dict)}
        out.append(f"  agreement: all contenders match {reference['contender']} {shown}")
    return out


def machine() -> dict:
    import numba

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    versions = {}
    for dist in ("numpy", "pandas", "numba", "vectorbt", "backtrader", "quantshift"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_threading_layer": numba.config.THREADING_LAYER,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


# --------------------------------------------------------------------------------- CLI timing

CLI_COMMAND = ("backtest", "ma_crossover", "--data", "builtin:sp500", "--json")


def time_cli(repeat: int) -> dict:
    """Time ``quantshift backtest ... --json`` from process start to exit, cold and warm."""
    exe = shutil.which("quantshift")
    if exe is None:
        return {"skipped": "the `quantshift` command is not installed in this environment"}

    def once(env) -> float:
        start = time.perf_counter()
        proc = subprocess.run([exe, *CLI_COMMAND], env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"exit code {proc.returncode}: {proc.stderr.strip()[-300:]}")
        json.loads(proc.stdout)
        return elapsed

    with tempfile.TemporaryDirectory(prefix="qs-numba-cache-") as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        try:
            cold = once(env)
            warm = [once(env) for _ in range(repeat)]
        except (RuntimeError, json.JSONDecodeError) as exc:
            return {"skipped": f"`quantshift {' '.join(CLI_COMMAND)}` failed: {exc}"}
    return {
        "command": f"quantshift {' '.join(CLI_COMMAND)}",
        "cold_s": cold,
        "warm_median_s": statistics.median(warm),
        "warm_s": warm,
    }


# --------------------------------------------------------------------------------- profile


# Engine functions the public backtest call is broken down into, by function name.
PROFILE_PARTS = {
    "backtest_template": "kernel (numba: signals, fills, metrics)",
    "prepare": "prepare (strategy lookup, config)",
    "pack": "pack bars for the kernel",
    "fingerprint": "data fingerprint (sha256 of all bars)",
    "_trades_frame": "trades DataFrame",
    "_unpack_series": "equity + positions DataFrames",
}


def profile_public(
    workload: Workload, numba_threads: int | None, calls: int = 20, top: int = 12
) -> dict[str, float]:
    """Print where ``quantshift.backtest`` spends its time on ``workload`` (cProfile)."""
    import cProfile
    import pstats

    import numba

    if numba_threads:
        numba.set_num_threads(min(numba_threads, numba.config.NUMBA_NUM_THREADS))
    run, _ = setup_public(workload, make_ohlcv(workload.n_bars, workload.n_symbols))
    run()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        run()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    parts = dict.fromkeys(PROFILE_PARTS.values(), 0.0)
    for (_, _, name), (_, _, _, cumulative, _) in stats.stats.items():
        if name in PROFILE_PARTS:
            parts[PROFILE_PARTS[name]] += cumulative
    parts["other (stats frame, result object, pandas glue)"] = total - sum(parts.values())
    print(f"\nprofile of quantshift.backtest on {workload.name} ({calls} calls, cProfile):")
    for label, seconds in parts.items():
        print(f"  {label:<48}{1e3 * seconds / calls:9.3f} ms  {100 * seconds / total:5.1f}%")
    print(f"  {'total':<48}{1e3 * total / calls:9.3f} ms")
    stats.sort_stats("tottime").print_stats(top)
    return {label: seconds / calls for label, seconds in parts.items()}


# --------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="W1,W2,W3", help="comma-separated: W1,W2,W3")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated")
    parser.add_argument(
        "--repeat", type=int, help="timed samples per contender (default 5, 3 with --quick)"
    )
    parser.add_argument("--bt-repeat", type=int, default=1, help="timed runs of backtrader")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--numba-threads", type=int, help="NUMBA_NUM_THREADS for the contenders (default: cores)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    parser.add_argument("--cli", action="store_true", help="also time the quantshift CLI")
    parser.add_argument("--profile", action="store_true", help="cProfile the public W1 call")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    if args.repeat < 1 or args.bt_repeat < 1:
        parser.error("--repeat and --bt-repeat must be >= 1")
    if args.numba_threads is not None and args.numba_threads < 1:
        parser.error("--numba-threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = build_workloads(args.quick)
    names = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [n for n in names if n not in workloads] + [
        c for c in contenders if c not in CONTENDERS
    ]
    if unknown:
        print(f"unknown workload/contender: {', '.join(unknown)}", file=sys.stderr)
        return 2
    info = machine()
    if args.numba_threads:
        info["numba_threads"] = args.numba_threads
    print(
        f"machine: {info['cpu']}, {info['usable_cores']} usable cores of {info['logical_cores']}, "
        f"numba threads {info['numba_threads']}, Python {info['python']}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(
        f"size: {'quick' if args.quick else 'full'}, repeat {args.repeat} "
        f"(backtrader {args.bt_repeat})"
    )
    report: dict[str, Any] = {"machine": info, "quick": args.quick, "workloads": {}}
    for name in names:
        wl = workloads[name]
        load = os.getloadavg()[0]
        busy = "  (busy machine: timings may be noisy)" if load > info["usable_cores"] else ""
        print(f"\n{describe(wl)}\n  load average {load:.2f} at start{busy}")
        rows = []
        for contender in contenders:
            if contender == "backtrader" and name != "W1":
                continue
            repeat = args.bt_repeat if contender == "backtrader" else args.repeat
            _progress(f"  running {contender} ...")
            rows.append(run_isolated(wl, contender, repeat, args.numba_threads))
        _progress("")
        print(table(rows))
        for line in agreement_lines(rows) + goal_lines(name, rows):
            print(line)
        report["workloads"][name] = {"workload": asdict(wl), "results": rows}
    if args.cli:
        cli = time_cli(args.repeat)
        report["cli"] = cli
        print()
        if "skipped" in cli:
            print(f"CLI: skipped: {cli['skipped']}")
        else:
            ok = "met" if cli["warm_median_s"] < CLI_WARM_GOAL_S else "MISSED"
            print(
                f"CLI: {cli['command']}\n  cold {cli['cold_s']:.2f} s (empty NUMBA_CACHE_DIR), "
                f"warm {cli['warm_median_s']:.2f} s (median of {len(cli['warm_s'])}); "
                f"goal {ok}: warm < {CLI_WARM_GOAL_S:g} s"
            )
    if args.profile:
        report["profile_w1_s"] = profile_public(workloads["W1"], args.numba_threads)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=_json_default))
        print(f"\nwrote {args.json}")
    return 0


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        print(f"\r\x1b[K{text}", end="", file=sys.stderr, flush=True)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    sys.exit(main())
