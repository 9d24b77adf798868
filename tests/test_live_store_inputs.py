"""The overlay inputs each decided bar used, kept in the store (SQLite and PostgreSQL): written
with the leader's epoch (fenced), rewritten by a leader redoing a bar, read back aligned to the
bar times and symbols asked for, as ``portfolio_backtest`` takes them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_live_store import new_pg_database, pg_admin  # noqa: F401 (fixture)

from live.store import StaleEpochError, Store
from quantshift.errors import ConfigError
from quantshift.portfolio.overlay import REGIME_UNKNOWN, REGIMES

DAY_NS = 86_400 * 10**9
T0 = 1_700_000_000 * 10**9 // DAY_NS * DAY_NS


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'live.db'}"
    else:
        url = new_pg_database(request.getfixturevalue("pg_admin"), request)
    with Store.open(url) as opened:
        yield opened


def rows(store) -> list[dict]:
    with store._db.read("inputs") as tx:
        return tx.all("SELECT runner, bar_ts_ns, symbol, regime, sentiment, epoch "
                      "FROM decided_inputs ORDER BY runner, bar_ts_ns, symbol")  # fmt: skip


def test_inputs_read_back_on_the_bars_and_symbols_asked_for(store):
    assert store.record_inputs(
        "overlay", T0, epoch=1,
        regime={"SPY": 2, "QQQ": "bear_trending", "IWM": float("nan")},
        sentiment={"SPY": 0.25, "QQQ": float("nan"), "IWM": None},
    ) == 3  # fmt: skip
    store.record_inputs("overlay", T0 + DAY_NS, epoch=1, regime={"SPY": -1, "QQQ": None})
    store.record_inputs("overlay", T0 + 2 * DAY_NS, epoch=1, sentiment={"SPY": -1.0, "QQQ": 1})
    store.record_inputs(
        "other", T0 + 3 * DAY_NS, epoch=1, regime={"SPY": 4}, sentiment={"SPY": 0.5}
    )
    # Unknown labels and missing news are NULL in the table, as the migration says.
    first = {r["symbol"]: (r["regime"], r["sentiment"]) for r in rows(store)
             if (r["runner"], r["bar_ts_ns"]) == ("overlay", T0)}  # fmt: skip
    assert first == {"IWM": (None, None), "QQQ": (REGIMES.index("bear_trending"), None),
                     "SPY": (2, 0.25)}  # fmt: skip
    times = [T0 - DAY_NS, T0, T0 + DAY_NS, T0 + 2 * DAY_NS, T0 + 3 * DAY_NS]
    kept = store.decided_inputs("overlay", np.array(times), ["QQQ", "SPY", "DIA"])
    np.testing.assert_array_equal(kept.stored, [False, True, True, True, False])
    u = REGIME_UNKNOWN
    np.testing.assert_array_equal(
        kept.regime, [[u, u, u], [1, 2, u], [u, u, u], [u, u, u], [u, u, u]]
    )
    n = math.nan
    np.testing.assert_array_equal(
        kept.sentiment, [[n, n, n], [n, 0.25, n], [n, n, n], [1.0, -1.0, n], [n, n, n]]
    )
    assert kept.regime.dtype == np.int64 and kept.sentiment.dtype == np.float64
    other = store.decided_inputs("other", times, ["SPY"])
    assert other.stored.tolist() == [False] * 4 + [True] and other.regime[-1, 0] == 4
    empty = store.decided_inputs("overlay", [], ["SPY"])
    assert empty.regime.shape == (0, 1) and empty.stored.shape == (0,)


def test_a_redone_bar_keeps_the_last_leaders_inputs_and_a_stale_leader_writes_nothing(store):
    store.record_inputs("overlay", T0, epoch=1, regime={"SPY": 0}, sentiment={"SPY": 0.1})
    store.record_inputs("overlay", T0, epoch=1, regime={"SPY": 0}, sentiment={"SPY": 0.1})
    assert [(r["regime"], r["sentiment"], r["epoch"]) for r in rows(store)] == [(0, 0.1, 1)]
    # The next leader redoes the bar: its decision, the one that counts, used these.
    store.record_inputs("overlay", T0, epoch=2, regime={"SPY": 3}, sentiment={"SPY": -0.4})
    assert [(r["regime"], r["sentiment"], r["epoch"]) for r in rows(store)] == [(3, -0.4, 2)]
    with pytest.raises(StaleEpochError, match="decided inputs of overlay"):
        store.record_inputs("overlay", T0, epoch=1, regime={"SPY": 1}, sentiment={"SPY": 0.9})
    with pytest.raises(StaleEpochError):
        store.record_inputs("overlay", T0 + DAY_NS, epoch=1, regime={"SPY": 1})
    assert [(r["regime"], r["sentiment"], r["epoch"]) for r in rows(store)] == [(3, -0.4, 2)]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"regime": {"SPY": 5}}, r"at bar \d+, SPY: regime: regime 5 is not a label"),
        ({"regime": {"SPY": "sideways"}}, "regime 'sideways' is not a label"),
        ({"sentiment": {"QQQ": 1.5}}, r"QQQ: sentiment must be in \[-1, 1\] or NaN, got 1.5"),
        ({"sentiment": {"QQQ": math.inf}}, "QQQ: sentiment must be a finite number"),
        ({"sentiment": {"QQQ": "up"}}, "QQQ: sentiment must be a number, got 'up'"),
    ],
)
def test_bad_inputs_are_refused_naming_the_runner_bar_and_symbol(store, inputs, message):
    with pytest.raises(ConfigError, match=message) as caught:
        store.record_inputs("overlay", T0, epoch=1, **{"regime": {"SPY": 0}, **inputs})
    assert "runner 'overlay'" in str(caught.value)
    assert rows(store) == []
