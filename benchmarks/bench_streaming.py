"""Streaming benchmark: from a minute bar's close to the runner's order at the venue, on the
streaming feed (alpaca-py's StockDataStream) against the REST polling feed, in the same run.

Both runs are `live.runner.Runner` on the test suite's fake Alpaca venue on loopback: the venue
publishes each minute bar of every symbol (REST and the data stream) when the benchmark says it
closed, and the time is taken from that moment to the runner's decision and to each order's
POST /v2/orders arriving at the venue. The clock the runner reads is moved with the bars (a
minute per bar, in no time); the polling feed is given a clock already ``settle_s`` past the
close, so its number is the wait for its next poll only, and its real latency adds ``settle_s``
(2 s by default). Run ``uv run python benchmarks/bench_streaming.py`` (``--quick`` for a smoke
run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MINUTE = 60 * 10**9
T0 = pd.Timestamp("2024-01-02 15:00", tz="UTC").value
KEY_ENV, SECRET_ENV = "QS_BENCH_ALPACA_KEY_ID", "QS_BENCH_ALPACA_SECRET"


def zigzag(symbol_index: int, k: int) -> tuple[float, ...]:
    """Up four bars, down four, each symbol a bar later: some 2/5 MA crossover every bar."""
    phase = (k + symbol_index) % 8
    base = 100.0 + symbol_index + (phase if phase < 4 else 8 - phase) * 2.0
    return (base, base + 1.0, base - 1.0, base + 0.5, 1000.0)


def run(stream: bool, n_symbols: int, n_bars: int, settle_s: float = 2.0,
        poll_s: float = 5.0) -> dict[str, Any]:  # fmt: skip
    import live.runner as runner_module
    from live.config import parse_config
    from live.runner import Runner
    from tests.fakes.alpaca_server import FakeAlpaca

    class TimedVenue(FakeAlpaca):
        """The fake venue, noting when each order request arrived."""

        order_times: list[float]

        def handle(self, method, path, query, headers, body):
            if (method, path) == ("POST", "/v2/orders"):
                self.order_times.append(time.perf_counter())
            return super().handle(method, path, query, headers, body)

    venue = TimedVenue().start()
    venue.order_times = []
    os.environ[KEY_ENV], os.environ[SECRET_ENV] = venue.key_id, venue.secret_key
    symbols = [f"SYM{i:03d}" for i in range(n_symbols)]
    for i, symbol in enumerate(symbols):
        for k in range(-40, 0):
            venue.publish_bar(symbol, T0 + k * MINUTE, zigzag(i, k), stream=False)
        venue.set_price(symbol, zigzag(i, -1)[3])
    now = {"ns": T0 + 3 * 10**9}
    decided: dict[int, float] = {}
    decide = runner_module.decide

    def timed_decide(state, signals, portfolio):
        decided.setdefault(int(signals.ts_ns), time.perf_counter())
        return decide(state, signals, portfolio)

    runner_module.decide = timed_decide
    with tempfile.TemporaryDirectory() as tmp:
        raw = {
            "runner": {"name": "bench-stream", "market": "equities", "mode": "paper",
                       "bar_interval": "1m"},
            "sleeves": [{"name": "trend", "strategy": "ma_crossover", "symbols": symbols,
                         "params": {"fast": 2, "slow": 5}, "allocation": 1.0}],
            "risk": {"daily_loss_limit_pct": 100.0, "max_drawdown_pct": 100.0,
                     "max_position_pct": 100.0 / n_symbols},
            "feed": {"kind": "venue", "stream": stream, "history_bars": 30,
                     "settle_s": settle_s, "poll_s": poll_s},
            "broker": {"kind": "alpaca", "mode": "paper", "key_id_env": KEY_ENV,
                       "secret_key_env": SECRET_ENV, "trading_url": venue.url,
                       "data_url": venue.url, "stream_url": venue.stream_url,
                       "data_stream_url": venue.data_stream_url},
            "store": {"url": f"sqlite:///{tmp}/state.db"},
            "metrics": {"enabled": False},
        }  # fmt: skip
        config = parse_config(raw, source="bench-stream.toml")
        runner = Runner(config, max_bars=n_bars + 1, now_ns=lambda: now["ns"])
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        _until(lambda: T0 - MINUTE in decided, 600.0)  # the first cycle compiles
        to_decision, to_order = [], []
        for k in range(n_bars):
            bar_ts = T0 + k * MINUTE
            orders_before = len(venue.order_times)
            now["ns"] = bar_ts + MINUTE + int(((0.0 if stream else settle_s) + 0.2) * 1e9)
            for i, symbol in enumerate(symbols):
                venue.publish_bar(symbol, bar_ts, zigzag(i, k))
            closed = time.perf_counter()
            _until(lambda b=bar_ts: b in decided, 60.0)
            to_decision.append((decided[bar_ts] - closed) * 1e3)
            _until(lambda b=bar_ts: getattr(runner, "last_ts_ns", None) == b, 60.0)  # cycle done
            if len(venue.order_times) > orders_before:
                to_order.append((venue.order_times[orders_before] - closed) * 1e3)
            for i, symbol in enumerate(symbols):  # market orders fill at the new price
                venue.set_price(symbol, zigzag(i, k)[3])
        thread.join(timeout=60.0)
    runner_module.decide = decide
    venue.stop()
    return {
        "to_decision_ms": _summary(to_decision),
        "to_first_order_ms": _summary(to_order),
        "bars": n_bars,
        "bars_with_orders": len(to_order),
    }


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "p99": float("nan")}
    return {"median": statistics.median(values), "p99": float(np.percentile(values, 99))}


def _until(check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: condition not met within {timeout_s} s")
        time.sleep(0.002)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer symbols and bars")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    args = parser.parse_args(argv)
    n_symbols, n_bars = (3, 6) if args.quick else (20, 30)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores at start")
    print(f"{n_symbols} symbols, {n_bars} minute bars, MA 2/5 crossover on a zigzag\n")
    report: dict[str, Any] = {"quick": args.quick}
    for name, stream in (("stream", True), ("poll", False)):
        report[name] = run(stream, n_symbols, n_bars, poll_s=1.0 if args.quick else 5.0)
    for name, row in (("streaming feed", report["stream"]), ("REST polling", report["poll"])):
        d, o = row["to_decision_ms"], row["to_first_order_ms"]
        print(
            f"{name:<15} bar close -> decision {d['median']:8.1f} ms median, p99 "
            f"{d['p99']:8.1f}; -> first order at the venue {o['median']:8.1f} ms median, p99 "
            f"{o['p99']:8.1f} ({row['bars_with_orders']} of {row['bars']} bars traded)"
        )
    ratio = (
        report["poll"]["to_first_order_ms"]["median"]
        / report["stream"]["to_first_order_ms"]["median"]
    )
    print(f"\npolling takes {ratio:.1f}x as long to the first order (before its settle_s)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
