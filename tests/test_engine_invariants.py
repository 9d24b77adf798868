"""Properties of the engine over random strategies, parameters and settings.

The fused sweep and the recording backtest are separate kernels over one fill model: they must
agree exactly; and the books must balance (final equity = cash + every trade's net P&L).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import quantshift as qs

BARS = qs.load_bars("synthetic:symbols=3,bars=400,seed=21,gaps=0.03")
STRATEGIES = [s.name for s in qs.list_strategies()]


@st.composite
def parameters(draw, strategy):
    values = {}
    for p in strategy.params:
        if p.integer:
            values[p.name] = draw(st.integers(int(p.low), int(min(p.high, 60))))
        else:
            values[p.name] = draw(st.floats(p.low, p.high, allow_nan=False))
    assume(all(c.holds(values) for c in strategy.constraints))
    return values


@st.composite
def sim_settings(draw, strategy):
    sizings = ["fraction", "kelly"] + (["risk"] if strategy.uses_stops else [])
    return {
        "fees_bps": draw(st.sampled_from([0.0, 2.5, 10.0])),
        "slippage_bps": draw(st.sampled_from([0.0, 1.0, 5.0])),
        "fill": draw(st.sampled_from(["next-open", "close"])),
        "direction": draw(st.sampled_from(["long", "short", "both"])),
        "sizing": draw(st.sampled_from(sizings)),
        "size": draw(st.sampled_from([0.5, 1.0])),
        "kelly_min_trades": 3,
        "whole_units": draw(st.booleans()),
        "use_stops": draw(st.booleans()),
    }


@pytest.mark.parametrize("name", STRATEGIES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_sweep_equals_backtest_and_books_balance(name, data):
    strategy = qs.get_strategy(name)
    params = data.draw(parameters(strategy))
    config = data.draw(sim_settings(strategy))
    result = qs.backtest(strategy, BARS, params, **config)
    table = qs.sweep(strategy, BARS, [params], **config).set_index("symbol")
    for column in qs.METRICS:
        np.testing.assert_array_equal(
            table.loc[list(BARS.symbols), column].to_numpy(),
            result.stats[column].to_numpy(),
            err_msg=f"{name} {column} {params} {config}",
        )
    pnl = result.trades.groupby("symbol", observed=False)["pnl"].sum()
    np.testing.assert_allclose(
        result.stats["final_equity"].to_numpy(),
        result.config.cash + pnl.reindex(list(BARS.symbols), fill_value=0.0).to_numpy(),
        rtol=1e-9,
        err_msg=f"{name} {params} {config}",
    )
    last = result.equity.iloc[-1].to_numpy()
    np.testing.assert_allclose(last, result.stats["final_equity"].to_numpy(), rtol=1e-12)
