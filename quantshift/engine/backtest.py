"""Public backtest: one strategy, one parameter set, one or more symbols (each with its own cash).

Returns metrics, a trades table and an equity curve; pandas appears only here, at the edge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from quantshift.data.bars import Bars
from quantshift.engine.arrays import PackedBars, pack
from quantshift.engine.config import SimConfig
from quantshift.engine.fused import kernels_for
from quantshift.engine.metrics import METRICS
from quantshift.engine.records import float_matrix, trade_columns
from quantshift.engine.simulate import EXIT_REASONS
from quantshift.errors import ConfigError, DataError
from quantshift.strategies import Strategy, get_strategy

TRADE_COLUMNS = (
    "symbol",
    "direction",
    "entry_time",
    "exit_time",
    "entry_price",
    "exit_price",
    "units",
    "entry_fees",
    "exit_fees",
    "pnl",
    "return_pct",
    "exit_reason",
    "bars_held",
)


@dataclass(frozen=True)
class KernelRun:
    """What the backtest kernel returned, with the bars it ran on (the result's raw form)."""

    data: Bars
    packed: PackedBars
    equity: np.ndarray  # (n_symbols, n_max) packed
    position: np.ndarray
    trades: np.ndarray  # trade_dt (n_symbols, rows); row s holds n_trades[s] trades
    n_trades: np.ndarray
    metrics: np.ndarray  # metrics_dt (n_symbols,)


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """What a backtest produced.

    Metrics are read from the kernel's records at once; the pandas frames are built the first
    time they are read, so a loop of backtests, or a 500-symbol run, pays only for what it reads.

    Attributes
    ----------
    stats : DataFrame
        One row per symbol, one column per metric (see ``quantshift.engine.metrics.METRICS``).
    trades : DataFrame
        One row per trade; a position still open at the end has ``exit_reason == "open"`` and is
        marked at the last close.
    equity, positions : DataFrame
        Per-bar equity (currency) and signed units per symbol on the bars' time axis; a symbol's
        missing bars carry its last value.
    data_fingerprint : str
        SHA-256 of the bars (:meth:`quantshift.Bars.fingerprint`).
    """

    strategy: str
    params: dict[str, float]
    config: SimConfig
    symbols: tuple[str, ...]
    data_source: str
    run: KernelRun = field(repr=False)

    @cached_property
    def stats(self) -> pd.DataFrame:
        return pd.DataFrame(
            float_matrix(self.run.metrics),
            index=pd.Index(self.symbols, name="symbol"),
            columns=list(METRICS),
        )

    @cached_property
    def trades(self) -> pd.DataFrame:
        return _trades_frame(self.run)

    @cached_property
    def equity(self) -> pd.DataFrame:
        return _unpack_series(self.run, self.run.equity, fill_start=self.config.cash)

    @cached_property
    def positions(self) -> pd.DataFrame:
        return _unpack_series(self.run, self.run.position, fill_start=0.0)

    @property
    def data_fingerprint(self) -> str:
        return self.run.data.fingerprint()

    @property
    def metrics(self) -> dict[str, float]:
        """Metrics of a single-symbol backtest as a dict (use ``stats`` for several symbols)."""
        if len(self.symbols) != 1:
            raise ConfigError(
                f"backtest has {len(self.symbols)} symbols; use .stats, or .metrics_for(symbol)"
            )
        return self.metrics_for(self.symbols[0])

    def metrics_for(self, symbol: str) -> dict[str, float]:
        try:
            row = self.run.metrics[self.symbols.index(symbol)]
        except ValueError:
            raise KeyError(symbol) from None
        return {k: (int(row[k]) if k == "trades" else float(row[k])) for k in METRICS}

    def returns(self) -> pd.DataFrame:
        """Per-bar simple returns of equity per symbol (the first from the initial cash)."""
        previous = self.equity.shift(1)
        previous.iloc[0] = self.config.cash
        return self.equity / previous - 1.0

    def drawdown_pct(self) -> pd.DataFrame:
        """Per-bar drawdown from the running equity peak (%), per symbol."""
        peak = np.maximum(self.equity.cummax(), self.config.cash)
        return 100.0 * (1.0 - self.equity / peak)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary: settings, per-symbol metrics and trades."""
        per_symbol = {s: _json_numbers(self.metrics_for(s)) for s in self.symbols}
        trades = self.trades.assign(
            entry_time=self.trades["entry_time"].map(_iso),
            exit_time=self.trades["exit_time"].map(_iso),
        )
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "params": self.params,
            "config": self.config.to_dict(),
            "data": {"source": self.data_source, "fingerprint": self.data_fingerprint},
            "symbols": list(self.symbols),
        }
        if len(self.symbols) == 1:
            out.update(per_symbol[self.symbols[0]])
        else:
            out["per_symbol"] = per_symbol
            out["trades"] = int(self.stats["trades"].sum())
            out["final_equity"] = float(self.stats["final_equity"].sum())
        out["trade_list"] = [_json_numbers(r) for r in trades.to_dict(orient="records")]
        return out

    def plot(self, path=None, symbol: str | None = None):
        """Plot equity and drawdown (one symbol); save to ``path`` if given; return the figure."""
        from quantshift.engine.plotting import plot_equity

        return plot_equity(self, symbol=symbol, path=path)


def backtest(
    strategy: str | Strategy,
    bars: Bars | str,
    params: Mapping[str, Any] | None = None,
    *,
    symbol: str | Sequence[str] | None = None,
    config: SimConfig | None = None,
    **settings: Any,
) -> BacktestResult:
    """Backtest one parameter set of a strategy.

    Parameters
    ----------
    strategy : str or Strategy
        A registered strategy name (``quantshift strategies list``) or a Strategy object.
    bars : Bars or str
        Bars, or a data spec for :func:`quantshift.load_bars` (e.g. ``"builtin:sp500"``).
    params : mapping, optional
        Parameter values by name; the rest keep their defaults.
    symbol : str or sequence of str, optional
        Restrict to these symbols. Each symbol is simulated independently with ``cash``.
    config : SimConfig, optional
        Simulation settings; ``settings`` keywords (``cash``, ``fees_bps``, ``fill`` ...)
        override single fields.

    Returns
    -------
    BacktestResult
    """
    strat, data, cfg = prepare(strategy, bars, symbol, config, settings)
    vector = strat.vector(params)
    packed = pack(data, cfg)
    kernels = kernels_for(strat)
    kernel = kernels.backtest_serial if data.n_symbols == 1 else kernels.backtest
    equity, position, trades, n_trades, metrics = kernel(
        packed.kernel_bars(), vector, cfg.to_record()
    )
    return BacktestResult(
        strategy=strat.name,
        params=dict(zip(strat.param_names, vector.tolist(), strict=True)),
        config=cfg,
        symbols=data.symbols,
        data_source=data.source,
        run=KernelRun(data, packed, equity, position, trades, n_trades, metrics),
    )


def prepare(strategy, bars, symbol, config, settings):
    """Resolve the common inputs of backtest and sweep: strategy, bars and settings."""
    strat = get_strategy(strategy)
    data = bars
    if isinstance(bars, str):
        from quantshift.data import load_bars

        data = load_bars(bars)
    if not isinstance(data, Bars):
        raise DataError(f"bars must be a Bars object or a data spec string, got {type(bars)}")
    if symbol is not None:
        data = data.select(symbol)
    if data.n_bars == 0 or data.n_symbols == 0:
        raise DataError(f"{data.source}: no bars to backtest")
    cfg = SimConfig.build(config, **settings)
    if cfg.sizing == "risk" and not strat.uses_stops:
        raise ConfigError(
            f"sizing='risk' needs stop distances, and strategy '{strat.name}' sets none; "
            "use sizing='fraction' or 'kelly'"
        )
    return strat, data, cfg


def _unpack_series(run: KernelRun, values, fill_start: float) -> pd.DataFrame:
    """Map packed per-symbol series back onto the time axis; missing bars carry the last value."""
    index, columns = run.data.index, pd.Index(run.data.symbols, name="symbol")
    if run.packed.gap_free:
        return pd.DataFrame(values.T, index=index, columns=columns)
    out = np.full((index.shape[0], len(columns)), np.nan)
    for s, rows in enumerate(run.packed.rows):
        out[rows, s] = values[s, : rows.shape[0]]
    return pd.DataFrame(out, index=index, columns=columns).ffill().fillna(fill_start)


def _trades_frame(run: KernelRun) -> pd.DataFrame:
    """One frame of every symbol's trade records, in symbol order then time."""
    data, packed, n_trades = run.data, run.packed, run.n_trades
    kept = np.arange(run.trades.shape[1])[None, :] < n_trades[:, None]
    rec = run.trades[kept]
    symbol = np.repeat(np.arange(data.n_symbols), n_trades)
    # Packed bar positions -> rows of the shared time axis.
    flat_rows = np.concatenate(packed.rows)
    offsets = np.concatenate(([0], np.cumsum(packed.lengths)[:-1]))[symbol]
    rec["sleeve"] = 0
    rec["symbol"] = symbol
    rec["entry_ts_ns"] = data.ts_ns[flat_rows[offsets + rec["entry_bar"]]]
    rec["exit_ts_ns"] = data.ts_ns[flat_rows[offsets + rec["exit_bar"]]]
    return pd.DataFrame(trade_columns(rec, data.symbols, EXIT_REASONS), columns=list(TRADE_COLUMNS))


def _iso(ts) -> str:
    return pd.Timestamp(ts).isoformat()


def _json_numbers(row: Mapping[str, Any]) -> dict[str, Any]:
    """Make a row JSON-safe: numpy scalars to Python, non-finite floats to None."""
    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out
