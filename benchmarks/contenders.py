"""Benchmark workloads, seeded bars and the contenders that run them (see bench_engine.py).

Each contender does the same work its own way: a hand-written numba loop, QuantShift, vectorbt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit, prange

CASH = 100_000.0
PERIODS_PER_YEAR = 8760.0  # hourly bars, 365 days: vectorbt's default year_freq over freq="1h"
HOUR_NS = 3_600_000_000_000
START_NS = 946_684_800_000_000_000  # 2000-01-01 UTC
SEED = 20_240_601
CHECK_SETS = 5

# --------------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """One piece of work every contender does: a strategy on seeded synthetic bars."""

    name: str
    title: str
    strategy: str
    n_bars: int
    n_symbols: int
    params: dict[str, float] = field(default_factory=dict)
    fast: tuple[int, ...] = ()
    slow: tuple[int, ...] = ()
    warmup_bars: int = 400

    @property
    def is_sweep(self) -> bool:
        return bool(self.fast)

    def grid(self) -> list[tuple[int, int]]:
        """Return the (fast, slow) sets of a sweep, fast-major like ``Strategy.grid``."""
        return [(f, s) for f in self.fast for s in self.slow if f < s]

    def check_sets(self) -> list[tuple[int, int]]:
        """Return the few parameter sets whose final equity every contender reports."""
        grid = self.grid()
        picks = np.linspace(0, len(grid) - 1, CHECK_SETS).round().astype(int)
        return [grid[i] for i in sorted(set(picks.tolist()))]


MA_PARAMS = {"fast": 10, "slow": 50}
RSI_PARAMS = {"rsi_window": 14, "entry_below": 35.0, "exit_above": 65.0}


def build_workloads(quick: bool) -> dict[str, Workload]:
    """Return the workloads at full size, or smaller ones for a smoke run (``quick``)."""
    size = (
        {"w1_bars": 10_000, "w2_bars": 2_000, "fast_to": 20, "slow_to": 80, "w3": (1_260, 50)}
        if quick
        else {
            "w1_bars": 100_000,
            "w2_bars": 10_000,
            "fast_to": 50,
            "slow_to": 200,
            "w3": (2_520, 500),
        }
    )
    w1 = Workload(
        name="W1",
        title="MA crossover 10/50, one backtest",
        strategy="ma_crossover",
        n_bars=size["w1_bars"],
        n_symbols=1,
        params=dict(MA_PARAMS),
    )
    w2 = Workload(
        name="W2",
        title="MA crossover sweep, fast < slow",
        strategy="ma_crossover",
        n_bars=size["w2_bars"],
        n_symbols=1,
        fast=tuple(range(2, size["fast_to"] + 1)),
        slow=tuple(range(10, size["slow_to"] + 1, 2)),
    )
    w3 = Workload(
        name="W3",
        title="RSI(14) mean reversion, enter < 35, exit > 65, no stops",
        strategy="rsi_reversion",
        n_bars=size["w3"][0],
        n_symbols=size["w3"][1],
        params=dict(RSI_PARAMS),
        warmup_bars=100,
    )
    return {w.name: w for w in (w1, w2, w3)}


# --------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Ohlcv:
    """Seeded synthetic bars, time-major (n_bars, n_symbols), plus symbol-major copies."""

    ts_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(f"SYN{i:03d}" for i in range(self.close.shape[1]))

    def symbol_major(self, name: str) -> np.ndarray:
        return np.ascontiguousarray(getattr(self, name).T)


def make_ohlcv(n_bars: int, n_symbols: int, seed: int = SEED) -> Ohlcv:
    """Return a log-normal random walk with an opening gap and a consistent high/low range."""
    rng = np.random.default_rng(seed)
    shape = (n_bars, n_symbols)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, shape), axis=0))
    previous = np.vstack([np.full((1, n_symbols), 100.0), close[:-1]])
    open_ = previous * np.exp(rng.normal(0.0, 0.002, shape))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.004, shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.004, shape)))
    volume = rng.lognormal(12.0, 0.5, shape)
    ts_ns = START_NS + np.arange(n_bars, dtype=np.int64) * HOUR_NS
    return Ohlcv(ts_ns, open_, high, low, close, volume)


# --------------------------------------------------------------------------------- limit
# The reference for how fast this work can be: one pass per series doing indicators, signals,
# fills at the next open (all-in, no fees) and metrics, with no intermediate arrays. The
# arithmetic mirrors QuantShift's fill model and metrics, so final equities agree to the bit.

LIMIT_FINAL_EQUITY = 0
LIMIT_SHARPE = 1
LIMIT_MAX_DRAWDOWN = 2
LIMIT_TRADES = 3
LIMIT_LEN = 4


@njit(cache=True)
def _fill_nb(order, price, cash, units, trades):
    """Fill an order at ``price``: +1 buys with all the cash, -1 sells the whole position."""
    if order == 1:
        units = cash / price
        cash -= units * price
    elif order == -1:
        cash += units * price
        units = 0.0
        trades += 1
    return cash, units, trades


@njit(cache=True)
def _order_nb(entry, exit_, units, last_bar):
    """Return the order a bar's signals ask for: +1 enter, -1 exit, 0 nothing."""
    if last_bar or entry == exit_:
        return 0
    if entry and units == 0.0:
        return 1
    if exit_ and units > 0.0:
        return -1
    return 0


@njit(cache=True)
def _mark_nb(t, equity, previous, mean, m2, peak, max_dd):
    """Update the running return moments and drawdown with bar ``t``'s equity."""
    r = equity / previous - 1.0 if previous != 0.0 else 0.0
    delta = r - mean
    mean += delta / (t + 1)
    m2 += delta * (r - mean)
    if equity > peak:
        peak = equity
    elif peak > 0.0:
        max_dd = max(max_dd, 1.0 - equity / peak)
    return mean, m2, peak, max_dd


@njit(cache=True)
def _finish_nb(n, equity, mean, m2, max_dd, trades, periods_per_year, out):
    out[LIMIT_FINAL_EQUITY] = equity
    std = math.sqrt(m2 / (n - 1)) if n > 1 else 0.0
    out[LIMIT_SHARPE] = mean / std * math.sqrt(periods_per_year) if std > 0.0 else math.nan
    out[LIMIT_MAX_DRAWDOWN] = 100.0 * max_dd
    out[LIMIT_TRADES] = trades


@njit(cache=True)
def ma_cross_limit_nb(open_, close, fast, slow, cash, periods_per_year, out):
    """Backtest one fast/slow SMA crossover on one series in a single pass; fill ``out``."""
    n = close.shape[0]
    units = 0.0
    trades = 0
    order = 0
    sum_fast = 0.0
    sum_slow = 0.0
    prev_fast = math.nan
    prev_slow = math.nan
    equity = previous = peak = cash
    mean = m2 = max_dd = 0.0
    for t in range(n):
        if order != 0:
            cash, units, trades = _fill_nb(order, open_[t], cash, units, trades)
            order = 0
        c = close[t]
        sum_fast += c
        sum_slow += c
        if t >= fast:
            sum_fast -= close[t - fast]
        if t >= slow:
            sum_slow -= close[t - slow]
        if t >= slow - 1:
            ma_fast = sum_fast / fast
            ma_slow = sum_slow / slow
            entry = ma_fast > ma_slow and prev_fast <= prev_slow
            exit_ = ma_fast < ma_slow and prev_fast >= prev_slow
            order = _order_nb(entry, exit_, units, t + 1 == n)
            prev_fast = ma_fast
            prev_slow = ma_slow
        equity = cash + units * c
        mean, m2, peak, max_dd = _mark_nb(t, equity, previous, mean, m2, peak, max_dd)
        previous = equity
    _finish_nb(n, equity, mean, m2, max_dd, trades, periods_per_year, out)


@njit(cache=True, parallel=True)
def ma_sweep_limit_nb(open_, close, fast, slow, cash, periods_per_year):
    """Run :func:`ma_cross_limit_nb` for every (fast[k], slow[k]) set in parallel."""
    out = np.empty((fast.shape[0], LIMIT_LEN))
    for k in prange(fast.shape[0]):
        ma_cross_limit_nb(open_, close, fast[k], slow[k], cash, periods_per_year, out[k])
    return out


@njit(cache=True)
def rsi_reversion_limit_nb(open_, close, window, lower, upper, cash, periods_per_year, out):
    """Backtest RSI mean reversion on one series in a single pass; fill ``out``.

    Wilder's RSI in TA-Lib's operation order (as ``quantshift.indicators.rsi_nb``); enter while
    RSI < ``lower``, exit while RSI > ``upper``.
    """
    n = close.shape[0]
    units = 0.0
    trades = 0
    order = 0
    gain = loss = 0.0
    equity = previous = peak = cash
    mean = m2 = max_dd = 0.0
    for t in range(n):
        if order != 0:
            cash, units, trades = _fill_nb(order, open_[t], cash, units, trades)
            order = 0
        c = close[t]
        if 0 < t <= window:
            change = c - close[t - 1]
            if change < 0.0:
                loss -= change
            else:
                gain += change
            if t == window:
                gain /= window
                loss /= window
        elif t > window:
            change = c - close[t - 1]
            gain *= window - 1
            loss *= window - 1
            if change < 0.0:
                loss -= change
            else:
                gain += change
            gain /= window
            loss /= window
        if t >= window:
            total = gain + loss
            rsi = 100.0 * (gain / total) if total != 0.0 else 0.0
            order = _order_nb(rsi < lower, rsi > upper, units, t + 1 == n)
        equity = cash + units * c
        mean, m2, peak, max_dd = _mark_nb(t, equity, previous, mean, m2, peak, max_dd)
        previous = equity
    _finish_nb(n, equity, mean, m2, max_dd, trades, periods_per_year, out)


@njit(cache=True, parallel=True)
def rsi_reversion_panel_limit_nb(open_, close, window, lower, upper, cash, periods_per_year):
    """Run :func:`rsi_reversion_limit_nb` on every symbol (rows of symbol-major arrays)."""
    out = np.empty((close.shape[0], LIMIT_LEN))
    for s in prange(close.shape[0]):
        rsi_reversion_limit_nb(
            open_[s], close[s], window, lower, upper, cash, periods_per_year, out[s]
        )
    return out


# --------------------------------------------------------------------------------- contenders
# Each setup does the untimed preparation (data containers, parameter matrices) and returns
# ``run`` (the timed work) and ``summarize`` (turns run's result into the agreement check).

Setup = Callable[[Workload, Ohlcv], tuple[Callable[[], Any], Callable[[Any], dict]]]


def _summary(final_equity, sharpe, max_drawdown_pct, trades) -> dict:
    return {
        "final_equity": float(final_equity),
        "sharpe": None if sharpe is None else float(sharpe),
        "max_drawdown_pct": None if max_drawdown_pct is None else float(max_drawdown_pct),
        "trades": int(trades),
    }


def _sweep_summary(wl: Workload, final_equity: dict[tuple[int, int], float], trades) -> dict:
    """Final equity of the check sets plus totals over every set."""
    return {
        "sets": len(final_equity),
        "final_equity_sum": float(sum(final_equity.values())),
        "trades_sum": int(trades),
        "check_sets": {f"{f}/{s}": float(final_equity[(f, s)]) for f, s in wl.check_sets()},
    }


def _panel_summary(final_equity, trades) -> dict:
    return {"final_equity_sum": float(np.sum(final_equity)), "trades_sum": int(np.sum(trades))}


def setup_limit(wl: Workload, data: Ohlcv):
    o, c = data.symbol_major("open"), data.symbol_major("close")
    if wl.is_sweep:
        grid = np.array(wl.grid(), dtype=np.int64)
        fast, slow = np.ascontiguousarray(grid[:, 0]), np.ascontiguousarray(grid[:, 1])

        def summarize(out):
            by_set = dict(zip(wl.grid(), out[:, LIMIT_FINAL_EQUITY].tolist(), strict=True))
            return _sweep_summary(wl, by_set, out[:, LIMIT_TRADES].sum())

        return lambda: ma_sweep_limit_nb(o[0], c[0], fast, slow, CASH, PERIODS_PER_YEAR), summarize
    if wl.strategy == "ma_crossover":
        out = np.empty(LIMIT_LEN)
        fast, slow = int(wl.params["fast"]), int(wl.params["slow"])

        def run():
            ma_cross_limit_nb(o[0], c[0], fast, slow, CASH, PERIODS_PER_YEAR, out)
            return out

        return run, lambda r: _summary(*r)
    window = int(wl.params["rsi_window"])
    lower, upper = wl.params["entry_below"], wl.params["exit_above"]

    def run_panel():
        return rsi_reversion_panel_limit_nb(o, c, window, lower, upper, CASH, PERIODS_PER_YEAR)

    return run_panel, lambda r: _panel_summary(r[:, LIMIT_FINAL_EQUITY], r[:, LIMIT_TRADES])


def _quantshift_inputs(wl: Workload, data: Ohlcv):
    from quantshift.data.bars import Bars
    from quantshift.engine import SimConfig
    from quantshift.strategies import get_strategy

    bars = Bars(
        ts_ns=data.ts_ns,
        symbols=data.symbols,
        open=data.open,
        high=data.high,
        low=data.low,
        close=data.close,
        volume=data.volume,
        source="synthetic",
    )
    config = SimConfig(
        cash=CASH,
        fees_bps=0.0,
        fill="next-open",
        use_stops=False,
        periods_per_year=PERIODS_PER_YEAR,
    )
    return get_strategy(wl.strategy), bars, config


def setup_kernel(wl: Workload, data: Ohlcv):
    from quantshift.engine.arrays import pack
    from quantshift.engine.fused import kernels_for

    strategy, bars, config = _quantshift_inputs(wl, data)
    kernels = kernels_for(strategy)
    kernel_bars = pack(bars, config).kernel_bars()
    cfg = config.to_record()
    if wl.is_sweep:
        matrix = strategy.grid({"fast": wl.fast, "slow": wl.slow})
        fast_col, slow_col = strategy.param_names.index("fast"), strategy.param_names.index("slow")

        keys = list(
            zip(matrix[:, fast_col].astype(int), matrix[:, slow_col].astype(int), strict=True)
        )

        def summarize(metrics):
            by_set = dict(zip(keys, metrics["final_equity"].tolist(), strict=True))
            return _sweep_summary(wl, by_set, metrics["trades"].sum())

        return lambda: kernels.sweep(kernel_bars, matrix, cfg), summarize
    vector = strategy.vector(wl.params)

    def summarize_backtest(result):
        metrics = result[-1]
        if wl.n_symbols > 1:
            return _panel_summary(metrics["final_equity"], metrics["trades"])
        row = metrics[0]
        return _summary(row["final_equity"], row["sharpe"], row["max_drawdown_pct"], row["trades"])

    # The kernel quantshift.backtest picks: serial for one symbol, parallel for several.
    kernel = kernels.backtest_serial if wl.n_symbols == 1 else kernels.backtest
    return lambda: kernel(kernel_bars, vector, cfg), summarize_backtest


def setup_public(wl: Workload, data: Ohlcv):
    import quantshift

    _, bars, config = _quantshift_inputs(wl, data)
    if wl.is_sweep:
        grid = {"fast": wl.fast, "slow": wl.slow}

        def summarize(table):
            keys = zip(table["fast"].astype(int), table["slow"].astype(int), strict=True)
            by_set = dict(zip(keys, table["final_equity"].tolist(), strict=True))
            return _sweep_summary(wl, by_set, table["trades"].sum())

        return lambda: quantshift.sweep(wl.strategy, bars, grid, config=config), summarize

    def summarize_backtest(result):
        stats = result.stats
        if wl.n_symbols > 1:
            return _panel_summary(stats["final_equity"], stats["trades"])
        m = result.metrics
        return _summary(m["final_equity"], m["sharpe"], m["max_drawdown_pct"], m["trades"])

    def run():
        return quantshift.backtest(wl.strategy, bars, wl.params, config=config)

    return run, summarize_backtest


def setup_vectorbt(wl: Workload, data: Ohlcv):
    import pandas as pd
    import vectorbt as vbt

    # Naive UTC timestamps: with a tz-aware index, vectorbt's result wrapping converts the index
    # to an array of Timestamp objects on every call, which takes ~97% of W1's time.
    index = pd.DatetimeIndex(pd.to_datetime(data.ts_ns, unit="ns"), name="time")
    frame = {"columns": list(data.symbols)} if wl.n_symbols > 1 else {}
    make = pd.DataFrame if wl.n_symbols > 1 else pd.Series
    close = make(data.close if frame else data.close[:, 0], index=index, **frame)
    open_ = make(data.open if frame else data.open[:, 0], index=index, **frame)

    def portfolio_metrics(entries, exits):
        # A signal on bar t's close fills at bar t+1's open: shift the signals, trade at the open.
        pf = vbt.Portfolio.from_signals(
            close,
            entries.vbt.signals.fshift(1),
            exits.vbt.signals.fshift(1),
            price=open_,
            init_cash=CASH,
            fees=0.0,
            freq="1h",
        )
        return {
            "final_equity": pf.final_value(),
            "total_return": pf.total_return(),
            "sharpe": pf.sharpe_ratio(),
            "max_drawdown": pf.max_drawdown(),
            "trades": pf.trades.closed.count(),
        }

    if wl.is_sweep:
        grid = wl.grid()
        fast_windows, slow_windows = [f for f, _ in grid], [s for _, s in grid]

        def run_sweep():
            fast = vbt.MA.run(close, window=fast_windows, short_name="fast")
            slow = vbt.MA.run(close, window=slow_windows, short_name="slow")
            return portfolio_metrics(fast.ma_crossed_above(slow), fast.ma_crossed_below(slow))

        def summarize(m):
            by_set = dict(zip(grid, np.asarray(m["final_equity"]).tolist(), strict=True))
            return _sweep_summary(wl, by_set, np.sum(m["trades"]))

        return run_sweep, summarize
    if wl.strategy == "ma_crossover":

        def run_one():
            fast = vbt.MA.run(close, window=int(wl.params["fast"]), short_name="fast")
            slow = vbt.MA.run(close, window=int(wl.params["slow"]), short_name="slow")
            return portfolio_metrics(fast.ma_crossed_above(slow), fast.ma_crossed_below(slow))

        def summarize_one(m):
            return _summary(m["final_equity"], m["sharpe"], 100.0 * -m["max_drawdown"], m["trades"])

        return run_one, summarize_one
    # vbt.RSI averages gains and losses with a plain or span-based EWM mean, not Wilder's
    # smoothing; vectorbt's TA-Lib wrapper gives the RSI the other contenders compute.
    rsi_talib = vbt.IndicatorFactory.from_talib("RSI")

    def run_panel():
        rsi = rsi_talib.run(close, timeperiod=int(wl.params["rsi_window"]))
        return portfolio_metrics(
            rsi.real_below(wl.params["entry_below"]), rsi.real_above(wl.params["exit_above"])
        )

    return run_panel, lambda m: _panel_summary(m["final_equity"], m["trades"])


def setup_backtrader(wl: Workload, data: Ohlcv):
    import backtrader as bt
    import pandas as pd

    frame = pd.DataFrame(
        {
            "open": data.open[:, 0],
            "high": data.high[:, 0],
            "low": data.low[:, 0],
            "close": data.close[:, 0],
            "volume": data.volume[:, 0],
        },
        index=pd.to_datetime(data.ts_ns, unit="ns"),
    )

    class MaCross(bt.Strategy):
        params = (("fast", 10), ("slow", 50))

        def __init__(self):
            fast = bt.indicators.SMA(self.data.close, period=self.p.fast)
            slow = bt.indicators.SMA(self.data.close, period=self.p.slow)
            self.cross = bt.indicators.CrossOver(fast, slow)
            self.order = 0

        def next_open(self):
            # cheat-on-open: orders placed here fill at this bar's open, i.e. the bar after
            # the signal, all cash in (the fractional size QuantShift buys; 1e-12 less, or
            # rounding can leave the cost one ulp above the cash and the broker rejects it).
            if self.order == 1 and not self.position:
                self.buy(size=self.broker.getcash() / self.data.open[0] * (1.0 - 1e-12))
            elif self.order == -1 and self.position:
                self.close()
            self.order = 0

        def next(self):
            self.order = int(self.cross[0])

    def run():
        cerebro = bt.Cerebro(stdstats=False, cheat_on_open=True)
        cerebro.broker.set_coo(True)
        cerebro.broker.setcash(CASH)
        cerebro.adddata(
            bt.feeds.PandasData(dataname=frame, timeframe=bt.TimeFrame.Minutes, compression=60)
        )
        cerebro.addstrategy(MaCross, fast=int(wl.params["fast"]), slow=int(wl.params["slow"]))
        cerebro.addanalyzer(bt.analyzers.DrawDown, _name="drawdown")
        cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
        strat = cerebro.run()[0]
        trades = strat.analyzers.trades.get_analysis()
        return {
            "final_equity": cerebro.broker.getvalue(),
            "max_drawdown_pct": strat.analyzers.drawdown.get_analysis().max.drawdown,
            "trades": trades.total.closed if "total" in trades and "closed" in trades.total else 0,
        }

    return run, lambda m: _summary(m["final_equity"], None, m["max_drawdown_pct"], m["trades"])


CONTENDERS: dict[str, Setup] = {
    "limit": setup_limit,
    "kernel": setup_kernel,
    "public": setup_public,
    "vectorbt": setup_vectorbt,
    "backtrader": setup_backtrader,
}
