"""Portfolio backtest: the decision layer looped over history with the shared fill model.

One sleeve on one symbol with ``RiskLimits.none()`` trades exactly as ``quantshift.backtest``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from quantshift.data.bars import Bars
from quantshift.engine.metrics import equity_metrics, infer_periods_per_year, trade_metrics
from quantshift.engine.records import Signals
from quantshift.engine.simulate import REASON_OPEN
from quantshift.errors import ConfigError, DataError
from quantshift.portfolio.config import PortfolioConfig
from quantshift.portfolio.decide import (
    check_overlay_inputs,
    order_columns,
    portfolio_trade_columns,
    veto_columns,
)
from quantshift.portfolio.loop import compiled
from quantshift.portfolio.overlay import regime_history, sentiment_history
from quantshift.portfolio.rows import FILL_DONE, FILL_PENDING, HALT_REASONS
from quantshift.portfolio.signals import compute_signals
from quantshift.portfolio.state import PortfolioState

TRADE_COLUMNS = (
    "sleeve",
    "strategy",
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
)


class PortfolioRun(NamedTuple):
    """What the portfolio backtest kernel returned (the result's raw form)."""

    equity: np.ndarray  # per bar
    sleeve_equity: np.ndarray  # (n_bars, n_sleeves)
    net_units: np.ndarray  # (n_bars, n_symbols)
    orders: np.ndarray  # order_dt
    fills: np.ndarray  # fill_dt, one per order
    vetoes: np.ndarray  # veto_dt
    trades: np.ndarray  # trade_dt
    halts: np.ndarray  # halt_dt


@dataclass(frozen=True, eq=False)
class PortfolioResult:
    """What a portfolio backtest produced.

    The frames are built from the kernel's records the first time they are read.

    Attributes
    ----------
    trades : DataFrame
        One row per trade, in the order they closed; positions still open at the end have
        ``exit_reason == "open"`` and are marked at their symbol's last close.
    equity : Series
        Portfolio equity per bar (currency), after the bar's fills, at its closes.
    sleeve_equity : DataFrame
        Each sleeve's equity per bar (its cash plus its positions).
    positions : DataFrame
        Net units per symbol per bar, summed over sleeves.
    orders : DataFrame
        Every order decided: decision time, the order's fields, and how it filled (``status``
        filled / pending / none, fill time, units, price, fees).
    vetoes : DataFrame
        Entries skipped and why (halted, conflict, a risk limit).
    halts : DataFrame
        When a circuit breaker tripped, and which.
    final_state : PortfolioState
        The state after the last bar (what a live runner would carry on from).
    """

    config: PortfolioConfig
    final_state: PortfolioState
    periods_per_year: float
    index: pd.DatetimeIndex = field(repr=False)
    run: PortfolioRun = field(repr=False)

    @cached_property
    def trades(self) -> pd.DataFrame:
        columns = portfolio_trade_columns(self.run.trades, self.config.layout())
        return pd.DataFrame(columns, columns=list(TRADE_COLUMNS))

    @cached_property
    def equity(self) -> pd.Series:
        return pd.Series(self.run.equity, index=self.index, name="equity")

    @cached_property
    def sleeve_equity(self) -> pd.DataFrame:
        sleeves = pd.Index(self.config.layout().sleeves, name="sleeve")
        return pd.DataFrame(self.run.sleeve_equity, index=self.index, columns=sleeves)

    @cached_property
    def positions(self) -> pd.DataFrame:
        symbols = pd.Index(self.config.layout().symbols, name="symbol")
        return pd.DataFrame(self.run.net_units, index=self.index, columns=symbols)

    @cached_property
    def orders(self) -> pd.DataFrame:
        return _orders_frame(self.run.orders, self.run.fills, self.config.layout())

    @cached_property
    def vetoes(self) -> pd.DataFrame:
        vetoes = self.run.vetoes
        return pd.DataFrame(
            {"time": _times(vetoes["ts_ns"])} | veto_columns(vetoes, self.config.layout()),
            columns=["time", "sleeve", "symbol", "side", "reason"],
        )

    @cached_property
    def halts(self) -> pd.DataFrame:
        halts = self.run.halts
        return pd.DataFrame(
            {
                "time": _times(halts["ts_ns"]),
                "reason": np.array(HALT_REASONS, dtype=object)[halts["reason"]],
            }
        )

    @property
    def metrics(self) -> dict[str, Any]:
        """Equity-curve metrics (the kernel's definitions) plus closed-trade counts."""
        out: dict[str, Any] = equity_metrics(
            self.run.equity, self.config.sim.cash, self.periods_per_year
        )
        trades = self.run.trades
        trade_stats = trade_metrics(trades["pnl"][trades["exit_reason"] != REASON_OPEN])
        out["trades"] = trade_stats["trades"]
        out["win_rate_pct"] = trade_stats["win_rate_pct"]
        out["halts"] = len(self.run.halts)
        return out


def portfolio_backtest(
    config: PortfolioConfig,
    bars: Bars | str,
    *,
    state: PortfolioState | None = None,
    regime: Any = None,
    sentiment: Any = None,
    trade_from_ns: int | None = None,
    switches: Sequence[tuple[int, PortfolioConfig]] = (),
) -> PortfolioResult:
    """Run the decision layer over ``bars`` bar by bar with the shared fill model.

    Each bar: orders decided on an earlier close fill at this open (``fill="next-open"``),
    protective levels are checked on this bar's range, :func:`~quantshift.portfolio.decide`'s
    kernel decides on this close, and with ``fill="close"`` its orders fill at once. Signals
    come from each strategy's signal kernel over the whole history (they are causal).

    Parameters
    ----------
    config : PortfolioConfig
    bars : Bars or str
        Bars holding every sleeve's symbols, or a data spec for :func:`quantshift.load_bars`.
    state : PortfolioState, optional
        Start from this state instead of all cash.
    regime : Series, DataFrame or array, optional
        Regime labels per bar (0..4, see ``REGIMES``; NaN / -1: unknown), causal: a Series on
        the bars' times (one market regime per bar), a DataFrame (time x symbol), or an array
        with one row per bar of ``bars`` (2-D: columns in ``config.symbols`` order). Required
        when ``config.regimes`` is set, refused when it is not.
    sentiment : DataFrame or array, optional
        News scores per bar and symbol in [-1, 1] (NaN: no news), causal: a DataFrame (time x
        symbol; missing times and symbols: no news) or an (n_bars, n_symbols) array in
        ``config.symbols`` order. Required when ``config.sentiment`` is set, refused when it
        is not. See ``quantshift.portfolio.overlay``.
    trade_from_ns : int, optional
        Decide nothing before the bar at this time (UTC ns): the bars before it only warm the
        indicators up, as a live runner's history does before its first decision.
    switches : sequence of (int, PortfolioConfig), optional
        From the bar at each time (UTC ns) on, the signals are those of that configuration:
        the same sleeves, symbols and allocations on other strategy parameters, as a live
        runner's sleeve trades a newly adopted promotion record from the bar it adopts it.
        Positions carry over; everything else (costs, limits, overlay) stays ``config``'s.
    """
    if isinstance(bars, str):
        from quantshift.data import load_bars

        bars = load_bars(bars)
    if not isinstance(bars, Bars):
        raise DataError(f"bars must be a Bars object or a data spec string, got {type(bars)}")
    layout = config.layout()
    check_overlay_inputs(config, regime, sentiment)
    history = compute_signals(config, bars)
    for at_ns, other in sorted(switches, key=lambda switch: switch[0]):
        _switch_signals(history, config, other, bars, at_ns)
    data = history.bars
    if data.n_bars == 0:
        raise DataError(f"{data.source}: no bars to backtest")
    # Inputs are given on the bars as passed; the backtest runs on the rows its symbols trade.
    rows = np.searchsorted(bars.ts_ns, data.ts_ns)
    n = len(layout.symbols)
    regime_codes = (
        np.zeros((0, n), np.int64)
        if regime is None
        else regime_history(regime, bars.ts_ns, rows, layout.symbols)
    )
    scores = (
        np.zeros((0, n))
        if sentiment is None
        else sentiment_history(sentiment, bars.ts_ns, rows, layout.symbols)
    )
    start = PortfolioState.initial(config) if state is None else state
    start.check(config)
    arrays = start.arrays()
    if trade_from_ns is not None:
        first = int(np.searchsorted(data.ts_ns, int(trade_from_ns), "left"))
        history.entries[:first] = False
        history.exits[:first] = False
    signals = Signals(
        history.entries,
        history.exits,
        history.stop_distance,
        history.take_profit_distance,
        history.trail_distance,
    )
    raw = compiled("backtest")(
        data.ts_ns, data.open, data.high, data.low, data.close, signals, regime_codes, scores,
        layout.setup, arrays,
    )  # fmt: skip
    run = PortfolioRun(*raw)
    if config.sim.periods_per_year is not None:
        ppy = float(config.sim.periods_per_year)
    else:
        ppy = infer_periods_per_year(data.ts_ns)
    return PortfolioResult(
        config=config,
        final_state=start.replace(int(data.ts_ns[-1]), arrays),
        periods_per_year=ppy,
        index=data.index,
        run=run,
    )


def _switch_signals(history, config: PortfolioConfig, other: PortfolioConfig, bars: Bars,
                    at_ns: int) -> None:  # fmt: skip
    """Overwrite ``history``'s signals from the bar at ``at_ns`` on with ``other``'s."""
    mine, theirs = config.layout(), other.layout()
    same = (
        mine.sleeves == theirs.sleeves
        and mine.symbols == theirs.symbols
        and np.array_equal(mine.member, theirs.member)
        and np.array_equal(mine.allocation, theirs.allocation)
    )
    if not same:
        raise ConfigError(
            f"switch at {pd.Timestamp(int(at_ns), tz='UTC')}: the configuration must keep the "
            "sleeves, their symbols and allocations; only strategy parameters can change"
        )
    switched = compute_signals(other, bars)
    first = int(np.searchsorted(history.bars.ts_ns, int(at_ns), "left"))
    for name in ("entries", "exits", "stop_distance", "take_profit_distance", "trail_distance"):
        getattr(history, name)[first:] = getattr(switched, name)[first:]


def _orders_frame(orders, fills, layout) -> pd.DataFrame:
    """The TargetOrder fields of every order (``decide`` returns the same records), the
    decision time, and how each filled."""
    status = fills["status"]
    done = status == FILL_DONE
    return pd.DataFrame(
        {"time": _times(orders["ts_ns"])}
        | order_columns(orders, layout)
        | {
            "status": np.where(done, "filled", np.where(status == FILL_PENDING, "pending", "none")),
            "fill_time": _times(np.where(done, fills["ts_ns"], 0)).where(done),
            "fill_units": np.where(done, fills["units"], np.nan),
            "fill_price": np.where(done, fills["price"], np.nan),
            "fill_fees": np.where(done, fills["fees"], np.nan),
        }
    )


def _times(ts_ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.to_datetime(ts_ns, unit="ns", utc=True)
