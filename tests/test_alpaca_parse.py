"""Alpaca's recorded JSON (orders, fills, account, positions, clock, bars) through alpaca-py's
models and ``live.alpaca.parse`` into the broker contract's objects.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from alpaca.trading.models import Clock, Order, Position, TradeAccount

from live.alpaca import parse
from live.broker import OrderRequest, OrderStatus

DATA = Path(__file__).parent / "data" / "alpaca"
NS = 1_000_000_000


def load(name: str):
    return json.loads((DATA / name).read_text())


def test_a_filled_market_order():
    order = parse.order_from_model(Order(**load("order_filled.json")))
    assert order.client_order_id == "qs5f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5"
    assert order.venue_order_id == "61e69015-8549-4bfd-b9c3-01e75843f47d"
    assert (order.symbol, order.side, order.order_type) == ("AAPL", "buy", "market")
    assert order.status == OrderStatus.FILLED and order.is_final
    assert order.qty == 10.0 and order.filled_qty == 10.0
    assert order.avg_fill_price == pytest.approx(185.6412) and order.fees == 0.0
    # alpaca-py's datetime keeps microseconds of "...01.120334567Z"
    assert order.ts_updated_ns == 1704205801_120334000


def test_a_cancelled_limit_order_keeps_its_partial_fill():
    order = parse.order_from_model(Order(**load("order_canceled_partial.json")))
    assert (order.side, order.order_type, order.status) == ("sell", "limit", OrderStatus.CANCELLED)
    assert order.filled_qty == 2.0 and order.avg_fill_price == 248.1


def test_a_new_bracket_order_is_open_with_no_fill_price():
    raw = load("order_bracket_new.json")
    model = Order(**raw)
    assert [leg.status.value for leg in model.legs] == ["held", "held"]
    order = parse.order_from_model(model)
    assert order.status == OrderStatus.OPEN and order.avg_fill_price is None
    assert order.order_type == "limit" and order.filled_qty == 0.0


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("new", 0, OrderStatus.OPEN),
        ("accepted", 0, OrderStatus.OPEN),
        ("pending_new", 0, OrderStatus.OPEN),
        ("held", 0, OrderStatus.OPEN),
        ("pending_cancel", 1, OrderStatus.PARTIALLY_FILLED),
        ("done_for_day", 2, OrderStatus.PARTIALLY_FILLED),
        ("partially_filled", 2, OrderStatus.PARTIALLY_FILLED),
        ("filled", 5, OrderStatus.FILLED),
        ("canceled", 0, OrderStatus.CANCELLED),
        ("expired", 3, OrderStatus.CANCELLED),
        ("replaced", 0, OrderStatus.CANCELLED),
        ("rejected", 0, OrderStatus.REJECTED),
        ("a_status_added_next_year", 0, OrderStatus.OPEN),
    ],
)
def test_status_mapping(status, filled, expected):
    assert parse.order_status(status, filled) == expected


def test_a_stop_limit_maps_to_stop_and_a_trailing_stop_keeps_its_type_and_levels():
    raw = load("order_canceled_partial.json")
    stop_limit = raw | {"type": "stop_limit", "order_type": "stop_limit", "stop_price": "95.5"}
    assert parse.order_from_model(Order(**stop_limit)).order_type == "stop"
    trailing = raw | {"type": "trailing_stop", "order_type": "trailing_stop",
                      "trail_price": "2.5", "hwm": "105.25", "stop_price": "102.75"}  # fmt: skip
    order = parse.order_from_model(Order(**trailing))
    assert order.order_type == "trailing_stop"
    assert (order.trail_amount, order.trail_best_price, order.stop_price) == (2.5, 105.25, 102.75)


def test_a_trailing_stop_request_trails_by_price_and_a_replace_moves_only_the_level():
    request = OrderRequest(client_order_id="qstrail", symbol="AAPL", side="sell", qty=3.0,
                           order_type="trailing_stop", trail_amount=2.5, trail_from_price=101.0,
                           time_in_force="gtc")  # fmt: skip
    body = parse.order_request_to_sdk(request).to_request_fields()
    assert body["type"] == "trailing_stop" and body["trail_price"] == 2.5
    assert body["time_in_force"] == "gtc" and "trail_percent" not in body
    current = parse.order_from_model(Order(**(load("order_canceled_partial.json") | {
        "client_order_id": "qsstop", "type": "stop", "order_type": "stop", "side": "sell",
        "stop_price": "95", "qty": "3", "filled_qty": "0", "status": "new"})))  # fmt: skip
    moved = OrderRequest(client_order_id="qsstop2", symbol=current.symbol, side="sell", qty=3.0,
                         order_type="stop", stop_price=97.0, time_in_force="gtc")  # fmt: skip
    patch = parse.replace_request_to_sdk(current, moved).to_request_fields()
    assert patch == {"client_order_id": "qsstop2", "time_in_force": "gtc", "stop_price": 97.0}
    with pytest.raises(ValueError, match="cannot replace an order's order_type"):
        parse.replace_request_to_sdk(current, OrderRequest(
            client_order_id="qsx", symbol=current.symbol, side="sell", qty=3.0,
            order_type="limit", limit_price=110.0))  # fmt: skip
    with pytest.raises(ValueError, match="whole shares only"):
        parse.replace_request_to_sdk(current, OrderRequest(
            client_order_id="qsx", symbol=current.symbol, side="sell", qty=2.5,
            order_type="stop", stop_price=97.0))  # fmt: skip


def test_the_paper_account():
    model = TradeAccount(**load("account_paper.json"))
    account = parse.account_from_model(model)
    assert (account.cash, account.equity, account.buying_power) == (93667.06, 100230.51, 187334.12)
    assert account.currency == "USD"
    assert parse.is_paper_account(model)
    live = TradeAccount(**(load("account_paper.json") | {"account_number": "611428730"}))
    assert not parse.is_paper_account(live)


def test_positions_are_signed_net_shares():
    models = [Position(**p) for p in load("positions.json")]
    assert parse.positions_from_models(models) == {"AAPL": 42.0, "TSLA": -5.0, "SPY": 0.5}


def test_the_clock_is_in_utc():
    clock = parse.clock_from_model(Clock(**load("clock.json")))
    assert clock.is_open is True
    assert clock.next_open == datetime(2024, 1, 3, 14, 30, tzinfo=UTC)
    assert clock.next_close == datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
    assert clock.timestamp.utcoffset() == timedelta(0)


def test_stream_fills_and_activities_give_the_same_fill_ids():
    partial = parse.fill_from_trade_update(load("trade_update_partial_fill.json")["data"])
    final = parse.fill_from_trade_update(load("trade_update_fill.json")["data"])
    assert parse.fill_from_trade_update(load("trade_update_new.json")["data"]) is None
    assert (partial.qty, partial.price, final.qty, final.price) == (4.0, 185.64, 6.0, 185.642)
    assert partial.ts_fill_ns == 1704205800_998877665  # all nine digits kept
    assert final.client_order_id == "qs5f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5" and final.fee == 0.0
    activities = load("activities_fill.json")
    cid = final.client_order_id
    backfilled = [parse.fill_from_activity(a, cid) for a in activities[:2]]
    assert backfilled == [partial, final]
    assert partial.fill_id != final.fill_id


def test_a_short_sale_activity_is_a_sell():
    fill = parse.fill_from_activity(load("activities_fill.json")[2], "qsshort")
    assert (fill.side, fill.symbol, fill.qty, fill.price) == ("sell", "TSLA", 2.0, 248.1)
    assert fill.ts_fill_ns == 1704208844_100000000


def test_a_bars_page_is_sorted_into_our_columns():
    raw = load("bars_page.json")
    frame = parse.bars_frame(raw["bars"]["AAPL"])
    assert list(frame.columns) == list(parse.BAR_COLUMNS)
    assert frame["ts_ns"].dtype == np.int64
    assert all(frame[c].dtype == np.float64 for c in parse.BAR_COLUMNS[1:])
    assert frame["ts_ns"].tolist() == [1704205800 * NS, 1704205860 * NS, 1704205920 * NS]
    assert frame["volume"].tolist() == [48213.0, 30122.0, 10321.0]
    assert parse.bars_frame([]).shape == (0, 6)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T14:30:00Z", 1704205800 * NS),
        ("2024-01-02T14:30:00.5Z", 1704205800 * NS + 500_000_000),
        ("2024-01-02T09:30:00.000000001-05:00", 1704205800 * NS + 1),
        ("2024-01-02T14:30:00+00:00", 1704205800 * NS),
    ],
)
def test_timestamps_to_nanoseconds(text, expected):
    assert parse.ts_ns(text) == expected


def test_datetimes_to_nanoseconds_and_back():
    moment = datetime(2024, 1, 2, 9, 30, 0, 250, tzinfo=timezone(timedelta(hours=-5)))
    assert parse.ts_ns(moment) == 1704205800 * NS + 250_000
    assert parse.to_datetime(1704205800 * NS + 250_000) == moment
    with pytest.raises(ValueError, match="naive"):
        parse.ts_ns(datetime(2024, 1, 2))


def _request(**kwargs) -> dict:
    base = {"client_order_id": "qsabc", "symbol": "AAPL", "side": "buy", "qty": 3.0}
    return parse.order_request_to_sdk(OrderRequest(**(base | kwargs))).to_request_fields()


def test_order_requests_to_the_sdk():
    market = _request()
    assert market["type"] == "market" and market["client_order_id"] == "qsabc"
    assert market["qty"] == 3.0 and market["time_in_force"] == "day" and "order_class" not in market
    limit = _request(order_type="limit", limit_price=99.5, time_in_force="gtc", side="sell")
    assert (limit["type"], limit["limit_price"], limit["side"]) == ("limit", 99.5, "sell")
    stop = _request(order_type="stop", stop_price=90.0)
    assert (stop["type"], stop["stop_price"]) == ("stop", 90.0)
    bracket = _request(order_type="limit", limit_price=100.0, take_profit_price=110.0)
    assert bracket["order_class"] == "oto" and bracket["take_profit"] == {"limit_price": 110.0}
    both = _request(take_profit_price=110.0, stop_loss_price=90.0)
    assert both["order_class"] == "bracket" and both["stop_loss"] == {"stop_price": 90.0}
