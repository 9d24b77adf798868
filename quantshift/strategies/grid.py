"""Parameter grids: counted before anything is built, refused over a limit, generated in blocks.

A grid of a few axes can name billions of combinations; nothing here materialises more than one
block of them at a time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from quantshift.errors import ConfigError

if TYPE_CHECKING:
    from quantshift.strategies.base import Strategy

MAX_GRID_SETS_ENV = "QUANTSHIFT_MAX_GRID_SETS"
DEFAULT_MAX_GRID_SETS = 1_000_000
"""Combinations a grid may have unless ``$QUANTSHIFT_MAX_GRID_SETS`` or a caller says otherwise."""
BLOCK_SETS = 65_536
"""Combinations generated (and constraint-filtered) per block."""
# Tolerance for an axis whose STOP is START + k * STEP up to float rounding (0.1:0.3:0.1).
_STEP_SLACK = 1e-9


class GridAxis(Sequence[float]):
    """The values ``START, START + STEP, ...`` up to ``STOP`` inclusive, computed on demand.

    Its length is known arithmetically, so a grid is counted before a value is built.
    """

    def __init__(self, start: float, stop: float, step: float) -> None:
        if not all(math.isfinite(v) for v in (start, stop, step)) or step <= 0 or stop < start:
            raise ConfigError(
                f"grid axis {start:g}:{stop:g}:{step:g}: need finite START <= STOP and STEP > 0"
            )
        self.start, self.stop, self.step = float(start), float(stop), float(step)
        self._length = math.floor((self.stop - self.start) / self.step + _STEP_SLACK) + 1

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        return self.start + index * self.step

    def __iter__(self) -> Iterator[float]:
        return (self.start + i * self.step for i in range(self._length))

    def __repr__(self) -> str:
        return f"GridAxis({self.start:g}:{self.stop:g}:{self.step:g}, {self._length} values)"


def max_grid_sets() -> int:
    """Return the combination limit: ``$QUANTSHIFT_MAX_GRID_SETS`` or the default."""
    raw = os.environ.get(MAX_GRID_SETS_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_GRID_SETS
    try:
        limit = int(raw.replace("_", ""))
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(f"{MAX_GRID_SETS_ENV}={raw!r}: must be a positive whole number")
    return limit


class ParameterGrid:
    """The Cartesian product of a strategy's grid axes, validated and counted, not yet built.

    Parameters
    ----------
    strategy : Strategy
        Whose parameters the axes name; unnamed parameters keep their defaults.
    axes : mapping of str to iterable of float
        Values per parameter. A sized axis (list, range, :class:`GridAxis`) is counted without
        being expanded; repeated values are tried once.
    max_sets : int, optional
        Refuse a product of more combinations than this (default :func:`max_grid_sets`).

    Raises
    ------
    ConfigError
        For an empty axis, a value outside a parameter's range, or too many combinations (the
        message names the count).
    """

    def __init__(
        self,
        strategy: Strategy,
        axes: Mapping[str, Iterable[float]],
        *,
        max_sets: int | None = None,
    ) -> None:
        self.strategy = strategy
        limit = max_grid_sets() if max_sets is None else int(max_sets)
        if limit < 1:
            raise ConfigError(f"the grid limit must be a positive number of sets, got {max_sets}")
        sized = {name: _sized(values) for name, values in axes.items()}
        lengths = {p.name: len(sized.get(p.name, (p.default,))) for p in strategy.params}
        for name, length in lengths.items():
            if length == 0:
                raise ConfigError(f"strategy '{strategy.name}': grid for '{name}' is empty")
        self.n_combinations = math.prod(lengths.values())
        if self.n_combinations > limit:
            shape = " x ".join(f"{lengths[name]:,} {name}" for name in sized)
            raise ConfigError(
                f"strategy '{strategy.name}': the grid has {self.n_combinations:,} parameter "
                f"sets ({shape}), over the limit of {limit:,}; narrow the grid or raise the "
                f"limit (max_sets, --max-sets or ${MAX_GRID_SETS_ENV})"
            )
        self.columns = tuple(
            _checked(p, sized[p.name], strategy.name)
            if p.name in sized
            else np.array([p.default], dtype=np.float64)
            for p in strategy.params
        )
        self.shape = tuple(len(c) for c in self.columns)
        self.n_combinations = math.prod(self.shape)  # after repeated values were dropped

    def blocks(self, block_sets: int = BLOCK_SETS) -> Iterator[np.ndarray]:
        """Yield the combinations satisfying every constraint as (n, n_params) float64 blocks.

        Blocks follow ``itertools.product`` order over the parameters in declaration order
        (the last parameter varies fastest), so their concatenation is the same for any
        ``block_sets``; a block may be empty where constraints drop every combination in it.
        """
        names = self.strategy.param_names
        for lo in range(0, self.n_combinations, block_sets):
            flat = np.arange(lo, min(lo + block_sets, self.n_combinations), dtype=np.int64)
            index = np.unravel_index(flat, self.shape)
            values = {n: c[i] for n, c, i in zip(names, self.columns, index, strict=True)}
            keep = np.ones(flat.shape[0], dtype=bool)
            for constraint in self.strategy.constraints:
                keep &= constraint.holds(values)
            yield np.column_stack([values[n][keep] for n in names]).astype(np.float64)

    def matrix(self) -> np.ndarray:
        """Return every combination satisfying the constraints as one (n_sets, n_params) array.

        Raises
        ------
        ConfigError
            If no combination satisfies the constraints.
        """
        matrix = np.concatenate(list(self.blocks()))
        if matrix.shape[0] == 0:
            raise ConfigError(
                f"strategy '{self.strategy.name}': no grid point satisfies "
                + ", ".join(str(c) for c in self.strategy.constraints)
            )
        return matrix


def _sized(values: Iterable[float]) -> Sequence[float]:
    # An arithmetic axis is counted as it is; a list (or a generator, which has no length) is
    # already values in memory, so its repeats are dropped before counting.
    if isinstance(values, GridAxis | range):
        return values
    return list(dict.fromkeys(values))


def _checked(param, values: Sequence[float], strategy: str) -> np.ndarray:
    """The axis's values as float64, each in the parameter's range, repeats dropped."""
    if isinstance(values, GridAxis | range):
        # An arithmetic axis is in range if its ends are, and whole if its first step is.
        for value in {values[0], values[min(1, len(values) - 1)], values[-1]}:
            param.check(value, strategy)
        return np.fromiter(values, dtype=np.float64, count=len(values))
    checked = [param.check(v, strategy) for v in values]
    return np.array(list(dict.fromkeys(checked)), dtype=np.float64)
