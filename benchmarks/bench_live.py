"""Live benchmarks: decision latency per cycle (bar in -> orders out), replay speed, and the
cost of one order through each venue adapter.

Latency: 100 symbols x 3 strategies, signals on the warm-up window + the decision + the order
guards, per bar, against the issue's 20 ms goal, without and with the overlay (correlation
and sector limits, a regime label and news scores per bar). Overlay: the portfolio backtest's
bars per second without and with the same overlay, in the same run. Replay: `live run` on the
paper broker with the SQLite store, against the portfolio backtest of the same configuration
in the same run. Orders: submit + lookup by client order id + cancel-of-a-final-order through
the paper broker, alpaca-py and coinbase-advanced-py, the two SDKs against the test suite's fake
venues on loopback (so this is the adapters' and SDKs' own cost: a real venue adds its network
round trips). Run ``uv run python benchmarks/bench_live.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOAL_MS = 20.0


def _latency_config(symbols, overlay: bool):
    """3 sleeves on ``symbols``; with ``overlay``, the correlation limit (0.7 over 60 bars),
    a 30% sector cap over 10 sectors, the legacy regime table and the sentiment filter."""
    from quantshift.portfolio import (
        PortfolioConfig,
        RegimeOverlay,
        RiskLimits,
        SectorMap,
        SentimentFilter,
        Sleeve,
    )

    sleeves = (
        Sleeve(strategy="ma_crossover", symbols=symbols, allocation=0.33),
        Sleeve(strategy="rsi_reversion", symbols=symbols, allocation=0.33, stop_atr=3.0),
        Sleeve(strategy="breakout_momentum", symbols=symbols, allocation=0.34),
    )
    if not overlay:
        return PortfolioConfig(sleeves=sleeves, limits=RiskLimits(max_position_pct=100.0))
    return PortfolioConfig(
        sleeves=sleeves,
        limits=RiskLimits(
            max_position_pct=100.0,
            max_position_correlation=0.7,
            correlation_window_bars=60,
            max_sector_exposure_pct=30.0,
        ),
        sectors=SectorMap({s: f"sector{k % 10}" for k, s in enumerate(symbols)}),
        regimes=RegimeOverlay.legacy(bollinger=None),
        sentiment=SentimentFilter(),
    )


def _overlay_inputs(bars, seed: int = 5):
    """Seeded regime labels (market, per bar) and news scores (70% of bars without news)."""
    rng = np.random.default_rng(seed)
    regime = rng.integers(0, 5, bars.n_bars)
    scores = rng.uniform(-1.0, 1.0, (bars.n_bars, bars.n_symbols))
    scores[rng.random(scores.shape) < 0.7] = np.nan
    return regime, scores


def bench_decision_latency(n_symbols: int = 100, cycles: int = 200) -> dict[str, Any]:
    """Per-bar latency of signals (warm-up window) + decide + guards for n_symbols x 3 sleeves,
    without and with the overlay's limits and inputs, the two interleaved bar by bar so that
    machine load falls on both alike; ``decide_*`` times the decision call alone."""
    import quantshift as qs
    from live.book import Guarded
    from live.guards import GuardLimits, OrderGuards
    from quantshift.portfolio import PortfolioState, compute_signals, decide

    bars = qs.load_bars(f"synthetic:symbols={n_symbols},bars={cycles + 400},seed=11")
    symbols = list(bars.symbols)
    regime, scores = _overlay_inputs(bars)
    runs = {}
    for name in ("plain", "overlay"):
        config = _latency_config(symbols, name == "overlay")
        runs[name] = {
            "config": config,
            "window": max(config.warmup_bars() + 1, 300),
            "guards": OrderGuards(GuardLimits(max_orders_per_minute=None, price_collar_pct=None)),
            "state": PortfolioState.initial(config),
            "last_close": dict.fromkeys(symbols, 1.0),
            "times": [],
            "decide": [],
            "orders": 0,
            "vetoes": 0,
        }
        compute_signals(config, bars[:300])  # compile / load kernels
    first = max(run["window"] for run in runs.values())
    for t in range(first, first + cycles):
        for name, run in runs.items():
            config, window = run["config"], run["window"]
            started = time.perf_counter()
            signals = compute_signals(config, bars[t + 1 - window : t + 1]).at(-1)
            inputs = {"regime": int(regime[t]), "sentiment": scores[t]} if name == "overlay" else {}
            deciding = time.perf_counter()
            decision = decide(run["state"], signals, config, **inputs)
            run["decide"].append(time.perf_counter() - deciding)
            last_close = run["last_close"]
            for k, s in enumerate(symbols):
                last_close[s] = float(signals.close[k])
            verdict = run["guards"].check(
                [Guarded.of(o) for o in decision.orders],
                last_close=last_close,
                positions={},
                now_ns=signals.ts_ns,
                bar_interval_ns=86_400 * 10**9,
            )
            run["times"].append(time.perf_counter() - started)
            run["orders"] += len(verdict.accepted)
            run["vetoes"] += len(decision.vetoes)
            run["state"] = decision.state
    out = {}
    for name, run in runs.items():
        ms, decide_ms = np.array(run["times"]) * 1e3, np.array(run["decide"]) * 1e3
        out[name] = {
            "symbols": n_symbols,
            "sleeves": 3,
            "window_bars": run["window"],
            "cycles": cycles,
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "decide_p50_ms": float(np.percentile(decide_ms, 50)),
            "decide_p99_ms": float(np.percentile(decide_ms, 99)),
            "orders": run["orders"],
            "vetoes": run["vetoes"],
        }
        row = out[name]
        what = "with the overlay" if name == "overlay" else "no overlay"
        print(
            f"decision latency, {n_symbols} symbols x 3 strategies, {what}, window "
            f"{row['window_bars']} bars: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms "
            f"(decide alone p50 {row['decide_p50_ms']:.3f} ms, p99 {row['decide_p99_ms']:.3f}) "
            f"over {cycles} cycles, {row['orders']} orders, {row['vetoes']} vetoes "
            f"(goal {GOAL_MS:g} ms: p50 is {GOAL_MS / row['p50_ms']:.1f}x under it)"
        )
    return out


def bench_overlay_backtest(
    n_symbols: int = 100, n_bars: int = 2000, repeat: int = 3
) -> dict[str, Any]:
    """The portfolio backtest's bars per second without and with the overlay, interleaved."""
    import quantshift as qs
    from quantshift.portfolio import portfolio_backtest

    bars = qs.load_bars(f"synthetic:symbols={n_symbols},bars={n_bars},seed=11")
    symbols = list(bars.symbols)
    plain, overlay = _latency_config(symbols, False), _latency_config(symbols, True)
    regime, scores = _overlay_inputs(bars)
    runs = {
        "plain": lambda: portfolio_backtest(plain, bars),
        "overlay": lambda: portfolio_backtest(overlay, bars, regime=regime, sentiment=scores),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    results = {name: run() for name, run in runs.items()}  # compile / load kernels
    for _ in range(repeat):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            rates[name].append(bars.n_bars / (time.perf_counter() - started))
    out = {name: statistics.median(r) for name, r in rates.items()}
    vetoes = results["overlay"].vetoes["reason"].value_counts().to_dict()
    print(
        f"portfolio backtest, {n_symbols} symbols x 3 strategies x {n_bars} bars: "
        f"{out['plain']:,.0f} bars/s without the overlay, {out['overlay']:,.0f} with it "
        f"({out['overlay'] / out['plain']:.2f}x); vetoes with it: {vetoes}"
    )
    return {
        "symbols": n_symbols,
        "bars": n_bars,
        "plain_bars_per_s": out["plain"],
        "overlay_bars_per_s": out["overlay"],
        "overlay_vetoes": vetoes,
    }


def bench_replay(repeat: int = 3, max_bars: int | None = None) -> dict[str, Any]:
    """`live run` on the shipped example (paper broker, SQLite store) vs the portfolio backtest."""
    from live.config import parse_config
    from live.runner import Runner
    from quantshift.data import load_bars
    from quantshift.portfolio import portfolio_backtest

    raw = tomllib.loads((ROOT / "live" / "examples" / "paper_sp500.toml").read_text())
    rates, bars_done = [], 0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            run_raw = copy.deepcopy(raw)
            run_raw["store"]["url"] = f"sqlite:///{tmp}/state.db"
            run_raw["metrics"]["enabled"] = False
            config = parse_config(run_raw, source="bench")
            started = time.perf_counter()
            summary = Runner(config, max_bars=max_bars).run()
            rates.append(summary.bars / (time.perf_counter() - started))
            bars_done = summary.bars
    bars = load_bars(
        config.feed.source, symbols=list(config.portfolio.symbols), start=config.feed.start
    )
    portfolio_backtest(config.portfolio, bars)
    peer = []
    for _ in range(repeat):
        started = time.perf_counter()
        portfolio_backtest(config.portfolio, bars)
        peer.append(bars.n_bars / (time.perf_counter() - started))
    ours, theirs = statistics.median(rates), statistics.median(peer)
    print(
        f"replay of {bars_done} bars (3 sleeves x 2 symbols), paper broker + SQLite store: "
        f"{ours:,.0f} bars/s (runs {', '.join(f'{r:,.0f}' for r in rates)}); the portfolio "
        f"backtest of the same config: {theirs:,.0f} bars/s ({theirs / ours:,.0f}x: the "
        "runner's cost is its durable writes, several commits per bar)"
    )
    out = {"bars": bars_done, "bars_per_s": ours, "backtest_bars_per_s": theirs}
    base = os.environ.get("QS_BENCH_BASE_REF", "main")
    before = [_replay_rate_at(base, max_bars) for _ in range(repeat)]
    if all(r is not None for r in before):
        old = statistics.median(before)
        print(
            f"the same replay through the runner of git {base!r} (QS_BENCH_BASE_REF; in a "
            f"subprocess on the same machine): {old:,.0f} bars/s (runs "
            f"{', '.join(f'{r:,.0f}' for r in before)}); this checkout runs at {ours / old:.2f}x "
            "its rate"
        )
        out.update({"base_ref": base, "base_bars_per_s": old})
    return out


_RATE_SCRIPT = """
import copy, sys, tempfile, time, tomllib
from live.config import parse_config
from live.runner import Runner
raw = tomllib.loads(open(sys.argv[1]).read())
with tempfile.TemporaryDirectory() as tmp:
    raw["store"]["url"] = f"sqlite:///{tmp}/state.db"
    raw["metrics"]["enabled"] = False
    config = parse_config(raw, source="bench")
    max_bars = None if sys.argv[2] == "None" else int(sys.argv[2])
    started = time.perf_counter()
    summary = Runner(config, max_bars=max_bars).run()
    print(summary.bars / (time.perf_counter() - started))
"""


def _replay_rate_at(ref: str, max_bars: int | None) -> float | None:
    """Bars per second of the same replay through the ``live`` and ``quantshift`` packages of
    git ``ref``, in a subprocess (after a short run that warms its kernels' cache); None when
    ``ref`` cannot be read."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "live", "quantshift"],
            capture_output=True,
            check=False,
        )
        if archive.returncode != 0:
            print(f"(no comparison: git cannot read {ref!r})")
            return None
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, str(ROOT)])}
        example = ROOT / "live" / "examples" / "paper_sp500.toml"
        for bars in ("5", str(max_bars)):
            done = subprocess.run(
                [sys.executable, "-c", _RATE_SCRIPT, str(example), bars],
                capture_output=True, text=True, env=env, cwd=tmp, check=True,
            )  # fmt: skip
        return float(done.stdout.strip().splitlines()[-1])


def _venues():
    """(name, broker, set_price, close) of the paper broker and the two fake-venue adapters."""
    from live.alpaca import AlpacaBroker, AlpacaConfig
    from live.coinbase import CoinbaseBroker, CoinbaseConfig
    from live.paper import PaperBroker
    from tests.fakes.alpaca_server import FakeAlpaca
    from tests.fakes.coinbase_server import FakeCoinbase
    from tests.test_broker_coinbase import KEY_NAME, new_key

    tmp = tempfile.TemporaryDirectory()
    prices: dict[str, float] = {}
    paper = PaperBroker(f"sqlite:///{tmp.name}/paper.db", quote=prices.__getitem__, cash=1e6)
    yield "paper (SQLite)", paper, prices.__setitem__, "SPY"
    paper.close()
    tmp.cleanup()

    alpaca = FakeAlpaca().start()
    os.environ["QS_BENCH_ALPACA_KEY"], os.environ["QS_BENCH_ALPACA_SECRET"] = (
        alpaca.key_id, alpaca.secret_key,
    )  # fmt: skip
    broker = AlpacaBroker(
        AlpacaConfig(
            mode="paper", key_id_env="QS_BENCH_ALPACA_KEY", secret_key_env="QS_BENCH_ALPACA_SECRET",
            trading_url=alpaca.url, data_url=alpaca.url, stream_url=alpaca.stream_url,
        )
    )  # fmt: skip
    yield "alpaca-py -> fake Alpaca (HTTP)", broker, alpaca.set_price, "SPY"
    broker.close()
    alpaca.stop()

    coinbase = FakeCoinbase().start()
    pem, public = new_key()
    coinbase.add_key(KEY_NAME, public)
    os.environ["QS_BENCH_CB_KEY"], os.environ["QS_BENCH_CB_SECRET"] = KEY_NAME, pem
    broker = CoinbaseBroker(
        CoinbaseConfig(
            mode="paper", api_key_env="QS_BENCH_CB_KEY", api_secret_env="QS_BENCH_CB_SECRET",
            base_url=coinbase.base_url, ws_url=coinbase.ws_url, ca_file=coinbase.ca_file,
        )
    )  # fmt: skip
    yield (
        "coinbase-advanced-py -> fake Coinbase (HTTPS, ES256)",
        broker,
        coinbase.set_price,
        ("BTC-USD"),
    )
    broker.close()
    coinbase.stop()


def bench_orders(n_orders: int = 200) -> dict[str, Any]:
    """Per-order milliseconds of submit + order(client id) + cancel, median over the orders."""
    from live.broker import OrderRequest

    out: dict[str, Any] = {}
    for name, broker, set_price, symbol in _venues():
        set_price(symbol, 100.0)
        broker.connect()
        times = []
        for i in range(n_orders + 5):  # the first few warm connections and caches up
            cid = f"qsbench{i:06d}{time.time_ns() % 10**6:06d}"
            side = "buy" if i % 2 == 0 else "sell"
            started = time.perf_counter()
            broker.submit(OrderRequest(client_order_id=cid, symbol=symbol, side=side, qty=1.0))
            broker.order(cid)
            broker.cancel(cid)
            if i >= 5:
                times.append((time.perf_counter() - started) * 1e3)
        out[name] = {
            "median_ms": statistics.median(times),
            "p99_ms": float(np.percentile(times, 99)),
        }
    base = out["paper (SQLite)"]["median_ms"]
    for name, row in out.items():
        print(
            f"{name:<52} {row['median_ms']:7.2f} ms/order median, p99 {row['p99_ms']:7.2f} "
            f"({row['median_ms'] / base:5.1f}x the paper broker)"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cycles and bars")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores at start\n")
    report: dict[str, Any] = {"quick": args.quick}
    if args.quick:
        latency = bench_decision_latency(n_symbols=20, cycles=30)
        report["overlay_backtest"] = bench_overlay_backtest(n_symbols=20, n_bars=300, repeat=1)
        report["replay"] = bench_replay(repeat=1, max_bars=100)
        report["orders"] = bench_orders(n_orders=20)
    else:
        latency = bench_decision_latency()
        report["overlay_backtest"] = bench_overlay_backtest()
        report["replay"] = bench_replay()
        report["orders"] = bench_orders()
    report["latency"], report["latency_overlay"] = latency["plain"], latency["overlay"]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
