"""A store written before a schema migration stays readable after it, on SQLite and PostgreSQL.

Migration 0008 renamed the columns that held a sleeve's name from ``strategy`` to ``sleeve`` (and
a promotion's to ``name``): a database at version 7, written with the old names, is opened by
this code and reads back the same intents, trades, positions, equity, performance and promotions.
Migration 0010 keeps the overlay inputs of each decided bar: the bars an overlay runner decided
before it are named by `live divergence`, which cannot rebuild their backtest.
"""

from __future__ import annotations

import json
import sqlite3

import psycopg
import pytest
from test_live_store import new_pg_database, pg_admin  # noqa: F401 (fixture)

from live.config import parse_config
from live.divergence import divergence
from live.store import LATEST_VERSION, PORTFOLIO, Store, client_order_id
from live.store.db import Database, parse_url
from live.store.migrate import MIGRATIONS, migrate
from quantshift.data import load_bars
from quantshift.errors import DataError
from tests.test_live_overlay import SOURCE, _raw

RENAME = next(m.version for m in MIGRATIONS if m.name == "sleeve_names")
INPUTS = next(m.version for m in MIGRATIONS if m.name == "decided_inputs")
BEFORE = RENAME - 1
DAY_NS = 86_400 * 10**9
T0 = 1_700_000_000 * 10**9 // DAY_NS * DAY_NS
SLEEVE_TABLES = ("order_intents", "trades", "positions", "equity_snapshots", "sleeve_performance")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'live.db'}"
    return new_pg_database(request.getfixturevalue("pg_admin"), request)


def _write_at_old_schema(url: str) -> dict:
    """Create a store at schema version ``BEFORE`` and write rows under the old column names,
    as the code of that version did; return what was written."""
    db = Database(parse_url(url), timeout_s=10.0)
    try:
        assert migrate(db, MIGRATIONS[:BEFORE]) == BEFORE
        cid = client_order_id("trend", "SPY", T0, "buy")
        record = json.dumps({"name": "trend-rec", "strategy": "ma_crossover"})
        with db.transaction("rows of the old schema") as tx:
            tx.run(
                "INSERT INTO order_intents (client_order_id, strategy, symbol, side, qty, "
                "order_type, venue, bar_ts_ns, ts_decided_ns, epoch, state, filled_qty, "
                "avg_fill_price, ts_updated_ns) VALUES (?, 'trend', 'SPY', 'buy', 10.0, "
                "'market', 'paper', ?, ?, 1, 'FILLED', 10.0, 101.5, ?)",
                (cid, T0, T0 + 1, T0 + 2),
            )
            tx.run(
                "INSERT INTO trades (trade_id, strategy, symbol, direction, qty, entry_ts_ns, "
                "exit_ts_ns, entry_price, exit_price, fees, pnl, exit_reason, epoch, "
                "ts_recorded_ns) VALUES ('t1', 'trend', 'SPY', 'long', 10.0, ?, ?, 101.5, "
                "104.0, 0.5, 24.5, 'signal', 1, ?)",
                (T0, T0 + 3 * DAY_NS, T0 + 3 * DAY_NS),
            )
            tx.run(
                "INSERT INTO positions (strategy, symbol, qty, avg_price, ts_ns, epoch, details) "
                "VALUES ('trend', 'QQQ', -4.0, 390.25, ?, 1, '{\"stop\": 400.0}')",
                (T0 + 3 * DAY_NS,),
            )
            for day, (portfolio, sleeve) in enumerate([(1000.0, 500.0), (1024.5, 524.5)]):
                for name, equity in ((PORTFOLIO, portfolio), ("trend", sleeve)):
                    tx.run(
                        "INSERT INTO equity_snapshots (strategy, ts_ns, equity, epoch) "
                        "VALUES (?, ?, ?, 1)",
                        (name, T0 + day * DAY_NS, equity),
                    )
            tx.run(
                "INSERT INTO strategy_performance (strategy, trades, wins, win_rate_pct, pnl, "
                "periods_per_year, ts_updated_ns) VALUES ('trend', 1, 1, 100.0, 24.5, 252.0, ?)",
                (T0 + 3 * DAY_NS,),
            )
            tx.run(
                "INSERT INTO promotions (strategy, stage, code_fingerprint, record, created_by, "
                "ts_created_ns, active) VALUES ('trend-rec', 'paper', 'c', ?, 'alice', ?, 1)",
                (record, T0),
            )
    finally:
        db.close()
    return {"cid": cid, "record": record}


def test_a_store_of_the_previous_schema_reads_the_same_rows_under_the_new_names(url):
    written = _write_at_old_schema(url)
    with Store.open(url) as store:
        assert store.schema_version == LATEST_VERSION >= RENAME
        (intent,) = store.intents(sleeve="trend")
        assert (intent.client_order_id, intent.sleeve, intent.symbol, intent.qty) == (
            written["cid"], "trend", "SPY", 10.0,
        )  # fmt: skip
        assert (intent.state, intent.avg_fill_price) == ("FILLED", 101.5)
        (trade,) = store.trades("trend")
        assert (trade.trade_id, trade.sleeve, trade.symbol, trade.pnl, trade.fees) == (
            "t1", "trend", "SPY", 24.5, 0.5,
        )  # fmt: skip
        (position,) = store.positions("trend")
        assert (position.sleeve, position.symbol, position.qty, position.details) == (
            "trend", "QQQ", -4.0, {"stop": 400.0},
        )  # fmt: skip
        assert [(s.sleeve, s.equity) for s in store.equity_curve("trend")] == [
            ("trend", 500.0), ("trend", 524.5),
        ]  # fmt: skip
        assert [s.equity for s in store.equity_curve()] == [1000.0, 1024.5]
        (performance,) = store.performance("trend")
        assert (performance.sleeve, performance.trades, performance.pnl) == ("trend", 1, 24.5)
        promotion = store.active_promotion("trend-rec", "paper")
        assert (promotion.name, promotion.record) == ("trend-rec", written["record"])
        status = store.status()
        assert [p.sleeve for p in status.positions] == ["trend"]
        assert status.equity.sleeve == PORTFOLIO and status.day_pnl == 24.5
        assert [p.sleeve for p in status.performance] == ["trend"]
        with store._db.read("columns") as tx:
            for table in SLEEVE_TABLES:
                row = tx.one(f"SELECT * FROM {table}")
                assert "sleeve" in row and "strategy" not in row, table
            assert "name" in tx.one("SELECT * FROM promotions")


def test_after_the_upgrade_keys_and_constraints_hold_under_the_new_names(url):
    written = _write_at_old_schema(url)
    with Store.open(url) as store:
        # A redo of the decided bar maps to the stored intent: the id derivation is unchanged.
        again = store.record_intent(
            sleeve="trend", symbol="SPY", side="buy", qty=99.0, bar_ts_ns=T0, venue="paper",
            epoch=1,
        )  # fmt: skip
        assert again.client_order_id == written["cid"] and again.qty == 10.0
        assert len(store.intents()) == 1
        trade = dict(
            trade_id="t1", sleeve="trend", symbol="SPY", direction="long", qty=10.0,
            entry_ts_ns=T0, exit_ts_ns=T0 + 3 * DAY_NS, entry_price=101.5, exit_price=104.0,
            pnl=24.5, epoch=1,
        )  # fmt: skip
        assert store.record_trade(**trade) is False  # the primary key survived
        # (sleeve, symbol) is still the positions' key: an older update is ignored, a newer
        # one replaces the row rather than adding one.
        put = dict(sleeve="trend", symbol="QQQ", avg_price=390.25, epoch=1)
        assert store.upsert_position(qty=-9.0, ts_ns=T0, **put) is False
        assert store.upsert_position(qty=-2.0, ts_ns=T0 + 4 * DAY_NS, **put) is True
        assert [p.qty for p in store.positions(include_flat=True)] == [-2.0]
        store.record_equity(sleeve="trend", ts_ns=T0 + DAY_NS, equity=530.0, epoch=1)
        assert [s.equity for s in store.equity_curve("trend")] == [500.0, 530.0]
        refreshed = store.update_performance("trend")
        assert store.performance() == [refreshed] and refreshed.trades == 1
        # One active record per (name, stage): the partial unique index followed the column.
        newer = store.add_promotion(
            name="trend-rec", stage="paper", code_fingerprint="d", record={"n": 2},
            created_by="bob",
        )  # fmt: skip
        assert [p.active for p in store.promotions("trend-rec")] == [False, True]
        assert store.active_promotion("trend-rec", "paper") == newer
        unique = (sqlite3.IntegrityError, psycopg.errors.UniqueViolation)
        with pytest.raises(unique), store._db.transaction("two active records") as tx:
            tx.run("UPDATE promotions SET active = 1")
        with store._db.read("indexes") as tx:
            if store.dialect == "sqlite":
                sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
            else:
                sql = "SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'public'"
            indexes = {r["name"] for r in tx.all(sql)}
        assert {"order_intents_by_sleeve", "trades_by_sleeve", "promotions_one_active"} <= indexes
        assert not {i for i in indexes if "strategy" in i}


def test_bars_an_overlay_runner_decided_before_its_inputs_were_kept_are_named(url, tmp_path):
    # An overlay runner decided bars 100.. of a store at the version before the inputs table.
    config = parse_config(_raw(tmp_path, "sqlite:///unused", "regimes", "1"), source="o.toml")
    bars = load_bars(SOURCE)[:120]
    first = int(bars.ts_ns[100])
    db = Database(parse_url(url), timeout_s=10.0)
    try:
        assert migrate(db, MIGRATIONS[: INPUTS - 1]) == INPUTS - 1
        with db.transaction("decided bars of the old schema") as tx:
            for t, ts in enumerate(bars.ts_ns.tolist()):
                for k, symbol in enumerate(bars.symbols):
                    tx.run(
                        "INSERT INTO decided_bars (symbol, ts_ns, open, high, low, close, "
                        "volume, ts_recorded_ns) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                        (symbol, ts, *(float(getattr(bars, c)[t, k])
                                       for c in ("open", "high", "low", "close", "volume"))),
                    )  # fmt: skip
            tx.run("INSERT INTO decided_from (runner, ts_ns) VALUES (?, ?)", (config.name, first))
    finally:
        db.close()
    with Store.open(url) as store:
        assert store.schema_version == LATEST_VERSION >= INPUTS

        def keep(times):  # what the upgraded runner writes each cycle
            for ts in times:
                store.record_inputs(
                    config.name, ts, epoch=0, regime=dict.fromkeys(bars.symbols, 0),
                    sentiment=dict.fromkeys(bars.symbols, float("nan")),
                )  # fmt: skip

        # Bars 100..109 were decided before the upgrade; 119's cycle has not decided yet.
        keep(bars.ts_ns[110:119].tolist())
        day = bars.index[100].strftime("%Y-%m-%d %H:%M")
        with pytest.raises(DataError) as caught:
            divergence(config, store)
        assert (f"runner 'overlay-test' decided the bar of {day} (ts_ns {first}) without the "
                "overlay inputs it used (10 such bars") in str(caught.value)  # fmt: skip
        keep(bars.ts_ns[100:110].tolist())
        report = divergence(config, store)
        assert report.first_decided_ns == first and report.bars == 20
