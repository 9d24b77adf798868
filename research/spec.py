"""Experiment specs: one TOML file says what a study runs, so it can be repeated exactly.

Loaded once at the edge into frozen dataclasses; unknown keys and bad values name the file and key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from quantshift.engine.config import SimConfig
from quantshift.engine.metrics import METRICS
from quantshift.errors import QuantShiftError
from quantshift.strategies import Strategy, add_strategy_path, get_strategy
from quantshift.strategies.grid import GridAxis
from quantshift.strategies.loading import absolute_reference, is_reference, strategy_path_entries
from quantshift.tables import Table, is_number, read_toml

SEARCH_METHODS = ("optuna", "grid")
SAMPLERS = ("tpe", "cmaes", "nsga2", "random", "grid")
MONTE_CARLO_METHODS = ("reshuffle", "bootstrap", "block")
MAX_LOCKBOX_FRACTION = 0.5


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

    # The gate's drawdown bound takes only the block bootstrap (a reshuffle of trades misses the
    # drawdowns inside them), so a spec that does not say otherwise gets the one that counts.
    method: str = "block"
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
class LockboxSpec:
    """The most recent part of the data that research never reads.

    ``fraction`` of the data window's bars (the last ones) is cut off before any search,
    walk-forward, Monte Carlo or PBO sees the data; ``quantshift promote`` evaluates the chosen
    parameters there once and records the look. 0 turns the lockbox off (the gate then fails
    its lockbox check unless waived).
    """

    fraction: float = 0.2


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
    lockbox: LockboxSpec = LockboxSpec()
    path: Path | None = None
    text: str = ""
    strategy_path: tuple[str, ...] = ()
    """Where the strategy comes from when not from quantshift (absolute files, modules)."""

    def get_strategy(self) -> Strategy:
        add_strategy_path(self.strategy_path)
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
    "lockbox",
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
    top, text = read_toml(path, "experiment spec")
    return parse_spec(top.raw, source=top.source, path=Path(path), text=text)


def parse_spec(
    raw: Mapping[str, Any], *, source: str = "<spec>", path: Path | None = None, text: str = ""
) -> ExperimentSpec:
    """Validate a spec already parsed into dicts (``load_spec`` reads the file)."""
    top = Table(raw, source)
    top.refuse_unknown(_TOP)
    exp = top.table("experiment", required=True)
    exp.refuse_unknown({"name", "strategy", "strategy_path", "seed"})
    name = exp.string("name", required=True)
    strategy_name = exp.string("strategy", required=True)
    seed = exp.integer("seed", default=0, minimum=0)
    # A reference or strategy_path entry in the spec is relative to the spec's directory.
    base = None if path is None else Path(path).resolve().parent
    try:
        strategy_path = strategy_path_entries(exp.get("strategy_path", []), base)
    except QuantShiftError as exc:
        raise exp.error("strategy_path", str(exc)) from None
    if is_reference(strategy_name):
        strategy_path.append(absolute_reference(strategy_name, base))
    try:
        add_strategy_path(strategy_path[:-1] if is_reference(strategy_name) else strategy_path)
        strategy = get_strategy(strategy_path[-1] if is_reference(strategy_name) else strategy_name)
    except QuantShiftError as exc:
        raise exp.error("strategy", str(exc)) from None

    data = parse_data_table(top.table("data", required=True))
    costs = top.table("costs").build(SimConfig)
    params_raw = top.table("params")
    try:
        params = strategy.resolve(params_raw.raw)
    except QuantShiftError as exc:
        raise params_raw.table_error(str(exc)) from None

    search = _search(top.table("search"), strategy)
    tracking = top.table("tracking")
    tracking.refuse_unknown({"uri", "experiment"})
    return ExperimentSpec(
        name=name,
        strategy=strategy.name,
        strategy_path=tuple(strategy_path),
        seed=seed,
        data=data,
        costs=costs,
        params=params,
        search=search,
        walk_forward=_walk(top.table("walk_forward")) if "walk_forward" in top else None,
        monte_carlo=_monte(top.table("monte_carlo")) if "monte_carlo" in top else None,
        pbo=_pbo(top.table("pbo")) if "pbo" in top else None,
        lockbox=_lockbox(top.table("lockbox")),
        tracking_uri=tracking.string("uri"),
        experiment=tracking.string("experiment") or name,
        path=path,
        text=text,
    )


def parse_data_table(table: Table) -> DataSpec:
    """Validate a spec's [data] table (source, symbols, start, end) into a DataSpec."""
    table.refuse_unknown({"source", "symbols", "start", "end"})
    symbols = table.get("symbols")
    if symbols is not None:
        if isinstance(symbols, str):
            symbols = [symbols]
        if (
            not isinstance(symbols, list)
            or not symbols
            or not all(isinstance(s, str) and s for s in symbols)
        ):
            raise table.error("symbols", "must be a non-empty list of symbol names")
        symbols = tuple(symbols)
    return DataSpec(
        source=table.string("source", required=True),
        symbols=symbols,
        start=_time(table, "start"),
        end=_time(table, "end"),
    )


def _search(table: Table, strategy: Strategy) -> SearchSpec:
    allowed = {f.name for f in fields(SearchSpec)}
    table.refuse_unknown(allowed)
    method = table.choice("method", SEARCH_METHODS, default="optuna")
    sampler = table.choice("sampler", SAMPLERS, default="tpe")
    objectives = table.get("objectives", ["sharpe"])
    if isinstance(objectives, str):
        objectives = [objectives]
    if not isinstance(objectives, list) or not objectives:
        raise table.error("objectives", "must be a metric name or a list of them")
    for metric in objectives:
        if metric not in METRICS:
            raise table.error(
                "objectives", f"unknown metric {metric!r}; metrics: {', '.join(METRICS)}"
            )
    if method == "grid" and len(objectives) > 1:
        raise table.error("objectives", "a grid search selects on one objective")
    space = table.table("space")
    names = set(strategy.param_names)
    checked: dict[str, Any] = {}
    for key, value in space.raw.items():
        if key not in names:
            raise space.error(
                key,
                f"strategy '{strategy.name}' has no such parameter; "
                f"parameters: {', '.join(strategy.param_names)}",
            )
        checked[key] = _space_entry(space, key, value, method)
    batch = table.integer("batch_size", default=None, minimum=1)
    return SearchSpec(
        method=method,
        sampler=sampler,
        trials=table.integer("trials", default=200, minimum=1),
        batch_size=batch,
        objectives=tuple(objectives),
        min_trades=table.integer("min_trades", default=1, minimum=0),
        space=checked,
        storage=table.string("storage"),
        study_name=table.string("study_name"),
    )


def _space_entry(space: Table, key: str, value: Any, method: str) -> Any:
    """A range table ``{low, high[, step]}``, a list of values, or a fixed number."""
    if _is_number(value):
        return float(value)
    if isinstance(value, list):
        if not value or not all(_is_number(v) for v in value):
            raise space.error(key, "a list of values must hold numbers")
        return [float(v) for v in value]
    if isinstance(value, Mapping):
        extra = set(value) - {"low", "high", "step"}
        if extra or "low" not in value or "high" not in value:
            raise space.error(key, "a range is {low = ..., high = ...[, step = ...]}")
        low, high = value["low"], value["high"]
        step = value.get("step")
        if not (_is_number(low) and _is_number(high)) or low > high:
            raise space.error(key, f"needs numbers low <= high, got {dict(value)}")
        if step is not None and (not _is_number(step) or step <= 0):
            raise space.error(key, f"step must be a positive number, got {step!r}")
        if (
            method == "grid"
            and step is None
            and not (float(low).is_integer() and float(high).is_integer())
        ):
            raise space.error(key, "a grid over a real range needs a step")
        return (float(low), float(high)) if step is None else (float(low), float(high), step)
    raise space.error(key, "must be {low, high[, step]}, a list or a number")


def grid_values(space_entry: Any) -> Sequence[float]:
    """Return the values a grid search tries for a validated search-space entry (a range is a
    :class:`~quantshift.strategies.grid.GridAxis`: counted by the grid's limit, not built)."""
    if isinstance(space_entry, float):
        return [space_entry]
    if isinstance(space_entry, list):
        return list(space_entry)
    low, high, *rest = space_entry
    return GridAxis(low, high, float(rest[0]) if rest else 1.0)


def _walk(table: Table) -> WalkForwardSpec:
    table.refuse_unknown({f.name for f in fields(WalkForwardSpec)})
    return WalkForwardSpec(
        train=_length(table, "train", required=True),
        test=_length(table, "test", required=True),
        anchored=table.boolean("anchored", default=False),
        step=_length(table, "step"),
        purge=table.integer("purge", default=0, minimum=0),
        embargo=table.integer("embargo", default=0, minimum=0),
    )


def _monte(table: Table) -> MonteCarloSpec:
    table.refuse_unknown({f.name for f in fields(MonteCarloSpec)})
    confidence = table.number("confidence", default=0.95)
    if not 0.5 < confidence < 1.0:
        raise table.error("confidence", f"must be in (0.5, 1), got {confidence}")
    ruin = table.number("ruin_drawdown_pct", default=50.0)
    if not 0.0 < ruin <= 100.0:
        raise table.error("ruin_drawdown_pct", f"must be in (0, 100], got {ruin}")
    block = table.get("block_length")
    if block is not None and (not _is_number(block) or block < 1):
        raise table.error("block_length", f"must be a number >= 1, got {block!r}")
    return MonteCarloSpec(
        method=table.choice("method", MONTE_CARLO_METHODS, MonteCarloSpec.method),
        paths=table.integer("paths", default=10_000, minimum=1),
        ruin_drawdown_pct=ruin,
        block_length=None if block is None else float(block),
        confidence=confidence,
    )


def _pbo(table: Table) -> PBOSpec:
    table.refuse_unknown({"splits", "max_trials"})
    splits = table.integer("splits", default=16, minimum=2)
    if splits % 2:
        raise table.error("splits", f"must be even, got {splits}")
    return PBOSpec(splits=splits, max_trials=table.integer("max_trials", default=1000, minimum=2))


def _lockbox(table: Table) -> LockboxSpec:
    table.refuse_unknown({"fraction"})
    fraction = table.number("fraction", default=LockboxSpec.fraction)
    if not 0.0 <= fraction <= MAX_LOCKBOX_FRACTION:
        raise table.error(
            "fraction", f"must be in [0, {MAX_LOCKBOX_FRACTION}] (0: no lockbox), got {fraction}"
        )
    return LockboxSpec(fraction=fraction)


def space_to_plain(space: Mapping[str, Any]) -> dict[str, Any]:
    """A validated search space as plain JSON: a range is ``{low, high[, step]}``, a list stays
    a list, a fixed value a number (a range and a list are both sequences in ``SearchSpec``)."""
    out: dict[str, Any] = {}
    for name, entry in space.items():
        if isinstance(entry, tuple):
            low, high, *rest = entry
            out[name] = {"low": low, "high": high, **({"step": rest[0]} if rest else {})}
        else:
            out[name] = list(entry) if isinstance(entry, list) else entry
    return out


def space_from_plain(plain: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`space_to_plain`."""
    out: dict[str, Any] = {}
    for name, entry in plain.items():
        if isinstance(entry, Mapping):
            bounds = (float(entry["low"]), float(entry["high"]))
            out[name] = (*bounds, entry["step"]) if "step" in entry else bounds
        elif isinstance(entry, list):
            out[name] = [float(v) for v in entry]
        else:
            out[name] = float(entry)
    return out


def _is_number(value: Any) -> bool:
    return is_number(value, finite=True)


def _time(table: Table, key: str) -> str | None:
    """A date or time pandas understands, kept as written."""
    value = table.get(key)
    if value is None:
        return None
    import pandas as pd

    try:
        pd.Timestamp(str(value))
    except ValueError:
        raise table.error(key, f"is not a date or time: {value!r}") from None
    return str(value)


def _length(table: Table, key: str, required: bool = False) -> int | str | None:
    """A window length: bars (positive int) or a time length pandas understands."""
    value = table.get(key)
    if value is None:
        if required:
            raise table.error(key, "is required (bars, or a time such as '252D')")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise table.error(key, f"must be positive, got {value}")
        return value
    if isinstance(value, str):
        import pandas as pd

        try:
            length = pd.Timedelta(value)
        except ValueError:
            length = None
        if length is None or length <= pd.Timedelta(0):
            raise table.error(key, f"must be bars or a positive time length, got {value!r}")
        return value
    raise table.error(key, f"must be bars (int) or a time length, got {value!r}")
