"""Trial registry benchmark: what recording every parameter set of a sweep costs.

Each workload runs the same sweep with the registry on (a fresh SQLite file, or PostgreSQL with
``--postgres URL``) and off (``trial_context(record=False)``), interleaved, and reports the
medians, their ratio and the cost per trial.

Run ``uv run python benchmarks/bench_registry.py --help``; ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))


_BARS: dict[bool, object] = {}  # the workloads' bars, by whether they keep equity curves


def bench_registry(
    n_sets: int = 10_000,
    equity_sets: int = 1_000,
    n_bars: int = 2_520,
    repeat: int = 5,
    url: str | None = None,
) -> dict[str, Any]:
    """Time ``qs.sweep`` of ``n_sets`` MA-crossover sets on one synthetic symbol and
    ``qs.sweep_equity`` of ``equity_sets`` sets on four symbols, registry on and off; print
    and return the medians (seconds), the ratio on/off, the registry's cost per trial from
    their difference, and the recorder timed alone on the same results."""
    import quantshift as qs
    from quantshift.data.synthetic import synthetic_bars
    from research.registry import default_registry, trial_context

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["QUANTSHIFT_REGISTRY_URL"] = url or f"sqlite:///{scratch}/registry.db"
        registry = default_registry()
        _BARS.update(
            {False: synthetic_bars(1, n_bars, seed=1), True: synthetic_bars(4, n_bars, seed=2)}
        )
        # fast 2..51 x as many slow lengths from 60 as it takes: every set has fast < slow.
        grid = {"fast": range(2, 52), "slow": range(60, 60 + -(-n_sets // 50))}
        matrix = qs.get_strategy("ma_crossover").grid(grid)[:n_sets]
        equity_matrix = matrix[:: max(1, len(matrix) // equity_sets)][:equity_sets]
        workloads = {
            f"sweep {len(matrix):,} sets x 1 symbol": (
                lambda: qs.sweep("ma_crossover", _BARS[False], matrix),
                len(matrix),
            ),
            f"sweep_equity {len(equity_matrix):,} sets x 4 symbols": (
                lambda: qs.sweep_equity("ma_crossover", _BARS[True], equity_matrix),
                len(equity_matrix),
            ),
        }
        print(f"trial registry: {registry.shown}, {n_bars:,} bars, medians of {repeat}")
        print(
            f"  {'workload':<34}{'off s':>9}{'on s':>9}{'on/off':>8}{'us/trial':>10}"
            f"{'alone ms':>10}{'us/trial':>10}"
        )
        out: dict[str, Any] = {"registry": registry.dialect, "bars": n_bars, "repeat": repeat}
        for name, (call, size) in workloads.items():
            with trial_context(record=False):
                call()  # warm-up: numba kernels, imports
            call()
            off, on = [], []
            for _ in range(repeat):
                with trial_context(record=False):
                    tick = time.perf_counter()
                    call()
                    off.append(time.perf_counter() - tick)
                tick = time.perf_counter()
                call()
                on.append(time.perf_counter() - tick)
            m_off, m_on = statistics.median(off), statistics.median(on)
            alone = _recorder_alone(call, registry, repeat)
            row = {
                "sets": size,
                "off_s": m_off,
                "on_s": m_on,
                "ratio": m_on / m_off,
                "registry_us_per_trial": (m_on - m_off) / size * 1e6,
                "recorder_alone_s": alone,
                "recorder_alone_us_per_trial": alone / size * 1e6,
                "off_runs_s": off,
                "on_runs_s": on,
            }
            out[name] = row
            print(
                f"  {name:<34}{m_off:>9.3f}{m_on:>9.3f}{row['ratio']:>8.2f}"
                f"{row['registry_us_per_trial']:>10.1f}{alone * 1e3:>10.2f}"
                f"{row['recorder_alone_us_per_trial']:>10.2f}"
            )
        out["rows_written"] = registry.count("ma_crossover")
        registry.close()
    return out


def _recorder_alone(call, registry, repeat: int) -> float:
    """Median seconds the recorder itself takes on one result of ``call`` (its rows built from
    the sweep's table and equity, one write): what the on/off difference measures, without
    the sweep's own run-to-run noise."""
    import numpy as np

    import quantshift as qs
    from quantshift.engine.config import SimConfig
    from research.registry import sweep_batch, trial_context

    with trial_context(record=False):
        result = call()
    table, equity = result if isinstance(result, tuple) else (result, None)
    strat = qs.get_strategy("ma_crossover")
    matrix = table[list(strat.param_names)].drop_duplicates().to_numpy(dtype=np.float64)
    metrics = table[list(qs.METRICS)].to_numpy(dtype=np.float64)
    bars = _BARS[equity is not None]
    times = []
    for _ in range(repeat):
        tick = time.perf_counter()
        batch = sweep_batch(strat, bars, SimConfig(), matrix, metrics, equity, {"record": True})
        registry.record(batch)
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sweeps, 2 runs (smoke run)")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL registry to write to")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs each (default 5)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores at start\n")
    started = time.perf_counter()
    if args.quick:
        report = bench_registry(n_sets=400, equity_sets=50, n_bars=500, repeat=2, url=args.postgres)
    else:
        report = bench_registry(repeat=args.repeat, url=args.postgres)
    report["quick"] = args.quick
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
