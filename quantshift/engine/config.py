"""Simulation settings: a frozen, validated config and its float64 vector form for the kernels.

Numba kernels read settings from one float64 vector (cacheable, no Python objects inside).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from quantshift.errors import ConfigError

FILLS = ("next-open", "close")
DIRECTIONS = ("long", "short", "both")
SIZINGS = ("fraction", "risk", "kelly")

# Positions in the config vector; the kernels index it with these constants.
CFG_CASH = 0
CFG_FEE_RATE = 1
CFG_SLIPPAGE_RATE = 2
CFG_FILL = 3
CFG_DIRECTION = 4
CFG_SIZING = 5
CFG_SIZE = 6
CFG_RISK = 7
CFG_KELLY_FRACTION = 8
CFG_KELLY_MIN_TRADES = 9
CFG_MAX_LEVERAGE = 10
CFG_WHOLE_UNITS = 11
CFG_USE_STOPS = 12
CFG_LEN = 13

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
    max_leverage: float = 1.0
    whole_units: bool = False
    use_stops: bool = True
    periods_per_year: float | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("fill", FILLS), ("direction", DIRECTIONS), ("sizing", SIZINGS)):
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

    def to_vector(self) -> np.ndarray:
        """Return the float64 vector the kernels read."""
        v = np.zeros(CFG_LEN, dtype=np.float64)
        v[CFG_CASH] = self.cash
        v[CFG_FEE_RATE] = self.fees_bps / 1e4
        v[CFG_SLIPPAGE_RATE] = self.slippage_bps / 1e4
        v[CFG_FILL] = FILLS.index(self.fill)
        v[CFG_DIRECTION] = DIRECTIONS.index(self.direction)
        v[CFG_SIZING] = SIZINGS.index(self.sizing)
        v[CFG_SIZE] = self.size
        v[CFG_RISK] = self.risk_per_trade
        v[CFG_KELLY_FRACTION] = self.kelly_fraction
        v[CFG_KELLY_MIN_TRADES] = self.kelly_min_trades
        v[CFG_MAX_LEVERAGE] = self.max_leverage
        v[CFG_WHOLE_UNITS] = float(self.whole_units)
        v[CFG_USE_STOPS] = float(self.use_stops)
        return v

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{name}={value!r} must be between {low:g} and {high:g}")
