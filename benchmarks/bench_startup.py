"""A runner's start: how long it takes to be ready and how long its first cycle then takes,
with the warm-up it does before saying ready (as shipped) against no warm-up (the kernels and
the exchange calendar loaded by the first cycle that needs them), in the same run.

Each sample is a fresh process (numba's in-memory kernels and the calendar are per process)
replaying `builtin:sp500,nasdaq` with `ma_crossover` on the paper broker for 60 bars, with a
warm numba cache on disk (one untimed process fills it first). A standby that takes over starts
its first cycle the same way, so the first cycle is also what a takeover adds to the bar.

Run ``uv run python benchmarks/bench_startup.py [--runs 5] [--json PATH]``; measure with bytecode
caches on (``env -u PYTHONDONTWRITEBYTECODE``), as a user's shell has them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
[runner]
name = "startup"
market = "equities"
mode = "paper"
bar_interval = "1d"

[[sleeves]]
name = "trend"
strategy = "ma_crossover"
params = {{ fast = 5, slow = 20 }}
symbols = ["SP500", "NASDAQ"]
allocation = 1.0

[feed]
kind = "replay"
source = "builtin:sp500,nasdaq"
start = "2015-01-01"

[store]
url = "sqlite:///{db}"

[metrics]
enabled = false
"""

# One sample: open the runner's parts (timed), then time each cycle.
SAMPLE = """
import json, sys, time
from live.config import load_config
from live.parts import RunnerParts
from live.runner import Runner

path, warm = sys.argv[1], sys.argv[2] == "warm"
if not warm:
    RunnerParts._warm = lambda self: None
cycles, opened = [], []
open_parts, cycle = Runner._open, Runner._cycle

def timed_open(self):
    started = time.perf_counter()
    open_parts(self)
    opened.append(time.perf_counter() - started)

def timed_cycle(self, t, summary):
    started = time.perf_counter()
    cycle(self, t, summary)
    cycles.append(time.perf_counter() - started)

Runner._open, Runner._cycle = timed_open, timed_cycle
Runner(load_config(path), max_bars=60).run()
print(json.dumps({"open_s": opened[0], "first_ms": cycles[0] * 1e3,
                  "rest_ms": sorted(cycles[1:])[len(cycles[1:]) // 2] * 1e3}))
"""


def sample(folder: Path, k: int, variant: str) -> dict:
    path = folder / f"{variant}-{k}.toml"
    path.write_text(CONFIG.format(db=folder / f"{variant}-{k}.db"))
    done = subprocess.run(
        [sys.executable, "-c", SAMPLE, str(path), variant],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{variant} sample {k} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="samples per variant (default 5)")
    parser.add_argument("--json", type=Path, help="write every sample to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sample(folder, -1, "warm")  # fills numba's cache; not timed
        runs = {"warm": [], "lazy": []}
        for k in range(args.runs):  # interleaved, so both see the same load
            for variant in runs:
                runs[variant].append(sample(folder, k, variant))
    print(f"runner start, {args.runs} fresh processes each (load average {os.getloadavg()[0]:.1f})")
    print(f"{'':34}{'warm-up (shipped)':>20}{'no warm-up':>14}{'ratio':>9}")
    for key, label, unit in (
        ("open_s", "open until ready", "s"),
        ("first_ms", "first cycle", "ms"),
        ("rest_ms", "later cycles (median)", "ms"),
    ):
        warm = statistics.median(r[key] for r in runs["warm"])
        lazy = statistics.median(r[key] for r in runs["lazy"])
        print(f"{label + ' (' + unit + ')':34}{warm:>20.3f}{lazy:>14.3f}{lazy / warm:>8.2f}x")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
