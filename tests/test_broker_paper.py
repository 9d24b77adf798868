"""The paper broker passes the broker contract suite."""

from __future__ import annotations

import pytest

from live.paper import PaperBroker
from tests.broker_contract import BrokerContract, VenueHarness


@pytest.fixture
def harness(tmp_path):
    prices: dict[str, float] = {}
    broker = PaperBroker(
        f"sqlite:///{tmp_path / 'paper.db'}",
        quote=lambda symbol: prices[symbol],
        cash=100_000.0,
        fee_rate=0.001,
    )

    def trade_bar(symbol, open_, high, low):
        broker.open_bar(0, {symbol: open_})
        broker.trade_bar(0, {symbol: (open_, high, low)})

    yield VenueHarness(
        broker=broker,
        symbol="SPY",
        qty=3.0,
        set_price=lambda s, p: prices.__setitem__(s, p),
        trade_bar=trade_bar,
    )
    broker.close()


class TestPaperBroker(BrokerContract):
    pass
