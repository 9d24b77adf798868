"""Research benchmarks: Optuna trials per second with batched versus one-at-a-time evaluation.

Run ``uv run python benchmarks/bench_research.py --help``; ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

# Narrowed so that no set violates fast < slow: infeasible trials skip the sweep and would
# flatter the rate.
OPTUNA_SPACE = {"fast": (2, 50), "slow": (60, 250)}


def bench_optuna(
    data: str = "builtin:sp500",
    samplers: tuple[str, ...] = ("tpe", "random"),
    batch_sizes: tuple[int, ...] = (64, 1),
    n_trials: int = 256,
    repeat: int = 3,
) -> dict[str, dict[int, dict[str, Any]]]:
    """Measure Optuna trials per second for each sampler and batch size; print and return them.

    Each configuration runs ``repeat`` fresh in-memory studies of ``n_trials`` MA-crossover
    trials (Sharpe objective) after a warm-up study, and reports the median rate. The rate
    covers everything per trial: asking (the sampler's own work), the sweep, telling, and the
    ledger.
    """
    import quantshift as qs
    from research.optimize import optimize

    bars = qs.load_bars(data)

    def once(sampler: str, batch: int, trials: int) -> float:
        result = optimize(
            "ma_crossover",
            bars,
            sampler=sampler,
            n_trials=trials,
            batch_size=batch,
            search_space=OPTUNA_SPACE,
        )
        return result.trials_per_second

    for sampler in samplers:
        once(sampler, max(batch_sizes), 2 * max(batch_sizes))  # warm-up: numba, Optuna imports
    out: dict[str, dict[int, dict[str, Any]]] = {}
    print(
        f"Optuna on {data} ({bars.n_bars:,} bars), ma_crossover, {n_trials} trials, {repeat} runs"
    )
    print(f"  {'sampler':<8}{'batch':>7}{'trials/s':>12}{'x batch 1':>11}  runs (trials/s)")
    for sampler in samplers:
        out[sampler] = {}
        for batch in batch_sizes:
            rates = [once(sampler, batch, n_trials) for _ in range(repeat)]
            out[sampler][batch] = {"median_per_s": statistics.median(rates), "runs_per_s": rates}
        base = out[sampler].get(1, {}).get("median_per_s")
        for batch, row in out[sampler].items():
            ratio = f"{row['median_per_s'] / base:.1f}" if base else "-"
            runs = ", ".join(f"{r:.0f}" for r in row["runs_per_s"])
            print(f"  {sampler:<8}{batch:>7}{row['median_per_s']:>12.1f}{ratio:>11}  {runs}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials and runs (smoke run)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} on {os.cpu_count()} cores at start\n")
    started = time.perf_counter()
    report: dict[str, Any] = {"quick": args.quick}
    if args.quick:
        report["optuna"] = bench_optuna(n_trials=64, repeat=1)
    else:
        report["optuna"] = bench_optuna()
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
