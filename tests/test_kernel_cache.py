"""Kernels stay cacheable: a second process loads them from numba's cache instead of compiling.

Also: the cache key follows the sources, so an edited strategy never runs stale machine code.
"""

from __future__ import annotations

import importlib

from probe import run_json

from quantshift.engine.compile import function_digest

PROBE = """
import json, time
started = time.perf_counter()
import quantshift as qs
from quantshift.engine.fused import kernels_for
bars = qs.load_bars("synthetic:symbols=2,bars=400,seed=3")
qs.backtest("ma_crossover", bars)
qs.sweep("ma_crossover", bars, {"fast": [3, 5], "slow": [20, 30]})
kernels = kernels_for(qs.get_strategy("ma_crossover"))
stats = {kind: getattr(kernels, kind).stats for kind in ("backtest", "sweep")}
print(json.dumps({
    "hits": {k: sum(s.cache_hits.values()) for k, s in stats.items()},
    "misses": {k: sum(s.cache_misses.values()) for k, s in stats.items()},
    "seconds": time.perf_counter() - started,
}))
"""


def _run_probe(cache_dir) -> dict:
    return run_json(PROBE, NUMBA_CACHE_DIR=str(cache_dir), NUMBA_DISABLE_JIT=None)


def test_second_process_loads_kernels_from_cache(tmp_path):
    cold = _run_probe(tmp_path)
    warm = _run_probe(tmp_path)
    assert cold["misses"] == {"backtest": 1, "sweep": 1}, cold
    assert warm["misses"] == {"backtest": 0, "sweep": 0}, warm
    assert warm["hits"] == {"backtest": 1, "sweep": 1}, warm
    # Loading from cache is what makes the warm start fast; report it for the curious.
    print(f"cold {cold['seconds']:.1f} s, warm {warm['seconds']:.1f} s")


def test_cache_key_follows_strategy_source(tmp_path, monkeypatch):
    source = tmp_path / "my_signals.py"
    source.write_text("def signal(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("my_signals")
    before = function_digest(module.signal)
    assert function_digest(module.signal) == before
    source.write_text("def signal(x):\n    return x + 2\n")
    module = importlib.reload(module)
    assert function_digest(module.signal) != before


def test_cache_key_differs_for_two_functions_of_one_file():
    def first(x):
        return x + 1

    def second(x):
        return x - 1

    assert function_digest(first) != function_digest(second)


EXEC_PROBE = '''
import json
import quantshift as qs
from numba import njit
from quantshift.indicators import sma_nb
code = """
@njit
def signal_nb(open_, high, low, close, volume, params, entries, exits, stop, take_profit, trail):
    fast = sma_nb(close, int(params[0]))
    for t in range(1, close.shape[0]):
        entries[t] = close[t] > fast[t] and close[t - 1] <= fast[t - 1]
        exits[t] = close[t] < fast[t]
"""
namespace = {"__name__": "not_importable", "njit": njit, "sma_nb": sma_nb}
exec(compile(code, "<cell>", "exec"), namespace)
strategy = qs.Strategy(
    name="exec_defined",
    description="defined by exec, as in a notebook cell",
    params=(qs.Param(name="n", default=10, low=2, high=50, integer=True),),
    signal_nb=namespace["signal_nb"],
    warmup=lambda p: int(p["n"]),
)
result = qs.backtest(strategy, "synthetic:symbols=1,bars=300,seed=4")
print(json.dumps({"trades": result.metrics["trades"]}))
'''


def test_regression_exec_defined_strategy_runs_in_a_second_process(tmp_path):
    """A kernel inlining a signal function from a non-importable module used to be cached and
    then fail to load in the next process ("No module named '<dynamic>'")."""
    first = run_json(EXEC_PROBE, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_DISABLE_JIT=None)
    second = run_json(EXEC_PROBE, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_DISABLE_JIT=None)
    assert first == second and first["trades"] > 0


USER_PROBE = """
import json
import quantshift as qs
from quantshift.engine.fused import kernels_for
bars = qs.load_bars("synthetic:symbols=2,bars=300,seed=5")
counts = {}
for name in ("user_alpha", "user_beta", "ma_crossover"):
    qs.backtest(name, bars)
    stats = kernels_for(qs.get_strategy(name)).backtest.stats
    counts[name] = [sum(stats.cache_hits.values()), sum(stats.cache_misses.values())]
print(json.dumps(counts))
"""
USER_STRATEGY = """
from numba import njit
from quantshift import Param, Strategy
from quantshift.indicators import sma_nb


@njit
def signal_nb(open_, high, low, close, volume, params, entries, exits, stop, take_profit, trail):
    average = sma_nb(close, int(params[0]))
    for t in range(1, close.shape[0]):
        entries[t] = close[t] > average[t] * THRESHOLD
        exits[t] = close[t] < average[t]


THRESHOLD = 1.0
STRATEGY = Strategy(
    name="NAME",
    description="a user's strategy in the user's own folder",
    params=(Param(name="window", default=10, low=2, high=50, integer=True),),
    signal_nb=signal_nb,
    warmup=lambda values: int(values["window"]),
)
"""


def test_editing_one_user_strategy_recompiles_only_its_kernels(tmp_path):
    """The kernel key covers the core and the strategy's own sources: after an edit to
    user_alpha's file, its kernels compile again while user_beta's and ma_crossover's load
    from numba's cache (they used to key on every source file of the package)."""
    folder = tmp_path / "strategies"
    folder.mkdir()
    for name in ("user_alpha", "user_beta"):
        (folder / f"{name}.py").write_text(USER_STRATEGY.replace("NAME", name))
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_DISABLE_JIT": None}
    env["QUANTSHIFT_STRATEGY_PATH"] = str(folder)
    cold = run_json(USER_PROBE, **env)
    alpha = folder / "user_alpha.py"
    alpha.write_text(alpha.read_text().replace("THRESHOLD = 1.0", "THRESHOLD = 1.01"))
    edited = run_json(USER_PROBE, **env)
    # [hits, misses] of each strategy's backtest kernel
    assert cold["user_alpha"] == [0, 1] and cold["user_beta"] == [0, 1], cold
    assert edited == {"user_alpha": [0, 1], "user_beta": [1, 0], "ma_crossover": [1, 0]}, edited


def test_core_digest_leaves_out_the_strategy_modules_and_templates():
    from quantshift.provenance import core_files

    names = {path.relative_to(path.parents[1]).as_posix() for path in core_files()}
    assert "engine/fused.py" in names and "quantshift/indicators.py" in names
    assert "strategies/base.py" in names and "strategies/checks.py" in names
    for strategy in ("ma_crossover", "rsi_reversion", "bollinger_bounce", "breakout_momentum"):
        assert f"strategies/{strategy}.py" not in names
    assert not any("templates" in name for name in names)
