"""Cross-validation splitters for time series in scikit-learn's ``split()`` shape.

Walk-forward (rolling or anchored, in bars or time), purged k-fold and combinatorial purged CV.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from quantshift.data import Bars
from quantshift.errors import ConfigError, DataError

__all__ = ["CombinatorialPurgedCV", "Length", "PurgedKFold", "WalkForward"]

Length = int | str | pd.Timedelta | dt.timedelta | np.timedelta64 | pd.offsets.BaseOffset
"""A window length: a number of bars, or a time length ("365D", a Timedelta, a DateOffset)."""

# skfolio refuses more combinations than this: each split is a full model fit, so a larger
# count is far more likely a misconfiguration than an intended study.
_MAX_COMBINATIONS = 100_000


# --------------------------------------------------------------------------- shared helpers
def _sample(X: Any, where: str) -> tuple[int, pd.DatetimeIndex | None]:
    """Return the number of observations of ``X`` and its timestamps if it carries them."""
    if isinstance(X, Bars):
        times = X.index
    elif isinstance(X, pd.DatetimeIndex):
        times = X
    elif isinstance(X, pd.Series | pd.DataFrame) and isinstance(X.index, pd.DatetimeIndex):
        times = X.index
    else:
        try:
            return len(X), None
        except TypeError:
            raise ConfigError(
                f"{where}: cannot split {type(X).__name__}; pass Bars, a DatetimeIndex, "
                "a pandas object with a DatetimeIndex, or anything with a length"
            ) from None
    if not (times.is_monotonic_increasing and times.is_unique):
        raise DataError(f"{where}: timestamps must be strictly increasing to split in time")
    return len(times), times


def _count(value: Any, name: str, where: str, minimum: int) -> int:
    """Validate an integer parameter (bools are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{where}: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: {name} must be at least {minimum}, got {value}")
    return int(value)


def _length(value: Any, name: str, where: str) -> int | pd.Timedelta | pd.offsets.BaseOffset:
    """Validate a window length: a positive bar count or a positive time length."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return _count(value, name, where, 1)
    if isinstance(value, pd.offsets.BaseOffset):
        origin = pd.Timestamp("2000-01-01")
        if not origin + value > origin:
            raise ConfigError(f"{where}: {name}={value!r} must be a positive time length")
        return value
    if isinstance(value, str | dt.timedelta | np.timedelta64):
        try:
            length = pd.Timedelta(value)
        except ValueError:
            raise ConfigError(
                f"{where}: {name}={value!r} is neither a number of bars nor a time length; "
                "use e.g. '365D', '12h' or pd.DateOffset(months=3)"
            ) from None
        if pd.isna(length) or length <= pd.Timedelta(0):
            raise ConfigError(f"{where}: {name}={value!r} must be a positive time length")
        return length
    raise ConfigError(
        f"{where}: {name} must be a number of bars or a time length, got {type(value).__name__}"
    )


def _train_without(
    n_observations: int, test_blocks: Sequence[tuple[int, int]], before: int, after: int
) -> np.ndarray:
    """Return training indices: all but the test blocks and the gaps around each of them.

    ``before`` observations are dropped in front of each ``[start, stop)`` block (purge) and
    ``after`` observations behind it (embargo, or purge plus embargo in skfolio's CPCV).
    """
    keep = np.ones(n_observations, dtype=bool)
    for start, stop in test_blocks:
        keep[max(0, start - before) : min(n_observations, stop + after)] = False
    return np.flatnonzero(keep).astype(np.int64)


class _Splitter:
    """Shared ``repr`` in scikit-learn's style: the class name and constructor arguments."""

    _params: tuple[str, ...] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._params)
        return f"{type(self).__name__}({args})"


# --------------------------------------------------------------------------- walk-forward
class WalkForward(_Splitter):
    """Rolling or anchored walk-forward splits with lengths in bars or in time.

    Test windows start after the first training window and follow each other every ``step``;
    each training window ends where its test window starts, minus ``purge`` bars.

    Parameters
    ----------
    train_size : int or time length
        Training window: a number of bars, or a time length (``"365D"``, ``pd.Timedelta``,
        ``pd.DateOffset(months=12)``) covering the times ``[test_start - train_size,
        test_start)``. When anchored, every training window starts at bar 0 and
        ``train_size`` only sets where the first test window begins.
    test_size : int or time length
        Test window: a number of bars, or a time length covering ``[start, start + test_size)``.
    anchored : bool, default False
        False for a rolling (fixed-length) training window, True for an expanding one.
    step : int or time length, optional
        Distance between the starts of consecutive test windows; defaults to ``test_size``,
        which makes test windows consecutive and non-overlapping.
    purge : int, default 0
        Bars dropped from the end of each training window, so that labels or indicator values
        computed near the end of training cannot see into the test window.
    embargo : int, default 0
        Bars after a test window excluded from training, as in the other splitters. A
        walk-forward training window always ends before its own test window, so an embargo
        never removes anything here; it is accepted so one (purge, embargo) pair can configure
        every splitter.

    Notes
    -----
    Time lengths need timestamps: pass ``Bars``, a ``DatetimeIndex`` or a pandas object
    indexed by one. Only complete test windows are used: a window in bars must fit in the
    data, a time window must end no later than the end of the data (the last timestamp plus
    the smallest spacing between bars, i.e. one bar period). A time window holding no bar
    (inside a gap in the data) is skipped. With a time ``step`` the test windows start at
    ``first_start + k * step``; with a step in bars they start ``step`` bars apart.
    """

    _params = ("train_size", "test_size", "anchored", "step", "purge", "embargo")

    def __init__(
        self,
        train_size: Length,
        test_size: Length,
        *,
        anchored: bool = False,
        step: Length | None = None,
        purge: int = 0,
        embargo: int = 0,
    ) -> None:
        where = "WalkForward"
        self.train_size = _length(train_size, "train_size", where)
        self.test_size = _length(test_size, "test_size", where)
        self.anchored = bool(anchored)
        self.step = self.test_size if step is None else _length(step, "step", where)
        self.purge = _count(purge, "purge", where, 0)
        self.embargo = _count(embargo, "embargo", where, 0)
        if isinstance(self.train_size, int) and self.purge >= self.train_size:
            raise ConfigError(
                f"{where}: purge={self.purge} bars must be less than "
                f"train_size={self.train_size} bars, or no training data is left"
            )

    def _time_lengths(self) -> list[str]:
        names = ("train_size", "test_size", "step")
        return [name for name in names if not isinstance(getattr(self, name), int)]

    def folds(self, X: Any) -> list[tuple[int, int, int, int]]:
        """Return ``(train_start, train_stop, test_start, test_stop)`` bar bounds of each fold.

        Bounds are half-open positions on the time axis; the training window already has the
        purge removed. Raise ``ConfigError`` if the data hold no complete fold.
        """
        where = "WalkForward"
        n, times = _sample(X, where)
        timed = self._time_lengths()
        if timed and times is None:
            raise ConfigError(
                f"{where}: {', '.join(timed)} given as a time length, but {type(X).__name__} "
                "has no timestamps; pass Bars or a DatetimeIndex, or give sizes in bars"
            )
        if n == 0:
            raise ConfigError(f"{where}: nothing to split (0 bars)")
        data_end = None
        if times is not None:
            spacing = (times[1:] - times[:-1]).min() if n > 1 else pd.Timedelta(1, "ns")
            data_end = times[-1] + spacing

        if isinstance(self.train_size, int):
            first_start = self.train_size
            first_time = times[first_start] if times is not None and first_start < n else None
        else:
            first_time = times[0] + self.train_size
            first_start = int(times.searchsorted(first_time, side="left"))

        out: list[tuple[int, int, int, int]] = []
        for k in itertools.count():
            if isinstance(self.step, int):
                test_start = first_start + k * self.step
                if test_start >= n:
                    break
                start_time = times[test_start] if times is not None else None
            else:
                if first_time is None:
                    break
                start_time = first_time + self.step * k
                if start_time >= data_end:
                    break
                test_start = int(times.searchsorted(start_time, side="left"))
            if isinstance(self.test_size, int):
                test_stop = test_start + self.test_size
                if test_stop > n:
                    break
            else:
                if start_time is None or start_time + self.test_size > data_end:
                    break
                test_stop = int(times.searchsorted(start_time + self.test_size, side="left"))
                if test_stop == test_start:
                    continue  # the window falls in a gap of the data
            if out and (test_start, test_stop) == out[-1][2:]:
                continue  # a time step shorter than a gap in the data gives the same bars again
            if self.anchored:
                train_start = 0
            elif isinstance(self.train_size, int):
                train_start = test_start - self.train_size
            else:
                train_start = int(times.searchsorted(start_time - self.train_size, side="left"))
            train_stop = test_start - self.purge
            if train_stop <= train_start:
                raise ConfigError(
                    f"{where}: fold {len(out)} has {test_start - train_start} training bars, "
                    f"all removed by purge={self.purge}; lengthen train_size or reduce purge"
                )
            out.append((train_start, train_stop, test_start, test_stop))
        if not out:
            raise ConfigError(
                f"{where}: {n} bars hold no complete fold with train_size={self.train_size!r} "
                f"and test_size={self.test_size!r}"
            )
        return out

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple[np.ndarray, ...]]:
        """Yield ``(train_indices, test_indices)`` int64 arrays, one pair per fold."""
        for train_start, train_stop, test_start, test_stop in self.folds(X):
            yield (
                np.arange(train_start, train_stop, dtype=np.int64),
                np.arange(test_start, test_stop, dtype=np.int64),
            )

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Return the number of folds on ``X`` (needed: the count depends on the data)."""
        if X is None:
            raise ConfigError("WalkForward: get_n_splits needs the data X to count folds")
        return len(self.folds(X))


# --------------------------------------------------------------------------- purged k-fold
class PurgedKFold(_Splitter):
    """K contiguous test folds; training is everything else minus a purge on both sides of the
    test fold and an embargo after it (AFML 7.4).

    Each observation's label spans it and the ``purge`` observations after it. Training
    observations whose label span overlaps a test label span are purged: the ``purge``
    observations just before the test fold (their labels reach into it) and the ``purge``
    observations just after it (the test fold's last labels reach into them). The ``embargo``
    observations after those are dropped too. For a test fold ``[start, stop)`` training is
    every index outside ``[start - purge, stop + purge + embargo)``, as in AFML snippet 7.3 and
    in ``CombinatorialPurgedCV``.

    Fold sizes are those of ``sklearn.model_selection.KFold`` without shuffling (the first
    ``n % n_splits`` folds one observation longer), which it equals when purge and embargo are 0.

    Parameters
    ----------
    n_splits : int, default 5
        Number of folds, at least 2.
    purge : int, default 0
        The label horizon in observations: dropped from training on both sides of each test
        fold.
    embargo : int, default 0
        Observations dropped from training after the purge behind each test fold: serial
        correlation carries test information into them.

    References
    ----------
    M. Lopez de Prado, *Advances in Financial Machine Learning*, Wiley 2018, ch. 7
    (purged k-fold cross-validation, sections 7.4.1 purging and 7.4.2 embargo, snippet 7.3).
    """

    _params = ("n_splits", "purge", "embargo")

    def __init__(self, n_splits: int = 5, *, purge: int = 0, embargo: int = 0) -> None:
        where = "PurgedKFold"
        self.n_splits = _count(n_splits, "n_splits", where, 2)
        self.purge = _count(purge, "purge", where, 0)
        self.embargo = _count(embargo, "embargo", where, 0)

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple[np.ndarray, ...]]:
        """Yield ``(train_indices, test_indices)`` int64 arrays, one pair per fold."""
        n, _ = _sample(X, "PurgedKFold")
        if self.n_splits > n:
            raise ConfigError(
                f"PurgedKFold: n_splits={self.n_splits} is more folds than the {n} observations"
            )
        sizes = np.full(self.n_splits, n // self.n_splits)
        sizes[: n % self.n_splits] += 1
        stops = np.cumsum(sizes)
        for i, stop in enumerate(stops):
            start = int(stop - sizes[i])
            train = _train_without(n, [(start, int(stop))], self.purge, self.purge + self.embargo)
            if train.size == 0:
                raise ConfigError(
                    f"PurgedKFold: fold {i} has no training data left after purge={self.purge} "
                    f"and embargo={self.embargo} on {n} observations"
                )
            yield train, np.arange(start, stop, dtype=np.int64)

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Return ``n_splits``."""
        return self.n_splits


# --------------------------------------------------------------------------- combinatorial
class CombinatorialPurgedCV(_Splitter):
    """Combinatorial purged cross-validation with skfolio's exact semantics.

    The observations are cut into ``n_folds`` contiguous folds of ``n // n_folds`` observations
    (the last fold takes the remainder); every combination of ``n_test_folds`` folds is a test
    set, in ``itertools.combinations`` order. Each split's test set is a list of arrays, one
    per test fold in fold order. Training is the remaining folds minus ``purge`` observations
    before each run of adjacent test folds and ``purge + embargo`` observations after it.

    Parameters
    ----------
    n_folds : int, default 10
        Number of folds, at least 3.
    n_test_folds : int, default 8
        Test folds per split, at least 2 and fewer than ``n_folds`` (for one test fold use
        ``PurgedKFold``).
    purge : int, default 0
        skfolio's ``purged_size``: observations removed from training on both sides of a test
        run, as ``PurgedKFold`` does.
    embargo : int, default 0
        skfolio's ``embargo_size``: further observations removed from training after a test run.

    Notes
    -----
    As in skfolio, ``split`` requires ``purge + embargo <= n // n_folds - 2``, and at most
    100,000 combinations are allowed. The test folds of all splits recombine into
    ``n_test_paths`` backtest paths; ``get_path_ids()`` says which path each test fold of each
    split belongs to.

    References
    ----------
    M. Lopez de Prado, *Advances in Financial Machine Learning*, Wiley 2018, ch. 12.
    skfolio, ``skfolio.model_selection.CombinatorialPurgedCV``,
    https://skfolio.org/generated/skfolio.model_selection.CombinatorialPurgedCV.html
    """

    _params = ("n_folds", "n_test_folds", "purge", "embargo")

    def __init__(
        self, n_folds: int = 10, n_test_folds: int = 8, *, purge: int = 0, embargo: int = 0
    ) -> None:
        where = "CombinatorialPurgedCV"
        self.n_folds = _count(n_folds, "n_folds", where, 3)
        self.n_test_folds = _count(n_test_folds, "n_test_folds", where, 2)
        self.purge = _count(purge, "purge", where, 0)
        self.embargo = _count(embargo, "embargo", where, 0)
        if self.n_test_folds >= self.n_folds:
            raise ConfigError(
                f"{where}: n_test_folds={self.n_test_folds} must be less than "
                f"n_folds={self.n_folds}"
            )
        if self.n_splits > _MAX_COMBINATIONS:
            raise ConfigError(
                f"{where}: n_folds={self.n_folds} with n_test_folds={self.n_test_folds} gives "
                f"{self.n_splits:,} splits, more than {_MAX_COMBINATIONS:,}; "
                "reduce n_folds or move n_test_folds away from n_folds / 2"
            )

    @property
    def n_splits(self) -> int:
        """Number of splits: ``C(n_folds, n_test_folds)``."""
        return math.comb(self.n_folds, self.n_test_folds)

    @property
    def n_test_paths(self) -> int:
        """Number of backtest paths the test folds recombine into."""
        return self.n_splits * self.n_test_folds // self.n_folds

    def _test_fold_sets(self) -> Iterator[tuple[int, ...]]:
        return itertools.combinations(range(self.n_folds), self.n_test_folds)

    def get_path_ids(self) -> np.ndarray:
        """Return the backtest path of each test fold of each split, shape (n_splits, n_test_folds).

        A fold's k-th appearance as a test fold (in split order) belongs to path k.
        """
        seen = np.zeros(self.n_folds, dtype=np.int64)
        path_ids = np.empty((self.n_splits, self.n_test_folds), dtype=np.int64)
        for i, folds in enumerate(self._test_fold_sets()):
            chosen = list(folds)
            path_ids[i] = seen[chosen]
            seen[chosen] += 1
        return path_ids

    def split(
        self, X: Any, y: Any = None, groups: Any = None
    ) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        """Yield ``(train_indices, [test_indices per test fold])``, one pair per combination."""
        where = "CombinatorialPurgedCV"
        n, _ = _sample(X, where)
        if self.n_folds > n:
            raise ConfigError(
                f"{where}: n_folds={self.n_folds} is more folds than the {n} observations"
            )
        fold_size = n // self.n_folds
        if self.purge + self.embargo >= fold_size - 1:
            raise ConfigError(
                f"{where}: purge + embargo = {self.purge + self.embargo} must be at most "
                f"{fold_size - 2} (folds hold {fold_size} observations; n={n})"
            )
        starts = [j * fold_size for j in range(self.n_folds)]
        stops = [*starts[1:], n]
        for folds in self._test_fold_sets():
            runs: list[list[int]] = []
            for j in folds:
                if runs and runs[-1][1] == starts[j]:
                    runs[-1][1] = stops[j]  # adjacent test folds form one block
                else:
                    runs.append([starts[j], stops[j]])
            train = _train_without(
                n, [(a, b) for a, b in runs], self.purge, self.purge + self.embargo
            )
            tests = [np.arange(starts[j], stops[j], dtype=np.int64) for j in folds]
            yield train, tests

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Return ``n_splits``."""
        return self.n_splits
