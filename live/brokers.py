"""Build the broker a live config names: the paper venue, Alpaca or Coinbase Advanced.

Each venue validates its own ``[broker]`` options (keys, secrets' sources, endpoints).
"""

from __future__ import annotations

from live.broker import Broker
from live.config import LiveConfig
from quantshift.errors import ConfigError

VENUES = ("alpaca", "coinbase")


def build_broker(config: LiveConfig) -> Broker:
    """Return the (unconnected) adapter of ``config.broker``; ``connect()`` checks the keys."""
    kind, where = config.broker.kind, f"{config.path or config.name}: [broker]"
    options = dict(config.broker.options)
    if kind == "alpaca":
        from live.alpaca import AlpacaBroker, AlpacaConfig

        return AlpacaBroker(AlpacaConfig.from_options(options, where, mode=config.broker.mode))
    if kind == "coinbase":
        from live.coinbase import CoinbaseBroker, CoinbaseConfig

        return CoinbaseBroker(CoinbaseConfig.from_options(options, where, mode=config.broker.mode))
    raise ConfigError(f"{where} kind {kind!r} is not a venue adapter; venues: {', '.join(VENUES)}")


def is_test_venue(broker: Broker) -> bool:
    """Whether the adapter talks to a local test server (loopback), not a real venue."""
    config = getattr(broker, "config", None)
    if broker.venue == "alpaca":
        from live.alpaca.config import is_loopback_url

        return bool(config.trading_url) and is_loopback_url(config.trading_url)
    return bool(getattr(config, "uses_test_venue", False))


def venue_bar_pages(broker: Broker):
    """The venue's historical bar pages bound to ``broker``:
    ``pages(symbol, start_ns, end_ns, timeframe)``."""
    if broker.venue == "alpaca":
        from live.alpaca import bar_pages
    elif broker.venue == "coinbase":
        from live.coinbase import bar_pages
    else:
        raise ConfigError(f"venue {broker.venue!r} has no bar history")
    return lambda symbol, start_ns, end_ns, timeframe: bar_pages(
        broker, symbol, start_ns, end_ns, timeframe
    )
