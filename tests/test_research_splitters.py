"""Splitters: skfolio's documented CPCV example, scikit-learn equivalents, and properties.

Properties (hypothesis, small sizes): train and test never overlap, purge and embargo gaps hold
exactly, indices are sorted int64 in range, anchored training starts at 0.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import KFold, TimeSeriesSplit

from quantshift.data import Bars
from quantshift.errors import ConfigError, DataError
from research.splitters import CombinatorialPurgedCV, PurgedKFold, WalkForward

A = np.array


def _check_indices(indices: np.ndarray, n: int) -> None:
    assert indices.dtype == np.int64
    assert indices.ndim == 1
    assert np.all(np.diff(indices) > 0), "indices must be sorted and unique"
    assert indices.size == 0 or (indices[0] >= 0 and indices[-1] < n)


# --------------------------------------------------------------------------- golden: skfolio
# The example of skfolio's documentation, typed in as printed there:
# https://skfolio.org/generated/skfolio.model_selection.CombinatorialPurgedCV.html
# (12 observations, n_folds=3, n_test_folds=2; then purged_size=1; then embargo_size=1).
# n_test_paths and get_path_ids() for it, and the 5-fold case, are from skfolio's own test
# suite, tests/test_model_selection/test_combinatorial.py::test_combinatorial_purged_cv.
SKFOLIO_EXAMPLE = {
    (0, 0): [
        (A([8, 9, 10, 11]), [A([0, 1, 2, 3]), A([4, 5, 6, 7])]),
        (A([4, 5, 6, 7]), [A([0, 1, 2, 3]), A([8, 9, 10, 11])]),
        (A([0, 1, 2, 3]), [A([4, 5, 6, 7]), A([8, 9, 10, 11])]),
    ],
    (1, 0): [
        (A([9, 10, 11]), [A([0, 1, 2, 3]), A([4, 5, 6, 7])]),
        (A([5, 6]), [A([0, 1, 2, 3]), A([8, 9, 10, 11])]),
        (A([0, 1, 2]), [A([4, 5, 6, 7]), A([8, 9, 10, 11])]),
    ],
    (0, 1): [
        (A([9, 10, 11]), [A([0, 1, 2, 3]), A([4, 5, 6, 7])]),
        (A([5, 6, 7]), [A([0, 1, 2, 3]), A([8, 9, 10, 11])]),
        (A([0, 1, 2, 3]), [A([4, 5, 6, 7]), A([8, 9, 10, 11])]),
    ],
}


def _assert_splits(got, expected) -> None:
    got = list(got)
    assert len(got) == len(expected)
    for (train, tests), (train_expected, tests_expected) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(train, train_expected)
        assert isinstance(tests, list)
        assert len(tests) == len(tests_expected)
        for test, test_expected in zip(tests, tests_expected, strict=True):
            np.testing.assert_array_equal(test, test_expected)


@pytest.mark.parametrize(("purge", "embargo"), list(SKFOLIO_EXAMPLE))
def test_cpcv_reproduces_skfolio_documented_example(purge, embargo):
    cv = CombinatorialPurgedCV(n_folds=3, n_test_folds=2, purge=purge, embargo=embargo)
    _assert_splits(
        cv.split(np.random.default_rng(0).normal(size=(12, 2))), SKFOLIO_EXAMPLE[purge, embargo]
    )
    assert cv.n_splits == 3 == cv.get_n_splits()
    assert cv.n_test_paths == 2
    np.testing.assert_array_equal(cv.get_path_ids(), [[0, 0], [1, 0], [1, 1]])


def test_cpcv_reproduces_skfolio_five_fold_case():
    cv = CombinatorialPurgedCV(n_folds=5, n_test_folds=2)
    expected = [
        (A([4, 5, 6, 7, 8, 9, 10, 11]), [A([0, 1]), A([2, 3])]),
        (A([2, 3, 6, 7, 8, 9, 10, 11]), [A([0, 1]), A([4, 5])]),
        (A([2, 3, 4, 5, 8, 9, 10, 11]), [A([0, 1]), A([6, 7])]),
        (A([2, 3, 4, 5, 6, 7]), [A([0, 1]), A([8, 9, 10, 11])]),
        (A([0, 1, 6, 7, 8, 9, 10, 11]), [A([2, 3]), A([4, 5])]),
        (A([0, 1, 4, 5, 8, 9, 10, 11]), [A([2, 3]), A([6, 7])]),
        (A([0, 1, 4, 5, 6, 7]), [A([2, 3]), A([8, 9, 10, 11])]),
        (A([0, 1, 2, 3, 8, 9, 10, 11]), [A([4, 5]), A([6, 7])]),
        (A([0, 1, 2, 3, 6, 7]), [A([4, 5]), A([8, 9, 10, 11])]),
        (A([0, 1, 2, 3, 4, 5]), [A([6, 7]), A([8, 9, 10, 11])]),
    ]
    _assert_splits(cv.split(np.zeros((12, 2))), expected)
    assert (cv.n_splits, cv.n_test_paths) == (10, 4)
    path_ids = [[0, 0], [1, 0], [2, 0], [3, 0], [1, 1], [2, 1], [3, 1], [2, 2], [3, 2], [3, 3]]
    np.testing.assert_array_equal(cv.get_path_ids(), path_ids)


# --------------------------------------------------------------------------- scikit-learn
@given(n=st.integers(2, 80), k=st.integers(2, 10))
@settings(max_examples=40, deadline=None)
def test_purged_kfold_without_gaps_equals_sklearn_kfold(n, k):
    if k > n:
        with pytest.raises(ConfigError, match="more folds than"):
            list(PurgedKFold(k).split(np.zeros(n)))
        return
    ours = list(PurgedKFold(k).split(np.zeros(n)))
    theirs = list(KFold(n_splits=k).split(np.zeros(n)))
    assert len(ours) == len(theirs) == PurgedKFold(k).get_n_splits()
    for (train, test), (train_sk, test_sk) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(train, train_sk)
        np.testing.assert_array_equal(test, test_sk)


@given(
    k=st.integers(2, 6),
    test=st.integers(1, 8),
    train=st.integers(1, 30),
    gap=st.integers(0, 5),
    anchored=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_walk_forward_equals_sklearn_time_series_split(k, test, train, gap, anchored):
    # TimeSeriesSplit puts k test windows at the end and trains on everything before them
    # minus `gap` (anchored), or on at most max_train_size bars ending at the gap (rolling,
    # which equals ours only without purge since our purge shortens the window).
    if not anchored:
        gap = 0
    if gap >= train:
        return
    n = train + k * test
    theirs = TimeSeriesSplit(
        n_splits=k, test_size=test, gap=gap, max_train_size=None if anchored else train
    )
    ours = WalkForward(train, test, anchored=anchored, purge=gap)
    x = np.zeros(n)
    assert ours.get_n_splits(x) == k
    for (train_ix, test_ix), (train_sk, test_sk) in zip(
        ours.split(x), theirs.split(x), strict=True
    ):
        np.testing.assert_array_equal(train_ix, train_sk)
        np.testing.assert_array_equal(test_ix, test_sk)


# --------------------------------------------------------------------------- properties
@given(
    n=st.integers(1, 120),
    train=st.integers(1, 40),
    test=st.integers(1, 20),
    step=st.one_of(st.none(), st.integers(1, 25)),
    purge=st.integers(0, 10),
    embargo=st.integers(0, 5),
    anchored=st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_walk_forward_in_bars_properties(n, train, test, step, purge, embargo, anchored):
    if purge >= train:
        with pytest.raises(ConfigError, match="purge"):
            WalkForward(train, test, purge=purge)
        return
    cv = WalkForward(train, test, anchored=anchored, step=step, purge=purge, embargo=embargo)
    step = test if step is None else step
    if n < train + test:
        with pytest.raises(ConfigError, match="no complete fold"):
            cv.folds(np.zeros(n))
        return
    splits = list(cv.split(np.zeros(n)))
    assert len(splits) == (n - train - test) // step + 1 == cv.get_n_splits(np.zeros(n))
    for k, (train_ix, test_ix) in enumerate(splits):
        _check_indices(train_ix, n)
        _check_indices(test_ix, n)
        assert test_ix[0] == train + k * step
        assert test_ix.size == test
        assert np.intersect1d(train_ix, test_ix).size == 0
        assert test_ix[0] - train_ix[-1] - 1 == purge  # exactly `purge` bars between them
        assert np.all(np.diff(train_ix) == 1) and np.all(np.diff(test_ix) == 1)
        if anchored:
            assert train_ix[0] == 0
        else:
            assert train_ix.size == train - purge
    # Training always precedes its test window, so an embargo never removes anything here.
    no_embargo = WalkForward(train, test, anchored=anchored, step=step, purge=purge)
    assert no_embargo.folds(np.zeros(n)) == cv.folds(np.zeros(n))


@given(
    n=st.integers(2, 80),
    k=st.integers(2, 8),
    purge=st.integers(0, 6),
    embargo=st.integers(0, 6),
)
@settings(max_examples=150, deadline=None)
def test_purged_kfold_properties(n, k, purge, embargo):
    if k > n:
        return
    cv = PurgedKFold(k, purge=purge, embargo=embargo)
    covered = []
    try:
        splits = list(cv.split(np.zeros(n)))
    except ConfigError as error:
        assert "no training data" in str(error)
        assert 2 * purge + embargo + n // k >= n - 1  # only when the gaps swallow everything
        return
    for train, test in splits:
        _check_indices(train, n)
        _check_indices(test, n)
        assert np.all(np.diff(test) == 1), "test folds are contiguous"
        start, stop = test[0], test[-1] + 1
        others = np.setdiff1d(np.arange(n), test)
        purged = others[(others >= start - purge) & (others < start)]
        embargoed = others[(others >= stop) & (others < stop + purge + embargo)]
        assert purged.size == min(purge, start)
        assert embargoed.size == min(purge + embargo, n - stop)
        np.testing.assert_array_equal(train, np.setdiff1d(others, np.r_[purged, embargoed]))
        covered.append(test)
    np.testing.assert_array_equal(np.concatenate(covered), np.arange(n))


def test_regression_purged_kfold_purges_both_sides_of_the_test_fold_as_in_afml_7_3():
    # Labels span 2 bars ahead (purge=2), embargo 1, 20 observations in 4 folds of 5. By hand:
    # a training observation i is kept when its label [i, i + 2] misses the test labels
    # [start, stop - 1 + 2] and it is not one of the embargo bars after them.
    got = [
        (train.tolist(), test.tolist())
        for train, test in PurgedKFold(4, purge=2, embargo=1).split(np.zeros(20))
    ]
    assert got == [
        ([8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19], [0, 1, 2, 3, 4]),
        ([0, 1, 2, 13, 14, 15, 16, 17, 18, 19], [5, 6, 7, 8, 9]),
        ([0, 1, 2, 3, 4, 5, 6, 7, 18, 19], [10, 11, 12, 13, 14]),
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [15, 16, 17, 18, 19]),
    ]


@st.composite
def cpcv_cases(draw):
    n_folds = draw(st.integers(3, 6))
    n_test_folds = draw(st.integers(2, n_folds - 1))
    n = draw(st.integers(2 * n_folds, 60))
    fold_size = n // n_folds
    purge = draw(st.integers(0, fold_size - 2))
    embargo = draw(st.integers(0, fold_size - 2 - purge))
    return n, n_folds, n_test_folds, purge, embargo


@given(cpcv_cases())
@settings(max_examples=120, deadline=None)
def test_cpcv_properties(case):
    n, n_folds, n_test_folds, purge, embargo = case
    cv = CombinatorialPurgedCV(n_folds, n_test_folds, purge=purge, embargo=embargo)
    fold_of = np.minimum(np.arange(n) // (n // n_folds), n_folds - 1)  # skfolio's folds
    path_ids = cv.get_path_ids()
    paths: dict[int, list[int]] = {}
    splits = list(cv.split(np.zeros((n, 3))))
    assert len(splits) == cv.n_splits
    for i, (train, tests) in enumerate(splits):
        _check_indices(train, n)
        test = np.concatenate(tests)
        _check_indices(test, n)
        assert len(tests) == n_test_folds
        assert np.intersect1d(train, test).size == 0
        in_test = np.isin(np.arange(n), test)
        # A non-test observation is excluded exactly when a test observation lies within
        # `purge` after it, or within `purge + embargo` before it.
        expected = [
            j
            for j in range(n)
            if not in_test[j]
            and not in_test[j + 1 : j + 1 + purge].any()
            and not in_test[max(0, j - purge - embargo) : j].any()
        ]
        np.testing.assert_array_equal(train, expected)
        for j, fold in enumerate(tests):
            np.testing.assert_array_equal(fold, np.flatnonzero(fold_of == fold_of[fold[0]]))
            paths.setdefault(int(path_ids[i, j]), []).append(int(fold_of[fold[0]]))
    # Every backtest path is made of each fold exactly once.
    assert sorted(paths) == list(range(cv.n_test_paths))
    for folds in paths.values():
        assert sorted(folds) == list(range(n_folds))


# --------------------------------------------------------------------------- time windows
# Daily bars of January 2024 (1 Jan is a Monday) with gaps: 1-5, 8-12, 18-22.
# Positions: 0..4 = Jan 1-5, 5..9 = Jan 8-12, 10..14 = Jan 18-22. The smallest spacing is one
# day, so the data end at Jan 23.
GAPPY_DAYS = pd.DatetimeIndex(
    [f"2024-01-{d:02d}" for d in (1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 18, 19, 20, 21, 22)],
    tz="UTC",
)


def _bars(index: pd.DatetimeIndex) -> Bars:
    prices = np.linspace(100.0, 110.0, len(index))
    return Bars(
        ts_ns=index.as_unit("ns").asi8,
        symbols=("X",),
        open=prices,
        high=prices + 1,
        low=prices - 1,
        close=prices,
        volume=np.ones(len(index)),
    )


def test_time_windows_on_gappy_daily_index_match_hand_computation():
    # train 7D, test 3D (step 3D): the first test window starts at Jan 1 + 7D = Jan 8.
    #   [Jan 8, Jan 11)  -> Jan 8-10  = 5..7;  train [Jan 1, Jan 8)   -> 0..4
    #   [Jan 11, Jan 14) -> Jan 11-12 = 8..9;  train [Jan 4, Jan 11)  -> 3..7
    #   [Jan 14, Jan 17) -> no bar (gap): skipped
    #   [Jan 17, Jan 20) -> Jan 18-19 = 10..11; train [Jan 10, Jan 17) -> 7..9
    #   [Jan 20, Jan 23) -> Jan 20-22 = 12..14; ends at the data end, complete;
    #                                           train [Jan 13, Jan 20) -> 10..11
    #   [Jan 23, ...) starts at the data end: stop.
    expected = [(0, 5, 5, 8), (3, 8, 8, 10), (7, 10, 10, 12), (10, 12, 12, 15)]
    cv = WalkForward("7D", "3D")
    for sample in (GAPPY_DAYS, _bars(GAPPY_DAYS), pd.Series(0.0, index=GAPPY_DAYS)):
        assert cv.folds(sample) == expected
    assert cv.get_n_splits(pd.DataFrame({"x": 0.0}, index=GAPPY_DAYS)) == 4
    # purge 1 bar shortens each training window at its end; anchored keeps start 0.
    purged = WalkForward(pd.Timedelta(days=7), "3D", purge=1, anchored=True)
    assert purged.folds(GAPPY_DAYS) == [
        (0, 4, 5, 8),
        (0, 7, 8, 10),
        (0, 9, 10, 12),
        (0, 11, 12, 15),
    ]
    # train and test 7D: [Jan 8, Jan 15) -> 5..9, [Jan 15, Jan 22) -> 10..13; the next
    # window [Jan 22, Jan 29) ends after the data: incomplete, dropped.
    assert WalkForward("7D", "7D").folds(GAPPY_DAYS) == [(0, 5, 5, 10), (5, 10, 10, 14)]
    # Bars for training, time for testing: 5 bars, then test windows of 7 days each
    # starting on the first test bar (Jan 8): [Jan 8, Jan 15), [Jan 15, Jan 22).
    assert WalkForward(5, "7D").folds(GAPPY_DAYS) == [(0, 5, 5, 10), (5, 10, 10, 14)]
    train, test = next(WalkForward("7D", "3D").split(_bars(GAPPY_DAYS)))
    np.testing.assert_array_equal(train, np.arange(5))
    np.testing.assert_array_equal(test, [5, 6, 7])


@given(
    kept=st.lists(st.booleans(), min_size=30, max_size=90),
    train_days=st.integers(1, 20),
    test_days=st.integers(1, 10),
    step_days=st.one_of(st.none(), st.integers(1, 12)),
    purge=st.integers(0, 2),
    anchored=st.booleans(),
)
@settings(max_examples=100, deadline=None)
def test_time_windows_properties(kept, train_days, test_days, step_days, purge, anchored):
    days = pd.date_range("2024-01-01", periods=len(kept), freq="D", tz="UTC")[np.array(kept)]
    if len(days) < 2:
        return
    step = None if step_days is None else f"{step_days}D"
    cv = WalkForward(f"{train_days}D", f"{test_days}D", step=step, purge=purge, anchored=anchored)
    try:
        folds = cv.folds(days)
    except ConfigError as error:
        assert "no complete fold" in str(error) or "all removed by purge" in str(error)
        return
    train_len, test_len = pd.Timedelta(days=train_days), pd.Timedelta(days=test_days)
    step_len = test_len if step_days is None else pd.Timedelta(days=step_days)
    data_end = days[-1] + (days[1:] - days[:-1]).min()
    first_time = days[0] + train_len
    for (train_start, train_stop, test_start, test_stop), (train, test) in zip(
        folds, cv.split(days), strict=True
    ):
        np.testing.assert_array_equal(test, np.arange(test_start, test_stop))
        np.testing.assert_array_equal(train, np.arange(train_start, train_stop))
        assert train_stop == test_start - purge
        if anchored:
            assert train_start == 0
        if step_len < test_len:
            continue  # overlapping windows: several schedule times may give this fold
        # The window [t, t + test) on the schedule t = first_time + k * step that holds the
        # first test bar: the fold holds all of its bars, and training all bars of
        # [t - train, t) (rolling) or from the first bar (anchored), then the purge.
        t = first_time + (days[test_start] - first_time) // step_len * step_len
        assert t + test_len <= data_end
        np.testing.assert_array_equal(test, np.flatnonzero((days >= t) & (days < t + test_len)))
        lookback = days >= t - train_len if not anchored else np.ones(len(days), dtype=bool)
        np.testing.assert_array_equal(
            np.arange(train_start, test_start), np.flatnonzero(lookback & (days < t))
        )
    bounds = [f[2:] for f in folds]
    assert bounds == sorted(set(bounds)), "test windows are distinct and move forward"
    if step_days is None:  # consecutive windows never overlap
        assert all(a[3] <= b[2] for a, b in itertools.pairwise(folds))


def test_calendar_offsets_step_from_the_first_window():
    days = pd.date_range("2023-01-01", "2023-12-31", freq="D")
    cv = WalkForward(pd.DateOffset(months=3), pd.DateOffset(months=1))
    folds = cv.folds(days)
    starts = [days[test_start] for _, _, test_start, _ in folds]
    assert starts == list(pd.date_range("2023-04-01", "2023-12-01", freq="MS"))
    assert [(test_stop - test_start) for *_, test_start, test_stop in folds][:3] == [30, 31, 30]


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: WalkForward(0, 5), "train_size must be at least 1"),
        (lambda: WalkForward(-3, 5), "train_size must be at least 1"),
        (lambda: WalkForward(10, 0), "test_size must be at least 1"),
        (lambda: WalkForward("-5D", 5), "train_size='-5D' must be a positive time length"),
        (lambda: WalkForward("soon", 5), "train_size='soon' is neither"),
        (lambda: WalkForward(10, 5, step=0), "step must be at least 1"),
        (lambda: WalkForward(10, 5, purge=10), "purge=10 bars must be less than train_size"),
        (lambda: WalkForward(10, 5, purge=-1), "purge must be at least 0"),
        (lambda: WalkForward(10.5, 5), "train_size must be a number of bars or a time length"),
        (lambda: PurgedKFold(1), "n_splits must be at least 2"),
        (lambda: PurgedKFold(3, embargo=-2), "embargo must be at least 0"),
        (lambda: CombinatorialPurgedCV(5, 5), "n_test_folds=5 must be less than n_folds=5"),
        (lambda: CombinatorialPurgedCV(4, 6), "n_test_folds=6 must be less than n_folds=4"),
        (lambda: CombinatorialPurgedCV(2, 1), "n_folds must be at least 3"),
        (lambda: CombinatorialPurgedCV(5, 1), "n_test_folds must be at least 2"),
        (lambda: CombinatorialPurgedCV(40, 20), "more than 100,000"),
    ],
)
def test_bad_parameters_raise_config_error(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_bad_data_raise_clear_errors():
    with pytest.raises(ConfigError, match=r"test_size, step given as a time length.*no timestamps"):
        WalkForward(10, "5D").folds(np.zeros(100))
    with pytest.raises(ConfigError, match="train_size given as a time length"):
        list(WalkForward("30D", 5).split(list(range(100))))
    with pytest.raises(ConfigError, match="100 bars hold no complete fold"):
        WalkForward(90, 20).folds(np.zeros(100))
    with pytest.raises(ConfigError, match="get_n_splits needs the data"):
        WalkForward(10, 5).get_n_splits()
    with pytest.raises(ConfigError, match="cannot split int"):
        WalkForward(10, 5).folds(7)
    with pytest.raises(DataError, match="strictly increasing"):
        WalkForward("2D", 1).folds(GAPPY_DAYS[::-1])
    with pytest.raises(ConfigError, match="n_splits=6 is more folds than the 5 observations"):
        list(PurgedKFold(6).split(np.zeros(5)))
    with pytest.raises(ConfigError, match="fold 0 has no training data"):
        list(PurgedKFold(2, purge=3, embargo=3).split(np.zeros(4)))
    with pytest.raises(ConfigError, match="n_folds=10 is more folds than the 8 observations"):
        list(CombinatorialPurgedCV(10, 2).split(np.zeros(8)))
    # skfolio's rule: purge + embargo at most fold size - 2 (12 // 3 = 4 here).
    with pytest.raises(ConfigError, match="purge \\+ embargo = 3 must be at most 2"):
        list(CombinatorialPurgedCV(3, 2, purge=2, embargo=1).split(np.zeros(12)))


def test_repr_shows_parameters():
    assert repr(PurgedKFold(4, purge=2)) == "PurgedKFold(n_splits=4, purge=2, embargo=0)"
    assert "train_size=Timedelta('365 days" in repr(WalkForward("365D", 30))
