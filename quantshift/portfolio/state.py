"""Portfolio state: cash per sleeve, a position per (sleeve, symbol), marks, peak, day, halt.

Immutable; decisions and fills return a new state. ``to_dict``/``from_dict`` for the live store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantshift.engine.metrics import (
    ST_CLOSED,
    ST_GROSS_LOSS,
    ST_GROSS_WIN,
    ST_LARGEST_LOSS,
    ST_LARGEST_WIN,
    ST_LEN,
    ST_LOSS_RETURN_SUM,
    ST_WIN_RETURN_SUM,
    ST_WINS,
)
from quantshift.engine.simulate import (
    S_BEST,
    S_ENTRY_BAR,
    S_ENTRY_FEES,
    S_ENTRY_PRICE,
    S_HAS_LEVELS,
    S_LEN,
    S_POSITION,
    S_STOP,
    S_TAKE_PROFIT,
    S_TRAIL,
)
from quantshift.errors import ConfigError
from quantshift.portfolio.config import PortfolioConfig
from quantshift.portfolio.rows import (
    B_DAY,
    B_DAY_START_EQUITY,
    B_HALT,
    B_LAST_EQUITY,
    B_LEN,
    B_PEAK_EQUITY,
    B_RESERVE,
    HALT_EXTERNAL,
    HALT_NONE,
    HALT_REASONS,
)

STATE_VERSION = 1

# Closed-trade statistics kept per sleeve (they drive Kelly sizing), by name.
_STATS = {
    "closed_trades": ST_CLOSED,
    "wins": ST_WINS,
    "gross_win": ST_GROSS_WIN,
    "gross_loss": ST_GROSS_LOSS,
    "largest_win": ST_LARGEST_WIN,
    "largest_loss": ST_LARGEST_LOSS,
    "win_return_sum": ST_WIN_RETURN_SUM,
    "loss_return_sum": ST_LOSS_RETURN_SUM,
}


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

    Arrays are read-only and follow the config's layout: ``slots`` (n_sleeves, n_symbols,
    fill-model position fields), ``entry_ts_ns`` (n_sleeves, n_symbols), ``cash`` and
    ``stats`` (per sleeve), ``marks`` (last close per symbol, NaN before its first bar) and
    ``book`` (unallocated cash, day, day-start/peak/last equity, halt code). Build one with
    :meth:`initial` or :meth:`from_dict`; two states are equal when their ``to_dict`` are.
    """

    sleeves: tuple[str, ...]
    symbols: tuple[str, ...]
    ts_ns: int | None
    slots: np.ndarray
    entry_ts_ns: np.ndarray
    cash: np.ndarray
    stats: np.ndarray
    marks: np.ndarray
    book: np.ndarray
    halt_reason: str | None = None

    def __post_init__(self) -> None:
        for name in ("slots", "entry_ts_ns", "cash", "stats", "marks", "book"):
            getattr(self, name).flags.writeable = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def initial(cls, config: PortfolioConfig) -> PortfolioState:
        """Return the state before the first bar: each sleeve holds its allocation in cash."""
        layout = config.layout()
        n_sleeves, n_symbols = len(layout.sleeves), len(layout.symbols)
        cash = layout.allocation * layout.cash
        book = np.zeros(B_LEN)
        book[B_RESERVE] = layout.cash - math.fsum(cash)
        book[B_DAY] = math.nan
        book[B_DAY_START_EQUITY] = book[B_PEAK_EQUITY] = book[B_LAST_EQUITY] = layout.cash
        return cls(
            sleeves=layout.sleeves,
            symbols=layout.symbols,
            ts_ns=None,
            slots=_empty_slots(n_sleeves, n_symbols),
            entry_ts_ns=np.zeros((n_sleeves, n_symbols), np.int64),
            cash=cash,
            stats=np.zeros((n_sleeves, ST_LEN)),
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

    def arrays(self) -> dict[str, np.ndarray]:
        """Return writable copies of the arrays, for a kernel to update."""
        return {
            name: getattr(self, name).copy()
            for name in ("slots", "entry_ts_ns", "cash", "stats", "marks", "book")
        }

    def replace(self, ts_ns: int | None, arrays: Mapping[str, np.ndarray]) -> PortfolioState:
        """Return a new state with ``arrays`` (as from :meth:`arrays`, updated) at ``ts_ns``."""
        code = int(arrays["book"][B_HALT])
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
            **arrays,
        )

    # ------------------------------------------------------------------ views
    @property
    def halted(self) -> bool:
        return self.halt_reason is not None

    @property
    def reserve_cash(self) -> float:
        """Cash no sleeve was allocated."""
        return float(self.book[B_RESERVE])

    @property
    def equity_usd(self) -> float:
        """Portfolio equity with positions at the last closes (the decision's own figure is
        ``Decision.equity_usd``)."""
        return float(self.book[B_RESERVE] + self._sleeve_equity().sum())

    @property
    def peak_equity(self) -> float:
        return float(self.book[B_PEAK_EQUITY])

    @property
    def day_start_equity(self) -> float:
        return float(self.book[B_DAY_START_EQUITY])

    def sleeve_cash(self) -> dict[str, float]:
        return dict(zip(self.sleeves, self.cash.tolist(), strict=True))

    def sleeve_equity(self) -> dict[str, float]:
        """Each sleeve's equity: its cash plus its positions at the last closes."""
        return dict(zip(self.sleeves, self._sleeve_equity().tolist(), strict=True))

    def _sleeve_equity(self) -> np.ndarray:
        units = self.slots[:, :, S_POSITION]
        held = units != 0.0  # a symbol never marked (NaN) holds nothing yet
        value = np.where(held, units * np.where(held, self.marks, 0.0), 0.0).sum(axis=1)
        return self.cash + value

    def positions(self) -> list[Position]:
        """Return the open positions, in sleeve then symbol order."""
        out = []
        for s, k in zip(*np.nonzero(self.slots[:, :, S_POSITION]), strict=True):
            slot = self.slots[s, k]
            out.append(
                Position(
                    sleeve=self.sleeves[s],
                    symbol=self.symbols[k],
                    units=float(slot[S_POSITION]),
                    entry_ts_ns=int(self.entry_ts_ns[s, k]),
                    entry_bar=int(slot[S_ENTRY_BAR]),
                    entry_price=float(slot[S_ENTRY_PRICE]),
                    entry_fees=float(slot[S_ENTRY_FEES]),
                    stop_price=_none_if_nan(slot[S_STOP]),
                    take_profit_price=_none_if_nan(slot[S_TAKE_PROFIT]),
                    trail_distance=_none_if_nan(slot[S_TRAIL]),
                    best_price=float(slot[S_BEST]),
                )
            )
        return out

    # ------------------------------------------------------------------ transitions
    def halt(self, reason: str) -> PortfolioState:
        """Return this state halted for ``reason`` (an order guard, ``live halt``): no new
        entries until :meth:`resumed`."""
        if not reason:
            raise ConfigError("a halt needs a reason")
        arrays = self.arrays()
        arrays["book"][B_HALT] = _halt_code(reason)
        return PortfolioState(
            sleeves=self.sleeves,
            symbols=self.symbols,
            ts_ns=self.ts_ns,
            halt_reason=reason,
            **arrays,
        )

    def resumed(self) -> PortfolioState:
        """Return this state with the halt cleared, the peak and the day's start re-based on
        the equity at the last decision (else the breaker would trip again at once)."""
        arrays = self.arrays()
        book = arrays["book"]
        book[B_HALT] = HALT_NONE
        book[B_PEAK_EQUITY] = book[B_DAY_START_EQUITY] = book[B_LAST_EQUITY]
        return PortfolioState(
            sleeves=self.sleeves, symbols=self.symbols, ts_ns=self.ts_ns, **arrays
        )

    # ------------------------------------------------------------------ plain dicts
    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-ready data (no NaN: missing values are None)."""
        book = self.book
        return {
            "version": STATE_VERSION,
            "ts_ns": self.ts_ns,
            "reserve_cash": float(book[B_RESERVE]),
            "sleeves": {
                name: {
                    "cash": float(self.cash[s]),
                    **{key: float(self.stats[s, i]) for key, i in _STATS.items()},
                }
                for s, name in enumerate(self.sleeves)
            },
            "positions": [p.to_dict() for p in self.positions()],
            "marks": {
                sym: float(m) for sym, m in zip(self.symbols, self.marks, strict=True) if m == m
            },
            "day": None if math.isnan(book[B_DAY]) else int(book[B_DAY]),
            "day_start_equity": float(book[B_DAY_START_EQUITY]),
            "peak_equity": float(book[B_PEAK_EQUITY]),
            "last_equity": float(book[B_LAST_EQUITY]),
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
                arrays["cash"][s] = values["cash"]
                for key, i in _STATS.items():
                    arrays["stats"][s, i] = values[key]
            for p in data["positions"]:
                s = _index(sleeves, p["sleeve"], "sleeve")
                k = _index(symbols, p["symbol"], "symbol")
                slot = arrays["slots"][s, k]
                slot[S_POSITION] = p["units"]
                slot[S_ENTRY_BAR] = p["entry_bar"]
                slot[S_ENTRY_PRICE] = p["entry_price"]
                slot[S_ENTRY_FEES] = p["entry_fees"]
                slot[S_STOP] = _nan_if_none(p["stop_price"])
                slot[S_TAKE_PROFIT] = _nan_if_none(p["take_profit_price"])
                slot[S_TRAIL] = _nan_if_none(p["trail_distance"])
                slot[S_BEST] = p["best_price"]
                slot[S_HAS_LEVELS] = float(
                    not np.isnan(slot[[S_STOP, S_TAKE_PROFIT, S_TRAIL]]).all()
                )
                arrays["entry_ts_ns"][s, k] = p["entry_ts_ns"]
            for sym, mark in data["marks"].items():
                arrays["marks"][_index(symbols, sym, "symbol")] = mark
            book = arrays["book"]
            book[B_RESERVE] = data["reserve_cash"]
            book[B_DAY] = math.nan if data["day"] is None else data["day"]
            book[B_DAY_START_EQUITY] = data["day_start_equity"]
            book[B_PEAK_EQUITY] = data["peak_equity"]
            book[B_LAST_EQUITY] = data["last_equity"]
            reason = data["halt_reason"] if data["halted"] else None
            ts_ns = data["ts_ns"]
        except KeyError as e:
            raise ConfigError(f"state: missing key {e}") from None
        book[B_HALT] = HALT_NONE if reason is None else _halt_code(reason)
        return PortfolioState(
            sleeves=sleeves, symbols=symbols, ts_ns=ts_ns, halt_reason=reason, **arrays
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PortfolioState):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _empty_slots(n_sleeves: int, n_symbols: int) -> np.ndarray:
    slots = np.zeros((n_sleeves, n_symbols, S_LEN))
    slots[:, :, [S_STOP, S_TAKE_PROFIT, S_TRAIL]] = math.nan
    return slots


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
