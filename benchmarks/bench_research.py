"""Research benchmarks: Optuna batched vs one-at-a-time, walk-forward, Monte Carlo.

Each workload is timed against a peer in the same run: Optuna with batch size 1, a walk-forward
fold evaluated one ``qs.backtest`` per parameter set, and Monte Carlo paths drawn with numpy.

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


def bench_walk_forward(
    data: str = "builtin:sp500", n_folds: int = 10, repeat: int = 3
) -> dict[str, Any]:
    """Walk-forward of ``n_folds`` folds x 1,000 MA-crossover parameter sets (grid, fused sweep
    per fold); the peer evaluates the same 1,000 sets of one training window with one
    ``qs.backtest`` call each (what a loop over a backtester does)."""
    import quantshift as qs
    from research.splitters import WalkForward
    from research.walkforward import walk_forward

    bars = qs.load_bars(data)
    grid = {"fast": range(2, 42), "slow": range(50, 300, 10)}  # 40 x 25 = 1,000 sets
    n_sets = len(qs.get_strategy("ma_crossover").grid(grid))
    test = 252
    train = bars.n_bars - n_folds * test
    splitter = WalkForward(train, test)

    def run() -> float:
        started = time.perf_counter()
        result = walk_forward("ma_crossover", bars, splitter, search=grid)
        assert len(result.folds) == n_folds
        return time.perf_counter() - started

    run()  # warm-up: kernels from cache
    times = [run() for _ in range(repeat)]
    train_bars = bars[:train]
    sets = qs.get_strategy("ma_crossover").grid(grid)
    peer_started = time.perf_counter()
    for row in sets:
        qs.backtest("ma_crossover", train_bars, {"fast": row[0], "slow": row[1]})
    peer_fold_s = time.perf_counter() - peer_started
    ours = statistics.median(times)
    print(
        f"walk-forward on {data}: {n_folds} folds x {n_sets:,} sets (train {train:,} bars, "
        f"test {test})\n  median {ours:.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}); "
        f"{ours / n_folds:.3f} s per fold vs {peer_fold_s:.2f} s for one fold's in-sample "
        f"sets as {n_sets:,} qs.backtest calls ({peer_fold_s / (ours / n_folds):.0f}x)"
    )
    return {
        "folds": n_folds,
        "sets": n_sets,
        "median_s": ours,
        "runs_s": times,
        "peer_one_fold_backtest_loop_s": peer_fold_s,
    }


def bench_monte_carlo(n_paths: int = 10_000, repeat: int = 5) -> dict[str, Any]:
    """10,000 reshuffle paths of 1,000 trades and 10,000 block-bootstrap paths of 5,000 daily
    returns; the peer reshuffles with numpy (``Generator.permuted`` + cumulative products)."""
    import numpy as np

    from research.montecarlo import monte_carlo

    rng = np.random.default_rng(0)
    trades = rng.normal(0.004, 0.03, 1_000)
    returns = rng.normal(0.0004, 0.011, 5_000)

    def timed(fn) -> list[float]:
        fn()
        out = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            out.append(time.perf_counter() - started)
        return out

    def numpy_reshuffle():
        shuffled = rng.permuted(np.broadcast_to(trades, (n_paths, trades.size)), axis=1)
        wealth = np.cumprod(1.0 + shuffled, axis=1)
        peak = np.maximum.accumulate(np.maximum(wealth, 1.0), axis=1)
        return (1.0 - wealth / peak).max(axis=1)

    reshuffle = timed(lambda: monte_carlo(trade_returns=trades, n_paths=n_paths, seed=1))
    block = timed(lambda: monte_carlo(returns=returns, method="block", n_paths=n_paths, seed=1))
    peer = timed(numpy_reshuffle)
    r, b, p = (statistics.median(x) for x in (reshuffle, block, peer))
    print(
        f"Monte Carlo {n_paths:,} paths: reshuffle of 1,000 trades {r:.3f} s "
        f"(numpy peer {p:.3f} s, {p / r:.1f}x); block bootstrap of 5,000 returns {b:.3f} s"
    )
    return {"reshuffle_s": r, "block_s": b, "numpy_reshuffle_s": p, "repeat": repeat}


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
        report["walk_forward"] = bench_walk_forward(n_folds=2, repeat=1)
        report["monte_carlo"] = bench_monte_carlo(n_paths=1_000, repeat=1)
    else:
        report["optuna"] = bench_optuna()
        print()
        report["walk_forward"] = bench_walk_forward()
        print()
        report["monte_carlo"] = bench_monte_carlo()
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
