"""Portfolio state: cash per sleeve, a position per (sleeve, symbol), marks, peak, day, halt.

Immutable; decisions and fills return a new state. ``to_dict``/``from_dict`` for the live store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantshift.engine.records import TRADE_STATS, position_dt, stats_dt
from quantshift.errors import ConfigError
from quantshift.portfolio.config import PortfolioConfig
from quantshift.portfolio.rows import (
    HALT_EXTERNAL,
    HALT_NONE,
    HALT_REASONS,
    PortfolioArrays,
    book_dt,
)

STATE_VERSION = 1
_ARRAYS = PortfolioArrays._fields
# What a saved position holds: its record's fields but the owner's cash and the derived flag.
_POSITION_FIELDS = tuple(f for f in position_dt.names if f not in ("cash", "has_levels"))
_LEVELS = ("stop_price", "take_profit_price", "trail_distance")  # NaN in a record, None saved


@dataclass(frozen=True)
class Position:
    """One sleeve's open position in one symbol (a read-only view of the state)."""

    sleeve: str
    symbol: str
    units: float  # signed: negative is short
    entry_ts_ns: int
    entry_bar: int  # row of the simulation that opened it (backtests; live may ignore it)
    entry_price: float  # after slippage
    entry_fees: float
    stop_price: float | None
    take_profit_price: float | None
    trail_distance: float | None
    best_price: float  # best price seen since entry, which the trailing stop follows

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True, eq=False)
class PortfolioState:
    """What the decision layer knows between bars.

    Arrays are read-only and follow the config's layout: ``slots`` (``position_dt``,
    n_sleeves x n_symbols), ``cash`` and ``stats`` (``stats_dt``) per sleeve, ``marks`` (last
    close per symbol, NaN before its first bar) and ``book`` (one ``book_dt``: unallocated
    cash, day, day-start/peak/last equity, halt code); :class:`PortfolioArrays` names them.
    Build one with :meth:`initial` or :meth:`from_dict`; two states are equal when their
    ``to_dict`` are.
    """

    sleeves: tuple[str, ...]
    symbols: tuple[str, ...]
    ts_ns: int | None
    slots: np.ndarray
    cash: np.ndarray
    stats: np.ndarray
    marks: np.ndarray
    book: np.ndarray
    halt_reason: str | None = None

    def __post_init__(self) -> None:
        for name in _ARRAYS:
            getattr(self, name).flags.writeable = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def initial(cls, config: PortfolioConfig) -> PortfolioState:
        """Return the state before the first bar: each sleeve holds its allocation in cash."""
        layout = config.layout()
        n_sleeves, n_symbols = len(layout.sleeves), len(layout.symbols)
        cash = layout.allocation * layout.cash
        book = np.zeros(1, book_dt)
        book["reserve"] = layout.cash - math.fsum(cash)
        book["day"] = math.nan
        for name in ("day_start_equity", "peak_equity", "last_equity"):
            book[name] = layout.cash
        return cls(
            sleeves=layout.sleeves,
            symbols=layout.symbols,
            ts_ns=None,
            slots=_flat_positions(n_sleeves, n_symbols),
            cash=cash,
            stats=np.zeros(n_sleeves, stats_dt),
            marks=np.full(n_symbols, math.nan),
            book=book,
        )

    def check(self, config: PortfolioConfig) -> None:
        """Raise ConfigError unless the state has ``config``'s sleeves and symbols."""
        layout = config.layout()
        if self.sleeves != layout.sleeves or self.symbols != layout.symbols:
            raise ConfigError(
                f"state is for sleeves {list(self.sleeves)} and symbols {list(self.symbols)}, "
                f"config has {list(layout.sleeves)} and {list(layout.symbols)}"
            )

    def arrays(self) -> PortfolioArrays:
        """Return writable copies of the arrays, for a kernel to update."""
        return PortfolioArrays(*(getattr(self, name).copy() for name in _ARRAYS))

    def replace(self, ts_ns: int | None, arrays: PortfolioArrays) -> PortfolioState:
        """Return a new state with ``arrays`` (as from :meth:`arrays`, updated) at ``ts_ns``."""
        code = int(arrays.book[0].halt)
        if code == HALT_NONE:
            reason = None
        elif code == HALT_EXTERNAL or self.halt_reason is not None:
            reason = self.halt_reason
        else:
            reason = HALT_REASONS[code]
        return PortfolioState(
            sleeves=self.sleeves,
            symbols=self.symbols,
            ts_ns=self.ts_ns if ts_ns is None else int(ts_ns),
            halt_reason=reason,
            **arrays._asdict(),
        )

    # ------------------------------------------------------------------ views
    @property
    def halted(self) -> bool:
        return self.halt_reason is not None

    @property
    def reserve_cash(self) -> float:
        """Cash no sleeve was allocated."""
        return float(self.book[0].reserve)

    @property
    def equity_usd(self) -> float:
        """Portfolio equity with positions at the last closes (the decision's own figure is
        ``Decision.equity_usd``)."""
        return float(self.book[0].reserve + self._sleeve_equity().sum())

    @property
    def peak_equity(self) -> float:
        return float(self.book[0].peak_equity)

    @property
    def day_start_equity(self) -> float:
        return float(self.book[0].day_start_equity)

    def sleeve_cash(self) -> dict[str, float]:
        return dict(zip(self.sleeves, self.cash.tolist(), strict=True))

    def sleeve_equity(self) -> dict[str, float]:
        """Each sleeve's equity: its cash plus its positions at the last closes."""
        return dict(zip(self.sleeves, self._sleeve_equity().tolist(), strict=True))

    def _sleeve_equity(self) -> np.ndarray:
        units = self.slots["units"]
        held = units != 0.0  # a symbol never marked (NaN) holds nothing yet
        value = np.where(held, units * np.where(held, self.marks, 0.0), 0.0).sum(axis=1)
        return self.cash + value

    def positions(self) -> list[Position]:
        """Return the open positions, in sleeve then symbol order."""
        out = []
        for s, k in zip(*np.nonzero(self.slots["units"]), strict=True):
            values = self.slots[s, k].tolist()
            fields = {f: values[position_dt.names.index(f)] for f in _POSITION_FIELDS}
            for f in _LEVELS:
                fields[f] = _none_if_nan(fields[f])
            out.append(Position(sleeve=self.sleeves[s], symbol=self.symbols[k], **fields))
        return out

    # ------------------------------------------------------------------ transitions
    def halt(self, reason: str) -> PortfolioState:
        """Return this state halted for ``reason`` (an order guard, ``live halt``): no new
        entries until :meth:`resumed`."""
        if not reason:
            raise ConfigError("a halt needs a reason")
        arrays = self.arrays()
        arrays.book[0].halt = _halt_code(reason)
        return PortfolioState(
            sleeves=self.sleeves,
            symbols=self.symbols,
            ts_ns=self.ts_ns,
            halt_reason=reason,
            **arrays._asdict(),
        )

    def resumed(self) -> PortfolioState:
        """Return this state with the halt cleared, the peak and the day's start re-based on
        the equity at the last decision (else the breaker would trip again at once)."""
        arrays = self.arrays()
        book = arrays.book[0]
        book.halt = HALT_NONE
        book.peak_equity = book.day_start_equity = book.last_equity
        return PortfolioState(
            sleeves=self.sleeves, symbols=self.symbols, ts_ns=self.ts_ns, **arrays._asdict()
        )

    # ------------------------------------------------------------------ plain dicts
    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-ready data (no NaN: missing values are None)."""
        book = self.book[0]
        return {
            "version": STATE_VERSION,
            "ts_ns": self.ts_ns,
            "reserve_cash": float(book.reserve),
            "sleeves": {
                name: {
                    "cash": float(self.cash[s]),
                    **{key: float(self.stats[s][key]) for key in TRADE_STATS},
                }
                for s, name in enumerate(self.sleeves)
            },
            "positions": [p.to_dict() for p in self.positions()],
            "marks": {
                sym: float(m) for sym, m in zip(self.symbols, self.marks, strict=True) if m == m
            },
            "day": None if math.isnan(book.day) else int(book.day),
            "day_start_equity": float(book.day_start_equity),
            "peak_equity": float(book.peak_equity),
            "last_equity": float(book.last_equity),
            "halted": self.halted,
            "halt_reason": self.halt_reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], config: PortfolioConfig) -> PortfolioState:
        """Rebuild a state saved by :meth:`to_dict` for ``config``; refuse data that names a
        sleeve or symbol the config does not have."""
        if data.get("version") != STATE_VERSION:
            raise ConfigError(f"state version {data.get('version')!r}, expected {STATE_VERSION}")
        state = cls.initial(config)
        arrays = state.arrays()
        sleeves, symbols = state.sleeves, state.symbols
        try:
            for name, values in data["sleeves"].items():
                s = _index(sleeves, name, "sleeve")
                arrays.cash[s] = values["cash"]
                for key in TRADE_STATS:
                    arrays.stats[s][key] = values[key]
            for p in data["positions"]:
                s = _index(sleeves, p["sleeve"], "sleeve")
                k = _index(symbols, p["symbol"], "symbol")
                position = arrays.slots[s, k]
                for f in _POSITION_FIELDS:
                    position[f] = _nan_if_none(p[f]) if f in _LEVELS else p[f]
                position.has_levels = any(p[f] is not None for f in _LEVELS)
            for sym, mark in data["marks"].items():
                arrays.marks[_index(symbols, sym, "symbol")] = mark
            book = arrays.book[0]
            book.reserve = data["reserve_cash"]
            book.day = math.nan if data["day"] is None else data["day"]
            book.day_start_equity = data["day_start_equity"]
            book.peak_equity = data["peak_equity"]
            book.last_equity = data["last_equity"]
            reason = data["halt_reason"] if data["halted"] else None
            ts_ns = data["ts_ns"]
        except KeyError as e:
            raise ConfigError(f"state: missing key {e}") from None
        book.halt = HALT_NONE if reason is None else _halt_code(reason)
        return PortfolioState(
            sleeves=sleeves, symbols=symbols, ts_ns=ts_ns, halt_reason=reason, **arrays._asdict()
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PortfolioState):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _flat_positions(n_sleeves: int, n_symbols: int) -> np.ndarray:
    positions = np.zeros((n_sleeves, n_symbols), position_dt)
    for name in _LEVELS:
        positions[name] = math.nan
    return positions


def _halt_code(reason: str) -> int:
    return HALT_REASONS.index(reason) if reason in HALT_REASONS[1:] else HALT_EXTERNAL


def _index(names: tuple[str, ...], name: str, what: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        raise ConfigError(
            f"state names {what} '{name}', which the config does not have ({', '.join(names)})"
        ) from None


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)
