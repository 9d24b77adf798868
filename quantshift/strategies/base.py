"""The strategy contract: a declared parameter space plus one causal numba signal function.

A strategy never names an optimiser: research and live read the same declaration.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from quantshift.errors import ConfigError, UnknownNameError
from quantshift.strategies.checks import check_signal, warmup_function
from quantshift.strategies.grid import ParameterGrid

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, kw_only=True)
class Param:
    """One tunable parameter: its default, inclusive range and whether it is an integer."""

    name: str
    default: float
    low: float
    high: float
    integer: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not self.low <= self.default <= self.high:
            raise ConfigError(
                f"parameter '{self.name}': default {self.default} outside [{self.low}, {self.high}]"
            )

    def check(self, value: float, strategy: str) -> float:
        """Return ``value`` as float after checking type and range; raise ConfigError otherwise."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"strategy '{strategy}': parameter '{self.name}' must be a number, got {value!r}"
            ) from None
        if not math.isfinite(number):
            raise ConfigError(f"strategy '{strategy}': parameter '{self.name}' is {value!r}")
        if self.integer and number != int(number):
            raise ConfigError(
                f"strategy '{strategy}': parameter '{self.name}' must be a whole number, "
                f"got {value!r}"
            )
        if not self.low <= number <= self.high:
            raise ConfigError(
                f"strategy '{strategy}': parameter '{self.name}'={value!r} outside the allowed "
                f"range [{self.low:g}, {self.high:g}]"
            )
        return number


@dataclass(frozen=True, kw_only=True)
class Constraint:
    """A relation two parameters must satisfy, e.g. ``Constraint("fast", "<", "slow")``."""

    left: str
    op: Literal["<", "<=", ">", ">="]
    right: str

    def holds(self, values: Mapping[str, float]) -> bool:
        return _OPS[self.op](values[self.left], values[self.right])

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """A strategy: parameter space, warm-up rule and numba signal function.

    The signal function has the signature::

        signal_nb(open, high, low, close, volume, params,
                  entries, exits, stop_dist, take_profit_dist, trail_dist) -> None

    All inputs are contiguous float64 1-D arrays of one symbol's bars (bars the symbol lacks are
    removed beforehand); ``params`` is the float64 parameter vector in declaration order. The
    caller pre-fills ``entries``/``exits`` with False and the three distance arrays with NaN; the
    function sets, for bar t, values that depend on bars 0..t only (causality is tested for every
    registered strategy). Distances are in price units, measured from the entry fill price, and
    read at the bar whose signal opens the position.

    Decorate the signal function with plain ``@numba.njit`` (no ``cache``): the engine inlines it
    into cached per-strategy kernels whose cache key covers the strategy's source, so an edit
    never runs stale machine code.

    The constructor checks the declaration (a numba function with these arguments, reading only
    declared ``params[k]``; ``warmup`` a function giving whole bars, or an int) and raises a
    one-line ConfigError naming the file, the function and what is wrong.
    """

    name: str
    description: str
    params: tuple[Param, ...]
    signal_nb: Any
    warmup: Callable[[Mapping[str, float]], int] | int
    constraints: tuple[Constraint, ...] = ()
    uses_stops: bool = False
    _names: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"a strategy needs a non-empty name, got {self.name!r}")
        params = tuple(self.params) if isinstance(self.params, list | tuple) else None
        if params is None or not all(isinstance(p, Param) for p in params):
            raise ConfigError(
                f"strategy '{self.name}': params must be a tuple of Param(...), got {self.params!r}"
            )
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "constraints", tuple(self.constraints))
        names = tuple(p.name for p in params)
        object.__setattr__(self, "_names", names)
        if len(set(names)) != len(names):
            raise ConfigError(f"strategy '{self.name}': duplicate parameter names {names}")
        for c in self.constraints:
            if not isinstance(c, Constraint):
                raise ConfigError(f"strategy '{self.name}': constraints must be Constraint(...)")
            for side in (c.left, c.right):
                if side not in names:
                    raise ConfigError(
                        f"strategy '{self.name}': constraint '{c}' names unknown parameter '{side}'"
                    )
        check_signal(self.name, self.signal_nb, names)
        object.__setattr__(self, "warmup", warmup_function(self.name, self.warmup, self.defaults()))

    @property
    def param_names(self) -> tuple[str, ...]:
        return self._names

    def defaults(self) -> dict[str, float]:
        """Return the default parameter values by name."""
        return {p.name: p.default for p in self.params}

    def resolve(self, overrides: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Return defaults updated with ``overrides``, validated.

        Checks names, types, ranges and constraints; raises a ConfigError naming the problem.
        """
        values = self.defaults()
        for key, value in (overrides or {}).items():
            if key not in values:
                raise UnknownNameError(
                    f"strategy '{self.name}' has no parameter '{key}'; "
                    f"parameters: {', '.join(self._names)}"
                )
            values[key] = value
        checked = {p.name: p.check(values[p.name], self.name) for p in self.params}
        for c in self.constraints:
            if not c.holds(checked):
                shown = ", ".join(f"{n}={checked[n]:g}" for n in (c.left, c.right))
                raise ConfigError(f"strategy '{self.name}': constraint {c} violated ({shown})")
        return checked

    def vector(self, overrides: Mapping[str, Any] | None = None) -> np.ndarray:
        """Return the validated parameter vector (float64, declaration order)."""
        values = self.resolve(overrides)
        return np.array([values[n] for n in self._names], dtype=np.float64)

    def warmup_bars(self, overrides: Mapping[str, Any] | None = None) -> int:
        """Return the index of the first bar at which an entry or exit can fire."""
        return int(self.warmup(self.resolve(overrides)))

    def grid(
        self, axes: Mapping[str, Iterable[float]], *, max_sets: int | None = None
    ) -> np.ndarray:
        """Return the parameter matrix of the Cartesian product of ``axes``.

        Parameters not named keep their defaults; a value repeated on an axis is tried once.
        Combinations violating a constraint are dropped. The product is counted before it is
        built: more than ``max_sets`` combinations (default
        :func:`quantshift.strategies.grid.max_grid_sets`) raise ConfigError naming the count,
        as do values outside a parameter's range.
        """
        return self.parameter_grid(axes, max_sets=max_sets).matrix()

    def parameter_grid(
        self, axes: Mapping[str, Iterable[float]], *, max_sets: int | None = None
    ) -> ParameterGrid:
        """Return the validated, counted grid of ``axes``, to be generated block by block."""
        unknown = [k for k in axes if k not in self._names]
        if unknown:
            raise UnknownNameError(
                f"strategy '{self.name}' has no parameter {unknown[0]!r}; "
                f"parameters: {', '.join(self._names)}"
            )
        return ParameterGrid(self, axes, max_sets=max_sets)

    def check_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Validate a (n_sets, n_params) parameter matrix row by row; return it as float64."""
        matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
        if matrix.ndim != 2 or matrix.shape[1] != len(self._names):
            raise ConfigError(
                f"strategy '{self.name}': parameter sets need {len(self._names)} columns "
                f"({', '.join(self._names)}), got shape {matrix.shape}"
            )
        for row in matrix:
            self.resolve(dict(zip(self._names, row, strict=True)))
        return np.ascontiguousarray(matrix)
