"""Overlay inputs of the decision layer: market regimes, news sentiment and the sector map.

The configuration (validated once, frozen) and the per-bar inputs a caller feeds the decision.

How the inputs reach the decision
---------------------------------
Regimes are the labels of :data:`REGIMES` by index: 0 bull trending, 1 bear trending, 2 high
volatility, 3 low volatility, 4 range-bound; ``-1`` (or NaN in pandas input) means unknown
(no prediction yet) and leaves a bar's entries as they are. A label is a *market* regime, one
per bar for the whole portfolio; a per-symbol label is accepted too (a 2-D input), and each
entry then reads its own symbol's. Sentiment is a score per symbol per bar in [-1, 1]
(NaN: no news), e.g. the mean score of the headlines published before the bar's close.

Both must be causal: the value at bar t may use only what was known at bar t's close (a
walk-forward model's out-of-sample prediction, news published before the close). The core
reads the value at the decision bar and nothing else; it cannot check where it came from.

- Backtest: ``qs.portfolio_backtest(config, bars, regime=..., sentiment=...)``.
  ``regime`` is a ``pd.Series`` of labels on a DatetimeIndex (one per bar, the market
  regime), a ``pd.DataFrame`` (time x symbol) for per-symbol labels, or a NumPy array with one
  row per bar of ``bars`` as given (1-D: market; 2-D: columns in ``config.symbols`` order).
  pandas inputs are aligned on the bars' times; a bar they do not cover is unknown (-1) / has
  no news (NaN). ``sentiment`` likewise: a DataFrame (time x symbol, missing columns: no
  news) or an (n_bars, n_symbols) array in ``config.symbols`` order.
- Live, bar by bar: ``decide(state, signals, config, regime=..., sentiment=...)`` with
  ``regime`` an int label (or a :data:`REGIMES` name), or one per symbol (a mapping symbol ->
  label, or a sequence in ``config.symbols`` order), and ``sentiment`` a mapping symbol ->
  score (missing: no news) or a sequence in ``config.symbols`` order. ``signals`` is
  ``compute_signals(config, window).at(-1)`` on a window of at least ``config.warmup_bars()``
  bars: it carries the recent closes the correlation limit reads (``BarSignals.recent_close``),
  so a runner passes nothing more for the correlation and sector limits.

A config with ``regimes`` needs a regime input and one with ``sentiment`` needs a sentiment
input (pass unknown / NaN when there is none), and an input the config does not use is an
error: the overlay is never on or off by accident.

Configuration (``PortfolioConfig`` fields, and the same tables in a config file)::

    [regimes.bear_trending]                # any of the REGIMES names; absent regimes: neutral
    allocation = { breakout_momentum = 0.5 }   # sleeve -> entry size multiplier in [0, 1]
    exposure_scale = 0.5                   # gross exposure cap for new entries x this
    stop_scale = 0.75                      # entries' stop and trail distances x this

    [sentiment]
    min_score = -0.5      # an entry whose side-aligned score is below it is vetoed
    size_scaling = 0.5    # size x (1 - size_scaling x adverse score), adverse = max(0, -aligned)

    [sectors]
    file = "sectors.csv"  # columns symbol,sector; relative to the config file
    map = { SPY = "index" }   # and/or inline; every traded symbol needs a sector

The side-aligned score is the score for a long entry and minus the score for a short one
(good news is adverse to a short). Multipliers only ever take size away: to favour a sleeve
in a regime, give the others less. :meth:`RegimeOverlay.legacy` is the legacy system's table.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantshift.errors import ConfigError
from quantshift.tables import Table, is_number

REGIMES = ("bull_trending", "bear_trending", "high_volatility", "low_volatility", "range_bound")
"""Regime labels by index: what a regime input's integers mean."""
REGIME_UNKNOWN = -1
"""The label of a bar whose regime is not known: its entries are left as they are."""

_RULE_KEYS = ("allocation", "exposure_scale", "stop_scale")
_STOP_SCALE_MAX = 10.0


def _fraction(value: Any, where: str) -> float:
    if not (is_number(value, finite=True) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{where}={value!r} must be a number in [0, 1]")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class RegimeRule:
    """What one regime does to the entries decided while it holds.

    Parameters
    ----------
    allocation : mapping
        Sleeve name -> multiplier in [0, 1] of its entries' size (absent sleeves: 1; 0: the
        sleeve opens nothing in this regime). Positions already open are not touched.
    exposure_scale : float
        Multiplier in [0, 1] of ``max_gross_exposure_pct`` for new entries (0: none at all).
    stop_scale : float
        Multiplier in (0, 10] of new entries' stop and trailing distances (below 1 tightens;
        a risk-sized entry grows with a tighter stop, its risk stays the same).
    """

    allocation: Mapping[str, float] = field(default_factory=dict)
    exposure_scale: float = 1.0
    stop_scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.allocation, Mapping):
            raise ConfigError(
                f"allocation must be a table of sleeve = multiplier, got {self.allocation!r}"
            )
        allocation = {str(k): _fraction(v, f"allocation.{k}") for k, v in self.allocation.items()}
        object.__setattr__(self, "allocation", allocation)
        object.__setattr__(self, "exposure_scale", _fraction(self.exposure_scale, "exposure_scale"))
        s = self.stop_scale
        if not (is_number(s, finite=True) and 0.0 < s <= _STOP_SCALE_MAX):
            raise ConfigError(f"stop_scale={s!r} must be a number in (0, {_STOP_SCALE_MAX:g}]")
        object.__setattr__(self, "stop_scale", float(s))

    def to_dict(self) -> dict[str, Any]:
        return {
            "allocation": dict(self.allocation),
            "exposure_scale": self.exposure_scale,
            "stop_scale": self.stop_scale,
        }


@dataclass(frozen=True)
class RegimeOverlay:
    """Per-regime rules (:class:`RegimeRule`) by :data:`REGIMES` name; absent ones are neutral."""

    rules: Mapping[str, RegimeRule]

    def __post_init__(self) -> None:
        if not isinstance(self.rules, Mapping):
            raise ConfigError("regimes must be a table of regime name -> rule")
        for name, rule in self.rules.items():
            if name not in REGIMES:
                raise ConfigError(
                    f"regimes: unknown regime {name!r}; allowed: {', '.join(REGIMES)}"
                )
            if not isinstance(rule, RegimeRule):
                raise ConfigError(f"regimes.{name} must be a RegimeRule")
        object.__setattr__(self, "rules", {r: self.rules[r] for r in REGIMES if r in self.rules})

    @classmethod
    def from_table(cls, table: Table) -> RegimeOverlay:
        """Build from a config file's ``[regimes]`` table (one sub-table per regime)."""
        table.refuse_unknown(REGIMES)
        rules = {}
        for name in table.raw:
            rule_table = table.table(name)
            rule_table.refuse_unknown(_RULE_KEYS)
            rules[name] = rule_table.build(RegimeRule)
        return cls(rules)

    @classmethod
    def legacy(
        cls,
        breakout: str | None = "breakout_momentum",
        mean_reversion: str | None = "rsi_reversion",
        bollinger: str | None = "bollinger_bounce",
    ) -> RegimeOverlay:
        """Return the legacy system's table for the sleeves of these names (None: the config
        has no such sleeve): favour breakout in bull and low-volatility regimes, mean
        reversion in high volatility, Bollinger bounce in range-bound markets; in a bear
        market halve every sleeve, cap gross exposure at half its limit and tighten stops to
        three quarters of their distance."""
        roles = (breakout, mean_reversion, bollinger)

        def allocation(*multipliers: float) -> dict[str, float]:
            return {n: m for n, m in zip(roles, multipliers, strict=True) if n is not None}

        return cls(
            {
                "bull_trending": RegimeRule(allocation=allocation(1.0, 0.5, 0.5)),
                "bear_trending": RegimeRule(
                    allocation=allocation(0.5, 0.5, 0.5), exposure_scale=0.5, stop_scale=0.75
                ),
                "high_volatility": RegimeRule(allocation=allocation(0.5, 1.0, 0.5)),
                "low_volatility": RegimeRule(allocation=allocation(1.0, 0.5, 0.75)),
                "range_bound": RegimeRule(allocation=allocation(0.25, 0.75, 1.0)),
            }
        )

    def check_sleeves(self, sleeves: Sequence[str]) -> None:
        """Raise ConfigError naming an allocation key that is not one of ``sleeves``."""
        for name, rule in self.rules.items():
            for sleeve in rule.allocation:
                if sleeve not in sleeves:
                    raise ConfigError(
                        f"regimes.{name}.allocation: no sleeve named {sleeve!r}; "
                        f"sleeves: {', '.join(sleeves)}"
                    )

    def arrays(self, sleeves: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the kernels' (allocation (n_regimes, n_sleeves), exposure, stop) arrays."""
        return regime_arrays(self, sleeves)

    def to_dict(self) -> dict[str, Any]:
        return {name: rule.to_dict() for name, rule in self.rules.items()}


def regime_arrays(
    overlay: RegimeOverlay | None, sleeves: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the kernels' per-regime arrays (all ones without an overlay)."""
    allocation = np.ones((len(REGIMES), len(sleeves)))
    exposure = np.ones(len(REGIMES))
    stop = np.ones(len(REGIMES))
    if overlay is not None:
        for name, rule in overlay.rules.items():
            r = REGIMES.index(name)
            for s, sleeve in enumerate(sleeves):
                allocation[r, s] = rule.allocation.get(sleeve, 1.0)
            exposure[r] = rule.exposure_scale
            stop[r] = rule.stop_scale
    for array in (allocation, exposure, stop):
        array.flags.writeable = False
    return allocation, exposure, stop


@dataclass(frozen=True, kw_only=True)
class SentimentFilter:
    """Veto and resize entries by their symbol's news score at the decision bar.

    Parameters
    ----------
    min_score : float
        In [-1, 1]: an entry whose side-aligned score (the score for a buy, minus it for a
        short sale) is below this is vetoed ("sentiment").
    size_scaling : float
        In [0, 1]: an entry that passes is sized ``1 - size_scaling * max(0, -aligned)`` times
        its size (good news never enlarges it). A symbol without news (NaN) is left alone.
    """

    min_score: float = -0.5
    size_scaling: float = 0.5

    def __post_init__(self) -> None:
        m = self.min_score
        if not (is_number(m, finite=True) and -1.0 <= m <= 1.0):
            raise ConfigError(f"min_score={m!r} must be a number in [-1, 1]")
        object.__setattr__(self, "min_score", float(m))
        object.__setattr__(self, "size_scaling", _fraction(self.size_scaling, "size_scaling"))

    def to_dict(self) -> dict[str, Any]:
        return {"min_score": self.min_score, "size_scaling": self.size_scaling}


@dataclass(frozen=True)
class SectorMap:
    """Symbol -> sector, and where it was read (named by every error about it)."""

    sectors: Mapping[str, str]
    source: str = field(default="<config>", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.sectors, Mapping):
            raise ConfigError(f"{self.source}: sectors must map symbol -> sector")
        for symbol, sector in self.sectors.items():
            if not (isinstance(symbol, str) and symbol and isinstance(sector, str) and sector):
                raise ConfigError(
                    f"{self.source}: sector of {symbol!r} must be a non-empty string, "
                    f"got {sector!r}"
                )
        object.__setattr__(self, "sectors", dict(self.sectors))

    @classmethod
    def from_csv(cls, path: str | Path) -> SectorMap:
        """Read a CSV file with columns ``symbol`` and ``sector`` (a symbol listed once)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: sector map file not found")
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if "symbol" not in columns or "sector" not in columns:
                raise ConfigError(
                    f"{path}: a sector map needs columns symbol and sector, got {columns}"
                )
            sectors: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                symbol, sector = (row["symbol"] or "").strip(), (row["sector"] or "").strip()
                if not symbol or not sector:
                    raise ConfigError(f"{path}: line {line}: empty symbol or sector")
                if symbol in sectors:
                    raise ConfigError(f"{path}: line {line}: symbol {symbol!r} listed twice")
                sectors[symbol] = sector
        return cls(sectors, str(path))

    @classmethod
    def from_table(cls, table: Table, base_dir: Path | None = None) -> SectorMap:
        """Build from a config file's ``[sectors]`` table: ``file`` (CSV, relative to
        ``base_dir``) and/or ``map`` (symbol = sector); a symbol in both must agree."""
        table.refuse_unknown(("file", "map"))
        sectors: dict[str, str] = {}
        sources = []
        name = table.string("file")
        if name is not None:
            path = Path(name)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            try:
                from_file = cls.from_csv(path)
            except ConfigError as exc:
                raise table.error("file", str(exc)) from None
            sectors.update(from_file.sectors)
            sources.append(from_file.source)
        inline = table.table("map")
        for symbol, sector in inline.raw.items():
            if not isinstance(sector, str) or not sector:
                raise inline.error(symbol, f"must be a sector name, got {sector!r}")
            if sectors.get(symbol, sector) != sector:
                raise inline.error(
                    symbol, f"is {sector!r} here but {sectors[symbol]!r} in {sources[0]}"
                )
            sectors[symbol] = sector
        if inline.raw:
            sources.append(f"{table.source} [{inline.name}]")
        if not sources:
            raise table.table_error('needs file = "PATH.csv" or a map table')
        return cls(sectors, " + ".join(sources))

    def codes(self, symbols: Sequence[str]) -> np.ndarray:
        """Return each symbol's sector code (sectors numbered in order of first appearance);
        a symbol without a sector is an error naming it and this map's source."""
        names: dict[str, int] = {}
        out = np.empty(len(symbols), np.int64)
        for k, symbol in enumerate(symbols):
            sector = self.sectors.get(symbol)
            if sector is None:
                raise ConfigError(
                    f"{self.source}: no sector for symbol {symbol!r} "
                    "(the sector cap needs every traded symbol's sector)"
                )
            out[k] = names.setdefault(sector, len(names))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"map": dict(self.sectors)}


# ---------------------------------------------------------------------- per-bar inputs
def regime_code(value: Any, where: str) -> int:
    """Return the label index of one regime value: an int in -1..4, a REGIMES name, or
    None/NaN (unknown)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return REGIME_UNKNOWN
    if isinstance(value, str):
        if value in REGIMES:
            return REGIMES.index(value)
    elif isinstance(value, int | np.integer | float | np.floating) and not isinstance(value, bool):
        if float(value).is_integer() and REGIME_UNKNOWN <= value < len(REGIMES):
            return int(value)
    raise ConfigError(
        f"{where}: regime {value!r} is not a label; use 0..{len(REGIMES) - 1} "
        f"({', '.join(REGIMES)}), -1 or NaN for unknown"
    )


def regime_row(value: Any, symbols: Sequence[str]) -> np.ndarray:
    """Return one bar's regime codes per symbol from a label, a mapping symbol -> label (a
    missing symbol: unknown) or a sequence in ``symbols`` order."""
    n = len(symbols)
    if isinstance(value, Mapping):
        _refuse_unknown_symbols(value, symbols, "regime")
        return np.array([regime_code(value.get(s), f"regime[{s}]") for s in symbols], np.int64)
    if isinstance(value, str) or np.ndim(value) == 0:
        return np.full(n, regime_code(value, "regime"), np.int64)
    values = list(value)
    if len(values) != n:
        raise ConfigError(f"regime must have one label per symbol ({n}), got {len(values)}")
    pairs = zip(values, symbols, strict=True)
    return np.array([regime_code(v, f"regime[{s}]") for v, s in pairs], np.int64)


def sentiment_row(value: Any, symbols: Sequence[str]) -> np.ndarray:
    """Return one bar's scores per symbol from a mapping symbol -> score (missing: NaN) or a
    sequence in ``symbols`` order, checked to lie in [-1, 1] or be NaN."""
    if isinstance(value, Mapping):
        _refuse_unknown_symbols(value, symbols, "sentiment")
        row = np.array([_score(value.get(s)) for s in symbols], np.float64)
    else:
        row = np.array([_score(v) for v in np.ravel(np.asarray(value, dtype=object))])
        if row.shape != (len(symbols),):
            raise ConfigError(
                f"sentiment must have one score per symbol ({len(symbols)}), got {row.shape}"
            )
    check_scores(row, "sentiment")
    return row


def regime_history(
    value: Any, ts_ns: np.ndarray, rows: np.ndarray, symbols: Sequence[str]
) -> np.ndarray:
    """Return an (n_rows, n_symbols) int64 array of regime codes for a backtest.

    ``value`` holds integer labels (NaN: unknown): a pandas Series/DataFrame aligned by time
    on ``ts_ns`` (the bars as given), or an array with one row per bar as given; ``rows``
    picks the bars the backtest runs on.
    """
    if isinstance(value, pd.Series | pd.DataFrame):
        raw = _aligned(value, ts_ns, symbols, "regime").to_numpy()
    else:
        raw = _array_rows(value, len(ts_ns), len(symbols), "regime")
    try:
        labels = np.asarray(raw, dtype=np.float64)[rows]
    except (TypeError, ValueError):
        raise ConfigError(
            "regime: a history of labels must be numbers 0..4 (NaN: unknown)"
        ) from None
    labels = labels.reshape(len(rows), -1)
    known = ~np.isnan(labels)
    outside = (labels < REGIME_UNKNOWN) | (labels >= len(REGIMES))
    bad = known & ((labels != np.round(labels)) | outside)
    if bad.any():
        value = float(labels[bad][0])
        regime_code(int(value) if value.is_integer() else value, "regime")  # raises
    codes = np.where(known, labels, REGIME_UNKNOWN).astype(np.int64)
    return np.ascontiguousarray(np.broadcast_to(codes, (len(rows), len(symbols))))


def sentiment_history(
    value: Any, ts_ns: np.ndarray, rows: np.ndarray, symbols: Sequence[str]
) -> np.ndarray:
    """Return an (n_rows, n_symbols) float array of scores for a backtest (as
    :func:`regime_history`; a symbol missing from a DataFrame has no news)."""
    if isinstance(value, pd.Series | pd.DataFrame):
        if isinstance(value, pd.Series):
            raise ConfigError("sentiment must be a DataFrame (time x symbol), not a Series")
        raw = _aligned(value, ts_ns, symbols, "sentiment").to_numpy(dtype=np.float64)
    else:
        raw = _array_rows(value, len(ts_ns), len(symbols), "sentiment").astype(np.float64)
        if raw.ndim != 2:
            raise ConfigError("sentiment must be 2-D: one score per bar and symbol")
    scores = np.ascontiguousarray(raw[rows])
    check_scores(scores, "sentiment")
    return scores


def check_scores(scores: np.ndarray, where: str) -> None:
    """Raise ConfigError when a score is outside [-1, 1] (NaN is allowed: no news)."""
    bad = np.abs(scores) > 1.0  # NaN compares False
    if bad.any():
        raise ConfigError(
            f"{where}: scores must be in [-1, 1] or NaN, got {scores[bad].ravel()[0]!r}"
        )


def _score(value: Any) -> float:
    if value is None:
        return math.nan
    if not is_number(value) and not isinstance(value, np.floating | np.integer):
        raise ConfigError(f"sentiment: score {value!r} is not a number")
    return float(value)


def _refuse_unknown_symbols(value: Mapping, symbols: Sequence[str], what: str) -> None:
    unknown = sorted(set(value) - set(symbols))
    if unknown:
        raise ConfigError(f"{what}: symbol(s) {', '.join(map(str, unknown))} not in the config")


def _aligned(value, ts_ns: np.ndarray, symbols: Sequence[str], what: str):
    if not isinstance(value.index, pd.DatetimeIndex):
        raise ConfigError(f"{what}: a pandas input needs a DatetimeIndex (the bars' times)")
    index = value.index if value.index.tz is not None else value.index.tz_localize("UTC")
    if index.has_duplicates:
        raise ConfigError(f"{what}: the index lists a time twice")
    times = pd.to_datetime(ts_ns, unit="ns", utc=True)
    if isinstance(value, pd.Series):
        return value.set_axis(index).reindex(times).to_frame()
    _refuse_unknown_symbols(dict.fromkeys(value.columns), symbols, what)
    return value.set_axis(index).reindex(index=times, columns=list(symbols))


def _array_rows(value, n_bars: int, n_symbols: int, what: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim not in (1, 2) or array.shape[0] != n_bars:
        raise ConfigError(
            f"{what}: an array needs one row per bar of the bars given ({n_bars}), "
            f"got shape {array.shape}"
        )
    if array.ndim == 2 and array.shape[1] != n_symbols:
        raise ConfigError(
            f"{what}: a 2-D array needs one column per config symbol ({n_symbols}), "
            f"got shape {array.shape}"
        )
    return array
