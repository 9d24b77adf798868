"""Build the broker a live config names: the paper venue, Alpaca or Coinbase Advanced.

Each venue validates its own ``[broker]`` options (keys, secrets' sources, endpoints).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from live.broker import VENUES, Broker
from live.config import LiveConfig
from quantshift.errors import ConfigError

log = logging.getLogger("quantshift.live")


@dataclass(frozen=True)
class Venue:
    """One venue's package: its config (``VenueSettings``), its adapter, its bar pages, and
    its bar stream with the one bar length the venue streams (None: the venue has none)."""

    settings: type
    adapter: type
    bar_pages: Callable
    bar_stream: Callable | None = None
    stream_interval_s: int | None = None


def venue(kind: str) -> Venue:
    """The package of venue ``kind`` (imported on first use: the SDKs take a while)."""
    if kind == "alpaca":
        from live.alpaca import AlpacaBroker, AlpacaConfig, bar_pages
        from live.alpaca.bar_stream import AlpacaBarStream

        return Venue(AlpacaConfig, AlpacaBroker, bar_pages, AlpacaBarStream, 60)
    if kind == "coinbase":
        from live.coinbase import CoinbaseBroker, CoinbaseConfig, bar_pages
        from live.coinbase.candles import CANDLE_S, CoinbaseBarStream

        return Venue(CoinbaseConfig, CoinbaseBroker, bar_pages, CoinbaseBarStream, CANDLE_S)
    raise ConfigError(f"unknown venue {kind!r}; venues: {', '.join(VENUES)}")


def build_broker(config: LiveConfig) -> Broker:
    """Return the (unconnected) adapter of ``config.broker``; ``connect()`` checks the keys."""
    kind, where = config.broker.kind, f"{config.path or config.name}: [broker]"
    if kind not in VENUES:
        raise ConfigError(f"{where} kind {kind!r} is not a venue adapter; venues: "
                          f"{', '.join(VENUES)}")  # fmt: skip
    package = venue(kind)
    options = dict(config.broker.options)
    return package.adapter(package.settings.from_options(options, where, mode=config.broker.mode))


def venue_bar_pages(broker: Broker):
    """The venue's historical bar pages bound to ``broker``:
    ``pages(symbol, start_ns, end_ns, timeframe)``."""
    bar_pages = venue(broker.venue).bar_pages
    return lambda symbol, start_ns, end_ns, timeframe: bar_pages(
        broker, symbol, start_ns, end_ns, timeframe
    )


def venue_bar_stream(broker: Broker, bar_interval_s: int, where: str):
    """``open_stream(symbols, on_bar, on_connect)`` for the venue's bar stream (see
    ``live.streaming``); refuses a bar length the venue does not stream."""
    package = venue(broker.venue)
    if package.bar_stream is None or package.stream_interval_s != bar_interval_s:
        streams = (f"only {package.stream_interval_s} s bars" if package.bar_stream
                   else "no bars")  # fmt: skip
        raise ConfigError(
            f"{where}: [feed] stream = true, but {broker.venue}'s stream carries {streams}, not "
            f"{bar_interval_s} s bars; set stream = false to poll its REST bars"
        )

    def open_stream(symbols, on_bar, on_connect):
        stream = package.bar_stream(broker, symbols, on_bar, on_connect)
        return stream.start()

    return open_stream


def connect_venue(config: LiveConfig) -> Broker:
    """The venue of ``config``, connected (wrong keys fail here, before anything happens);
    refuses what would be unsafe on a real venue."""
    broker = build_broker(config)
    where = config.path or config.name
    if config.feed.kind == "replay" and not broker.config.uses_test_venue:
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
