"""The Coinbase Advanced Trade transport: credentials, the SDK's REST client, and one call to
the venue with its HTTP failures mapped to the ``Broker*Error`` that says what the runner does next.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from coinbase.rest import RESTClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from requests.exceptions import HTTPError

from live.broker import (
    BrokerAmbiguousError,
    BrokerAuthError,
    BrokerError,
    BrokerRateLimitedError,
    BrokerRejectedError,
    BrokerUnavailableError,
    venue_answer,
)
from live.coinbase.config import API_KEY_NAME, API_SECRET_NAME, CoinbaseConfig
from live.logs import ScrubSecrets
from live.secrets import Secret, load_secrets, scrub

VENUE = "coinbase"
logger = logging.getLogger(__name__)
T = TypeVar("T")
SDK_LOGGERS = ("coinbase.RESTClient", "coinbase.WSClient")

# The SDK logs every HTTP error with the venue's answer through a stderr handler of its own
# (coinbase/api_base.py); an answer may echo a key. Its records go our way, scrubbed.
for _name in SDK_LOGGERS:
    logging.getLogger(_name).handlers.clear()
    logging.getLogger(_name).addFilter(ScrubSecrets())


class OrderNotFoundError(BrokerError):
    """404 for an order id (the venue does not know it)."""


@dataclass(frozen=True)
class Credentials:
    """The CDP key name and its private key, as ``Secret``s that never print."""

    key_name: Secret
    private_key: Secret

    @property
    def hint(self) -> str:
        """Where the keys came from (safe to print), for auth error messages."""
        return f"key name from {self.key_name.source}, private key from {self.private_key.source}"


def load_credentials(config: CoinbaseConfig) -> Credentials:
    """Read the key name and private key from the environment or the secrets file.

    Raises
    ------
    ConfigError
        When either is missing (naming the variable and file tried).
    BrokerAuthError
        When the private key is not a PEM EC or Ed25519 key (naming its source, never its value).
    """
    key, secret = load_secrets(
        config,
        ((API_KEY_NAME, "api_key_env"), (API_SECRET_NAME, "api_secret_env")),
        "coinbase broker",
    )
    credentials = Credentials(key, secret)
    # The SDK turns "\n" escapes into newlines before signing; do the same to check the key.
    pem = secret.reveal().encode().decode("unicode_escape")
    try:
        private = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnicodeError):
        private = None
    if not isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise BrokerAuthError(
            VENUE,
            f"the private key from {secret.source} is not a PEM EC (ES256) or Ed25519 key; "
            "create a CDP API key for Advanced Trade",
        )
    return credentials


class _CABundleSession(requests.Session):
    """A session that verifies TLS against one CA bundle. ``Session.verify`` alone is silently
    overridden by ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` (requests' merge of environment
    settings), so the bundle is applied after that merge."""

    def __init__(self, ca_file: str) -> None:
        super().__init__()
        self.verify = ca_file

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["verify"] = self.verify
        return settings


def rest_client(config: CoinbaseConfig, credentials: Credentials | None) -> RESTClient:
    """Build the SDK client (public endpoints only without ``credentials``). Keys are passed
    explicitly: the SDK's defaults read the environment once, at import time."""
    client = RESTClient(
        api_key=credentials.key_name.reveal() if credentials else None,
        api_secret=credentials.private_key.reveal() if credentials else None,
        base_url=config.base_url,
        timeout=config.timeout_s,
    )
    if config.ca_file is not None:
        client.session = _CABundleSession(config.ca_file)
    return client


# ----------------------------------------------------------------------------- error mapping
def retry_wait_s(headers: Any, attempt: int, config: CoinbaseConfig) -> float:
    """Seconds to wait before retry ``attempt`` (1-based) of a call answered 429: the venue's
    ``Retry-After`` or ``x-ratelimit-reset``, else exponential backoff; capped."""
    for name in ("Retry-After", "x-ratelimit-reset"):
        value = headers.get(name) if headers is not None else None
        if not value:
            continue
        try:
            wait = float(value)
        except ValueError:
            try:
                wait = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if wait > 1e9:  # an epoch second, not a delay
            wait -= time.time()
        return min(max(wait, 0.0), config.max_backoff_s)
    return min(config.retry_base_s * 2 ** (attempt - 1), config.max_backoff_s)


def _body(response: requests.Response | None) -> str:
    text = scrub((response.text if response is not None else "") or "")
    return " ".join(text.split())[:300]  # scrubbed first: a cut secret would not be recognised


def call_venue(
    config: CoinbaseConfig,
    what: str,
    call: Callable[[], T],
    *,
    sends: bool = False,
    auth_hint: str = "",
) -> T:
    """Run one SDK call, backing off on 429, and map failures to ``Broker*Error``.

    Parameters
    ----------
    what : str
        Names the call in error messages (``"create order qs..."``).
    sends : bool
        True for a call that may have changed something at the venue (create): a timeout or
        5xx is then ``BrokerAmbiguousError`` and a 4xx ``BrokerRejectedError``.
    auth_hint : str
        Where the keys came from, for a 401/403 message (never the keys).
    """
    attempt = 0
    while True:
        try:
            with venue_answer(VENUE, what, sends=sends):
                return call()
        except HTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else 0
            if status in (401, 403):
                raise BrokerAuthError(
                    VENUE, f"{what}: HTTP {status} {_body(response)}; {auth_hint}".rstrip("; ")
                ) from None
            if status == 429:
                attempt += 1
                wait = retry_wait_s(response.headers, attempt, config)
                if attempt >= config.rate_limit_attempts:
                    raise BrokerRateLimitedError(
                        VENUE, f"{what}: still HTTP 429 after {attempt} tries", retry_after_s=wait
                    ) from None
                logger.warning("coinbase %s: HTTP 429, retrying in %.3fs", what, wait)
                time.sleep(wait)
                continue
            message = f"{what}: HTTP {status} {_body(response)}"
            if status == 404:
                raise OrderNotFoundError(VENUE, message) from None
            if status >= 500 or status == 0:
                kind = BrokerAmbiguousError if sends else BrokerUnavailableError
                raise kind(VENUE, message) from None
            raise (BrokerRejectedError if sends else BrokerError)(VENUE, message) from None
        except requests.RequestException as exc:  # timeout, reset, TLS: no answer at all
            kind = BrokerAmbiguousError if sends else BrokerUnavailableError
            raise kind(VENUE, f"{what}: no answer ({type(exc).__name__}: {exc})") from exc
