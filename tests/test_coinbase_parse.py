"""Recorded Coinbase Advanced Trade JSON through the SDK's response types and ``parse``: orders,
fills, balances, create/cancel answers, user-channel events, candles and timestamps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from coinbase.rest.types.accounts_types import ListAccountsResponse
from coinbase.rest.types.orders_types import (
    CancelOrdersResponse,
    CreateOrderResponse,
    GetOrderResponse,
    ListFillsResponse,
    ListOrdersResponse,
)
from coinbase.rest.types.product_types import GetProductCandlesResponse

from live.broker import OrderRequest, OrderStatus
from live.coinbase import parse

DATA = Path(__file__).parent / "data" / "coinbase"


def recorded(name: str, response_type=None) -> dict:
    """A recorded answer, through the SDK response type the adapter gets it as."""
    raw = json.loads((DATA / name).read_text())
    return response_type(raw).to_dict() if response_type else raw


def test_a_filled_market_order():
    order = parse.order_from_venue(
        recorded("get_order_market_filled.json", GetOrderResponse)["order"]
    )
    assert order.client_order_id == "qs0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    assert order.venue_order_id == "0000-000000-000001"
    assert (order.symbol, order.side, order.order_type) == ("BTC-USD", "buy", "market")
    assert order.status == OrderStatus.FILLED and order.is_final
    assert order.qty == order.filled_qty == pytest.approx(0.001)
    assert order.avg_fill_price == pytest.approx(60123.45)
    assert order.fees == pytest.approx(0.3607407)
    assert order.ts_updated_ns == parse.rfc3339_to_ns("2024-05-01T12:00:00.456789Z")


def test_listed_orders_open_cancelled_after_a_partial_fill_and_failed():
    answer = recorded("list_orders.json", ListOrdersResponse)
    assert answer["has_next"] is True and answer["cursor"] == "789100"
    open_, cancelled, failed = (parse.order_from_venue(o) for o in answer["orders"])
    assert (open_.status, open_.order_type, open_.side) == (OrderStatus.OPEN, "limit", "sell")
    assert open_.avg_fill_price is None and open_.filled_qty == 0
    assert open_.ts_updated_ns == parse.rfc3339_to_ns("2024-05-01T12:05:00Z")
    assert cancelled.status == OrderStatus.CANCELLED
    assert (cancelled.qty, cancelled.filled_qty) == (pytest.approx(0.01), pytest.approx(0.004))
    assert (failed.status, failed.order_type) == (OrderStatus.REJECTED, "stop")


@pytest.mark.parametrize(
    ("venue", "filled", "ours"),
    [
        ("PENDING", 0.0, OrderStatus.OPEN),
        ("OPEN", 0.0, OrderStatus.OPEN),
        ("OPEN", 0.5, OrderStatus.PARTIALLY_FILLED),
        ("QUEUED", 0.0, OrderStatus.OPEN),
        ("CANCEL_QUEUED", 0.2, OrderStatus.PARTIALLY_FILLED),
        ("FILLED", 1.0, OrderStatus.FILLED),
        ("CANCELLED", 0.2, OrderStatus.CANCELLED),
        ("EXPIRED", 0.0, OrderStatus.CANCELLED),
        ("FAILED", 0.0, OrderStatus.REJECTED),
    ],
)
def test_status_mapping(venue, filled, ours):
    assert parse.order_status(venue, filled) == ours


def test_an_unknown_status_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="BOGUS"):
        parse.order_status("BOGUS", 0.0)


def test_fills_keep_the_venue_entry_id_and_nanosecond_time():
    raw = recorded("list_fills.json", ListFillsResponse)["fills"]
    fills = [parse.fill_from_venue(f, "qs1") for f in raw]
    assert [f.fill_id for f in fills] == ["22222-2222222-22222222", "22222-2222222-22222221"]
    first = fills[0]
    assert (first.symbol, first.side, first.client_order_id) == ("BTC-USD", "buy", "qs1")
    assert (first.qty, first.price, first.fee) == (0.0004, 60200.0, pytest.approx(0.14448))
    assert fills[1].ts_fill_ns == parse.rfc3339_to_ns("2024-05-01T12:00:00.200Z")
    assert sum(f.qty for f in fills) == pytest.approx(0.001)


def test_balances_split_cash_and_units_including_holds():
    accounts = recorded("list_accounts.json", ListAccountsResponse)["accounts"]
    balances = parse.balances(accounts, "USD")
    assert balances.cash == pytest.approx(1334.56)
    assert balances.available_cash == pytest.approx(1234.56)
    assert balances.units == {"BTC-USD": pytest.approx(0.02)}  # ETH is zero: no position


def test_create_answers_success_rejection_and_duplicate():
    ok = parse.create_result(recorded("create_order_success.json", CreateOrderResponse))
    assert ok.success and ok.order_id == "0000-000000-000001" and ok.reason == ""
    assert ok.client_order_id == "qs0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    broke = parse.create_result(recorded("create_order_insufficient.json", CreateOrderResponse))
    assert not broke.success and not broke.duplicate
    assert broke.reason == "INSUFFICIENT_FUND; Insufficient balance in source account"
    dup = parse.create_result(recorded("create_order_duplicate.json", CreateOrderResponse))
    assert not dup.success and dup.duplicate
    odd = parse.create_result({"success": True})
    assert not odd.success and "without an order_id" in odd.reason


def test_cancel_answers_per_order():
    answer = recorded("cancel_orders.json", CancelOrdersResponse)
    assert parse.cancel_result(answer, "0000-000000-000003") == (
        True,
        "UNKNOWN_CANCEL_FAILURE_REASON",
    )
    assert parse.cancel_result(answer, "0000-000000-000009") == (False, "UNKNOWN_CANCEL_ORDER")
    assert parse.cancel_result(answer, "missing")[0] is False


def test_user_channel_updates_and_heartbeats():
    updates = parse.user_order_updates(recorded("ws_user.json"))
    assert [(u.order_id, u.status, u.filled_qty) for u in updates] == [
        ("0000-000000-000002", OrderStatus.PARTIALLY_FILLED, 0.004),
        ("0000-000000-000001", OrderStatus.FILLED, 0.001),
    ]
    assert updates[0].client_order_id == "qsaaaa000000000000000000000000000002"
    assert parse.user_order_updates(recorded("ws_heartbeats.json")) == []
    text = (DATA / "ws_user.json").read_text()
    assert parse.stream_message(text)["sequence_num"] == 4
    with pytest.raises(ValueError):
        parse.stream_message("[1, 2]")


def test_candles_become_ascending_float_bars():
    raw = recorded("candles.json", GetProductCandlesResponse)["candles"]
    bars = parse.candles_frame(raw)
    assert list(bars.columns) == list(parse.BAR_COLUMNS)
    assert bars["ts_ns"].tolist() == [
        t * 1_000_000_000 for t in (1714564980, 1714565040, 1714565100)
    ]
    assert str(bars["ts_ns"].dtype) == "int64"
    assert all(str(bars[c].dtype) == "float64" for c in parse.BAR_COLUMNS[1:])
    assert bars.iloc[-1].to_dict()["close"] == 60020.5
    assert len(parse.candles_frame([])) == 0


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2024-05-01T12:00:00Z", 1714564800_000000000),
        ("2024-05-01T12:00:00.5Z", 1714564800_500000000),
        ("2024-05-01T12:00:00.123456789Z", 1714564800_123456789),
        ("2024-05-01T14:00:00.000001+02:00", 1714564800_000001000),
    ],
)
def test_timestamps_keep_nanoseconds(text, ns):
    assert parse.rfc3339_to_ns(text) == ns


def test_timestamp_formatting_round_trips_to_the_microsecond():
    ns = 1714564800_123456789
    assert parse.ns_to_rfc3339(ns) == "2024-05-01T12:00:00.123456Z"
    assert parse.rfc3339_to_ns(parse.ns_to_rfc3339(ns)) == ns - 789
    with pytest.raises(ValueError, match="RFC 3339"):
        parse.rfc3339_to_ns("yesterday")


def test_sizes_are_plain_decimals():
    assert parse.decimal_text(1e-8) == "0.00000001"
    assert parse.decimal_text(0.1 + 0.2) == "0.3"
    assert parse.decimal_text(60123.456789) == "60123.456789"
    assert parse.decimal_text(2.0) == "2"
    assert parse.decimal_text(1e21) == "1000000000000000000000"


def _request(**changes) -> OrderRequest:
    fields = {"client_order_id": "qsx", "symbol": "BTC-USD", "side": "buy", "qty": 0.25}
    return OrderRequest(**{**fields, **changes})


def test_order_configurations_by_type():
    assert parse.order_configuration(_request()) == {"market_market_ioc": {"base_size": "0.25"}}
    gtc = parse.order_configuration(
        _request(order_type="limit", limit_price=100.5, time_in_force="gtc")
    )
    assert gtc == {
        "limit_limit_gtc": {"base_size": "0.25", "limit_price": "100.5", "post_only": False}
    }
    ioc = parse.order_configuration(
        _request(order_type="limit", limit_price=99, time_in_force="ioc")
    )
    assert ioc == {"sor_limit_ioc": {"base_size": "0.25", "limit_price": "99"}}
    stop = parse.order_configuration(
        _request(side="sell", order_type="stop", stop_price=90, limit_price=89, time_in_force="gtc")
    )
    assert stop["stop_limit_stop_limit_gtc"]["stop_direction"] == "STOP_DIRECTION_STOP_DOWN"
    assert parse.order_kind(stop)[0] == "stop" and parse.order_kind(ioc)[0] == "limit"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"order_type": "limit", "limit_price": 1.0}, "no 'day'"),
        ({"order_type": "stop", "stop_price": 1.0, "time_in_force": "gtc"}, "stop-limit"),
        ({"stop_loss_price": 1.0}, "bracket"),
    ],
)
def test_what_coinbase_cannot_express_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        parse.order_configuration(_request(**changes))


# ----------------------------------------------------------------------------- protective groups
def _leg(kind: str, **levels):
    from live.broker import OrderRequest

    return OrderRequest(client_order_id=f"qs{kind[:4]}{'0' * 28}", symbol="BTC-USD", side="sell",
                        qty=0.5, order_type=kind, oco_group="qsgroup", time_in_force="gtc",
                        **levels)  # fmt: skip


def test_a_group_rests_as_one_order_and_its_id_rebuilds_it():
    from live.broker import BrokerOrder
    from live.coinbase import groups

    group = groups.group_of_request(_leg("stop", stop_price=95.0))
    groups.add_leg(group, _leg("stop", stop_price=95.0))
    assert group.configuration(100.0) == {"stop_limit_stop_limit_gtc": {
        "base_size": "0.5", "stop_price": "95", "limit_price": "94.05",
        "stop_direction": "STOP_DIRECTION_STOP_DOWN"}}  # fmt: skip
    groups.add_leg(group, _leg("limit", limit_price=110.0))
    groups.add_leg(group, _leg("trailing_stop", trail_amount=4.0, trail_from_price=100.0))
    assert group.stop_level() == (96.0, "trailing_stop")  # the tighter of 95 and 100 - 4
    assert group.configuration(100.0) == {"trigger_bracket_gtc": {
        "base_size": "0.5", "limit_price": "110", "stop_trigger_price": "96"}}  # fmt: skip
    assert not group.follow(99.0) and group.follow(101.5) and group.stop_level()[0] == 97.5
    group.version = 3
    venue_id = group.venue_id()
    assert len(venue_id) <= groups.MAX_ID_LEN and venue_id.endswith("-95-4-101p5-3")
    resting = BrokerOrder(client_order_id=venue_id, venue_order_id="v1", symbol="BTC-USD",
                          side="sell", qty=0.5, order_type="limit", status="open",
                          stop_price=97.5, limit_price=110.0)  # fmt: skip
    rebuilt = groups.decode(venue_id, resting)
    assert (rebuilt.stop, rebuilt.target, rebuilt.trail, rebuilt.best, rebuilt.version) == (
        95.0, 110.0, 4.0, 101.5, 3)  # fmt: skip
    assert all(rebuilt.holds(cid) for cid in group.ids.values())
    # Which leg filled: near the target it was the target, else the binding stop.
    filled = dict(status="filled", filled_qty=0.5)
    at_target = BrokerOrder(**{**resting.__dict__, **filled, "avg_fill_price": 109.9})
    at_stop = BrokerOrder(**{**resting.__dict__, **filled, "avg_fill_price": 97.4})
    assert (rebuilt.filled_leg(at_target), rebuilt.filled_leg(at_stop)) == (
        "limit",
        "trailing_stop",
    )
    assert groups.decode("qs" + "0" * 32, resting) is None  # a plain order is no group's
