"""Portfolio settings: sleeves (strategy, parameters, symbols, capital), risk limits, policy.

Frozen, keyword-only and validated at construction; ``PortfolioConfig.from_dict`` reads a file's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from quantshift.engine.config import SimConfig
from quantshift.engine.records import config_dt
from quantshift.errors import ConfigError, QuantShiftError
from quantshift.portfolio.overlay import RegimeOverlay, SectorMap, SentimentFilter, regime_arrays
from quantshift.portfolio.rows import POLICIES, PortfolioSetup, limits_dt
from quantshift.strategies import Strategy, get_strategy
from quantshift.tables import Table

SLEEVE_SETTINGS = (
    "direction",
    "sizing",
    "size",
    "risk_per_trade",
    "kelly_fraction",
    "kelly_min_trades",
    "max_leverage",
    "use_stops",
)
"""SimConfig fields a sleeve may set for itself; the rest (cash, costs, fill, size_at) are
portfolio-wide."""
OVERLAY_TABLES = ("sectors", "regimes", "sentiment")
"""The optional tables of ``quantshift.portfolio.overlay`` a config file may hold."""

_ALLOCATION_SLACK = 1e-9  # 0.33 + 0.33 + 0.34 is 1.0000000000000002 in floating point
_LIMIT_BOUNDS = {
    "max_heat_pct": 100.0,
    "max_position_pct": 10_000.0,
    "max_gross_exposure_pct": 10_000.0,
    "daily_loss_limit_pct": 100.0,
    "max_drawdown_pct": 100.0,
    "max_position_correlation": 1.0,
    "max_sector_exposure_pct": 10_000.0,
}
"""Each limit and its largest value (inf or None turns it off)."""


@dataclass(frozen=True, kw_only=True)
class RiskLimits:
    """Portfolio risk limits, in percent of portfolio equity; ``math.inf`` (or None) disables one.

    Parameters
    ----------
    max_heat_pct : float
        Cap on portfolio heat: the sum over open positions of units times the distance from the
        price to the position's binding stop (its whole price when it has none). An entry that
        would exceed it is reduced to fit, and skipped when nothing fits.
    max_position_pct : float
        Cap on one symbol's notional, summed over the sleeves holding it.
    max_gross_exposure_pct : float
        Cap on the sum of all positions' notional (100 = no leverage).
    daily_loss_limit_pct : float
        Halt new entries once equity falls this far below the day's start (the equity at the
        last decision of the previous UTC day).
    max_drawdown_pct : float
        Halt new entries once equity falls this far below its peak (the circuit breaker).
    max_position_correlation : float
        In (0, 1]: skip an entry when the rolling correlation of its symbol's one-bar returns
        with a symbol already held (after this bar's exits, and counting the entries decided
        before it on this bar), times the two sides (+1 long, -1 short), exceeds this. So a
        long is skipped beside a correlated long, but a short against a correlated long is a
        hedge and passes. The correlation is Pearson's over the last
        ``correlation_window_bars`` returns up to the decision bar, on the returns both symbols
        have (a return needs the symbol's close at both ends of the step); with fewer than
        half the window of them it is unknown and does not skip. Off by default.
    correlation_window_bars : int
        Returns in that correlation (2..10000; default 60).
    max_sector_exposure_pct : float
        Cap on the summed notional (long and short alike) of the positions in one sector,
        the new entry included; an entry that would exceed it is reduced to fit, skipped when
        nothing fits. Needs the config's sector map. Off by default.

    A halt stays until :meth:`PortfolioState.resumed` clears it (a person does, live); exits
    and protective stops go on while halted. Entries are capped in sleeve then symbol order.
    """

    max_heat_pct: float | None = 10.0
    max_position_pct: float | None = 20.0
    max_gross_exposure_pct: float | None = 100.0
    daily_loss_limit_pct: float | None = 5.0
    max_drawdown_pct: float | None = 15.0
    max_position_correlation: float | None = None
    correlation_window_bars: int = 60
    max_sector_exposure_pct: float | None = None

    def __post_init__(self) -> None:
        for name, high in _LIMIT_BOUNDS.items():
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, math.inf)
                continue
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not (ok and (0.0 < value <= high or value == math.inf)):
                raise ConfigError(
                    f"{name}={value!r} must be a number in (0, {high:g}], or inf/None for no limit"
                )
        window = self.correlation_window_bars
        if isinstance(window, bool) or not isinstance(window, int) or not 2 <= window <= 10_000:
            raise ConfigError(f"correlation_window_bars={window!r} must be an integer in 2..10000")

    @classmethod
    def none(cls) -> RiskLimits:
        """Return limits that never bind: the portfolio then trades exactly as its sleeves would
        alone (the single-strategy backtest, for one sleeve on one symbol)."""
        return cls(**dict.fromkeys(_LIMIT_BOUNDS, math.inf))

    @property
    def history_rows(self) -> int:
        """Closes up to the decision bar the decision reads (the correlation's window)."""
        return self.correlation_window_bars + 1 if self.max_position_correlation < math.inf else 1

    def to_record(self, conflict: str, whole_units: bool) -> np.ndarray:
        """Return the kernels' one-element ``limits_dt`` array: fractions of equity, the
        conflict policy code and whether capped entries round down to whole units."""
        out = np.zeros(1, limits_dt)
        rec = out[0]
        rec.max_heat = self.max_heat_pct / 100.0
        rec.max_position = self.max_position_pct / 100.0
        rec.max_gross = self.max_gross_exposure_pct / 100.0
        rec.daily_loss = self.daily_loss_limit_pct / 100.0
        rec.max_drawdown = self.max_drawdown_pct / 100.0
        rec.policy = POLICIES.index(conflict)
        rec.whole_units = whole_units
        rec.max_correlation = self.max_position_correlation
        rec.correlation_window = self.correlation_window_bars
        rec.correlation_min_returns = max(2, (self.correlation_window_bars + 1) // 2)
        rec.history_rows = self.history_rows
        rec.max_sector = self.max_sector_exposure_pct / 100.0
        rec.min_sentiment = -math.inf
        rec.sentiment_scaling = 0.0
        return out


@dataclass(frozen=True, kw_only=True)
class Sleeve:
    """One strategy with its parameters, symbols and share of the portfolio's capital.

    Parameters
    ----------
    strategy : str or Strategy
        A registered strategy name, or a Strategy object.
    symbols : sequence of str
        Symbols the sleeve trades; each (sleeve, symbol) position is tracked on its own.
    allocation : float
        Fraction of the portfolio's starting cash given to the sleeve, in (0, 1]. The sleeve
        then keeps its own cash: its fills and fees never touch another sleeve's capital.
    name : str
        Unique name (defaults to the strategy's).
    params : mapping
        Parameter values by name; the rest keep their defaults.
    settings : mapping
        The sleeve's own sizing and direction (:data:`SLEEVE_SETTINGS`, see SimConfig). Sizes
        are fractions of the sleeve's equity: its cash plus its positions at the last close.
    stop_atr : float or None
        Stop distance in ATRs (over ``atr_window`` bars) for entries whose strategy sets no stop:
        it sizes risk-sized entries, counts toward heat and is placed as a protective stop.
    atr_window : int
        Bars of the ATR behind ``stop_atr``.
    """

    strategy: str | Strategy
    symbols: tuple[str, ...]
    allocation: float
    name: str = ""
    params: Mapping[str, float] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    stop_atr: float | None = None
    atr_window: int = 14

    def __post_init__(self) -> None:
        where = f"sleeve '{self.name or getattr(self.strategy, 'name', self.strategy)}'"
        try:
            strat = get_strategy(self.strategy)
        except QuantShiftError as e:
            raise ConfigError(f"{where}: strategy: {e}") from None
        if not self.name:
            object.__setattr__(self, "name", strat.name)
        symbols = (self.symbols,) if isinstance(self.symbols, str) else tuple(self.symbols)
        if not symbols or not all(isinstance(s, str) and s for s in symbols):
            raise ConfigError(f"{where}: symbols must be a non-empty list of names")
        if len(set(symbols)) != len(symbols):
            raise ConfigError(f"{where}: symbols lists a symbol twice: {list(symbols)}")
        object.__setattr__(self, "symbols", symbols)
        a = self.allocation
        if isinstance(a, bool) or not isinstance(a, int | float) or not 0.0 < a <= 1.0:
            raise ConfigError(f"{where}: allocation={a!r} must be in (0, 1]")
        try:
            object.__setattr__(self, "params", strat.resolve(self.params))
        except QuantShiftError as e:
            raise ConfigError(f"{where}: params: {e}") from None
        unknown = sorted(set(self.settings) - set(SLEEVE_SETTINGS))
        if unknown:
            raise ConfigError(
                f"{where}: settings: unknown key(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(SLEEVE_SETTINGS)}"
            )
        object.__setattr__(self, "settings", dict(self.settings))
        if self.stop_atr is not None and not (
            isinstance(self.stop_atr, int | float) and 0.0 < self.stop_atr < math.inf
        ):
            raise ConfigError(f"{where}: stop_atr={self.stop_atr!r} must be a positive number")
        if isinstance(self.atr_window, bool) or self.atr_window not in range(1, 1001):
            raise ConfigError(f"{where}: atr_window={self.atr_window!r} must be 1..1000")

    @property
    def strategy_object(self) -> Strategy:
        return get_strategy(self.strategy)

    @property
    def strategy_name(self) -> str:
        return self.strategy_object.name

    def sim_config(self, base: SimConfig) -> SimConfig:
        """Return the portfolio's SimConfig with this sleeve's settings applied."""
        try:
            cfg = SimConfig.build(base, **self.settings)
        except ConfigError as e:
            raise ConfigError(f"sleeve '{self.name}': settings: {e}") from None
        if cfg.sizing == "risk" and not self.strategy_object.uses_stops and self.stop_atr is None:
            raise ConfigError(
                f"sleeve '{self.name}': sizing='risk' needs stop distances and strategy "
                f"'{self.strategy_name}' sets none; set stop_atr (e.g. 2.0) or another sizing"
            )
        return cfg

    def warmup_bars(self) -> int:
        """Return bars of history the sleeve's signals need before they can fire."""
        warmup = self.strategy_object.warmup_bars(self.params)
        return max(warmup, self.atr_window) if self.stop_atr is not None else warmup

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "strategy": self.strategy_name,
            "symbols": list(self.symbols),
            "allocation": self.allocation,
            "params": dict(self.params),
            "settings": dict(self.settings),
            "atr_window": self.atr_window,
        }
        if self.stop_atr is not None:
            out["stop_atr"] = self.stop_atr
        return out


@dataclass(frozen=True, kw_only=True)
class PortfolioConfig:
    """Everything the decision layer needs: sleeves, fill settings, risk limits, policy.

    Parameters
    ----------
    sleeves : sequence of Sleeve
        At least one; allocations must sum to at most 1 (the rest stays in cash).
    sim : SimConfig
        Fill model and costs shared by all sleeves (``cash`` is the portfolio's starting
        capital), and the default sizing and direction each sleeve may override.
    limits : RiskLimits
        Portfolio risk limits; ``RiskLimits.none()`` turns them all off.
    conflict : {"net", "priority", "flat"}
        What happens when sleeves want opposite sides of a symbol. "net" (default): each sleeve
        keeps its own position and the broker holds their net, so every sleeve earns what it
        would alone. "priority": the first sleeve in ``sleeves`` order that is long or short
        decides; a sleeve on the other side has its entry skipped and its position closed
        (exit reason "conflict"). "flat": no sleeve holds the symbol while they disagree.
    sectors : SectorMap, optional
        Symbol -> sector, for ``limits.max_sector_exposure_pct``; every symbol must have one.
    regimes : RegimeOverlay, optional
        Per-regime entry multipliers per sleeve, exposure and stop scales; the backtest and
        ``decide`` then need a regime input (``quantshift.portfolio.overlay``).
    sentiment : SentimentFilter, optional
        News-score veto and resizing of entries; the backtest and ``decide`` then need a
        sentiment input.
    """

    sleeves: tuple[Sleeve, ...]
    sim: SimConfig = field(default_factory=SimConfig)
    limits: RiskLimits = field(default_factory=RiskLimits)
    conflict: Literal["net", "priority", "flat"] = "net"
    sectors: SectorMap | None = None
    regimes: RegimeOverlay | None = None
    sentiment: SentimentFilter | None = None

    def __post_init__(self) -> None:
        sleeves = tuple(self.sleeves)
        if not sleeves or not all(isinstance(s, Sleeve) for s in sleeves):
            raise ConfigError("sleeves must be a non-empty list of Sleeve")
        object.__setattr__(self, "sleeves", sleeves)
        names = [s.name for s in sleeves]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ConfigError(f"sleeves: name '{duplicate}' is used twice; give each a name")
        total = math.fsum(s.allocation for s in sleeves)
        if total > 1.0 + _ALLOCATION_SLACK:
            raise ConfigError(
                f"sleeves: allocation values sum to {total:g}, more than 1 "
                f"({', '.join(f'{s.name}={s.allocation:g}' for s in sleeves)})"
            )
        if not isinstance(self.sim, SimConfig):
            raise ConfigError(f"sim must be a SimConfig, got {type(self.sim).__name__}")
        if not isinstance(self.limits, RiskLimits):
            raise ConfigError(f"limits must be RiskLimits, got {type(self.limits).__name__}")
        if self.conflict not in POLICIES:
            raise ConfigError(
                f"conflict={self.conflict!r} is not allowed; choose one of {', '.join(POLICIES)}"
            )
        for sleeve in sleeves:
            sleeve.sim_config(self.sim)
        self._check_overlay()

    def _check_overlay(self) -> None:
        for name, kind in (
            ("sectors", SectorMap),
            ("regimes", RegimeOverlay),
            ("sentiment", SentimentFilter),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise ConfigError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
        if self.sectors is not None:
            self.sectors.codes(self.symbols)
        elif self.limits.max_sector_exposure_pct < math.inf:
            raise ConfigError(
                "limits.max_sector_exposure_pct needs a sector map (sectors: a CSV file or a "
                "symbol = sector table)"
            )
        if self.regimes is not None:
            self.regimes.check_sleeves(self.sleeve_names)
            scaled = [n for n, r in self.regimes.rules.items() if r.exposure_scale < 1.0]
            if scaled and self.limits.max_gross_exposure_pct == math.inf:
                raise ConfigError(
                    f"regimes.{scaled[0]}.exposure_scale scales max_gross_exposure_pct, "
                    "which is off; set a gross exposure limit"
                )

    # ------------------------------------------------------------------ derived
    @property
    def sleeve_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sleeves)

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every sleeve's symbols, in order of first appearance."""
        return tuple(dict.fromkeys(sym for s in self.sleeves for sym in s.symbols))

    def warmup_bars(self) -> int:
        """Return the history (bars) the slowest sleeve needs before its signals can fire, or
        the correlation limit's window of closes when that is longer."""
        return max(self.limits.history_rows, *(s.warmup_bars() for s in self.sleeves))

    def layout(self) -> Layout:
        """Return the kernels' arrays for this configuration (built once)."""
        cached = self.__dict__.get("_layout")
        if cached is None:
            cached = Layout.build(self)
            object.__setattr__(self, "_layout", cached)
        return cached

    # ------------------------------------------------------------------ plain dicts
    @classmethod
    def from_dict(
        cls, mapping: Mapping[str, Any], source: str = "<dict>", base_dir: Path | None = None
    ) -> PortfolioConfig:
        """Build a config from plain data (a parsed TOML/YAML file); errors name ``source``,
        the table and the key.

        Keys: ``sleeves`` (list of tables with the Sleeve fields), ``sim`` (SimConfig
        fields), ``limits`` (RiskLimits fields), ``conflict``, and the overlay tables
        ``sectors``, ``regimes``, ``sentiment`` (``quantshift.portfolio.overlay``; a sector
        file is relative to ``base_dir``). Unknown keys are refused.
        """
        top = Table(mapping, source)
        top.refuse_unknown(("sleeves", "sim", "limits", "conflict", *OVERLAY_TABLES))
        return cls.from_tables(
            sleeves=top.tables("sleeves"),
            sim=top.table("sim"),
            limits=top.table("limits"),
            conflict_in=top,
            overlay_in=top,
            base_dir=base_dir,
        )

    @classmethod
    def from_tables(
        cls,
        *,
        sleeves: Sequence[Table],
        sim: Table,
        limits: Table,
        conflict_in: Table,
        overlay_in: Table | None = None,
        base_dir: Path | None = None,
    ) -> PortfolioConfig:
        """Build a config from a file's tables, whatever that file names them (the live
        config's ``[costs]`` and ``[risk]``); ``conflict_in`` is the table holding the
        ``conflict`` key, ``overlay_in`` the one holding the :data:`OVERLAY_TABLES` (a sector
        file is relative to ``base_dir``). Errors name the file, the table and the key."""
        built = [table.build(Sleeve) for table in sleeves]
        sim_config, risk_limits = sim.build(SimConfig), limits.build(RiskLimits)
        conflict = conflict_in.choice("conflict", POLICIES, "net")
        overlay: dict[str, Any] = {}
        if overlay_in is not None:
            if "sectors" in overlay_in:
                overlay["sectors"] = SectorMap.from_table(overlay_in.table("sectors"), base_dir)
            if "regimes" in overlay_in:
                overlay["regimes"] = RegimeOverlay.from_table(overlay_in.table("regimes"))
            if "sentiment" in overlay_in:
                overlay["sentiment"] = overlay_in.table("sentiment").build(SentimentFilter)
        try:
            return cls(
                sleeves=tuple(built),
                sim=sim_config,
                limits=risk_limits,
                conflict=conflict,
                **overlay,
            )
        except ConfigError as e:
            raise ConfigError(f"{sim.source}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """Return plain data that :meth:`from_dict` turns back into an equal config."""
        return {
            "sleeves": [s.to_dict() for s in self.sleeves],
            "sim": self.sim.to_dict(),
            "limits": {
                k: (None if v == math.inf else v)
                for k, v in dataclasses.asdict(self.limits).items()
            },
            "conflict": self.conflict,
        } | {
            name: getattr(self, name).to_dict()
            for name in OVERLAY_TABLES
            if getattr(self, name) is not None
        }


@dataclass(frozen=True, eq=False)
class Layout:
    """A configuration as the kernels read it: sleeves on axis 0, symbols on axis 1."""

    sleeves: tuple[str, ...]
    symbols: tuple[str, ...]
    strategies: tuple[str, ...]
    member: np.ndarray  # bool (n_sleeves, n_symbols): the sleeve trades the symbol
    setup: PortfolioSetup  # what the kernels read: member, sleeve configs, limits, fill
    allocation: np.ndarray
    params: tuple[np.ndarray, ...]
    cash: float

    @classmethod
    def build(cls, config: PortfolioConfig) -> Layout:
        symbols = config.symbols
        member = np.zeros((len(config.sleeves), len(symbols)), dtype=np.bool_)
        sleeve_cfg = np.zeros(len(config.sleeves), config_dt)
        for s, sleeve in enumerate(config.sleeves):
            member[s, [symbols.index(x) for x in sleeve.symbols]] = True
            sleeve_cfg[s] = sleeve.sim_config(config.sim).to_record()[0]
        limits = config.limits.to_record(config.conflict, config.sim.whole_units)
        if config.sentiment is not None:
            limits["min_sentiment"] = config.sentiment.min_score
            limits["sentiment_scaling"] = config.sentiment.size_scaling
        if config.sectors is not None and config.limits.max_sector_exposure_pct < math.inf:
            sector = config.sectors.codes(symbols)
        else:
            sector = np.full(len(symbols), -1, np.int64)
        allocation, exposure, stop = regime_arrays(config.regimes, config.sleeve_names)
        for array in (member, sleeve_cfg, limits, sector):
            array.flags.writeable = False
        return cls(
            sleeves=config.sleeve_names,
            symbols=symbols,
            strategies=tuple(s.strategy_name for s in config.sleeves),
            member=member,
            setup=PortfolioSetup(
                member=member,
                sleeve_cfg=sleeve_cfg,
                limits=limits,
                fill_close=config.sim.fill == "close",
                sector=sector,
                regime_allocation=allocation,
                regime_exposure=exposure,
                regime_stop=stop,
            ),
            allocation=np.array([s.allocation for s in config.sleeves]),
            params=tuple(s.strategy_object.vector(s.params) for s in config.sleeves),
            cash=config.sim.cash,
        )
