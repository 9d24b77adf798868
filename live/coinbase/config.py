"""Settings of the Coinbase Advanced Trade adapter: mode (paper only against a sandbox or a local
test venue), where the keys come from, which endpoints to talk to, and timeouts and backoff.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

from live.broker import VenueSettings, is_loopback_host
from quantshift.errors import ConfigError

MODES = ("paper", "live")
REST_HOST = "api.coinbase.com"
SANDBOX_REST_HOST = "api-sandbox.coinbase.com"
USER_WS_URL = "wss://advanced-trade-ws-user.coinbase.com"
MARKET_WS_URL = "wss://advanced-trade-ws.coinbase.com"
MAX_CANDLES_PER_REQUEST = 350

API_KEY_NAME = "coinbase_api_key"
API_SECRET_NAME = "coinbase_api_secret"
"""Key names looked up in a TOML secrets file (``live.secrets.load_secret``)."""

_SECONDS = (
    "timeout_s",
    "retry_base_s",
    "max_backoff_s",
    "lookup_window_s",
    "cancel_wait_s",
    "poll_interval_s",
    "stream_silence_s",
    "stream_reconnect_s",
    "backfill_overlap_s",
)
_INTEGERS = (
    ("rate_limit_attempts", 1, 100),
    ("lookup_max_pages", 1, 10_000),
    ("candles_per_request", 1, MAX_CANDLES_PER_REQUEST),
)


@dataclass(frozen=True, kw_only=True)
class CoinbaseConfig(VenueSettings):
    """How to reach Coinbase Advanced Trade and how hard to try.

    Coinbase Advanced has no paper account: ``mode="paper"`` is accepted only when ``base_url``
    is the Coinbase sandbox (``api-sandbox.coinbase.com``) or a loopback test venue, and
    ``ws_url`` is a loopback or sandbox host too; anything else is refused so that a paper
    config can never trade real money.

    Parameters
    ----------
    mode : {"paper", "live"}
        ``live`` with the sandbox host is refused as well (it would not be live).
    api_key_env, api_secret_env : str
        Environment variables holding the CDP key name (``organizations/.../apiKeys/...``) and
        its EC private key (PEM); the SDK's own names by default.
    secrets_file : str or None
        A TOML file (mode 600) with ``coinbase_api_key`` and ``coinbase_api_secret``, read when
        the environment variable is unset.
    base_url : str
        REST host and optional port, without a scheme: the SDK always builds
        ``https://{base_url}`` and signs ``"{METHOD} {base_url}{path}"``.
    ws_url : str
        The user-channel WebSocket URL (``wss://...``; ``ws://`` only for a loopback venue).
    ca_file : str or None
        A CA bundle the REST client and the user channel trust instead of the system store (a
        local test venue's certificate). Verification stays on; the file wins over
        ``REQUESTS_CA_BUNDLE``.
    quote_currency : str
        The cash currency: its balance is cash, every other balance is a long position in
        ``"{CURRENCY}-{quote_currency}"``.
    products : tuple of str
        Product ids of the user-channel subscription (empty: all products).
    timeout_s : float
        Per-request HTTP timeout and WebSocket open timeout (the SDK sets none by default).
    rate_limit_attempts : int
        Tries of one call answered 429 before ``BrokerRateLimitedError``.
    retry_base_s, max_backoff_s : float
        Exponential backoff base (when the venue sends no ``Retry-After``) and the cap on any
        single wait, including one the venue asked for.
    lookup_window_s, lookup_max_pages : float, int
        How far back and how many pages of ``list_orders`` are searched for a client order id
        the adapter has not seen yet (Coinbase cannot look an order up by client order id).
    cancel_wait_s, poll_interval_s : float
        How long ``cancel`` polls for the final state of an order whose cancel was accepted.
    stream_silence_s, stream_reconnect_s, backfill_overlap_s : float
        No message on the user channel for ``stream_silence_s`` (heartbeats arrive every
        second): reconnect after ``stream_reconnect_s`` and backfill fills from
        ``backfill_overlap_s`` before the previous backfill (duplicates are dropped).
    candles_per_request : int
        Candles per ``get_candles`` call of ``bar_pages`` (Coinbase allows at most 350).
    stop_limit_slippage_bps : float
        A protective stop rests as a stop-limit (Coinbase has no stop-market order): its limit
        price is this far beyond the stop level (below for a sell). The stop fills anywhere
        between the two; a market that gaps past the limit leaves it unfilled, resting as a
        limit order, where the backtest's stop fills at the open. A stop resting in a trigger
        bracket (with a target) gets Coinbase's own 5% instead.
    """

    venue: ClassVar[str] = "coinbase"

    mode: str
    api_key_env: str = "COINBASE_API_KEY"
    api_secret_env: str = "COINBASE_API_SECRET"
    secrets_file: str | None = None
    base_url: str = REST_HOST
    ws_url: str = USER_WS_URL
    market_ws_url: str = MARKET_WS_URL
    ca_file: str | None = None
    quote_currency: str = "USD"
    products: tuple[str, ...] = ()
    timeout_s: float = 10.0
    rate_limit_attempts: int = 5
    retry_base_s: float = 0.5
    max_backoff_s: float = 30.0
    lookup_window_s: float = 7 * 86_400.0
    lookup_max_pages: int = 20
    cancel_wait_s: float = 2.0
    poll_interval_s: float = 0.1
    stream_silence_s: float = 10.0
    stream_reconnect_s: float = 1.0
    backfill_overlap_s: float = 30.0
    candles_per_request: int = MAX_CANDLES_PER_REQUEST
    stop_limit_slippage_bps: float = 500.0

    def __post_init__(self) -> None:
        where = "coinbase config"
        if self.mode not in MODES:
            raise ConfigError(f"{where}: mode must be one of {MODES}, got {self.mode!r}")
        for name in ("api_key_env", "api_secret_env", "quote_currency"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{where}: {name} must be a non-empty string")
        for name in _SECONDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{where}: {name} must be a number of seconds, got {value!r}")
            if not (math.isfinite(value) and value >= 0) or (name == "timeout_s" and value == 0):
                raise ConfigError(f"{where}: {name} must be a positive number, got {value!r}")
        for name, low, high in _INTEGERS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{where}: {name} must be an integer in [{low}, {high}]")
        slippage = self.stop_limit_slippage_bps
        if (
            isinstance(slippage, bool)
            or not isinstance(slippage, int | float)
            or not (0 < slippage < 10_000)
        ):
            raise ConfigError(f"{where}: stop_limit_slippage_bps must be a number of basis "
                              f"points in (0, 10000), got {slippage!r}")  # fmt: skip
        if isinstance(self.products, list):  # TOML arrays arrive as lists
            object.__setattr__(self, "products", tuple(self.products))
        if not all(isinstance(p, str) and p for p in self.products):
            raise ConfigError(f"{where}: products must be a list of product ids like 'BTC-USD'")
        _check_rest_host(self.base_url, self.mode)
        _check_ws_url(self.ws_url, self.mode)
        _check_market_ws_url(self.market_ws_url)

    @property
    def uses_test_venue(self) -> bool:
        """True when REST goes to a loopback host (a local fake venue)."""
        return is_loopback_host(_host_of(self.base_url))


def _host_of(base_url: str) -> str:
    return urlsplit(f"https://{base_url}").hostname or ""


def _check_rest_host(base_url: str, mode: str) -> None:
    where = "coinbase config: base_url"
    if not isinstance(base_url, str) or not base_url or "://" in base_url or "/" in base_url:
        raise ConfigError(
            f"{where} must be a host[:port] without scheme or path (the SDK adds https://), "
            f"got {base_url!r}"
        )
    host = _host_of(base_url)
    if is_loopback_host(host):
        return
    if mode == "paper" and host != SANDBOX_REST_HOST:
        raise ConfigError(
            f"{where}={base_url!r}: Coinbase Advanced has no paper account, so mode 'paper' "
            f"needs the sandbox ({SANDBOX_REST_HOST}) or a loopback test venue; "
            "use mode 'live' to trade real money"
        )
    if mode == "live" and host == SANDBOX_REST_HOST:
        raise ConfigError(f"{where}={base_url!r} is the sandbox; mode 'live' needs {REST_HOST}")


def _check_market_ws_url(url: str) -> None:
    """The public market data endpoint (candles): any TLS host, or a loopback test venue."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(
            f"coinbase config: market_ws_url must be a ws:// or wss:// URL, got {url!r}"
        )
    if parts.scheme == "ws" and not is_loopback_host(parts.hostname):
        raise ConfigError(f"coinbase config: market_ws_url={url!r}: ws:// is for loopback test "
                          "venues only; use wss://")  # fmt: skip


def _check_ws_url(ws_url: str, mode: str) -> None:
    where = "coinbase config: ws_url"
    parts = urlsplit(ws_url) if isinstance(ws_url, str) else None
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"{where} must be a ws:// or wss:// URL, got {ws_url!r}")
    if parts.scheme == "ws" and not is_loopback_host(parts.hostname):
        # Without TLS the JWT sent on subscribe would cross the network in clear text.
        raise ConfigError(f"{where}={ws_url!r}: ws:// is for loopback test venues only; use wss://")
    if mode == "paper" and not (
        is_loopback_host(parts.hostname) or "sandbox" in parts.hostname.split(".")[0]
    ):
        # The default is the production user channel: a paper config must not read it.
        raise ConfigError(
            f"{where}={ws_url!r}: mode 'paper' needs a loopback or sandbox WebSocket host"
        )
