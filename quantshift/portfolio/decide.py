"""The decision layer's calls: ``decide`` on a bar's close, then ``fill_orders``/``check_stops``.

Pure functions of (state, inputs, config) returning a new state; the portfolio backtest runs the
same kernels in its loop, so a live runner calling these bar by bar trades as the backtest did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from quantshift.engine.simulate import (
    TR_DIRECTION,
    TR_ENTRY_FEES,
    TR_ENTRY_PRICE,
    TR_EXIT_FEES,
    TR_EXIT_PRICE,
    TR_EXIT_REASON,
    TR_PNL,
    TR_RETURN_PCT,
    TR_UNITS,
)
from quantshift.errors import ConfigError
from quantshift.portfolio.config import PortfolioConfig
from quantshift.portfolio.loop import compiled
from quantshift.portfolio.rows import (
    ACTION_ENTRY,
    ACTION_EXIT,
    B_HALT,
    B_LAST_EQUITY,
    F_FEES,
    F_PRICE,
    F_STATUS,
    F_UNITS,
    FILL_DONE,
    FILL_PENDING,
    LIMIT_NONE,
    O_ACTION,
    O_CAPPED_BY,
    O_LEN,
    O_MAX_UNITS,
    O_PRICE,
    O_REASON,
    O_SIDE,
    O_SLEEVE,
    O_STOP,
    O_SYMBOL,
    O_TAKE_PROFIT,
    O_TRAIL,
    O_UNITS,
    PORTFOLIO_EXIT_REASONS,
    REASON_ENTRY,
    REASON_FLATTEN,
    T_ENTRY_TS,
    T_EXIT_TS,
    T_SLEEVE,
    T_SYMBOL,
    V_REASON,
    V_SIDE,
    V_SLEEVE,
    V_SYMBOL,
    VETO_REASONS,
)
from quantshift.portfolio.signals import BarSignals
from quantshift.portfolio.state import PortfolioState


@dataclass(frozen=True, kw_only=True)
class TargetOrder:
    """An order the decision layer wants sent.

    ``units`` are sized at ``reference_price`` (the close decided on). The shared fill model
    sizes an entry again at its own fill price from the sleeve's sizing rule, never above
    ``max_units`` (the room the risk limits left; inf when none bound), which is what the
    backtest and the paper broker do; a real broker gets ``units``. Distances are in price
    units from the entry fill price (NaN: none), for the protective orders.
    """

    sleeve: str
    strategy: str
    symbol: str
    action: Literal["entry", "exit"]
    side: Literal["buy", "sell"]
    units: float
    reason: str  # "entry", or why the position closes: "signal", "reverse", "conflict", ...
    ts_ns: int
    reference_price: float
    stop_distance: float = math.nan
    take_profit_distance: float = math.nan
    trail_distance: float = math.nan
    max_units: float = math.inf
    capped_by: str | None = None  # the risk limit that reduced an entry

    @property
    def key(self) -> str:
        """Identity of the order, unique within a run: a reversal's exit and entry share the
        side, so the action is part of it (derive ``client_order_id`` from this)."""
        return f"{self.sleeve}|{self.symbol}|{self.ts_ns}|{self.action}|{self.side}"

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True, kw_only=True)
class Veto:
    """An entry the decision skipped, and why ("halted", "conflict", "max_heat", ...)."""

    sleeve: str
    symbol: str
    side: Literal["buy", "sell"]
    reason: str
    ts_ns: int


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What :func:`decide` returns: orders (exits first), skipped entries, the new state."""

    orders: tuple[TargetOrder, ...]
    vetoes: tuple[Veto, ...]
    state: PortfolioState
    equity_usd: float  # portfolio equity at this close, before the orders fill
    halted_now: bool  # a circuit breaker tripped at this decision: persist a HALT

    @property
    def halt_reason(self) -> str | None:
        return self.state.halt_reason


@dataclass(frozen=True, kw_only=True)
class Fill:
    """How an order filled: units, price after slippage, fees."""

    order: TargetOrder
    units: float
    price: float
    fees: float
    ts_ns: int


@dataclass(frozen=True, kw_only=True)
class ClosedTrade:
    """A round trip of one sleeve in one symbol."""

    sleeve: str
    strategy: str
    symbol: str
    direction: Literal["long", "short"]
    entry_ts_ns: int
    exit_ts_ns: int
    entry_price: float
    exit_price: float
    units: float
    entry_fees: float
    exit_fees: float
    pnl: float
    return_pct: float
    exit_reason: str


@dataclass(frozen=True, kw_only=True)
class FillResult:
    """What :func:`fill_orders` and :func:`check_stops` return."""

    state: PortfolioState
    fills: tuple[Fill, ...]
    trades: tuple[ClosedTrade, ...]
    pending: tuple[TargetOrder, ...]  # orders for symbols without a price: fill them later


def decide(state: PortfolioState, signals: BarSignals, config: PortfolioConfig) -> Decision:
    """Decide on one bar's close: which positions to close and which to open, and how big.

    Parameters
    ----------
    state : PortfolioState
        The state after this bar's fills and stop exits (:func:`fill_orders`,
        :func:`check_stops`); it is not modified.
    signals : BarSignals
        This bar's time, closes and each sleeve's signals (``SignalHistory.at``).
    config : PortfolioConfig

    Returns
    -------
    Decision
        Exit orders, then entry orders in sleeve and symbol order; the entries skipped and
        why; the new state (marks, day, peak, halt); whether a circuit breaker tripped now.
    """
    state.check(config)
    layout = config.layout()
    arrays = state.arrays()
    was_halted = arrays["book"][B_HALT] != 0.0
    shape = layout.member.shape
    orders, vetoes = compiled("decide")(
        np.int64(signals.ts_ns),
        _float_vector(signals.close, len(layout.symbols), "close"),
        _grid(signals.entries, shape, "entries", np.bool_),
        _grid(signals.exits, shape, "exits", np.bool_),
        _grid(signals.stop_distance, shape, "stop_distance", np.float64),
        _grid(signals.take_profit_distance, shape, "take_profit_distance", np.float64),
        _grid(signals.trail_distance, shape, "trail_distance", np.float64),
        layout.member,
        layout.sleeve_cfg,
        layout.limits,
        layout.whole_units,
        arrays["slots"],
        arrays["cash"],
        arrays["stats"],
        arrays["marks"],
        arrays["book"],
    )
    new_state = state.replace(signals.ts_ns, arrays)
    ts_ns = int(signals.ts_ns)
    return Decision(
        orders=tuple(order_from_row(row, ts_ns, layout) for row in orders),
        vetoes=tuple(
            Veto(
                sleeve=layout.sleeves[int(v[V_SLEEVE])],
                symbol=layout.symbols[int(v[V_SYMBOL])],
                side="buy" if v[V_SIDE] > 0 else "sell",
                reason=VETO_REASONS[int(v[V_REASON])],
                ts_ns=ts_ns,
            )
            for v in vetoes
        ),
        state=new_state,
        equity_usd=float(arrays["book"][B_LAST_EQUITY]),
        halted_now=new_state.halted and not was_halted,
    )


def fill_orders(
    state: PortfolioState,
    orders: Sequence[TargetOrder],
    prices: np.ndarray,
    ts_ns: int,
    config: PortfolioConfig,
    bar: int = -1,
) -> FillResult:
    """Fill ``orders`` in their order at ``prices`` (one per symbol: the open of the bar after
    the decision, or the decision's close for ``fill="close"``), as the paper broker does.

    An order whose symbol's price is NaN stays pending. ``bar`` is recorded as the entry row
    of new positions (backtests use the row number; live may leave it).
    """
    return _fill(state, orders, prices, ts_ns, config, bar, None)


def apply_executions(
    state: PortfolioState,
    executions: Sequence[tuple[TargetOrder, float, float, float]],
    ts_ns: int,
    config: PortfolioConfig,
) -> FillResult:
    """Apply what a broker reported it executed: ``(order, units, price, fees)`` each, the
    price after slippage, nothing re-sized or re-priced.

    An entry opens exactly ``units`` (0: nothing); an exit closes the whole position, so its
    ``units`` must be the position's (accumulate partial exit fills before applying them).
    """
    layout = config.layout()
    held = {(p.sleeve, p.symbol): abs(p.units) for p in state.positions()}
    rows = []
    for order, units, price, fees in executions:
        values = np.array([units, price, fees], dtype=float)
        if not np.all(np.isfinite(values)) or units < 0 or price <= 0 or fees < 0:
            raise ValueError(f"execution of {order.key}: bad units/price/fees {values.tolist()}")
        position = held.get((order.sleeve, order.symbol), 0.0)
        if order.action == "exit" and position and not math.isclose(units, position, rel_tol=1e-9):
            raise ValueError(
                f"execution of {order.key}: an exit must close the whole position of "
                f"{position:g} units, got {units:g}"
            )
        rows.append(values)
    executed = np.array(rows, dtype=float).reshape(len(rows), 3)
    prices = np.full(len(layout.symbols), np.nan)
    return _fill(state, [e[0] for e in executions], prices, ts_ns, config, -1, executed)


def _fill(state, orders, prices, ts_ns, config, bar, executed) -> FillResult:
    state.check(config)
    layout = config.layout()
    arrays = state.arrays()
    rows = np.array([order_row(o, layout) for o in orders]).reshape(len(orders), O_LEN)
    fills, trades, trade_ids = compiled("fill")(
        rows,
        _float_vector(prices, len(layout.symbols), "prices"),
        np.int64(bar),
        np.int64(ts_ns),
        layout.sleeve_cfg,
        arrays["slots"],
        arrays["entry_ts_ns"],
        arrays["cash"],
        arrays["stats"],
        arrays["marks"],
        np.zeros((0, 3)) if executed is None else executed,
    )
    done = tuple(
        Fill(
            order=o,
            units=float(f[F_UNITS]),
            price=float(f[F_PRICE]),
            fees=float(f[F_FEES]),
            ts_ns=int(ts_ns),
        )
        for o, f in zip(orders, fills, strict=True)
        if f[F_STATUS] == FILL_DONE
    )
    return FillResult(
        state=state.replace(None, arrays),
        fills=done,
        trades=_trades(trades, trade_ids, layout),
        pending=tuple(o for o, f in zip(orders, fills, strict=True) if f[F_STATUS] == FILL_PENDING),
    )


def check_stops(
    state: PortfolioState,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    ts_ns: int,
    config: PortfolioConfig,
    bar: int = -1,
) -> FillResult:
    """Apply one bar's range to the protective levels (after that bar's open fills): a gap
    through a stop fills at the open, a touched level fills at the level, a bar touching both
    the stop and the target fills at the stop; trailing stops follow the best price."""
    state.check(config)
    layout = config.layout()
    arrays = state.arrays()
    n = len(layout.symbols)
    trades, trade_ids = compiled("check_stops")(
        _float_vector(open_, n, "open"),
        _float_vector(high, n, "high"),
        _float_vector(low, n, "low"),
        np.int64(bar),
        np.int64(ts_ns),
        layout.sleeve_cfg,
        arrays["slots"],
        arrays["entry_ts_ns"],
        arrays["cash"],
        arrays["stats"],
    )
    return FillResult(
        state=state.replace(None, arrays),
        fills=(),
        trades=_trades(trades, trade_ids, layout),
        pending=(),
    )


def flatten_orders(state: PortfolioState, ts_ns: int, config: PortfolioConfig) -> tuple:
    """Return exit orders (reason "flatten") closing every open position (``live halt
    --flatten``), priced at the last marks."""
    state.check(config)
    layout = config.layout()
    orders = []
    for p in state.positions():
        s, k = layout.sleeves.index(p.sleeve), layout.symbols.index(p.symbol)
        orders.append(
            TargetOrder(
                sleeve=p.sleeve,
                strategy=layout.strategies[s],
                symbol=p.symbol,
                action="exit",
                side="sell" if p.units > 0 else "buy",
                units=abs(p.units),
                reason=PORTFOLIO_EXIT_REASONS[REASON_FLATTEN],
                ts_ns=int(ts_ns),
                reference_price=float(state.marks[k]),
                max_units=abs(p.units),
            )
        )
    return tuple(orders)


# ---------------------------------------------------------------------- rows <-> records
def order_from_row(row: np.ndarray, ts_ns: int, layout) -> TargetOrder:
    """Return the TargetOrder of a kernel order row decided at ``ts_ns``."""
    s = int(row[O_SLEEVE])
    entry = row[O_ACTION] == ACTION_ENTRY
    capped = int(row[O_CAPPED_BY])
    return TargetOrder(
        sleeve=layout.sleeves[s],
        strategy=layout.strategies[s],
        symbol=layout.symbols[int(row[O_SYMBOL])],
        action="entry" if entry else "exit",
        side="buy" if row[O_SIDE] > 0 else "sell",
        units=float(row[O_UNITS]),
        reason="entry" if entry else PORTFOLIO_EXIT_REASONS[int(row[O_REASON])],
        ts_ns=int(ts_ns),
        reference_price=float(row[O_PRICE]),
        stop_distance=float(row[O_STOP]),
        take_profit_distance=float(row[O_TAKE_PROFIT]),
        trail_distance=float(row[O_TRAIL]),
        max_units=float(row[O_MAX_UNITS]),
        capped_by=None if capped == LIMIT_NONE else VETO_REASONS[capped],
    )


def order_row(order: TargetOrder, layout) -> np.ndarray:
    """Return the kernel row of ``order``."""
    try:
        s = layout.sleeves.index(order.sleeve)
        k = layout.symbols.index(order.symbol)
    except ValueError:
        raise ConfigError(
            f"order for sleeve '{order.sleeve}', symbol '{order.symbol}': not in the config"
        ) from None
    row = np.zeros(O_LEN)
    row[O_SLEEVE] = s
    row[O_SYMBOL] = k
    row[O_ACTION] = ACTION_ENTRY if order.action == "entry" else ACTION_EXIT
    row[O_SIDE] = 1.0 if order.side == "buy" else -1.0
    row[O_REASON] = (
        REASON_ENTRY if order.action == "entry" else PORTFOLIO_EXIT_REASONS.index(order.reason)
    )
    row[O_UNITS] = order.units
    row[O_MAX_UNITS] = order.max_units
    row[O_PRICE] = order.reference_price
    row[O_STOP] = order.stop_distance
    row[O_TAKE_PROFIT] = order.take_profit_distance
    row[O_TRAIL] = order.trail_distance
    row[O_CAPPED_BY] = (
        LIMIT_NONE if order.capped_by is None else VETO_REASONS.index(order.capped_by)
    )
    return row


def _trades(trades: np.ndarray, trade_ids: np.ndarray, layout) -> tuple[ClosedTrade, ...]:
    out = []
    for row, ids in zip(trades, trade_ids, strict=True):
        s = int(ids[T_SLEEVE])
        out.append(
            ClosedTrade(
                sleeve=layout.sleeves[s],
                strategy=layout.strategies[s],
                symbol=layout.symbols[int(ids[T_SYMBOL])],
                direction="long" if row[TR_DIRECTION] > 0 else "short",
                entry_ts_ns=int(ids[T_ENTRY_TS]),
                exit_ts_ns=int(ids[T_EXIT_TS]),
                entry_price=float(row[TR_ENTRY_PRICE]),
                exit_price=float(row[TR_EXIT_PRICE]),
                units=float(row[TR_UNITS]),
                entry_fees=float(row[TR_ENTRY_FEES]),
                exit_fees=float(row[TR_EXIT_FEES]),
                pnl=float(row[TR_PNL]),
                return_pct=float(row[TR_RETURN_PCT]),
                exit_reason=PORTFOLIO_EXIT_REASONS[int(row[TR_EXIT_REASON])],
            )
        )
    return tuple(out)


def _float_vector(values, n: int, name: str) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ConfigError(f"{name} must have one value per symbol ({n}), got shape {array.shape}")
    return array


def _grid(values, shape: tuple[int, int], name: str, dtype) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype=dtype)
    if array.shape != shape:
        raise ConfigError(
            f"signals.{name} must be (n_sleeves, n_symbols) = {shape}, got shape {array.shape}"
        )
    return array


def _plain(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return None
    return value
