"""The broker contract suite: every venue adapter (paper, Alpaca, Coinbase) runs these tests.

A test module subclasses ``BrokerContract`` and provides a ``harness`` fixture (a
``VenueHarness``): the adapter wired to its venue (a local fake server for the real SDKs) and a
way to set the market price the venue fills at.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from live.broker import Broker, BrokerAuthError, BrokerOrder, OrderRequest, OrderStatus, leg_id
from live.store import client_order_id


@dataclass
class VenueHarness:
    """What the contract suite needs from a venue under test."""

    broker: Broker
    symbol: str
    qty: float
    set_price: Callable[[str, float], None]
    bad_keys_broker: Callable[[], Broker] | None = None
    """Build the adapter with wrong keys (None for a venue without keys, like paper)."""
    secret: str | None = None
    """A secret the adapter was given; it must never appear in an error message."""
    trade_bar: Callable[[str, float, float, float], None] | None = None
    """Make the venue's market trade one bar (symbol, open, high, low): required of a venue
    that ``supports_resting_protection``, to prove its resting orders."""


def wait_final(broker: Broker, client_order_id: str, timeout_s: float = 5.0) -> BrokerOrder:
    deadline = time.monotonic() + timeout_s
    while True:
        order = broker.order(client_order_id)
        if order is not None and order.is_final:
            return order
        if time.monotonic() > deadline:
            raise AssertionError(f"order {client_order_id} not final after {timeout_s}s: {order}")
        time.sleep(0.02)


class BrokerContract:
    """The behaviour the runner relies on, asserted against one venue."""

    def _cid(self, name: str) -> str:
        return f"qs{name}{time.time_ns()}"

    def test_connect_returns_the_account(self, harness: VenueHarness) -> None:
        account = harness.broker.connect()
        assert account.cash > 0 and account.equity > 0 and account.currency == "USD"

    def test_market_buy_fills_and_is_found_by_client_order_id(self, harness) -> None:
        broker, symbol = harness.broker, harness.symbol
        harness.set_price(symbol, 100.0)
        before = broker.positions().get(symbol, 0.0)
        cid = self._cid("buy")
        broker.submit(OrderRequest(client_order_id=cid, symbol=symbol, side="buy", qty=harness.qty))
        done = wait_final(broker, cid)
        assert done.status == OrderStatus.FILLED
        assert done.client_order_id == cid and done.symbol == symbol and done.side == "buy"
        assert done.filled_qty == pytest.approx(harness.qty)
        assert done.avg_fill_price == pytest.approx(100.0, rel=0.01)
        assert broker.positions().get(symbol, 0.0) == pytest.approx(before + harness.qty)

    def test_resubmitting_a_client_order_id_adopts_the_first_order(self, harness) -> None:
        broker, symbol = harness.broker, harness.symbol
        harness.set_price(symbol, 50.0)
        before = broker.positions().get(symbol, 0.0)
        request = OrderRequest(
            client_order_id=self._cid("dup"), symbol=symbol, side="buy", qty=harness.qty
        )
        first = broker.submit(request)
        wait_final(broker, request.client_order_id)
        again = broker.submit(request)
        assert again.venue_order_id == first.venue_order_id
        assert broker.positions().get(symbol, 0.0) == pytest.approx(before + harness.qty)

    def test_an_unknown_client_order_id_is_none(self, harness) -> None:
        assert harness.broker.order(self._cid("never")) is None

    def test_fills_report_each_execution_once(self, harness) -> None:
        broker, symbol = harness.broker, harness.symbol
        harness.set_price(symbol, 20.0)
        since = time.time_ns() - 1_000_000_000
        cid = self._cid("fills")
        broker.submit(OrderRequest(client_order_id=cid, symbol=symbol, side="buy", qty=harness.qty))
        wait_final(broker, cid)
        mine = [f for f in broker.fills(since) if f.client_order_id == cid]
        assert mine, "the fill is missing from fills()"
        assert len({f.fill_id for f in mine}) == len(mine)
        assert sum(f.qty for f in mine) == pytest.approx(harness.qty)
        assert all(f.price == pytest.approx(20.0, rel=0.01) and f.fee >= 0 for f in mine)

    def test_a_sell_reduces_the_position(self, harness) -> None:
        broker, symbol = harness.broker, harness.symbol
        harness.set_price(symbol, 10.0)
        buy = self._cid("b")
        broker.submit(OrderRequest(client_order_id=buy, symbol=symbol, side="buy", qty=harness.qty))
        wait_final(broker, buy)
        held = broker.positions().get(symbol, 0.0)
        sell = self._cid("s")
        broker.submit(
            OrderRequest(client_order_id=sell, symbol=symbol, side="sell", qty=harness.qty)
        )
        assert wait_final(broker, sell).status == OrderStatus.FILLED
        assert broker.positions().get(symbol, 0.0) == pytest.approx(held - harness.qty)

    def test_a_resting_limit_order_is_open_until_cancelled(self, harness) -> None:
        broker, symbol = harness.broker, harness.symbol
        if "limit" not in broker.capabilities:
            assert broker.open_orders() == []  # market-only venues never rest an order
            return
        harness.set_price(symbol, 100.0)
        cid = self._cid("limit")
        broker.submit(
            OrderRequest(
                client_order_id=cid,
                symbol=symbol,
                side="buy",
                qty=harness.qty,
                order_type="limit",
                limit_price=50.0,
                time_in_force="gtc",
            )
        )
        assert broker.order(cid).status == OrderStatus.OPEN
        assert cid in {o.client_order_id for o in broker.open_orders()}
        assert broker.cancel(cid).status == OrderStatus.CANCELLED
        assert cid not in {o.client_order_id for o in broker.open_orders()}
        assert broker.cancel(cid).status == OrderStatus.CANCELLED  # cancelling twice is fine

    # ------------------------------------------------------------------ resting protection
    def _protect(self, harness, tag: str, levels=(("stop", 90.0), ("limit", 110.0))) -> list[str]:
        """Protective legs of a long position in one OCO group (a stop at 90 and a target at
        110 unless ``levels`` says otherwise), sent as the runner sends them; their ids."""
        broker, symbol = harness.broker, harness.symbol
        group = client_order_id(f"contract/{tag}", symbol, time.time_ns(), "sell")
        price = {"stop": "stop_price", "limit": "limit_price"}
        requests = [
            OrderRequest(client_order_id=leg_id(group, kind), symbol=symbol, side="sell",
                         qty=harness.qty, order_type=kind, oco_group=group,
                         time_in_force="gtc", **{price[kind]: level})
            for kind, level in levels
        ]  # fmt: skip
        broker.submit_protection(requests)
        return [r.client_order_id for r in requests]

    def _hold(self, harness) -> None:
        """Hold the position the protection closes (a venue may refuse a closing order for
        shares it does not hold)."""
        harness.set_price(harness.symbol, 100.0)
        cid = self._cid("held")
        harness.broker.submit(OrderRequest(client_order_id=cid, symbol=harness.symbol,
                                           side="buy", qty=harness.qty))  # fmt: skip
        wait_final(harness.broker, cid)

    def test_only_one_leg_of_an_oco_group_ever_fills(self, harness) -> None:
        broker = harness.broker
        if not broker.supports_resting_protection:
            assert not broker.capabilities & {"oco", "trailing_stop"}  # says what it cannot do
            return
        self._hold(harness)
        stop, target = self._protect(harness, "both")
        harness.trade_bar(harness.symbol, 100.0, 112.0, 85.0)  # reaches both levels
        legs = [wait_final(broker, stop), wait_final(broker, target)]
        assert sorted(o.status for o in legs) == [OrderStatus.CANCELLED, OrderStatus.FILLED]
        assert legs[0].status == OrderStatus.FILLED  # both hit in one bar: the worse, the stop
        assert not {stop, target} & {o.client_order_id for o in broker.open_orders()}

    def test_a_cancelled_protective_order_never_fills_and_replace_moves_a_level(
        self, harness
    ) -> None:
        broker = harness.broker
        if not broker.supports_resting_protection:
            return
        self._hold(harness)
        stop, target = self._protect(harness, "cancelled")
        assert broker.cancel(target).status == OrderStatus.CANCELLED
        harness.trade_bar(harness.symbol, 100.0, 120.0, 85.0)  # its level is reached
        assert broker.order(target).filled_qty == 0  # (a venue may cancel its stop with it)
        self._hold(harness)  # what the stop may have sold
        (stop,) = self._protect(harness, "moved", levels=(("stop", 90.0),))
        group = broker.order(stop).oco_group
        moved = OrderRequest(client_order_id=self._cid("stopmoved"), symbol=harness.symbol,
                             side="sell", qty=harness.qty, order_type="stop", stop_price=95.0,
                             oco_group=group, time_in_force="gtc")  # fmt: skip
        assert broker.replace(stop, moved).client_order_id == moved.client_order_id
        assert broker.order(stop).status == OrderStatus.CANCELLED
        harness.trade_bar(harness.symbol, 100.0, 120.0, 94.0)
        assert wait_final(broker, moved.client_order_id).avg_fill_price == pytest.approx(
            95.0, rel=0.01
        )
        assert broker.order(stop).filled_qty == 0

    def test_wrong_keys_fail_fast_without_printing_the_secret(self, harness) -> None:
        if harness.bad_keys_broker is None:
            assert harness.broker.connect().cash > 0  # no keys: nothing can be wrong
            return
        with pytest.raises(BrokerAuthError) as caught:
            harness.bad_keys_broker().connect()
        if harness.secret:
            assert harness.secret not in str(caught.value)

    def test_malformed_requests_fail_before_the_venue(self, harness) -> None:
        for bad in (
            {"client_order_id": "", "qty": 1.0},
            {"client_order_id": "qsx", "qty": 0.0},
            {"client_order_id": "qsx", "qty": float("nan")},
        ):
            with pytest.raises(ValueError):
                OrderRequest(symbol=harness.symbol, side="buy", **bad)
