"""Simulation settings: a frozen, validated config and its record form for the kernels.

Numba kernels read settings from one ``config_dt`` record (cacheable, no Python objects inside).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from quantshift.engine.records import config_dt
from quantshift.errors import ConfigError

FILLS = ("next-open", "close")
DIRECTIONS = ("long", "short", "both")
SIZINGS = ("fraction", "risk", "kelly")
SIZE_AT = ("fill", "decision")

FILL_NEXT_OPEN = 0
FILL_CLOSE = 1
DIRECTION_LONG = 0
DIRECTION_SHORT = 1
DIRECTION_BOTH = 2
SIZING_FRACTION = 0
SIZING_RISK = 1
SIZING_KELLY = 2


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """How orders are filled, costed and sized.

    Parameters
    ----------
    cash : float
        Starting capital per symbol.
    fees_bps : float
        Commission in basis points of traded notional, charged on entry and exit.
    slippage_bps : float
        Adverse price move in basis points applied to every fill (buys higher, sells lower).
    fill : {"next-open", "close"}
        A signal on bar t's close fills at bar t+1's open (default) or at bar t's close.
    direction : {"long", "short", "both"}
        Entries open longs (shorts for "short"); with "both", entries go long and exits go
        short, each reversing an opposite position.
    sizing : {"fraction", "risk", "kelly"}
        Units per entry: ``size`` of equity; ``risk_per_trade`` of equity lost at the stop
        distance; or ``kelly_fraction`` of the Kelly fraction estimated from the trades closed
        so far (``size`` until ``kelly_min_trades`` have closed). Kelly sizing follows its own
        advice: once the estimate is <= 0 no further entry is taken, so it stays frozen there.
    size : float
        Fraction of equity committed per entry (fees included) for "fraction" sizing.
    risk_per_trade : float
        Fraction of equity at risk per trade for "risk" sizing.
    kelly_fraction, kelly_min_trades
        Scale of the Kelly fraction and how many closed trades it needs first.
    size_at : {"fill", "decision"}
        When an entry's units are fixed. "fill" (default, the research convention): at the
        fill, from the fill price and the equity then. "decision": when the order is decided,
        from the decision bar's close (slippage and fees counted as if it filled there) and the
        equity then (cash plus positions marked at that close), as a venue's market order must
        name its quantity before the open; the live runner sizes this way. Every sizing rule
        and ``whole_units`` apply at the decision. The fill buys or sells those units at its
        own price, except when a gap makes the cash short: the units are then cut to what
        ``max_leverage`` allows at the fill price (units x fill price after slippage x (1 + fee
        rate) <= ``max_leverage`` x equity at the fill, rounded down with ``whole_units``), so
        with ``max_leverage`` <= 1 a symbol's cash never goes negative; after a gap the other
        way the decided units fill and the cash left over stays. Stop-loss, take-profit and
        trailing levels are distances from the fill price under either setting.
    max_leverage : float
        Cap on position notional as a multiple of equity, for every sizing rule.
    whole_units : bool
        Round units down to whole numbers (shares); fractional units otherwise.
    use_stops : bool
        Apply the strategy's stop-loss, take-profit and trailing-stop distances.
    periods_per_year : float or None
        Bars per year for annualised metrics; None infers it from each symbol's timestamps.
    """

    cash: float = 100_000.0
    fees_bps: float = 0.0
    slippage_bps: float = 0.0
    fill: Literal["next-open", "close"] = "next-open"
    direction: Literal["long", "short", "both"] = "long"
    sizing: Literal["fraction", "risk", "kelly"] = "fraction"
    size: float = 1.0
    risk_per_trade: float = 0.01
    kelly_fraction: float = 0.5
    kelly_min_trades: int = 20
    size_at: Literal["fill", "decision"] = "fill"
    max_leverage: float = 1.0
    whole_units: bool = False
    use_stops: bool = True
    periods_per_year: float | None = None

    def __post_init__(self) -> None:
        for name, allowed in (
            ("fill", FILLS),
            ("direction", DIRECTIONS),
            ("sizing", SIZINGS),
            ("size_at", SIZE_AT),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} is not allowed; choose one of "
                    + ", ".join(allowed)
                )
        _positive("cash", self.cash)
        _in_range("fees_bps", self.fees_bps, 0.0, 1000.0)
        _in_range("slippage_bps", self.slippage_bps, 0.0, 1000.0)
        _in_range("max_leverage", self.max_leverage, 1e-9, 100.0)
        _in_range("size", self.size, 1e-9, self.max_leverage)
        _in_range("risk_per_trade", self.risk_per_trade, 1e-9, 1.0)
        _in_range("kelly_fraction", self.kelly_fraction, 1e-9, 1.0)
        _in_range("kelly_min_trades", self.kelly_min_trades, 1, 1_000_000)
        if self.periods_per_year is not None:
            _positive("periods_per_year", self.periods_per_year)

    @classmethod
    def build(cls, config: SimConfig | None = None, **overrides: Any) -> SimConfig:
        """Return ``config`` (or the defaults) with ``overrides`` applied; unknown keys raise."""
        base = config or cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"unknown simulation setting(s) {', '.join(unknown)}; "
                f"settings: {', '.join(sorted(known))}"
            )
        return dataclasses.replace(base, **overrides) if overrides else base

    def to_record(self) -> np.ndarray:
        """Return the settings as a one-element ``config_dt`` array, what the kernels read."""
        out = np.zeros(1, config_dt)
        rec = out[0]
        rec.cash = self.cash
        rec.fee_rate = self.fees_bps / 1e4
        rec.slippage_rate = self.slippage_bps / 1e4
        rec.fill_at = FILLS.index(self.fill)
        rec.direction = DIRECTIONS.index(self.direction)
        rec.sizing = SIZINGS.index(self.sizing)
        rec.size_fraction = self.size
        rec.risk_per_trade = self.risk_per_trade
        rec.kelly_fraction = self.kelly_fraction
        rec.kelly_min_trades = self.kelly_min_trades
        rec.size_at_decision = self.size_at == "decision"
        rec.max_leverage = self.max_leverage
        rec.whole_units = self.whole_units
        rec.use_stops = self.use_stops
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{name}={value!r} must be between {low:g} and {high:g}")
