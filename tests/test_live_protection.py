"""Protective exits resting at the venue: the paper venue's matching against the fill model's
intrabar rules, the OCO race, reconciliation of resting orders, and replay parity on gappy data.
"""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from live.broker import OrderRequest, OrderStatus
from live.config import parse_config
from live.paper import PaperBroker
from live.protection import RestingProtection, group_id, legs_of
from live.runner import Runner
from live.store import Store
from quantshift.engine.records import config_dt, position_dt, stats_dt, trade_dt
from quantshift.engine.simulate import EXIT_REASONS, check_levels_nb
from quantshift.portfolio import PortfolioState, TargetOrder, apply_executions

EXAMPLE = Path(__file__).resolve().parents[1] / "live" / "examples" / "paper_sp500.toml"
RAW = tomllib.loads(EXAMPLE.read_text())
SLIP, FEE = 2e-4, 1e-4


@pytest.fixture
def paper(tmp_path):
    broker = PaperBroker(f"sqlite:///{tmp_path}/p.db", cash=1e6, fee_rate=FEE, slippage_rate=SLIP)
    yield broker
    broker.close()


def _protect(broker, qty=10.0, stop=None, target=None, trail=None, best=None, side="sell"):
    sent = []
    for kind, fields in (
        ("stop", {"stop_price": stop}),
        ("limit", {"limit_price": target}),
        ("trailing_stop", {"trail_amount": trail, "trail_from_price": best}),
    ):
        if next(iter(fields.values())) is None:
            continue
        request = OrderRequest(client_order_id=f"qs{kind}", symbol="X", side=side, qty=qty,
                               order_type=kind, oco_group="g1", time_in_force="gtc",
                               **fields)  # fmt: skip
        sent.append(broker.submit(request))
    return sent


def _model(open_, high, low, stop=math.nan, target=math.nan, trail=math.nan, best=math.nan):
    """What the backtest's fill model does with a long position's levels on one bar."""
    pos = np.zeros(1, position_dt)
    p = pos[0]
    p.units, p.entry_price = 10.0, 100.0
    p.stop_price, p.take_profit_price, p.trail_distance = stop, target, trail
    p.best_price = 100.0 if math.isnan(best) else best
    p.has_levels = True
    cfg = np.zeros(1, config_dt)
    cfg[0].fee_rate, cfg[0].slippage_rate = FEE, SLIP
    trades = np.zeros(1, trade_dt)
    n = check_levels_nb(p, open_, high, low, 0, cfg[0], trades, 0, np.zeros(1, stats_dt)[0])
    return (float(trades[0].exit_price), EXIT_REASONS[trades[0].exit_reason]) if n else None


@pytest.mark.parametrize(
    ("bar", "levels", "expected_leg"),
    [
        ((90.0, 92.0, 85.0), {"stop": 95.0, "target": 110.0}, "qsstop"),  # gap through: open
        ((100.0, 101.0, 94.0), {"stop": 95.0, "target": 110.0}, "qsstop"),  # touched: level
        ((100.0, 112.0, 94.0), {"stop": 95.0, "target": 110.0}, "qsstop"),  # both: the worse
        ((100.0, 111.0, 99.0), {"stop": 95.0, "target": 110.0}, "qslimit"),
        ((115.0, 116.0, 114.0), {"stop": 95.0, "target": 110.0}, "qslimit"),  # gap up: open
        ((104.0, 104.5, 101.0), {"stop": 95.0, "trail": 3.0, "best": 105.0}, "qstrailing_stop"),
        ((100.0, 101.0, 99.0), {"stop": 95.0, "target": 110.0}, None),
    ],
)
def test_the_paper_venue_fills_resting_orders_as_the_fill_model_does(paper, bar, levels,
                                                                      expected_leg):  # fmt: skip
    _protect(paper, **levels)
    paper.trade_bar(1, {"X": bar})
    level = {k: levels.get(k, math.nan) for k in ("stop", "target", "trail", "best")}
    model = _model(*bar, **level)
    filled = [o for o in (paper.order(c) for c in ("qsstop", "qslimit", "qstrailing_stop"))
              if o is not None and o.status == OrderStatus.FILLED]  # fmt: skip
    if expected_leg is None:
        assert model is None and not filled
        assert all(o.status == OrderStatus.OPEN for o in paper.open_orders())
        return
    assert [o.client_order_id for o in filled] == [expected_leg]  # one leg of the group, ever
    assert filled[0].avg_fill_price == model[0]  # exactly the fill model's price
    assert filled[0].fees == pytest.approx(10.0 * model[0] * FEE, rel=1e-12)
    assert not paper.open_orders()  # the OCO siblings are cancelled
    assert paper.positions() == {"X": -10.0}  # the sell closed (here: opened short) 10


def test_a_trailing_stop_follows_the_best_price_bar_by_bar(paper):
    _protect(paper, trail=2.0, best=100.0)
    paper.trade_bar(1, {"X": (100.0, 105.0, 100.5)})
    assert paper.order("qstrailing_stop").trail_best_price == 105.0
    paper.trade_bar(2, {"X": (104.0, 104.5, 102.5)})
    done = paper.order("qstrailing_stop")
    assert done.status == OrderStatus.FILLED and done.avg_fill_price == 103.0 * (1 - SLIP)


def test_a_market_order_waits_for_the_next_open_and_fills_there_with_slippage(paper):
    paper.submit(OrderRequest(client_order_id="qsbuy", symbol="X", side="buy", qty=2.0))
    assert paper.order("qsbuy").status == OrderStatus.OPEN
    paper.open_bar(5, {"X": 50.0})
    done = paper.order("qsbuy")
    assert done.status == OrderStatus.FILLED and done.avg_fill_price == 50.0 * (1 + SLIP)
    assert done.ts_updated_ns == 5 and paper.fills()[0].ts_fill_ns == 5


def test_a_bar_opened_again_by_a_successor_does_not_fill_what_was_sent_in_it(tmp_path):
    """A runner that takes over redoes the bar its predecessor died in and opens it again; a
    market order the predecessor sent in that bar (after its open) fills at the next open."""
    url = f"sqlite:///{tmp_path}/p.db"
    first = PaperBroker(url, cash=1e6, slippage_rate=SLIP)
    first.open_bar(5, {"X": 50.0})
    first.submit(OrderRequest(client_order_id="qsbuy", symbol="X", side="buy", qty=2.0))
    first.close()  # the predecessor dies here
    successor = PaperBroker(url, cash=1e6, slippage_rate=SLIP)
    successor.open_bar(5, {"X": 50.0})  # the redo of bar 5
    assert successor.order("qsbuy").status == OrderStatus.OPEN
    successor.open_bar(6, {"X": 51.0})
    done = successor.order("qsbuy")
    assert done.status == OrderStatus.FILLED and done.avg_fill_price == 51.0 * (1 + SLIP)
    successor.close()


def test_an_oco_group_that_filled_refuses_a_new_leg_and_replace_never_doubles(paper):
    _protect(paper, stop=95.0, target=110.0)
    paper.trade_bar(1, {"X": (100.0, 101.0, 94.0)})
    late = OrderRequest(client_order_id="qsstop2", symbol="X", side="sell", qty=10.0,
                        order_type="stop", stop_price=96.0, oco_group="g1")  # fmt: skip
    answer = paper.replace("qsstop", late)  # the old stop filled first: nothing new is sent
    assert answer.client_order_id == "qsstop" and paper.order("qsstop2") is None
    assert paper.positions() == {"X": -10.0}


# ----------------------------------------------------------------------------- the runner side
def _config(tmp_path, **changes):
    raw = copy.deepcopy(RAW)
    raw["store"]["url"] = f"sqlite:///{tmp_path}/state.db"
    raw["metrics"]["enabled"] = False
    raw["feed"].update(start="2015-01-01", end="2016-01-01")
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    return parse_config(raw, source="test.toml")


def _open_position(config, store, broker):
    """A reversion position in SP500 with a stop and a target, entered through the venue."""
    portfolio = config.portfolio
    state = PortfolioState.initial(portfolio)
    order = TargetOrder(sleeve="reversion", strategy="rsi_reversion", symbol="SP500",
                        action="entry", side="buy", units=5.0, reason="entry", ts_ns=1_000,
                        reference_price=2000.0, stop_distance=50.0,
                        take_profit_distance=80.0)  # fmt: skip
    return apply_executions(state, [(order, 5.0, 2000.0, 0.0)], 2_000, portfolio).state


def test_a_strategy_exit_racing_its_filled_stop_sends_no_exit(tmp_path):
    config = _config(tmp_path)
    with Store.open(config.store_url) as store:
        broker = PaperBroker(config.store_url, cash=1e6)
        state = _open_position(config, store, broker)
        resting = RestingProtection(broker, store)
        assert resting.protect(state, 0, fresh={("reversion", "SP500")}) == 2
        position = state.positions()[0]
        # The stop fills at the venue after the cycle settled and before the exit's cancel.
        broker.trade_bar(3_000, {"SP500": (1990.0, 1995.0, 1900.0)})
        assert resting.release(position, 0) is False  # so no exit is sent: never a double exit
        settled = resting.settle(state, config.portfolio, 3_000, 0)
        assert [t.exit_reason for t in settled.trades] == ["stop_loss"]
        # one sell executed at the venue (its entry was applied to the state directly here)
        assert not settled.state.positions() and len(broker.fills()) == 1
        assert {store.intent(leg.request.client_order_id).state for leg in legs_of(position)} \
            == {"FILLED", "CANCELLED"}  # fmt: skip
        broker.close()


def test_on_alpaca_an_exit_racing_a_filled_oco_leg_sends_no_exit_and_never_doubles(
    tmp_path, monkeypatch
):
    """Through alpaca-py: the stop and target go as one OCO order; a bar reaching both fills
    the stop (the worse) and Alpaca cancels the target; the strategy exit that raced it finds
    the stop filled and sends nothing, so the position is sold once."""
    from live.alpaca import AlpacaBroker
    from tests.fakes.alpaca_server import FakeAlpaca
    from tests.test_broker_alpaca import KEY_ENV, SECRET_ENV, config_for

    fake = FakeAlpaca(replay=True).start()
    monkeypatch.setenv(KEY_ENV, fake.key_id)
    monkeypatch.setenv(SECRET_ENV, fake.secret_key)
    broker = AlpacaBroker(config_for(fake))
    config = _config(tmp_path)
    try:
        with Store.open(config.store_url) as store:
            fake.open_bar(1, {"SP500": 2000.0})
            broker.submit(OrderRequest(client_order_id="qsentry", symbol="SP500", side="buy",
                                       qty=5.0))  # fmt: skip
            fake.open_bar(2, {"SP500": 2000.0})
            state = _open_position(config, store, broker)  # 5 units, stop 1950, target 2080
            resting = RestingProtection(broker, store)
            assert resting.protect(state, 0, fresh={("reversion", "SP500")}) == 2
            sent = [b for m, p, b in fake.requests if (m, p) == ("POST", "/v2/orders")][1:]
            assert [b["order_class"] for b in sent] == ["oco"]  # one closing order
            position = state.positions()[0]
            fake.trade_bar(3, {"SP500": (1990.0, 2100.0, 1900.0)})
            assert resting.release(position, 0) is False  # no exit goes out
            settled = resting.settle(state, config.portfolio, 3_000, 0)
            assert [(t.exit_reason, t.exit_price) for t in settled.trades] == [
                ("stop_loss", 1950.0)
            ]
            assert broker.positions() == {}  # sold once: never doubled the other way
            states = {store.intent(leg.request.client_order_id).state
                      for leg in legs_of(position)}  # fmt: skip
            assert states == {"FILLED", "CANCELLED"}
    finally:
        broker.close()
        fake.stop()


def test_a_strategy_exit_cancels_the_protection_first(tmp_path):
    config = _config(tmp_path)
    with Store.open(config.store_url) as store:
        broker = PaperBroker(config.store_url, cash=1e6)
        state = _open_position(config, store, broker)
        resting = RestingProtection(broker, store)
        resting.protect(state, 0, fresh={("reversion", "SP500")})
        assert resting.release(state.positions()[0], 0) is True
        assert not broker.open_orders()
        broker.trade_bar(3_000, {"SP500": (1990.0, 1995.0, 1900.0)})
        assert broker.fills() == []  # a cancelled stop never fills
        broker.close()


class _Counts:
    def __init__(self):
        self.seen = []

    def record_protection(self, sleeve, outcome):
        self.seen.append((sleeve, outcome))


def test_reconciliation_reprotects_a_naked_position_and_cancels_an_orphan(tmp_path, caplog):
    config = _config(tmp_path)
    with Store.open(config.store_url) as store:
        broker = PaperBroker(config.store_url, cash=1e6)
        state = _open_position(config, store, broker)
        counts = _Counts()
        resting = RestingProtection(broker, store, counts)
        # Not entered this cycle and nothing resting: a naked position (e.g. a crash between
        # its entry fill and its protection) is protected at once, logged and counted.
        assert resting.protect(state, 0) == 2
        assert counts.seen == [("reversion", "reprotected")] * 2
        assert "protecting it now" in caplog.text
        assert resting.protect(state, 0) == 0  # idempotent: never two stops for one position
        assert len(broker.open_orders()) == 2
        # The position goes away without the venue's protection knowing: cancel the orphans.
        flat = PortfolioState.initial(config.portfolio)
        assert resting.cancel_orphans(flat, 0) == 2
        assert not broker.open_orders()
        assert counts.seen[-2:] == [("reversion", "orphan_cancelled")] * 2
        assert group_id(state.positions()[0]).startswith("qs")
        broker.close()


# ----------------------------------------------------------------------------- replay parity
GAPPY = "synthetic:symbols=2,bars=500,seed=11,gaps=0.05"


def _gappy_config(tmp_path):
    """The example's sleeves on gappy synthetic bars, written as a config file (for `live
    run`) and parsed."""
    text = EXAMPLE.read_text()
    for old, new in (
        ('symbols = ["SP500", "NASDAQ"]', 'symbols = ["SYN000", "SYN001"]'),
        ('source = "builtin:sp500,nasdaq"', f'source = "{GAPPY}"'),
        ('start = "2015-01-01"\n', ""),
        ('url = "sqlite:///../../data/live/paper-sp500.db"', f'url = "sqlite:///{tmp_path}/s.db"'),
        ("enabled = true", "enabled = false"),
        ("price_collar_pct = 5.0", "price_collar_pct = 50.0"),  # synthetic gaps are wide
        ("slippage_bps = 2.0\n", "slippage_bps = 2.0\nsize = 0.5\n"),  # see assert_same_trades
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "live.toml"
    path.write_text(text)
    return path, parse_config(tomllib.loads(text), source=str(path))


def test_replay_parity_on_gappy_synthetic_data_with_stops_targets_and_trailing(tmp_path):
    from test_live_runner import _backtest_trades, _store_trades, assert_same_trades

    _, config = _gappy_config(tmp_path)
    summary = Runner(config).run()
    assert summary.ended == "replay finished"
    live = _store_trades(config)
    reasons = {t[-1] for t in live}
    assert len(live) >= 10 and {"stop_loss", "take_profit", "trailing_stop"} <= reasons, reasons
    assert_same_trades(live, _backtest_trades(config))


# ----------------------------------------------------------------------------- kill -9
@pytest.mark.slow
@pytest.mark.parametrize(("point", "nth"), [("after_entry_fill", 2), ("after_cancel", 1)])
def test_a_kill_between_a_fill_and_its_protection_leaves_no_naked_or_doubled_position(
    tmp_path, point, nth
):
    """SIGKILL between an entry's fill and its protection, and between a strategy exit's
    cancel of its protection and the exit; the restarted runner finishes the replay with the
    backtest's trades, one OCO group per position, no resting order without a position."""
    import os
    import subprocess
    import sys

    from test_live_runner import _backtest_trades, _store_trades, assert_same_trades

    path, config = _gappy_config(tmp_path)
    command = [sys.executable, "-c", "from live.cli import main; main()", "run", "-c", str(path)]
    env = {**os.environ, "QUANTSHIFT_FAILPOINTS": f"{point}={nth}"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    assert Runner(config).run().ended == "replay finished"
    assert_same_trades(_store_trades(config), _backtest_trades(config))
    with Store.open(config.store_url) as store:
        protective = [i for i in store.intents() if i.details.get("action") == "protect"]
        groups: dict[str, list] = {}
        for intent in protective:
            groups.setdefault(intent.details["oco_group"], []).append(intent)
        # never two fills in one group (no double exit), never two stops for one position
        assert all(sum(i.state == "FILLED" for i in g) <= 1 for g in groups.values())
        assert all(len({i.details["leg"] for i in g}) == len(g) for g in groups.values())
        held = {(p.sleeve, p.symbol) for p in store.positions() if p.qty != 0}
    broker = PaperBroker(config.store_url, cash=1e6)
    resting = {o.symbol for o in broker.open_orders()}
    assert resting <= {symbol for _, symbol in held}  # no resting order without a position
    assert len(broker.fills()) == len({f.client_order_id for f in broker.fills()})
    broker.close()


def test_live_reconcile_reports_a_resting_order_without_its_position(tmp_path):
    from live.reconcile import reconcile

    config = _config(tmp_path)
    with Store.open(config.store_url) as store:
        broker = PaperBroker(config.store_url, cash=1e6)
        state = _open_position(config, store, broker)
        RestingProtection(broker, store).protect(state, 0, fresh={("reversion", "SP500")})
        report = reconcile(config, store, broker)
        # the store holds no position row for it: both legs are orphans (and reported)
        assert sorted(report.resting_without_position) == sorted(
            leg.request.client_order_id for leg in legs_of(state.positions()[0])
        )
        assert not report.ok and any(line.startswith("ORPHAN") for line in report.lines())
        broker.close()
