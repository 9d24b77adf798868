"""Settings of the Alpaca adapter: paper or live (asserted, never defaulted by the SDK), where
the keys come from, which endpoints to talk to, and the timeouts and backoff we apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

from live.broker import VenueSettings, is_loopback_host
from quantshift.errors import ConfigError

MODES = ("paper", "live")
DATA_FEEDS = ("iex", "sip")

TRADING_URLS = {"paper": "https://paper-api.alpaca.markets", "live": "https://api.alpaca.markets"}
STREAM_URLS = {
    "paper": "wss://paper-api.alpaca.markets/stream",
    "live": "wss://api.alpaca.markets/stream",
}
DATA_URL = "https://data.alpaca.markets"
DATA_STREAM_URL = "wss://stream.data.alpaca.markets/v2/{feed}"

KEY_ID_NAME = "alpaca_key_id"
SECRET_KEY_NAME = "alpaca_secret_key"
"""Key names looked up in a TOML secrets file (``live.secrets.load_secret``)."""


@dataclass(frozen=True, kw_only=True)
class AlpacaConfig(VenueSettings):
    """How to reach Alpaca and how hard to try.

    Parameters
    ----------
    mode : {"paper", "live"}
        Passed to the SDK as ``paper=(mode == "paper")`` and checked against the account at
        ``connect`` (paper account numbers start with ``PA``).
    key_id_env, secret_key_env : str
        Environment variables holding the keys (Alpaca's own names by default).
    secrets_file : str or None
        A TOML file (mode 600) with ``alpaca_key_id`` and ``alpaca_secret_key``, read when the
        environment variable is unset.
    trading_url, stream_url, data_url, data_stream_url : str or None
        Endpoint overrides (the SDK's ``url_override``; ``data_stream_url`` is the market data
        stream the venue feed takes bars from when ``[feed] stream = true``). A non-loopback
        override must be Alpaca's own endpoint for ``mode``; any loopback host (127.0.0.1, ::1,
        localhost) is accepted so tests can run against a local fake venue.
    data_feed : {"iex", "sip"}
        Market data feed for bars (free accounts get ``iex``).
    timeout_s : float
        Per-request HTTP timeout; the SDK sets none, so a hung request would wait forever.
    rate_limit_attempts : int
        Tries of one call answered 429 before ``BrokerRateLimitedError``.
    read_attempts : int
        Tries of one read answered 5xx or not at all before ``BrokerUnavailableError``.
    retry_base_s, max_backoff_s : float
        Exponential backoff base and the cap on any single wait (also on a venue's
        ``Retry-After`` / ``X-RateLimit-Reset``).
    stream_silence_s : float
        No message on the trade stream for this long: reconnect and backfill.
    stream_reconnect_s : float
        Wait before reconnecting the trade stream after a failure.
    backfill_overlap_s : float
        How far before the last healthy moment the backfill after a reconnect starts
        (duplicates are dropped by fill id).
    bars_page_limit : int
        Bars per request of ``bar_pages`` (Alpaca allows up to 10000).
    """

    venue: ClassVar[str] = "alpaca"

    mode: str
    key_id_env: str = "APCA_API_KEY_ID"
    secret_key_env: str = "APCA_API_SECRET_KEY"
    secrets_file: str | None = None
    trading_url: str | None = None
    stream_url: str | None = None
    data_url: str | None = None
    data_stream_url: str | None = None
    data_feed: str = "iex"
    timeout_s: float = 10.0
    rate_limit_attempts: int = 5
    read_attempts: int = 3
    retry_base_s: float = 0.5
    max_backoff_s: float = 30.0
    stream_silence_s: float = 60.0
    stream_reconnect_s: float = 1.0
    backfill_overlap_s: float = 5.0
    bars_page_limit: int = 10_000

    def __post_init__(self) -> None:
        where = "alpaca config"
        if self.mode not in MODES:
            raise ConfigError(f"{where}: mode must be one of {MODES}, got {self.mode!r}")
        if self.data_feed not in DATA_FEEDS:
            raise ConfigError(f"{where}: data_feed must be one of {DATA_FEEDS}")
        for name in ("key_id_env", "secret_key_env"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{where}: {name} must name an environment variable")
        for name in (
            "timeout_s",
            "retry_base_s",
            "max_backoff_s",
            "stream_silence_s",
            "stream_reconnect_s",
            "backfill_overlap_s",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{where}: {name} must be a number of seconds, got {value!r}")
            if not (math.isfinite(value) and value >= 0) or (name == "timeout_s" and value == 0):
                raise ConfigError(f"{where}: {name} must be a positive number, got {value!r}")
        for name, low, high in (
            ("rate_limit_attempts", 1, 100),
            ("read_attempts", 1, 100),
            ("bars_page_limit", 1, 10_000),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{where}: {name} must be an integer in [{low}, {high}]")
        _check_url(self.trading_url, "trading_url", {TRADING_URLS[self.mode]}, self.mode)
        _check_url(self.stream_url, "stream_url", {STREAM_URLS[self.mode]}, self.mode)
        _check_url(self.data_url, "data_url", {DATA_URL}, self.mode)
        streams = {DATA_STREAM_URL.format(feed=feed) for feed in DATA_FEEDS}
        _check_url(self.data_stream_url, "data_stream_url", streams, self.mode)

    @property
    def uses_test_venue(self) -> bool:
        """True when orders go to a loopback host (a local fake venue)."""
        return bool(self.trading_url) and is_loopback_url(self.trading_url)

    @property
    def paper(self) -> bool:
        """The SDK's ``paper`` flag, always passed explicitly (the SDK defaults it to True)."""
        return self.mode == "paper"

    @property
    def resolved_stream_url(self) -> str:
        return self.stream_url or STREAM_URLS[self.mode]

    @property
    def resolved_data_stream_url(self) -> str:
        return self.data_stream_url or DATA_STREAM_URL.format(feed=self.data_feed)


def is_loopback_url(url: str) -> bool:
    """True if ``url`` points at this machine (a test venue), never at Alpaca."""
    return is_loopback_host(urlsplit(url).hostname or "")


def _check_url(url: str | None, name: str, expected: set[str], mode: str) -> None:
    if url is None:
        return
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https", "ws", "wss"):
        raise ConfigError(f"alpaca config: {name} must be an http(s) or ws(s) URL, got {url!r}")
    if is_loopback_url(url) or url.rstrip("/") in expected:
        return
    # Any other host could be the other mode's endpoint behind a proxy: refuse rather than
    # risk real orders from a paper config (or the reverse).
    raise ConfigError(
        f"alpaca config: {name}={url!r} does not match mode {mode!r}; "
        f"use {' or '.join(sorted(expected))} (or a loopback test server)"
    )
