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

from quantshift.engine.records import Signals, trade_columns
from quantshift.errors import ConfigError
from quantshift.portfolio.config import PortfolioConfig
from quantshift.portfolio.loop import compiled
from quantshift.portfolio.overlay import REGIME_UNKNOWN, regime_row, sentiment_row
from quantshift.portfolio.rows import (
    ACTION_ENTRY,
    ACTION_EXIT,
    FILL_DONE,
    FILL_PENDING,
    LIMIT_NONE,
    PORTFOLIO_EXIT_REASONS,
    REASON_ENTRY,
    REASON_FLATTEN,
    VETO_REASONS,
    BarInputs,
    fill_dt,
    order_dt,
)
from quantshift.portfolio.signals import BarSignals
from quantshift.portfolio.state import PortfolioState


@dataclass(frozen=True, kw_only=True)
class TargetOrder:
    """An order the decision layer wants sent.

    ``units`` are sized at ``reference_price`` (the close decided on). The shared fill model
    sizes an entry again at its own fill price from the sleeve's sizing rule, never above
    ``max_units`` (the room the risk limits left, or the size after a regime or sentiment
    multiplier when that is smaller; inf when none bound), which is what the backtest and the
    paper broker do; a real broker gets ``units``. Distances are in price
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


def decide(
    state: PortfolioState,
    signals: BarSignals,
    config: PortfolioConfig,
    *,
    regime: Any = None,
    sentiment: Any = None,
) -> Decision:
    """Decide on one bar's close: which positions to close and which to open, and how big.

    Parameters
    ----------
    state : PortfolioState
        The state after this bar's fills and stop exits (:func:`fill_orders`,
        :func:`check_stops`); it is not modified.
    signals : BarSignals
        This bar's time, closes and each sleeve's signals (``SignalHistory.at``, which also
        carries the recent closes the correlation limit reads).
    config : PortfolioConfig
    regime : int, str, mapping or sequence, optional
        This bar's regime label (index or name in ``REGIMES``; -1 or None: unknown), or one
        per symbol (mapping symbol -> label, or a sequence in ``config.symbols`` order).
        Required when ``config.regimes`` is set, refused when it is not.
    sentiment : mapping or sequence, optional
        This bar's news score per symbol in [-1, 1] (mapping symbol -> score, missing: no
        news; or a sequence in ``config.symbols`` order, NaN: no news). Required when
        ``config.sentiment`` is set, refused when it is not.

    Returns
    -------
    Decision
        Exit orders, then entry orders in sleeve and symbol order; the entries skipped and
        why; the new state (marks, day, peak, halt); whether a circuit breaker tripped now.
    """
    state.check(config)
    layout = config.layout()
    arrays = state.arrays()
    was_halted = arrays.book[0].halt != 0
    shape = layout.member.shape
    signal_grids = Signals(
        _grid(signals.entries, shape, "entries", np.bool_),
        _grid(signals.exits, shape, "exits", np.bool_),
        _grid(signals.stop_distance, shape, "stop_distance", np.float64),
        _grid(signals.take_profit_distance, shape, "take_profit_distance", np.float64),
        _grid(signals.trail_distance, shape, "trail_distance", np.float64),
    )
    n = len(layout.symbols)
    close = _float_vector(signals.close, n, "close")
    check_overlay_inputs(config, regime, sentiment)
    if signals.recent_close is None and config.limits.history_rows > 1:
        raise ConfigError(
            "max_position_correlation reads the closes before this bar: give "
            "BarSignals.recent_close (SignalHistory.at does)"
        )
    recent = close[None, :] if signals.recent_close is None else signals.recent_close
    recent = np.ascontiguousarray(recent, dtype=np.float64)
    if recent.ndim != 2 or recent.shape[1] != n or not np.array_equal(recent[-1], close, True):
        raise ConfigError(
            f"signals.recent_close must be (rows, {n}) closes ending with this bar's, "
            f"got shape {recent.shape}"
        )
    symbols = layout.symbols
    inputs = BarInputs(
        recent,
        np.full(n, REGIME_UNKNOWN, np.int64) if regime is None else regime_row(regime, symbols),
        np.full(n, np.nan) if sentiment is None else sentiment_row(sentiment, symbols),
    )
    orders, vetoes = compiled("decide")(
        np.int64(signals.ts_ns), close, signal_grids, inputs, layout.setup, arrays
    )
    new_state = state.replace(signals.ts_ns, arrays)
    return Decision(
        orders=orders_from_records(orders, layout),
        vetoes=tuple(Veto(**row) for row in _rows(veto_columns(vetoes, layout))),
        state=new_state,
        equity_usd=float(arrays.book[0].last_equity),
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
        rows.append((units, price, fees))
    executed = np.zeros(len(rows), fill_dt)
    for row, (units, price, fees) in zip(executed, rows, strict=True):
        row.units, row.price, row.fees = units, price, fees
    prices = np.full(len(layout.symbols), np.nan)
    return _fill(state, [e[0] for e in executions], prices, ts_ns, config, -1, executed)


def _fill(state, orders, prices, ts_ns, config, bar, executed) -> FillResult:
    state.check(config)
    layout = config.layout()
    arrays = state.arrays()
    fills, trades = compiled("fill")(
        orders_to_records(orders, layout),
        _float_vector(prices, len(layout.symbols), "prices"),
        np.int64(bar),
        np.int64(ts_ns),
        layout.setup,
        arrays,
        np.zeros(0, fill_dt) if executed is None else executed,
    )
    status = fills["status"].tolist()
    done = tuple(
        Fill(order=o, units=units, price=price, fees=fees, ts_ns=int(ts_ns))
        for o, code, units, price, fees in zip(
            orders, status, *(fills[f].tolist() for f in ("units", "price", "fees")), strict=True
        )
        if code == FILL_DONE
    )
    return FillResult(
        state=state.replace(None, arrays),
        fills=done,
        trades=closed_trades(trades, layout),
        pending=tuple(o for o, code in zip(orders, status, strict=True) if code == FILL_PENDING),
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
    trades = compiled("check_stops")(
        _float_vector(open_, n, "open"),
        _float_vector(high, n, "high"),
        _float_vector(low, n, "low"),
        np.int64(bar),
        np.int64(ts_ns),
        layout.setup,
        arrays,
    )
    return FillResult(
        state=state.replace(None, arrays),
        fills=(),
        trades=closed_trades(trades, layout),
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


# ---------------------------------------------------------------------- records <-> objects
def order_columns(orders: np.ndarray, layout) -> dict[str, np.ndarray]:
    """Decode ``order_dt`` records into the columns of :class:`TargetOrder`'s fields (the one
    order decoder: ``decide`` and the portfolio backtest's orders table)."""
    sleeve = orders["sleeve"]
    entry = orders["action"] == ACTION_ENTRY
    exit_reason = np.where(entry, 0, orders["reason"])
    capped = np.array([None, *VETO_REASONS[1:]], dtype=object)
    return {
        "sleeve": _names(layout.sleeves, sleeve),
        "strategy": _names(layout.strategies, sleeve),
        "symbol": _names(layout.symbols, orders["symbol"]),
        "action": np.where(entry, "entry", "exit").astype(object),
        "side": np.where(orders["side"] > 0, "buy", "sell").astype(object),
        "units": orders["units"],
        "reason": np.where(entry, "entry", _names(PORTFOLIO_EXIT_REASONS, exit_reason)),
        "ts_ns": orders["ts_ns"],
        "reference_price": orders["price"],
        "stop_distance": orders["stop"],
        "take_profit_distance": orders["take_profit"],
        "trail_distance": orders["trail"],
        "max_units": orders["max_units"],
        "capped_by": capped[orders["capped_by"]],
    }


def orders_from_records(orders: np.ndarray, layout) -> tuple[TargetOrder, ...]:
    """Return the TargetOrders of ``order_dt`` records."""
    return tuple(TargetOrder(**row) for row in _rows(order_columns(orders, layout)))


def orders_to_records(orders: Sequence[TargetOrder], layout) -> np.ndarray:
    """Return the ``order_dt`` records of ``orders`` (the one order encoder)."""
    out = np.zeros(len(orders), order_dt)
    for row, order in zip(out, orders, strict=True):
        try:
            row.sleeve = layout.sleeves.index(order.sleeve)
            row.symbol = layout.symbols.index(order.symbol)
        except ValueError:
            raise ConfigError(
                f"order for sleeve '{order.sleeve}', symbol '{order.symbol}': not in the config"
            ) from None
        entry = order.action == "entry"
        row.action = ACTION_ENTRY if entry else ACTION_EXIT
        row.side = 1.0 if order.side == "buy" else -1.0
        row.reason = REASON_ENTRY if entry else PORTFOLIO_EXIT_REASONS.index(order.reason)
        row.units = order.units
        row.max_units = order.max_units
        row.price = order.reference_price
        row.stop = order.stop_distance
        row.take_profit = order.take_profit_distance
        row.trail = order.trail_distance
        row.capped_by = (
            LIMIT_NONE if order.capped_by is None else VETO_REASONS.index(order.capped_by)
        )
        row.ts_ns = order.ts_ns
    return out


def veto_columns(vetoes: np.ndarray, layout) -> dict[str, np.ndarray]:
    """Decode ``veto_dt`` records into the columns of :class:`Veto`'s fields."""
    return {
        "sleeve": _names(layout.sleeves, vetoes["sleeve"]),
        "symbol": _names(layout.symbols, vetoes["symbol"]),
        "side": np.where(vetoes["side"] > 0, "buy", "sell").astype(object),
        "reason": _names(VETO_REASONS, vetoes["reason"]),
        "ts_ns": vetoes["ts_ns"],
    }


def portfolio_trade_columns(trades: np.ndarray, layout) -> dict[str, Any]:
    """Decode a portfolio's ``trade_dt`` records (sleeve, strategy and symbol names)."""
    return trade_columns(
        trades,
        layout.symbols,
        PORTFOLIO_EXIT_REASONS,
        sleeves=layout.sleeves,
        strategies=layout.strategies,
        categorical=False,
    )


def closed_trades(trades: np.ndarray, layout) -> tuple[ClosedTrade, ...]:
    """Return the ClosedTrades of a portfolio's ``trade_dt`` records."""
    columns = portfolio_trade_columns(trades, layout)
    columns["entry_ts_ns"] = trades["entry_ts_ns"]
    columns["exit_ts_ns"] = trades["exit_ts_ns"]
    fields = ClosedTrade.__dataclass_fields__
    return tuple(
        ClosedTrade(**row) for row in _rows({k: v for k, v in columns.items() if k in fields})
    )


def _rows(columns: dict[str, Any]) -> list[dict[str, Any]]:
    """Return one dict of Python scalars per row of equal-length ``columns``."""
    names = list(columns)
    values = [np.asarray(columns[k]).tolist() for k in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def _names(names: tuple[str, ...], codes: np.ndarray) -> np.ndarray:
    return np.array(names, dtype=object)[codes]


def check_overlay_inputs(config: PortfolioConfig, regime: Any, sentiment: Any) -> None:
    """Raise ConfigError when a regime or sentiment input is missing for a config that uses
    it, or given to one that does not (the overlay is never on or off by accident)."""
    for name, value in (("regime", regime), ("sentiment", sentiment)):
        table = "regimes" if name == "regime" else "sentiment"
        used = getattr(config, table) is not None
        if used and value is None:
            raise ConfigError(
                f"the config has [{table}] but no {name} input was given "
                f"(pass unknown labels / NaN scores when there is none)"
            )
        if not used and value is not None:
            raise ConfigError(f"a {name} input was given but the config has no [{table}] table")


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
