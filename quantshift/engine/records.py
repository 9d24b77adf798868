"""Named records the kernels pass whole: structured dtypes for rows, named tuples for arrays.

Each record is defined here once. Kernels read fields by name (``cfg.fee_rate``,
``trade.pnl``); a structured dtype's scalars allow that in plain Python too
(``NUMBA_DISABLE_JIT=1``) because :func:`record_dtype` gives them ``np.record`` type.
A record taken from an array (``state = arrays[0]``) points into the array's memory, so
kernels keep the array alive for as long as they use the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np


def record_dtype(fields: list[tuple[str, type]]) -> np.dtype:
    """Return an aligned structured dtype whose scalars read fields as attributes.

    A field named like an attribute of NumPy scalars (``size``, ``fill``, ``sum`` ...) would
    read that attribute instead in plain Python, so such names are refused.
    """
    shadowed = [name for name, _ in fields if hasattr(np.record, name)]
    if shadowed:
        raise ValueError(f"record field(s) {shadowed} shadow attributes of numpy.record")
    return np.dtype((np.record, np.dtype(fields, align=True)))


config_dt = record_dtype(
    [
        ("cash", np.float64),
        ("fee_rate", np.float64),  # fraction of traded notional
        ("slippage_rate", np.float64),  # fraction of the price, against the trader
        ("fill_at", np.int64),  # FILL_* code
        ("direction", np.int64),  # DIRECTION_* code
        ("sizing", np.int64),  # SIZING_* code
        ("size_fraction", np.float64),  # SimConfig.size
        ("risk_per_trade", np.float64),
        ("kelly_fraction", np.float64),
        ("kelly_min_trades", np.float64),
        ("size_at_decision", np.bool_),  # SimConfig.size_at == "decision"
        ("max_leverage", np.float64),
        ("whole_units", np.bool_),
        ("use_stops", np.bool_),
    ]
)
"""Simulation settings as the kernels read them (``SimConfig.to_record``)."""

position_dt = record_dtype(
    [
        ("cash", np.float64),  # the owner's cash while the fill model works on the position
        ("units", np.float64),  # signed: negative is short, 0 flat
        ("entry_bar", np.int64),
        ("entry_ts_ns", np.int64),
        ("entry_price", np.float64),  # after slippage
        ("entry_fees", np.float64),
        ("stop_price", np.float64),  # NaN: none
        ("take_profit_price", np.float64),
        ("trail_distance", np.float64),
        ("best_price", np.float64),  # best price since entry, which the trailing stop follows
        ("has_levels", np.bool_),
    ]
)
"""One position of the fill model (a symbol's, or a sleeve's in one symbol)."""

TRADE_STATS = (
    "closed_trades",
    "wins",
    "gross_win",
    "gross_loss",
    "largest_win",
    "largest_loss",
    "win_return_sum",
    "loss_return_sum",
)
"""Closed-trade statistics: what Kelly sizing reads and a portfolio sleeve keeps."""

stats_dt = record_dtype(
    [(name, np.float64) for name in TRADE_STATS]
    + [
        (name, np.float64)
        for name in (
            "bars_in_market",
            "bars",
            "last_equity",
            "max_drawdown",
            "return_sum",
            "return_sq_sum",
            "downside_sq",
        )
    ]
)
"""Running statistics of one simulation: closed trades, then the equity path."""

METRICS = (
    "final_equity",
    "total_return_pct",
    "cagr_pct",
    "sharpe",
    "sortino",
    "volatility_pct",
    "max_drawdown_pct",
    "trades",
    "win_rate_pct",
    "profit_factor",
    "avg_win",
    "avg_loss",
    "largest_win",
    "largest_loss",
    "exposure_pct",
)
"""Metric names, in the field order of :data:`metrics_dt`."""

metrics_dt = record_dtype([(name, np.float64) for name in METRICS])
"""One simulation's metrics; every field float64, so an array views as a plain matrix."""

trade_dt = record_dtype(
    [
        ("sleeve", np.int64),  # 0 outside a portfolio
        ("symbol", np.int64),
        ("direction", np.int64),  # +1 long, -1 short
        ("entry_bar", np.int64),
        ("exit_bar", np.int64),
        ("entry_ts_ns", np.int64),
        ("exit_ts_ns", np.int64),
        ("units", np.float64),
        ("entry_price", np.float64),
        ("exit_price", np.float64),
        ("entry_fees", np.float64),
        ("exit_fees", np.float64),
        ("pnl", np.float64),
        ("return_pct", np.float64),
        ("exit_reason", np.int64),  # index into the exit reasons
    ]
)
"""A trade of the fill model: single-symbol backtests and portfolios alike."""


class BarArrays(NamedTuple):
    """Symbol-major (n_symbols, n_max) bars, each symbol's valid bars left-aligned."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    lengths: np.ndarray  # valid bars per symbol
    periods_per_year: np.ndarray  # per symbol


class SymbolBars(NamedTuple):
    """One symbol's bars (1-D)."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


class Signals(NamedTuple):
    """A strategy's signals: entries and exits, and protective distances (NaN: none)."""

    entries: np.ndarray
    exits: np.ndarray
    stop: np.ndarray
    take_profit: np.ndarray
    trail: np.ndarray


class SimOutputs(NamedTuple):
    """Where a simulation writes: per-bar equity and units, trades, running statistics.

    ``trades`` may have zero rows (sweeps): then only ``stats`` is written.
    """

    equity: np.ndarray
    position: np.ndarray
    trades: np.ndarray  # trade_dt
    stats: np.ndarray  # stats_dt, one element


def float_matrix(values: np.ndarray) -> np.ndarray:
    """Return an array of all-float64 records (``metrics_dt``) as a (n, n_fields) matrix view."""
    n_fields = len(values.dtype.names)
    return np.ascontiguousarray(values).view(np.float64).reshape((*values.shape, n_fields))


def trade_columns(
    trades: np.ndarray,
    symbols: Sequence[str],
    exit_reasons: Sequence[str],
    *,
    sleeves: Sequence[str] | None = None,
    strategies: Sequence[str] | None = None,
    categorical: bool = True,
) -> dict[str, Any]:
    """Decode ``trade_dt`` records into named columns (the one trade decoder).

    Codes become names: ``symbol`` (and ``sleeve``, ``strategy`` when ``sleeves`` are given),
    ``direction`` ("long"/"short") and ``exit_reason``, as categoricals or object arrays;
    timestamps become UTC times; ``bars_held`` counts bars from entry to exit.
    """
    import pandas as pd  # the edge: kernels import this module too

    def labels(names, codes):
        if categorical:
            return pd.Categorical.from_codes(codes, categories=list(names))
        return np.array(names, dtype=object)[codes]

    out: dict[str, Any] = {}
    if sleeves is not None:
        out["sleeve"] = labels(sleeves, trades["sleeve"])
        out["strategy"] = labels(strategies, trades["sleeve"])
    out["symbol"] = labels(symbols, trades["symbol"])
    out["direction"] = labels(("long", "short"), (trades["direction"] < 0).astype(np.int8))
    out["entry_time"] = pd.to_datetime(trades["entry_ts_ns"], unit="ns", utc=True)
    out["exit_time"] = pd.to_datetime(trades["exit_ts_ns"], unit="ns", utc=True)
    for name in ("entry_price", "exit_price", "units", "entry_fees", "exit_fees", "pnl"):
        out[name] = trades[name]
    out["return_pct"] = trades["return_pct"]
    out["exit_reason"] = labels(exit_reasons, trades["exit_reason"])
    out["bars_held"] = trades["exit_bar"] - trades["entry_bar"]
    return out
