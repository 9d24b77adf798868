"""Build the broker a live config names: the paper venue, Alpaca or Coinbase Advanced.

Each venue validates its own ``[broker]`` options (keys, secrets' sources, endpoints).
"""

from __future__ import annotations

import logging

from live.broker import Broker
from live.config import LiveConfig
from quantshift.errors import ConfigError

log = logging.getLogger("quantshift.live")

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


def connect_venue(config: LiveConfig) -> Broker:
    """The venue of ``config``, connected (wrong keys fail here, before anything happens);
    refuses what would be unsafe on a real venue."""
    broker = build_broker(config)
    where = config.path or config.name
    if config.feed.kind == "replay" and not is_test_venue(broker):
        raise ConfigError(
            f"{where}: a replayed feed would send orders for past bars to the real "
            f"{config.broker.kind} venue; replays run on the paper broker (or a local test venue)"
        )
    if config.portfolio.sim.fill == "close":
        raise ConfigError(
            f"{where}: [costs] fill = 'close' is a backtest assumption; a venue fills market "
            "orders after the decision"
        )
    account = broker.connect()
    log.info(
        "connected to %s (%s): equity %.2f %s",
        broker.venue, config.broker.mode, account.equity, account.currency,
    )  # fmt: skip
    return broker
