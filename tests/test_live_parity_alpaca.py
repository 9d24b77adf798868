"""The path that carries money, replayed: ``Runner(config).run()`` with ``[broker] kind =
"alpaca"`` sends every order through alpaca-py to the fake Alpaca venue, whose matching engine
replays the bars the runner decides on (``tests/fakes/alpaca_server.py``, ``replay=True``: a
market order fills at the next bar's open moved by the slippage the backtest assumes), and the
closed trades equal ``portfolio_backtest``'s with decision-time sizing (live forces
``size_at = "decision"``): entry and exit times, prices, reasons and units.

``max_position_pct`` is 50: the backtest also cuts decided units at the fill when a gap makes
the sleeve's cash short, while a venue fills what it was sent (``sized_alike`` in
tests/test_live_runner.py); at half the equity per position that cut never binds, so units are
compared exactly (relative 1e-9: quantities and prices travel as decimal text). The sleeves
trade whole shares (``whole_units``): Alpaca rests GTC orders for whole shares only.

The venue's market moves with the runner's bars: the runner calls ``open_bar`` and ``trade_bar``
on its broker each cycle (no-ops on the real Alpaca adapter); here they are forwarded to the
fake in the same process, so the venue sees exactly the bars the runner decided on.

A position's stop, target and trailing stop rest at the fake venue as Alpaca takes them (one
closing order per position: stop and target as one OCO order, a lone trailing stop) and fill by
the fill model's intrabar rules, so level exits match too.
"""

from __future__ import annotations

import dataclasses

import pytest
from numba import njit
from test_live_runner import _backtest_trades, _store_trades

from live.alpaca import AlpacaBroker
from live.config import parse_config
from live.reconcile import reconcile
from live.runner import Runner
from live.store import Store
from quantshift.strategies import Param, register
from quantshift.strategies.breakout_momentum import STRATEGY as BREAKOUT
from quantshift.strategies.breakout_momentum import signal_nb as breakout_nb
from tests.fakes.alpaca_server import FakeAlpaca
from tests.test_broker_alpaca import KEY_ENV, SECRET_ENV

SLIPPAGE_BPS = 3.0


@pytest.fixture
def venue(monkeypatch):
    fake = FakeAlpaca(replay=True, slippage_bps=SLIPPAGE_BPS).start()
    monkeypatch.setenv(KEY_ENV, fake.key_id)
    monkeypatch.setenv(SECRET_ENV, fake.secret_key)
    # The runner's bars move the fake's market (a real venue's moves by itself); then the
    # adapter's own hooks move folded trailing stops (live.alpaca.trailing).
    real_open, real_trade = AlpacaBroker.open_bar, AlpacaBroker.trade_bar

    def open_bar(self, ts_ns, opens):
        fake.open_bar(ts_ns, opens)
        real_open(self, ts_ns, opens)

    def trade_bar(self, ts_ns, ranges):
        fake.trade_bar(ts_ns, ranges)
        real_trade(self, ts_ns, ranges)

    monkeypatch.setattr(AlpacaBroker, "open_bar", open_bar)
    monkeypatch.setattr(AlpacaBroker, "trade_bar", trade_bar)
    yield fake
    fake.stop()


SIGNALS = [{"name": "trend", "strategy": "ma_crossover", "params": {"fast": 5, "slow": 20},
            "allocation": 1.0}]  # fmt: skip
LEVELS = [
    {"name": "reversion", "strategy": "rsi_reversion", "allocation": 0.5},  # stop and target
    {"name": "breakout", "strategy": "breakout_momentum", "allocation": 0.5},  # trailing stop
]


TRAILING = [{"name": "breakout", "strategy": "breakout_momentum", "allocation": 1.0,
             "stop_atr": 1.5, "params": {"trail_atr": 3.0, "volume_mult": 1.0,
                                         "entry_window": 10}}]  # fmt: skip
"""A trailing stop (3 ATRs) beside a fixed stop (1.5 ATRs): each binds in some trades."""


@njit
def _breakout_with_target_nb(open_, high, low, close, volume, params, entries, exits,
                             stop_dist, take_profit_dist, trail_dist):  # fmt: skip
    """breakout_momentum's signals and trailing stop, and a target ``target_atr`` ATRs away
    (the trailing distance is ``trail_atr`` ATRs)."""
    breakout_nb(open_, high, low, close, volume, params, entries, exits, stop_dist,
                       take_profit_dist, trail_dist)  # fmt: skip
    for t in range(close.shape[0]):
        take_profit_dist[t] = trail_dist[t] * params[6] / params[5]


BREAKOUT_TARGET = register(dataclasses.replace(
    BREAKOUT, name="breakout_target_parity", signal_nb=_breakout_with_target_nb,
    params=(*BREAKOUT.params, Param(name="target_atr", default=3.0, low=0.5, high=20,
                                    description="target in ATRs")),
))  # fmt: skip
"""No built-in strategy sets a trailing stop and a target: this one adds a target to
breakout_momentum, so a position rests as an OCO (target, and a stop at the tighter level)."""


def _config(tmp_path, venue, source: str, symbols: list[str], end: str, sleeves=SIGNALS,
            start: str = "2013-01-01", max_position_pct: float = 50.0):  # fmt: skip
    raw = {
        "runner": {"name": "alpaca-parity", "market": "equities", "mode": "paper"},
        "sleeves": [dict(sleeve, symbols=symbols) for sleeve in sleeves],
        "risk": {"max_position_pct": max_position_pct, "max_gross_exposure_pct": 100.0,
                 "daily_loss_limit_pct": 100.0, "max_drawdown_pct": 100.0},
        "costs": {"cash": 100_000.0, "fees_bps": 0.0, "slippage_bps": SLIPPAGE_BPS,
                  "whole_units": True},
        "feed": {"source": source, "start": start, "end": end},
        "broker": {"kind": "alpaca", "mode": "paper", "key_id_env": KEY_ENV,
                   "secret_key_env": SECRET_ENV, "trading_url": venue.url,
                   "data_url": venue.url, "stream_url": venue.stream_url, "timeout_s": 5.0,
                   "retry_base_s": 0.001, "max_backoff_s": 0.01},
        "store": {"url": f"sqlite:///{tmp_path}/alpaca-parity.db"},
        "guards": {"price_collar_pct": 100.0, "max_orders_per_decision": 4},
        "metrics": {"enabled": False},
    }  # fmt: skip
    return parse_config(raw, source="alpaca-parity.toml")


def _assert_same_trades(config) -> list[tuple]:
    live, backtest = _store_trades(config), _backtest_trades(config)
    assert len(live) == len(backtest)
    for ours, theirs in zip(live, backtest, strict=True):
        # sleeve, symbol, direction, entry and exit time; exit reason
        assert ours[:5] == theirs[:5] and ours[-1] == theirs[-1]
        # entry price, exit price, units: decimal text at the venue
        assert ours[5:8] == pytest.approx(theirs[5:8], rel=1e-9)
        assert ours[8] == pytest.approx(theirs[8], rel=1e-6, abs=1e-4)  # P&L: a difference
    return live


def _run(config, venue):
    summary = Runner(config).run()
    assert summary.ended == "replay finished"
    with Store.open(config.store_url) as store:
        assert store.active_halt() is None  # the venue's positions agreed with ours throughout
        assert reconcile(config, store).ok
        intents = store.intents()
    market = [i for i in intents if i.order_type == "market"]
    legs = [i for i in intents if i.order_type != "market"]
    assert market and all(i.state == "FILLED" for i in market)  # every order filled, once
    # a leg fills, or is cancelled with its group (its sibling filled, or a strategy exit)
    assert {i.state for i in legs} <= {"FILLED", "CANCELLED", "ACKED"}
    groups = {i.details["oco_group"] for i in legs}  # one venue order carries each group
    assert venue.calls("POST", "/v2/orders") == len(market) + len(groups)
    return summary


def test_alpaca_replay_of_sp500_equals_the_portfolio_backtest_trade_for_trade(tmp_path, venue):
    config = _config(tmp_path, venue, "builtin:sp500", ["SP500"], "2014-07-01")
    _run(config, venue)
    trades = _assert_same_trades(config)
    assert len(trades) >= 10


@pytest.mark.slow
def test_alpaca_replay_of_sp500_and_nasdaq_equals_the_portfolio_backtest(tmp_path, venue):
    """Three sleeves on two symbols: their positions share each symbol's shares at the venue,
    each sleeve's protection holding its own. A sleeve has a third of the cash here, so a
    position is at most 25% of the equity (the fill-time cut never binds)."""
    sleeves = [
        dict(sleeve, allocation=share)
        for sleeve, share in zip(SIGNALS + LEVELS, (0.34, 0.33, 0.33), strict=True)
    ]
    config = _config(tmp_path, venue, "builtin:sp500,nasdaq", ["SP500", "NASDAQ"], "2016-01-01",
                     sleeves, start="2010-01-01", max_position_pct=25.0)  # fmt: skip
    _run(config, venue)
    trades = _assert_same_trades(config)
    assert len(trades) >= 20 and {t[1] for t in trades} == {"SP500", "NASDAQ"}
    assert {"signal", "stop_loss", "take_profit"} <= {t[-1] for t in trades}


def test_alpaca_rests_stops_targets_and_trailing_stops_and_trades_the_backtest(tmp_path, venue):
    """Each position's protection rests at the venue as the one closing order Alpaca takes
    for its shares (stop and target as one OCO order, a trailing stop alone), and the venue
    executes it by the fill model's intrabar rules: the trades are the backtest's."""
    config = _config(tmp_path, venue, "builtin:sp500", ["SP500"], "2014-01-01", LEVELS,
                     start="2010-01-01")  # fmt: skip
    _run(config, venue)
    trades = _assert_same_trades(config)
    reasons = [t[-1] for t in trades]
    assert {"stop_loss", "take_profit", "trailing_stop"} <= set(reasons), reasons
    oco = [b for m, p, b in venue.requests if (m, p) == ("POST", "/v2/orders")
           and b.get("order_class") == "oco"]  # fmt: skip
    trailing = [b for m, p, b in venue.requests if (m, p) == ("POST", "/v2/orders")
                and b.get("type") == "trailing_stop"]  # fmt: skip
    assert oco and trailing and all(b["time_in_force"] == "gtc" for b in oco + trailing)


def test_alpaca_folds_a_trailing_stop_beside_a_stop_and_trades_the_backtest(tmp_path, venue):
    """A trailing stop beside a fixed stop cannot be one Alpaca order as it is (an OCO takes
    no trailing leg): it rests as one stop order at the tighter level, moved by PATCH as the
    trailing level follows the best price. Both kinds of stop exits occur and every trade is
    the backtest's, exit reason included (a fill is the leg whose level the stop was at)."""
    config = _config(tmp_path, venue, "builtin:sp500", ["SP500"], "2014-01-01", TRAILING,
                     start="2012-01-01")  # fmt: skip
    _run(config, venue)
    trades = _assert_same_trades(config)
    reasons = [t[-1] for t in trades]
    assert {"stop_loss", "trailing_stop", "signal"} <= set(reasons), reasons
    posts = [b for m, p, b in venue.requests if (m, p) == ("POST", "/v2/orders")]
    assert not [b for b in posts if b.get("type") == "trailing_stop"]  # folded into the stop
    assert [b for b in posts if b.get("type") == "stop" and b["time_in_force"] == "gtc"]
    patches = [b for m, p, b in venue.requests if m == "PATCH"]
    assert patches and all(set(b) == {"stop_price", "client_order_id"} for b in patches)


def test_alpaca_folds_a_trailing_stop_beside_a_stop_and_a_target_and_trades_the_backtest(
    tmp_path, venue
):
    """A trailing stop beside a fixed stop and a target rests as one OCO order (the target
    limit and a stop leg at the tighter level) whose stop leg is moved by PATCH: target, fixed
    stop and trailing exits all occur, and every trade is the backtest's."""
    sleeves = [dict(TRAILING[0], strategy=BREAKOUT_TARGET.name,
                    params=dict(TRAILING[0]["params"], target_atr=3.0))]  # fmt: skip
    config = _config(tmp_path, venue, "builtin:sp500", ["SP500"], "2014-01-01", sleeves,
                     start="2010-01-01")  # fmt: skip
    _run(config, venue)
    trades = _assert_same_trades(config)
    reasons = [t[-1] for t in trades]
    assert {"stop_loss", "trailing_stop", "take_profit"} <= set(reasons), reasons
    posts = [b for m, p, b in venue.requests if (m, p) == ("POST", "/v2/orders")]
    oco = [b for b in posts if b.get("order_class") == "oco"]
    assert oco and not [b for b in posts if b.get("type") not in ("market", "limit")]
    patches = [b for m, p, b in venue.requests if m == "PATCH"]
    assert patches and all(set(b) == {"stop_price", "client_order_id"} for b in patches)
