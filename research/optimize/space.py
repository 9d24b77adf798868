"""The search space: a strategy's declared parameter ranges, narrowed by a study's overrides,
as Optuna distributions plus the parameters the study fixes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)

from quantshift.errors import ConfigError, UnknownNameError
from quantshift.strategies import Param, Strategy

MAX_GRID_AXIS = 10_000


@dataclass(frozen=True)
class SearchSpace:
    """Optuna distributions of the searched parameters plus the fixed ones."""

    names: tuple[str, ...]
    distributions: dict[str, BaseDistribution]
    fixed: dict[str, float]

    @classmethod
    def build(cls, strategy: Strategy, search_space: Mapping[str, Any] | None) -> SearchSpace:
        """Return the space of ``strategy`` with ``search_space``'s overrides applied."""
        spec = dict(search_space or {})
        unknown = [k for k in spec if k not in strategy.param_names]
        if unknown:
            raise UnknownNameError(
                f"search_space names unknown parameter '{unknown[0]}' of strategy "
                f"'{strategy.name}'; parameters: {', '.join(strategy.param_names)}"
            )
        distributions, fixed = {}, {}
        for p in strategy.params:
            dist = _distribution(p, spec.get(p.name, (p.low, p.high)), strategy.name)
            if isinstance(dist, BaseDistribution):
                distributions[p.name] = dist
            else:
                fixed[p.name] = dist
        if not distributions:
            raise ConfigError(f"search_space of '{strategy.name}' fixes every parameter")
        return cls(strategy.param_names, distributions, fixed)

    @staticmethod
    def from_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
        """The ``search_space`` argument that rebuilds a stored space."""
        out: dict[str, Any] = dict(settings["fixed_params"])
        out.update({k: json_to_distribution(v) for k, v in settings["search_space"].items()})
        return out

    def settings(self) -> dict[str, Any]:
        """Return the space as a study stores it (JSON)."""
        return {
            "search_space": {k: distribution_to_json(d) for k, d in self.distributions.items()},
            "fixed_params": dict(self.fixed),
        }

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask ``trial`` for a value of every searched parameter."""
        out = {}
        for name, d in self.distributions.items():
            if isinstance(d, IntDistribution):
                out[name] = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
            elif isinstance(d, FloatDistribution):
                out[name] = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
            else:
                out[name] = trial.suggest_categorical(name, d.choices)
        return out

    def row(self, params: Mapping[str, Any]) -> list[float]:
        """Return the parameter vector (every parameter, the fixed ones included)."""
        return [float(params[n]) if n in params else self.fixed[n] for n in self.names]

    def grid(self) -> dict[str, list]:
        """The values GridSampler walks through; raise if a parameter is continuous."""
        out = {}
        for name, d in self.distributions.items():
            if isinstance(d, CategoricalDistribution):
                out[name] = list(d.choices)
                continue
            if d.step is None:
                raise ConfigError(
                    f"grid search needs discrete values for '{name}': give (low, high, step) "
                    "or a list of values in search_space"
                )
            count = round((d.high - d.low) / d.step) + 1
            if count > MAX_GRID_AXIS:
                raise ConfigError(
                    f"grid search: '{name}' has {count:,} values (limit {MAX_GRID_AXIS:,}); "
                    "give a step or a list in search_space"
                )
            values = d.low + d.step * np.arange(count)
            out[name] = (
                [int(v) for v in values] if isinstance(d, IntDistribution) else values.tolist()
            )
        return out


def satisfies_constraints(strategy: Strategy, row: np.ndarray) -> bool:
    """Return whether a parameter vector satisfies every constraint of ``strategy``."""
    values = dict(zip(strategy.param_names, row, strict=True))
    return all(c.holds(values) for c in strategy.constraints)


def _distribution(p: Param, spec: Any, strategy: str) -> BaseDistribution | float:
    """One parameter's search range from its search_space entry, checked against the Param."""
    where = f"search_space['{p.name}'] of '{strategy}'"
    if isinstance(spec, BaseDistribution):
        if isinstance(spec, CategoricalDistribution):
            return _distribution(p, list(spec.choices), strategy)
        spec = {"low": spec.low, "high": spec.high, "step": spec.step, "log": spec.log}
    if isinstance(spec, Mapping) and "choices" in spec:
        spec = list(spec["choices"])
    if isinstance(spec, list | range | np.ndarray):
        choices = [p.check(v, strategy) for v in spec]
        if not choices:
            raise ConfigError(f"{where}: the list of choices is empty")
        choices = [int(v) for v in choices] if p.integer else choices
        return CategoricalDistribution(choices) if len(choices) > 1 else float(choices[0])
    if isinstance(spec, tuple):
        if len(spec) not in (2, 3):
            raise ConfigError(f"{where}: expected (low, high) or (low, high, step), got {spec!r}")
        spec = dict(zip(("low", "high", "step"), spec, strict=False))
    if not isinstance(spec, Mapping):
        return p.check(spec, strategy)
    extra = sorted(set(spec) - {"low", "high", "step", "log"})
    if extra or "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: expected keys low, high[, step, log], got {sorted(spec)}")
    low, high = p.check(spec["low"], strategy), p.check(spec["high"], strategy)
    step, log = spec.get("step"), bool(spec.get("log", False))
    if low >= high:
        if low == high:
            return low
        raise ConfigError(f"{where}: low {low:g} must not exceed high {high:g}")
    if log and step not in (None, 1):
        raise ConfigError(f"{where}: a log-scaled range takes no step")
    if p.integer:
        if step is not None and (float(step) != int(step) or int(step) < 1):
            raise ConfigError(f"{where}: integer parameter needs a whole step >= 1, got {step!r}")
        return IntDistribution(int(low), int(high), step=int(step or 1), log=log)
    if step is not None and not float(step) > 0:
        raise ConfigError(f"{where}: step must be positive, got {step!r}")
    return FloatDistribution(low, high, step=None if step is None else float(step), log=log)
