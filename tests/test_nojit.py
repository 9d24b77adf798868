"""The kernels also run as plain Python (NUMBA_DISABLE_JIT=1) and give the same results.

That path is how a kernel is debugged with pdb or coverage, so it must keep working.
"""

from __future__ import annotations

import numpy as np
from probe import run_json

PROBE = """
import json
import quantshift as qs
bars = qs.load_bars("synthetic:symbols=2,bars=300,seed=11")
out = {}
for name in ("ma_crossover", "rsi_reversion", "bollinger_bounce", "breakout_momentum"):
    r = qs.backtest(name, bars, fees_bps=5, slippage_bps=3)
    out[name] = r.stats[["final_equity", "trades", "sharpe"]].to_numpy().tolist()
grid = qs.sweep("ma_crossover", bars, {"fast": [3, 5], "slow": [12, 20]})
out["sweep"] = grid["final_equity"].tolist()
print(json.dumps(out))
"""


def _run(disable_jit: bool) -> dict:
    return run_json(PROBE, NUMBA_DISABLE_JIT="1" if disable_jit else None)


def test_plain_python_path_matches_compiled():
    compiled = _run(disable_jit=False)
    interpreted = _run(disable_jit=True)
    assert compiled.keys() == interpreted.keys()
    for key in compiled:
        np.testing.assert_allclose(
            np.array(interpreted[key], dtype=float),
            np.array(compiled[key], dtype=float),
            rtol=1e-12,
            equal_nan=True,
            err_msg=key,
        )
    assert sum(row[1] for row in compiled["ma_crossover"]) > 0
