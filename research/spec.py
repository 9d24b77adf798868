"""Experiment specs: one TOML file says what a study runs, so it can be repeated exactly.

Loaded once at the edge into frozen dataclasses; unknown keys and bad values name the file and key.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from quantshift.engine.config import SimConfig
from quantshift.engine.metrics import METRICS
from quantshift.errors import ConfigError, QuantShiftError
from quantshift.strategies import Strategy, get_strategy
from quantshift.strategies.grid import GridAxis

SEARCH_METHODS = ("optuna", "grid")
SAMPLERS = ("tpe", "cmaes", "nsga2", "random", "grid")
MONTE_CARLO_METHODS = ("reshuffle", "bootstrap", "block")


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """Where the bars come from: a data spec, the universe and a time window (end exclusive)."""

    source: str
    symbols: tuple[str, ...] | None = None
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True, kw_only=True)
class SearchSpec:
    """How parameter sets are searched: an exhaustive grid (fused sweep) or an Optuna study.

    ``space`` maps a parameter to ``(low, high)``, ``(low, high, step)``, a list of values or a
    fixed number; parameters not named keep the strategy's full range (Optuna) or default (grid).
    """

    method: str = "optuna"
    sampler: str = "tpe"
    trials: int = 200
    batch_size: int | None = None
    objectives: tuple[str, ...] = ("sharpe",)
    min_trades: int = 1
    space: Mapping[str, Any] = field(default_factory=dict)
    storage: str | None = None
    study_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class WalkForwardSpec:
    """Walk-forward windows: lengths in bars (int) or time (``"3Y"``, ``"252D"``)."""

    train: int | str
    test: int | str
    anchored: bool = False
    step: int | str | None = None
    purge: int = 0
    embargo: int = 0


@dataclass(frozen=True, kw_only=True)
class MonteCarloSpec:
    """Monte Carlo resampling of the selected strategy's trades or returns."""

    method: str = "reshuffle"
    paths: int = 10_000
    ruin_drawdown_pct: float = 50.0
    block_length: float | None = None
    confidence: float = 0.95


@dataclass(frozen=True, kw_only=True)
class PBOSpec:
    """Probability of backtest overfitting: CSCV splits and the most trials to include."""

    splits: int = 16
    max_trials: int = 1000


@dataclass(frozen=True, kw_only=True)
class ExperimentSpec:
    """A validated experiment spec (see ``experiments/*.toml``)."""

    name: str
    strategy: str
    seed: int
    data: DataSpec
    costs: SimConfig
    params: Mapping[str, float]
    search: SearchSpec
    walk_forward: WalkForwardSpec | None
    monte_carlo: MonteCarloSpec | None
    pbo: PBOSpec | None
    tracking_uri: str | None
    experiment: str
    path: Path | None = None
    text: str = ""

    def get_strategy(self) -> Strategy:
        return get_strategy(self.strategy)

    def with_seed(self, seed: int) -> ExperimentSpec:
        """Return a copy with another seed (the same spec, another random draw)."""
        import dataclasses

        return dataclasses.replace(self, seed=int(seed))


_TOP = {
    "experiment",
    "data",
    "costs",
    "params",
    "search",
    "walk_forward",
    "monte_carlo",
    "pbo",
    "tracking",
}


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment spec TOML file.

    Raises
    ------
    ConfigError
        Naming the file, the key and what is allowed, for a missing file, bad TOML, an unknown
        section or key, a wrong type or value, an unknown strategy or parameter.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: experiment spec not found")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_spec(raw, source=str(path), path=path, text=text)


def parse_spec(
    raw: Mapping[str, Any], *, source: str = "<spec>", path: Path | None = None, text: str = ""
) -> ExperimentSpec:
    """Validate a spec already parsed into dicts (``load_spec`` reads the file)."""
    where = _Where(source)
    where.keys("", raw, _TOP)
    exp = where.table(raw, "experiment", required=True)
    where.keys("experiment", exp, {"name", "strategy", "seed"})
    name = where.string("experiment", exp, "name", required=True)
    strategy_name = where.string("experiment", exp, "strategy", required=True)
    seed = where.integer("experiment", exp, "seed", default=0, minimum=0)
    try:
        strategy = get_strategy(strategy_name)
    except QuantShiftError as exc:
        raise ConfigError(f"{source}: [experiment] strategy: {exc}") from None

    data = _data(where, where.table(raw, "data", required=True))
    costs_raw = where.table(raw, "costs")
    try:
        costs = SimConfig.build(None, **costs_raw)
    except (QuantShiftError, TypeError) as exc:
        raise ConfigError(f"{source}: [costs] {exc}") from None

    params_raw = where.table(raw, "params")
    try:
        params = strategy.resolve(params_raw)
    except QuantShiftError as exc:
        raise ConfigError(f"{source}: [params] {exc}") from None

    search = _search(where, where.table(raw, "search"), strategy)
    walk = raw.get("walk_forward")
    monte = raw.get("monte_carlo")
    pbo = raw.get("pbo")
    tracking = where.table(raw, "tracking")
    where.keys("tracking", tracking, {"uri", "experiment"})
    return ExperimentSpec(
        name=name,
        strategy=strategy.name,
        seed=seed,
        data=data,
        costs=costs,
        params=params,
        search=search,
        walk_forward=None if walk is None else _walk(where, where.table(raw, "walk_forward")),
        monte_carlo=None if monte is None else _monte(where, where.table(raw, "monte_carlo")),
        pbo=None if pbo is None else _pbo(where, where.table(raw, "pbo")),
        tracking_uri=where.string("tracking", tracking, "uri"),
        experiment=where.string("tracking", tracking, "experiment") or name,
        path=path,
        text=text,
    )


def _data(where: _Where, raw: Mapping[str, Any]) -> DataSpec:
    where.keys("data", raw, {"source", "symbols", "start", "end"})
    symbols = raw.get("symbols")
    if symbols is not None:
        if isinstance(symbols, str):
            symbols = [symbols]
        if (
            not isinstance(symbols, list)
            or not symbols
            or not all(isinstance(s, str) and s for s in symbols)
        ):
            raise where.error("data", "symbols", "must be a non-empty list of symbol names")
        symbols = tuple(symbols)
    return DataSpec(
        source=where.string("data", raw, "source", required=True),
        symbols=symbols,
        start=where.time("data", raw, "start"),
        end=where.time("data", raw, "end"),
    )


def _search(where: _Where, raw: Mapping[str, Any], strategy: Strategy) -> SearchSpec:
    allowed = {f.name for f in fields(SearchSpec)}
    where.keys("search", raw, allowed)
    method = where.choice("search", raw, "method", SEARCH_METHODS, default="optuna")
    sampler = where.choice("search", raw, "sampler", SAMPLERS, default="tpe")
    objectives = raw.get("objectives", ["sharpe"])
    if isinstance(objectives, str):
        objectives = [objectives]
    if not isinstance(objectives, list) or not objectives:
        raise where.error("search", "objectives", "must be a metric name or a list of them")
    for metric in objectives:
        if metric not in METRICS:
            raise where.error(
                "search", "objectives", f"unknown metric {metric!r}; metrics: {', '.join(METRICS)}"
            )
    if method == "grid" and len(objectives) > 1:
        raise where.error("search", "objectives", "a grid search selects on one objective")
    space = raw.get("space", {})
    if not isinstance(space, Mapping):
        raise where.error("search", "space", "must be a table of parameter = range")
    names = set(strategy.param_names)
    checked: dict[str, Any] = {}
    for key, value in space.items():
        if key not in names:
            raise where.error(
                "search.space",
                key,
                f"strategy '{strategy.name}' has no such parameter; "
                f"parameters: {', '.join(strategy.param_names)}",
            )
        checked[key] = _space_entry(where, key, value, method)
    batch = where.integer("search", raw, "batch_size", default=None, minimum=1)
    return SearchSpec(
        method=method,
        sampler=sampler,
        trials=where.integer("search", raw, "trials", default=200, minimum=1),
        batch_size=batch,
        objectives=tuple(objectives),
        min_trades=where.integer("search", raw, "min_trades", default=1, minimum=0),
        space=checked,
        storage=where.string("search", raw, "storage"),
        study_name=where.string("search", raw, "study_name"),
    )


def _space_entry(where: _Where, key: str, value: Any, method: str) -> Any:
    """A range table ``{low, high[, step]}``, a list of values, or a fixed number."""
    if _is_number(value):
        return float(value)
    if isinstance(value, list):
        if not value or not all(_is_number(v) for v in value):
            raise where.error("search.space", key, "a list of values must hold numbers")
        return [float(v) for v in value]
    if isinstance(value, Mapping):
        extra = set(value) - {"low", "high", "step"}
        if extra or "low" not in value or "high" not in value:
            raise where.error(
                "search.space", key, "a range is {low = ..., high = ...[, step = ...]}"
            )
        low, high = value["low"], value["high"]
        step = value.get("step")
        if not (_is_number(low) and _is_number(high)) or low > high:
            raise where.error("search.space", key, f"needs numbers low <= high, got {dict(value)}")
        if step is not None and (not _is_number(step) or step <= 0):
            raise where.error("search.space", key, f"step must be a positive number, got {step!r}")
        if (
            method == "grid"
            and step is None
            and not (float(low).is_integer() and float(high).is_integer())
        ):
            raise where.error("search.space", key, "a grid over a real range needs a step")
        return (float(low), float(high)) if step is None else (float(low), float(high), step)
    raise where.error("search.space", key, "must be {low, high[, step]}, a list or a number")


def grid_values(space_entry: Any) -> Sequence[float]:
    """Return the values a grid search tries for a validated search-space entry (a range is a
    :class:`~quantshift.strategies.grid.GridAxis`: counted by the grid's limit, not built)."""
    if isinstance(space_entry, float):
        return [space_entry]
    if isinstance(space_entry, list):
        return list(space_entry)
    low, high, *rest = space_entry
    return GridAxis(low, high, float(rest[0]) if rest else 1.0)


def _walk(where: _Where, raw: Mapping[str, Any]) -> WalkForwardSpec:
    where.keys("walk_forward", raw, {f.name for f in fields(WalkForwardSpec)})
    return WalkForwardSpec(
        train=where.length("walk_forward", raw, "train", required=True),
        test=where.length("walk_forward", raw, "test", required=True),
        anchored=where.boolean("walk_forward", raw, "anchored", default=False),
        step=where.length("walk_forward", raw, "step"),
        purge=where.integer("walk_forward", raw, "purge", default=0, minimum=0),
        embargo=where.integer("walk_forward", raw, "embargo", default=0, minimum=0),
    )


def _monte(where: _Where, raw: Mapping[str, Any]) -> MonteCarloSpec:
    where.keys("monte_carlo", raw, {f.name for f in fields(MonteCarloSpec)})
    confidence = where.number("monte_carlo", raw, "confidence", default=0.95)
    if not 0.5 < confidence < 1.0:
        raise where.error("monte_carlo", "confidence", f"must be in (0.5, 1), got {confidence}")
    ruin = where.number("monte_carlo", raw, "ruin_drawdown_pct", default=50.0)
    if not 0.0 < ruin <= 100.0:
        raise where.error("monte_carlo", "ruin_drawdown_pct", f"must be in (0, 100], got {ruin}")
    block = raw.get("block_length")
    if block is not None and (not _is_number(block) or block < 1):
        raise where.error("monte_carlo", "block_length", f"must be a number >= 1, got {block!r}")
    return MonteCarloSpec(
        method=where.choice("monte_carlo", raw, "method", MONTE_CARLO_METHODS, "reshuffle"),
        paths=where.integer("monte_carlo", raw, "paths", default=10_000, minimum=1),
        ruin_drawdown_pct=ruin,
        block_length=None if block is None else float(block),
        confidence=confidence,
    )


def _pbo(where: _Where, raw: Mapping[str, Any]) -> PBOSpec:
    where.keys("pbo", raw, {"splits", "max_trials"})
    splits = where.integer("pbo", raw, "splits", default=16, minimum=2)
    if splits % 2:
        raise where.error("pbo", "splits", f"must be even, got {splits}")
    return PBOSpec(
        splits=splits, max_trials=where.integer("pbo", raw, "max_trials", default=1000, minimum=2)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Where:
    """Typed getters whose errors name the file, the section and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, section: str, key: str, problem: str) -> ConfigError:
        place = f"[{section}] {key}" if section else key
        return ConfigError(f"{self.source}: {place}: {problem}")

    def keys(self, section: str, raw: Mapping[str, Any], allowed: set[str]) -> None:
        for key in raw:
            if key not in allowed:
                what = "section" if not section else "key"
                raise self.error(
                    section, key, f"unknown {what}; allowed: {', '.join(sorted(allowed))}"
                )

    def table(self, raw: Mapping[str, Any], key: str, required: bool = False) -> dict:
        value = raw.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.source}: missing section [{key}]")
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.source}: [{key}] must be a table")
        return dict(value)

    def string(self, section, raw, key, required=False) -> str | None:
        value = raw.get(key)
        if value is None:
            if required:
                raise self.error(section, key, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(section, key, f"must be a non-empty string, got {value!r}")
        return value

    def time(self, section, raw, key) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        import pandas as pd

        try:
            pd.Timestamp(str(value))
        except ValueError:
            raise self.error(section, key, f"is not a date or time: {value!r}") from None
        return str(value)

    def integer(self, section, raw, key, default, minimum) -> int | None:
        value = raw.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(section, key, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def number(self, section, raw, key, default) -> float:
        value = raw.get(key, default)
        if not _is_number(value):
            raise self.error(section, key, f"must be a number, got {value!r}")
        return float(value)

    def boolean(self, section, raw, key, default) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise self.error(section, key, f"must be true or false, got {value!r}")
        return value

    def choice(self, section, raw, key, allowed, default) -> str:
        value = raw.get(key, default)
        if value not in allowed:
            raise self.error(section, key, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def length(self, section, raw, key, required=False) -> int | str | None:
        """A window length: bars (positive int) or a time length pandas understands."""
        value = raw.get(key)
        if value is None:
            if required:
                raise self.error(section, key, "is required (bars, or a time such as '252D')")
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if value <= 0:
                raise self.error(section, key, f"must be positive, got {value}")
            return value
        if isinstance(value, str):
            import pandas as pd

            try:
                length = pd.Timedelta(value)
            except ValueError:
                length = None
            if length is None or length <= pd.Timedelta(0):
                raise self.error(
                    section, key, f"must be bars or a positive time length, got {value!r}"
                )
            return value
        raise self.error(section, key, f"must be bars (int) or a time length, got {value!r}")
