"""Strategy registry, parameter validation, causality of every registered strategy, warm-up.

Causality is property-based: signals on any prefix of the bars equal the full-history signals.
"""

from __future__ import annotations

import dataclasses
import functools

import arch.data.sp500
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numba import njit
from probe import run_json

from quantshift.errors import ConfigError, UnknownNameError
from quantshift.strategies import Param, Strategy, get_strategy, list_strategies, ma_crossover
from quantshift.strategies.causality import check_causality, run_signals

SEEDS = ("bollinger_bounce", "breakout_momentum", "ma_crossover", "rsi_reversion")
FIELDS = ("open", "high", "low", "close", "volume")


@functools.cache
def sp500_bars(start: int = 0, stop: int | None = None) -> tuple[np.ndarray, ...]:
    """Return S&P 500 daily OHLCV bars [start:stop] as contiguous float64 arrays."""
    frame = arch.data.sp500.load().iloc[start:stop]
    columns = ("Open", "High", "Low", "Close", "Volume")
    return tuple(np.ascontiguousarray(frame[c].to_numpy(np.float64)) for c in columns)


@functools.cache
def synthetic_bars(n_bars: int = 600, seed: int = 11) -> tuple[np.ndarray, ...]:
    """Return seeded bars with volatility regimes, opening gaps and volume bursts."""
    rng = np.random.default_rng(seed)
    volatility = np.where(np.sin(np.arange(n_bars) / 40.0) > 0, 0.006, 0.025)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, volatility)))
    gaps = rng.normal(0.0, 0.01, n_bars) * (rng.random(n_bars) < 0.05)
    open_ = np.r_[close[0], close[:-1]] * np.exp(gaps)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, volatility / 2)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, volatility / 2)))
    volume = rng.lognormal(12.0, 0.4, n_bars) * np.where(rng.random(n_bars) < 0.05, 4.0, 1.0)
    return open_, high, low, close, volume


DATASETS = {"sp500": lambda: sp500_bars(3000, 3600), "synthetic": synthetic_bars}


def assert_causal(strategy: Strategy, bars, params: np.ndarray, cut: int) -> None:
    """Assert that the signals computed on a copy of bars[:cut] equal the full-history signals."""
    verdict = check_causality(strategy, bars, params, cuts=[cut])
    assert verdict.causal, f"{verdict.output} on bars[:{cut}] looks ahead: {verdict.summary()}"


@st.composite
def param_vectors(draw, strategy: Strategy) -> np.ndarray:
    """Draw a valid parameter vector: each value in range, integers where declared."""
    values = {}
    for p in strategy.params:
        if p.integer:
            values[p.name] = float(draw(st.integers(int(p.low), int(p.high))))
        else:
            values[p.name] = draw(st.floats(p.low, p.high, allow_nan=False))
    assume(all(c.holds(values) for c in strategy.constraints))
    return strategy.vector(values)


# Registry and parameter validation -------------------------------------------------------


def test_seed_strategies_are_registered():
    names = [s.name for s in list_strategies()]
    assert set(SEEDS) <= set(names)
    assert names == sorted(names)
    assert get_strategy("ma_crossover") is ma_crossover.STRATEGY
    assert get_strategy(ma_crossover.STRATEGY) is ma_crossover.STRATEGY


def test_unknown_strategy_lists_the_available_ones():
    with pytest.raises(UnknownNameError) as caught:
        get_strategy("ma_crosover")
    message = str(caught.value)
    assert "unknown strategy 'ma_crosover'" in message
    for name in SEEDS:
        assert name in message


@pytest.mark.parametrize(
    ("overrides", "error", "expected"),
    [
        ({"fastt": 3}, UnknownNameError, "has no parameter 'fastt'; parameters: fast, slow"),
        ({"fast": 1}, ConfigError, "'fast'=1 outside the allowed range [2, 100]"),
        ({"slow": 500}, ConfigError, "'slow'=500 outside the allowed range [5, 400]"),
        ({"fast": 5.5}, ConfigError, "'fast' must be a whole number, got 5.5"),
        ({"fast": "five"}, ConfigError, "'fast' must be a number, got 'five'"),
        (
            {"fast": 30, "slow": 20},
            ConfigError,
            "constraint fast < slow violated (fast=30, slow=20)",
        ),
        (
            {"fast": 20, "slow": 20},
            ConfigError,
            "constraint fast < slow violated (fast=20, slow=20)",
        ),
    ],
)
def test_invalid_parameters_are_rejected_with_a_clear_message(overrides, error, expected):
    with pytest.raises(error) as caught:
        ma_crossover.STRATEGY.resolve(overrides)
    assert expected in str(caught.value)
    assert "strategy 'ma_crossover'" in str(caught.value)


def test_valid_parameters_resolve_in_declaration_order():
    strategy = get_strategy("rsi_reversion")
    vector = strategy.vector({"exit_above": 70, "rsi_window": 10})
    np.testing.assert_array_equal(vector, [10, 35, 70, 14, 2.0, 3.0])
    assert strategy.warmup_bars({"rsi_window": 10, "atr_window": 20}) == 20


def test_grid_drops_combinations_violating_the_constraint():
    grid = ma_crossover.STRATEGY.grid({"fast": range(2, 51), "slow": range(10, 201, 2)})
    assert grid.shape == (4263, 2)
    assert (grid[:, 0] < grid[:, 1]).all()
    assert len({tuple(row) for row in grid}) == 4263


@pytest.mark.parametrize("strategy", list_strategies(), ids=lambda s: s.name)
def test_declaration_is_complete(strategy):
    assert strategy.description
    defaults = strategy.resolve()
    assert strategy.warmup_bars() >= 1
    for p in strategy.params:
        assert p.low < p.high, p.name
        if p.name.endswith("_window") or p.name in ("fast", "slow"):
            assert p.integer, f"{p.name} is a window and must be declared integer"
        assert defaults[p.name] == p.default


# Causality ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("strategy", list_strategies(), ids=lambda s: s.name)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_signals_are_causal(strategy, dataset, data):
    bars = DATASETS[dataset]()
    params = data.draw(param_vectors(strategy), label="params")
    cuts = data.draw(st.lists(st.integers(1, bars[0].shape[0]), min_size=1, max_size=4))
    for cut in cuts:
        assert_causal(strategy, bars, params, cut)
    warmup = int(strategy.warmup(dict(zip(strategy.param_names, params, strict=True))))
    entries, exits, *_ = run_signals(strategy, bars, params)
    assert not entries[:warmup].any() and not exits[:warmup].any()


@pytest.mark.parametrize("strategy", list_strategies(), ids=lambda s: s.name)
def test_default_signals_are_causal_at_every_cut(strategy):
    bars = sp500_bars(3000, 3600)
    for cut in range(1, bars[0].shape[0] + 1):
        assert_causal(strategy, bars, strategy.vector(), cut)


@njit
def _peek_next_close_nb(open_, high, low, close, volume, params, entries, exits, stop, tp, trail):
    for t in range(close.shape[0] - 1):
        entries[t] = close[t + 1] > close[t]
        exits[t] = close[t + 1] < close[t]


@njit
def _peek_next_close_every_bar_nb(
    open_, high, low, close, volume, params, entries, exits, stop, tp, trail
):
    # The commonest peek, on every bar: the last one reads past the end of the array, which
    # numba does not check; on a view of the full history it reads the real next bar.
    for t in range(close.shape[0]):
        entries[t] = close[t + 1] > close[t]
        exits[t] = close[t + 1] < close[t]


@njit
def _peek_full_history_mean_nb(
    open_, high, low, close, volume, params, entries, exits, stop, tp, trail
):
    # The classic lookahead bug: normalising with a statistic of the whole history.
    level = close.mean()
    for t in range(close.shape[0]):
        entries[t] = close[t] < level


def _peeking(signal_nb) -> Strategy:
    return Strategy(
        name="peeking",
        description="looks ahead",
        params=(),
        signal_nb=signal_nb,
        warmup=lambda v: 0,
    )


PEEKS = [_peek_next_close_nb, _peek_next_close_every_bar_nb, _peek_full_history_mean_nb]


@pytest.mark.parametrize("signal_nb", PEEKS)
def test_causality_check_catches_lookahead(signal_nb):
    strategy = _peeking(signal_nb)
    bars = sp500_bars(3000, 3600)
    caught = 0
    for cut in range(2, bars[0].shape[0], 7):
        try:
            assert_causal(strategy, bars, np.empty(0), cut)
        except AssertionError as error:
            assert "looks ahead" in str(error)
            caught += 1
    assert caught > 10


def test_regression_a_peek_past_the_end_of_a_view_is_caught_on_copies():
    # The old check ran signals on the view bars[:cut]: close[t + 1] at the last bar read the
    # real next bar, so the prefix matched the full history and the peek passed.
    strategy = _peeking(_peek_next_close_every_bar_nb)
    bars = sp500_bars(3000, 3600)
    cut = 300
    on_view = run_signals(strategy, tuple(a[:cut] for a in bars), np.empty(0))
    full = run_signals(strategy, bars, np.empty(0))
    np.testing.assert_array_equal(on_view[0], full[0][:cut])
    verdict = check_causality(strategy, bars, np.empty(0))
    assert not verdict.causal
    assert verdict.cut == 1 and verdict.bar == 0
    assert "reads beyond bar t" in verdict.summary()
    assert "peeking: LOOKS AHEAD" in verdict.summary()


NOJIT_PEEK = """
import json
import numpy as np
from numba import njit
import quantshift as qs
from quantshift.strategies.causality import check_causality


@njit
def peek(open_, high, low, close, volume, params, entries, exits, stop, tp, trail):
    for t in range(close.shape[0]):
        entries[t] = close[t + 1] > close[t]


strategy = qs.Strategy(name="peeking", description="looks ahead", params=(), signal_nb=peek,
                       warmup=0)
bars = qs.load_bars("builtin:sp500")
columns = [np.ascontiguousarray(getattr(bars, f)[3000:3100, 0]) for f in
           ("open", "high", "low", "close", "volume")]
verdict = check_causality(strategy, columns, np.empty(0))
print(json.dumps({"causal": verdict.causal, "cut": verdict.cut, "bar": verdict.bar,
                  "summary": verdict.summary()}))
"""


def test_a_peek_past_the_end_in_plain_python_is_a_verdict_not_a_crash():
    # Without numba (NUMBA_DISABLE_JIT=1, where @njit returns the plain function, which
    # Strategy() then accepts) the read past the end raises IndexError.
    verdict = run_json(NOJIT_PEEK, NUMBA_DISABLE_JIT="1")
    assert not verdict["causal"] and verdict["cut"] == 100 and verdict["bar"] == 99
    assert "raise IndexError: it reads beyond bar t" in verdict["summary"]


@njit
def _good_signal_nb(open_, high, low, close, volume, params, entries, exits, stop, tp, trail):
    for t in range(close.shape[0]):
        entries[t] = close[t] > params[0]


@njit
def _ten_arguments_nb(high, low, close, volume, params, entries, exits, stop, tp, trail):
    entries[0] = True


@njit
def _swapped_nb(open_, high, low, volume, close, params, entries, exits, stop, tp, trail):
    entries[0] = True


@njit
def _reads_undeclared_nb(open_, high, low, close, volume, params, entries, exits, stop, tp, trail):
    for t in range(close.shape[0]):
        entries[t] = close[t] > params[0] + params[2]


def _plain(open_, high, low, close, volume, params, entries, exits, stop, tp, trail):
    entries[0] = True


LEVEL = (Param(name="level", default=1.0, low=0.0, high=10.0),)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"signal_nb": _ten_arguments_nb}, "function _ten_arguments_nb): takes 10 arguments"),
        ({"signal_nb": _swapped_nb}, "argument 4 is 'volume', expected 'close'"),
        ({"signal_nb": _plain}, "signal_nb must be decorated with @numba.njit, got function"),
        ({"signal_nb": _reads_undeclared_nb}, "reads params[2] but declares 1 parameter(s)"),
        ({"warmup": 2.5}, "warmup must be a whole number of bars or a function"),
        ({"warmup": lambda v: v["level"] * 2}, "warmup must return a whole number of bars"),
        ({"warmup": lambda v: v["window"]}, "warmup at the default parameters raised KeyError"),
        ({"params": ("level",)}, "params must be a tuple of Param(...)"),
    ],
)
def test_strategy_refuses_a_bad_declaration_in_one_line_naming_file_and_function(changes, expected):
    declaration = {
        "name": "declared", "description": "d", "params": LEVEL,
        "signal_nb": _good_signal_nb, "warmup": 0,
    } | changes  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        Strategy(**declaration)
    message = str(caught.value)
    assert expected in message and "\n" not in message, message
    if "signal_nb" in changes:
        assert message.startswith("strategy 'declared' (tests/test_strategies.py:"), message


def test_a_good_declaration_passes_and_an_int_warmup_is_a_constant():
    strategy = Strategy(
        name="declared", description="d", params=LEVEL, signal_nb=_good_signal_nb, warmup=3
    )
    assert strategy.warmup_bars({"level": 5.0}) == 3


def test_strategies_check_command_exits_1_on_a_peeking_strategy():
    from typer.testing import CliRunner

    from quantshift.cli import app
    from quantshift.strategies import register

    register(dataclasses.replace(_peeking(_peek_next_close_every_bar_nb), name="peeking_cli"))
    data = "synthetic:symbols=1,bars=300,seed=3"
    peek = CliRunner().invoke(app, ["strategies", "check", "peeking_cli", "--data", data])
    assert peek.exit_code == 1
    assert "peeking_cli: LOOKS AHEAD: entries at bar 0 computed on the first 1 bars" in peek.output
    fine = CliRunner().invoke(app, ["strategies", "check", "ma_crossover", "--data", data])
    assert fine.exit_code == 0 and "ma_crossover: causal (" in fine.output


PEEK_FILE = """
from numba import njit
from quantshift import Strategy


@njit
def signal_nb(open_, high, low, close, volume, params, entries, exits, stop, tp, trail):
    for t in range(close.shape[0]):
        entries[t] = close[t + 1] > close[t]


STRATEGY = Strategy(name="user_peek", description="reads close[t + 1] on every bar", params=(),
                    signal_nb=signal_nb, warmup=0)
"""


def test_strategies_check_fails_a_peeking_user_strategy_loaded_from_its_file(tmp_path):
    from typer.testing import CliRunner

    from quantshift.cli import app

    source = tmp_path / "user_peek.py"
    source.write_text(PEEK_FILE)
    data = "synthetic:symbols=1,bars=300,seed=3"
    peek = CliRunner().invoke(
        app, ["--strategy-path", str(source), "strategies", "check", "user_peek", "--data", data]
    )
    assert peek.exit_code == 1, peek.output
    assert "user_peek: LOOKS AHEAD: entries at bar 0 computed on the first 1 bars" in peek.output
    by_reference = CliRunner().invoke(
        app, ["strategies", "check", f"{source}:STRATEGY", "--data", data]
    )
    assert by_reference.exit_code == 1 and "LOOKS AHEAD" in by_reference.output


def test_causality_verdict_names_the_parameter_set():
    strategy = get_strategy("ma_crossover")
    grid = strategy.grid({"fast": [5, 10], "slow": [20, 50]})
    verdict = check_causality(strategy, sp500_bars(3000, 3400), grid)
    assert verdict.causal and verdict.param_sets_checked == 4
    assert "causal (" in verdict.summary()


def test_peeking_at_the_next_close_fails_before_a_rise():
    bars = sp500_bars(3000, 3600)
    close = bars[3]
    rising = int(np.flatnonzero(close[1:] > close[:-1])[0]) + 1
    with pytest.raises(AssertionError, match=rf"entries on bars\[:{rising}\] looks ahead"):
        assert_causal(_peeking(_peek_next_close_nb), bars, np.empty(0), rising)


def test_causal_toy_strategy_passes_the_check():
    strategy = Strategy(
        name="toy",
        description="enters on an up close",
        params=(Param(name="unused", default=1, low=0, high=2),),
        signal_nb=_up_close_nb,
        warmup=lambda v: 1,
    )
    bars = sp500_bars(3000, 3600)
    for cut in range(1, 600, 13):
        assert_causal(strategy, bars, strategy.vector(), cut)


@njit
def _up_close_nb(open_, high, low, close, volume, params, entries, exits, stop, tp, trail):
    for t in range(1, close.shape[0]):
        entries[t] = close[t] > close[t - 1]


# Behaviour on real data and warm-up --------------------------------------------------------


@pytest.mark.parametrize("name", SEEDS)
def test_defaults_trade_on_the_sp500(name):
    strategy = get_strategy(name)
    entries, exits, stop, take_profit, trail = run_signals(
        strategy, sp500_bars(), strategy.vector()
    )
    assert entries.sum() >= 5
    assert exits.sum() >= 5
    distances = np.column_stack([stop, take_profit, trail])[entries]
    if strategy.uses_stops:
        # Every entry carries at least one protective distance, in price units (> 0).
        assert (np.nan_to_num(distances, nan=0.0) > 0).any(axis=1).all()
    else:
        assert np.isnan(distances).all()


def _earliest_entry_bars(name: str, n_bars: int) -> tuple[np.ndarray, ...]:
    """Return bars on which the named seed strategy's entry condition holds on the last bar."""
    t = np.arange(n_bars, dtype=np.float64)
    volume = np.ones(n_bars)
    if name == "ma_crossover":
        # Flat, then one higher close: the averages are equal until it, then the fast one leads.
        close = np.full(n_bars, 100.0)
        close[-1] = 110.0
        return close, close, close, close, volume
    if name == "breakout_momentum":
        # Every close is a new high; the volume burst comes on the last bar.
        close = 100.0 + t
        volume[-1] = 10.0
        return close, close, close, close, volume
    # Falling closes (RSI 0) whose lows reach far under any lower band.
    close = 1000.0 - t
    return close, close, close / 2.0, close, volume


@pytest.mark.parametrize("name", SEEDS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_warmup_is_exact(name, data):
    strategy = get_strategy(name)
    params = data.draw(param_vectors(strategy), label="params")
    warmup = int(strategy.warmup(dict(zip(strategy.param_names, params, strict=True))))
    entries, exits, *_ = run_signals(strategy, _earliest_entry_bars(name, warmup + 1), params)
    assert not entries[:warmup].any() and not exits[:warmup].any()
    assert entries[warmup], f"{name} could enter at bar {warmup} but did not"


def test_regression_grid_is_counted_before_it_is_built_and_blocks_keep_product_order():
    import itertools

    from quantshift.errors import ConfigError
    from quantshift.strategies.grid import GridAxis

    strategy = get_strategy("breakout_momentum")
    axes = {"entry_window": range(5, 40, 3), "exit_window": [30, 2, 30, 11], "trail_atr": (1, 3)}
    oracle = [
        combo
        for combo in itertools.product(
            *(dict.fromkeys(axes.get(p.name, [p.default])) for p in strategy.params)
        )
        if all(
            c.holds(dict(zip(strategy.param_names, combo, strict=True)))
            for c in strategy.constraints
        )
    ]
    matrix = strategy.grid(axes)
    np.testing.assert_array_equal(matrix, np.array(oracle, dtype=np.float64))
    grid = strategy.parameter_grid(axes)
    for block_sets in (1, 7, 10_000):
        np.testing.assert_array_equal(np.concatenate(list(grid.blocks(block_sets))), matrix)
    with pytest.raises(ConfigError, match=r"3,500,000,001 parameter sets"):
        get_strategy("bollinger_bounce").grid({"bb_std": GridAxis(0.5, 4.0, 1e-9)})
    with pytest.raises(ConfigError, match=r"10,000,000,000 parameter sets"):
        strategy.grid({"entry_window": range(10**10)})


def test_a_grid_swept_in_chunks_equals_one_pass():
    import pandas as pd

    import quantshift as qs

    bars = qs.load_bars("synthetic:symbols=2,bars=400,seed=8")
    grid = {"fast": range(2, 30), "slow": [20, 35, 20, 50]}
    seen = []
    chunked = qs.sweep("ma_crossover", bars, grid, progress=lambda d, t: seen.append((d, t)))
    whole = qs.sweep("ma_crossover", bars, grid)
    assert len(seen) > 1 and seen[-1] == (len(whole) // 2, len(whole) // 2)
    pd.testing.assert_frame_equal(chunked, whole)
    np.testing.assert_array_equal(
        whole[["fast", "slow"]].to_numpy()[::2], get_strategy("ma_crossover").grid(grid)
    )
