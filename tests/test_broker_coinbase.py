"""The Coinbase adapter against a local fake venue through the real coinbase-advanced-py SDK:
the broker contract, fault scenarios, the user-channel stream, config, secrets and candles.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time

import pytest
import requests
import trustme
from coinbase.rest import RESTClient
from coinbase.websocket.websocket_base import WSBase
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from live.broker import (
    BrokerAmbiguousError,
    BrokerAuthError,
    BrokerError,
    BrokerFill,
    BrokerRateLimitedError,
    BrokerRejectedError,
    BrokerUnavailableError,
    OrderRequest,
    OrderStatus,
)
from live.coinbase import CoinbaseBroker, CoinbaseConfig, bar_pages
from live.coinbase import stream as coinbase_stream
from quantshift.errors import ConfigError
from tests.broker_contract import BrokerContract, VenueHarness
from tests.fakes.coinbase_server import FakeCoinbase

KEY_NAME = "organizations/org-test/apiKeys/key-test"
KEY_ENV, SECRET_ENV = "QS_TEST_COINBASE_KEY", "QS_TEST_COINBASE_SECRET"
SYMBOL = "BTC-USD"


def new_key() -> tuple[str, ec.EllipticCurvePublicKey]:
    """A CDP-style EC P-256 key: the PEM the SDK signs with and the public half."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    return pem, private.public_key()


def pem_body(pem: str) -> str:
    """The base64 middle line of a PEM, the part that must never leak."""
    return pem.splitlines()[1]


@pytest.fixture
def fake():
    venue = FakeCoinbase().start()
    venue.set_price(SYMBOL, 100.0)
    yield venue
    venue.stop()


@pytest.fixture
def pem(fake, monkeypatch) -> str:
    private_pem, public = new_key()
    fake.add_key(KEY_NAME, public)
    monkeypatch.setenv(KEY_ENV, KEY_NAME)
    monkeypatch.setenv(SECRET_ENV, private_pem)
    return private_pem


def config_for(fake: FakeCoinbase, **overrides) -> CoinbaseConfig:
    settings = {
        "mode": "paper",
        "api_key_env": KEY_ENV,
        "api_secret_env": SECRET_ENV,
        "base_url": fake.base_url,
        "ws_url": fake.ws_url,
        "ca_file": fake.ca_file,
        "timeout_s": 2.0,
        "retry_base_s": 0.001,
        "max_backoff_s": 0.2,
        "cancel_wait_s": 0.5,
        "poll_interval_s": 0.01,
        "stream_silence_s": 0.3,
        "stream_reconnect_s": 0.02,
        "backfill_overlap_s": 1.0,
    }
    return CoinbaseConfig(**{**settings, **overrides})


@pytest.fixture
def broker(fake, pem):
    adapter = CoinbaseBroker(config_for(fake))
    yield adapter
    adapter.close()


@pytest.fixture
def harness(fake, pem, broker, monkeypatch):
    def bad_keys_broker() -> CoinbaseBroker:
        wrong_pem, _ = new_key()  # a valid key the venue never issued
        monkeypatch.setenv("QS_TEST_COINBASE_WRONG", wrong_pem)
        return CoinbaseBroker(config_for(fake, api_secret_env="QS_TEST_COINBASE_WRONG"))

    def trade_bar(symbol: str, open_: float, high: float, low: float) -> None:
        ts = time.time_ns()
        fake.trade_bar(ts, {symbol: (open_, high, low)})  # the venue's market trades the bar
        broker.trade_bar(ts, {symbol: (open_, high, low)})  # then trailing legs follow it

    with fake._lock:  # the protective sells of the contract need coins to hold
        fake.balances["BTC"] = fake.balances.get("BTC", 0) + 5
    return VenueHarness(
        broker=broker,
        symbol=SYMBOL,
        qty=0.5,
        set_price=fake.set_price,
        bad_keys_broker=bad_keys_broker,
        secret=pem,
        trade_bar=trade_bar,
    )


class TestCoinbaseBroker(BrokerContract):
    pass


def market(cid: str, qty: float = 0.5, side: str = "buy") -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=SYMBOL, side=side, qty=qty)


def limit(cid: str, price: float, qty: float = 0.5, side: str = "buy") -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=SYMBOL,
        side=side,
        qty=qty,
        order_type="limit",
        limit_price=price,
        time_in_force="gtc",
    )


# ----------------------------------------------------------------------------- submit faults
def test_a_504_after_the_order_landed_is_ambiguous_and_resolved_by_lookup(fake, broker):
    fake.fail("POST", "/orders", 504, land=True)
    with pytest.raises(BrokerAmbiguousError, match="HTTP 504"):
        broker.submit(market("qs504"))
    found = broker.order("qs504")
    assert found is not None and found.status == OrderStatus.FILLED
    again = broker.submit(market("qs504"))  # the runner's retry after lookup: adopted
    assert again.venue_order_id == found.venue_order_id
    assert len(fake.orders) == 1
    assert broker.positions()[SYMBOL] == pytest.approx(0.5)


def test_a_timeout_after_landing_is_ambiguous_and_found_from_a_fresh_process(fake, pem):
    slow = CoinbaseBroker(config_for(fake, timeout_s=0.3))
    fake.fail("POST", "/orders", 0, land=True, delay_s=0.8)
    with pytest.raises(BrokerAmbiguousError, match="no answer"):
        slow.submit(market("qstimeout"))
    restarted = CoinbaseBroker(config_for(fake))  # knows nothing: searches list_orders
    assert restarted.order("qstimeout").status == OrderStatus.FILLED
    assert restarted.submit(market("qstimeout")).client_order_id == "qstimeout"
    assert len(fake.orders) == 1


def test_a_500_on_submit_is_ambiguous_and_lookup_says_it_never_landed(fake, broker):
    fake.fail("POST", "/orders", 500)
    with pytest.raises(BrokerAmbiguousError, match="HTTP 500"):
        broker.submit(market("qs500"))
    assert broker.order("qs500") is None
    assert broker.submit(market("qs500")).status == OrderStatus.FILLED
    assert len(fake.orders) == 1


def test_a_429_burst_is_waited_out_as_the_venue_asks(fake, broker):
    fake.rate_limit("POST", "/orders", count=2, retry_after_s=0.05)
    started = time.monotonic()
    assert broker.submit(market("qs429")).status == OrderStatus.FILLED
    assert time.monotonic() - started >= 0.1  # two waits of Retry-After
    assert fake.count("POST", "/orders") == 3 and len(fake.orders) == 1


def test_429_until_the_attempts_run_out_is_rate_limited(fake, pem):
    adapter = CoinbaseBroker(config_for(fake, rate_limit_attempts=3, max_backoff_s=0.01))
    fake.rate_limit("POST", "/orders", count=10, retry_after_s=30)  # capped by max_backoff_s
    started = time.monotonic()
    with pytest.raises(BrokerRateLimitedError) as caught:
        adapter.submit(market("qs429x"))
    assert time.monotonic() - started < 1.0
    assert caught.value.retry_after_s == pytest.approx(0.01)
    assert fake.count("POST", "/orders") == 3 and fake.orders == {}


def test_success_false_is_a_rejection_even_with_http_200(fake, broker):
    with pytest.raises(BrokerRejectedError, match="INSUFFICIENT_FUND"):
        broker.submit(market("qsbroke", qty=10_000.0))
    assert broker.order("qsbroke") is None


@pytest.mark.parametrize("duplicate_mode", ["error", "existing"])
def test_a_restarted_process_resubmitting_adopts_the_order(fake, pem, duplicate_mode):
    fake.duplicate_mode = duplicate_mode
    first = CoinbaseBroker(config_for(fake)).submit(market("qsrestart"))
    again = CoinbaseBroker(config_for(fake)).submit(market("qsrestart"))
    assert again.venue_order_id == first.venue_order_id
    assert fake.count("POST", "/orders") == 2 and len(fake.orders) == 1
    assert CoinbaseBroker(config_for(fake)).positions()[SYMBOL] == pytest.approx(0.5)


def test_an_empty_client_order_id_is_never_sent(fake, broker):
    request = market("qsguard")
    object.__setattr__(request, "client_order_id", "")  # slip past OrderRequest's own check
    with pytest.raises(ValueError, match="client_order_id"):
        broker.submit(request)
    assert fake.count("POST", "/orders") == 0


def test_the_sdk_replaces_an_empty_client_order_id_with_a_random_one(fake, pem):
    # Why the guard above exists (coinbase/rest/orders.py, create_order).
    sdk = CoinbaseBroker(config_for(fake)).rest
    sdk.market_order(client_order_id="", product_id=SYMBOL, side="BUY", base_size="0.1")
    sent = fake.create_bodies[-1]["client_order_id"]
    assert sent and len(sent) == 32


def test_partial_fill_then_cancel_keeps_the_filled_part(fake, broker):
    fake.partial_next(0.4)
    order = broker.submit(limit("qspartial", price=101.0))
    assert order.status == OrderStatus.PARTIALLY_FILLED
    assert order.filled_qty == pytest.approx(0.2)
    done = broker.cancel("qspartial")
    assert done.status == OrderStatus.CANCELLED and done.filled_qty == pytest.approx(0.2)
    assert [f.qty for f in broker.fills() if f.client_order_id == "qspartial"] == [
        pytest.approx(0.2)
    ]
    assert broker.positions()[SYMBOL] == pytest.approx(0.2)
    assert broker.cancel("qspartial").status == OrderStatus.CANCELLED


def test_a_stop_limit_rests_until_triggered(fake, broker):
    stop = OrderRequest(
        client_order_id="qsstop",
        symbol=SYMBOL,
        side="sell",
        qty=0.25,
        order_type="stop",
        stop_price=95.0,
        limit_price=94.0,
        time_in_force="gtc",
    )
    broker.submit(market("qsstopbuy"))
    assert broker.submit(stop).status == OrderStatus.OPEN
    fake.set_price(SYMBOL, 96.0)
    assert broker.order("qsstop").status == OrderStatus.OPEN
    fake.set_price(SYMBOL, 94.5)
    assert broker.order("qsstop").status == OrderStatus.FILLED
    assert broker.positions()[SYMBOL] == pytest.approx(0.25)


@pytest.mark.parametrize(
    "changes",
    [
        {"order_type": "limit", "limit_price": 90.0},  # tif "day": nothing like it on Coinbase
        {"order_type": "stop", "stop_price": 90.0, "time_in_force": "gtc"},  # no limit price
        {"take_profit_price": 120.0},
    ],
)
def test_orders_coinbase_cannot_express_are_rejected_before_the_venue(fake, broker, changes):
    request = OrderRequest(client_order_id="qsodd", symbol=SYMBOL, side="buy", qty=0.1, **changes)
    with pytest.raises(BrokerRejectedError):
        broker.submit(request)
    assert fake.count("POST", "/orders") == 0


def test_a_5xx_on_a_read_is_unavailable(fake, broker):
    fake.fail("GET", "/accounts", 503)
    with pytest.raises(BrokerUnavailableError, match="HTTP 503"):
        broker.positions()


def test_account_values_crypto_at_the_venue_price(fake, broker):
    broker.submit(market("qsvalue", qty=2.0))
    fake.set_price(SYMBOL, 150.0)
    account = broker.account()
    assert account.cash == pytest.approx(100_000 - 200 - 0.2)
    assert account.equity == pytest.approx(account.cash + 300)
    assert SYMBOL in broker.products()


# ----------------------------------------------------------------------------- auth, secrets
def test_a_wrong_key_fails_fast_naming_where_it_came_from(fake, pem, monkeypatch, caplog):
    wrong_pem, _ = new_key()
    monkeypatch.setenv("QS_TEST_COINBASE_WRONG", wrong_pem)
    caplog.set_level(logging.DEBUG)
    adapter = CoinbaseBroker(config_for(fake, api_secret_env="QS_TEST_COINBASE_WRONG"))
    with pytest.raises(BrokerAuthError, match="HTTP 401") as caught:
        adapter.connect()
    message = str(caught.value)
    assert "$QS_TEST_COINBASE_WRONG" in message and f"${KEY_ENV}" in message
    for secret in (wrong_pem, pem_body(wrong_pem), KEY_NAME):
        assert secret not in message and secret not in caplog.text
        assert secret not in repr(adapter) and secret not in repr(adapter.credentials)
    assert fake.count("GET", "/key_permissions") == 1  # no retry


def test_a_malformed_private_key_is_named_by_source_never_shown(fake, monkeypatch, caplog):
    junk = (
        "-----BEGIN EC PRIVATE KEY-----\nnotreallyakeyAAAAsecretish\n-----END EC PRIVATE KEY-----"
    )
    monkeypatch.setenv(KEY_ENV, KEY_NAME)
    monkeypatch.setenv(SECRET_ENV, junk)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BrokerAuthError, match=f"\\${SECRET_ENV}") as caught:
        CoinbaseBroker(config_for(fake)).connect()
    assert "notreallyakey" not in str(caught.value) and "notreallyakey" not in caplog.text
    assert fake.calls == []


def test_a_key_without_trade_permission_fails_at_connect(fake, broker):
    fake.can_trade = False
    with pytest.raises(BrokerAuthError, match="cannot trade"):
        broker.connect()


def test_a_403_at_connect_fails_fast(fake, broker):
    fake.fail("GET", "/key_permissions", 403)
    with pytest.raises(BrokerAuthError, match="HTTP 403"):
        broker.connect()


def test_missing_keys_name_the_variables_and_file_tried(fake, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    secrets = tmp_path / "secrets.toml"
    with pytest.raises(ConfigError, match=f"{KEY_ENV}.*secrets.toml"):
        CoinbaseBroker(config_for(fake, secrets_file=str(secrets))).connect()


def test_keys_from_a_secrets_file(fake, tmp_path, monkeypatch):
    pem, public = new_key()
    fake.add_key(KEY_NAME, public)
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(SECRET_ENV, raising=False)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'coinbase_api_key = "{KEY_NAME}"\ncoinbase_api_secret = """{pem}"""\n')
    secrets.chmod(0o600)
    adapter = CoinbaseBroker(config_for(fake, secrets_file=str(secrets)))
    assert adapter.connect().cash == pytest.approx(100_000)
    assert "secrets.toml:coinbase_api_secret" in adapter.credentials.hint


def test_the_default_variables_are_the_sdks(fake, monkeypatch):
    pem, public = new_key()
    fake.add_key(KEY_NAME, public)
    monkeypatch.setenv("COINBASE_API_KEY", KEY_NAME)
    monkeypatch.setenv("COINBASE_API_SECRET", pem.replace("\n", "\\n"))  # escaped, as in .env
    config = config_for(fake, api_key_env="COINBASE_API_KEY", api_secret_env="COINBASE_API_SECRET")
    assert CoinbaseBroker(config).connect().cash > 0


# ----------------------------------------------------------------------------- TLS
def test_tls_is_verified_against_the_configured_ca_only(fake, pem):
    with pytest.raises(BrokerUnavailableError, match="SSLError"):
        CoinbaseBroker(config_for(fake, ca_file=None)).connect()


def test_the_ca_file_wins_over_requests_ca_bundle(fake, pem, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    # The quirk: Session.verify alone is overridden by the variable.
    plain = RESTClient(api_key=KEY_NAME, api_secret=pem, base_url=fake.base_url, timeout=2)
    plain.session.verify = fake.ca_file
    with pytest.raises(requests.exceptions.SSLError):
        plain.get_accounts()
    assert CoinbaseBroker(config_for(fake)).connect().cash > 0


# ----------------------------------------------------------------------------- config
def test_paper_mode_needs_the_sandbox_or_a_loopback_venue():
    with pytest.raises(ConfigError, match="no paper account"):
        CoinbaseConfig(mode="paper")
    sandbox = CoinbaseConfig(
        mode="paper", base_url="api-sandbox.coinbase.com", ws_url="wss://ws-sandbox.example.com"
    )
    assert sandbox.mode == "paper"
    with pytest.raises(ConfigError, match="loopback or sandbox WebSocket"):
        CoinbaseConfig(mode="paper", base_url="api-sandbox.coinbase.com")
    with pytest.raises(ConfigError, match="is the sandbox"):
        CoinbaseConfig(mode="live", base_url="api-sandbox.coinbase.com")
    assert CoinbaseConfig(mode="live").base_url == "api.coinbase.com"
    assert CoinbaseConfig(mode="paper", base_url="127.0.0.1:8443", ws_url="wss://[::1]:9").mode
    with pytest.raises(ConfigError, match="ws:// is for loopback"):
        CoinbaseConfig(mode="live", ws_url="ws://advanced-trade-ws-user.coinbase.com")
    assert CoinbaseConfig(mode="paper", base_url="127.0.0.1:8443", ws_url="ws://127.0.0.1:9").mode


def test_config_rejects_bad_values_naming_the_key():
    with pytest.raises(ConfigError, match="without scheme"):
        CoinbaseConfig(mode="live", base_url="https://api.coinbase.com")
    with pytest.raises(ConfigError, match="candles_per_request"):
        CoinbaseConfig(mode="live", candles_per_request=351)
    with pytest.raises(ConfigError, match="mode must be one of"):
        CoinbaseConfig(mode="sim")


def test_from_options_rejects_unknown_keys_and_builds_the_rest():
    with pytest.raises(ConfigError, match=r"live.toml: \[broker\] api_key: unknown key.*allowed"):
        CoinbaseConfig.from_options({"api_key": "x"}, "live.toml", mode="live")
    with pytest.raises(ConfigError, match=r"live.toml: \[broker\].*timeout_s"):
        CoinbaseConfig.from_options({"timeout_s": -1}, "live.toml", mode="live")
    config = CoinbaseConfig.from_options(
        {"products": ["BTC-USD"], "timeout_s": 5}, "live.toml", mode="live"
    )
    assert config.products == ("BTC-USD",) and config.timeout_s == 5


# ----------------------------------------------------------------------------- stream
class Collector:
    def __init__(self) -> None:
        self.fills: list[BrokerFill] = []
        self.lock = threading.Lock()

    def __call__(self, fill: BrokerFill) -> None:
        with self.lock:
            self.fills.append(fill)

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[BrokerFill]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.fills) >= count:
                    return list(self.fills)
            time.sleep(0.01)
        raise AssertionError(f"{len(self.fills)} fills after {timeout_s}s, wanted {count}")


def wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def streaming(fake, broker):
    collector = Collector()
    stop = broker.stream_fills(collector)
    # Connected and past the first backfill: a fill from now on comes by the stream, or by the
    # backfill after a reconnect, never by that first backfill.
    wait_until(lambda: fake.stream_connections == 1 and stop.__self__.backfills >= 1)
    yield collector, stop.__self__
    stop()


def test_the_stream_delivers_market_and_resting_fills_once(fake, broker, streaming):
    collector, _ = streaming
    broker.submit(market("qsstream1"))
    broker.submit(limit("qsstream2", price=90.0))
    fake.set_price(SYMBOL, 89.0)
    fills = collector.wait_for(2)
    time.sleep(0.1)  # a late duplicate would show up here
    assert [f.client_order_id for f in collector.fills] == ["qsstream1", "qsstream2"]
    assert fills[1].price == pytest.approx(89.0)
    assert {f.fill_id for f in fills} == {f.fill_id for f in broker.fills()}


def test_the_stream_names_a_protective_fill_by_the_leg_that_filled(fake, broker, streaming):
    collector, _ = streaming
    with fake._lock:
        fake.balances["BTC"] = fake.balances.get("BTC", 0) + 1
    legs = {"qslegstop": {"order_type": "stop", "stop_price": 95.0},
            "qslegtarget": {"order_type": "limit", "limit_price": 110.0}}  # fmt: skip
    for cid, levels in legs.items():
        broker.submit(OrderRequest(client_order_id=cid, symbol=SYMBOL, side="sell", qty=0.5,
                                   oco_group="qsleg", time_in_force="gtc", **levels))  # fmt: skip
    assert len([o for o in fake.orders.values() if o.status == "OPEN"]) == 1  # one bracket
    fake.set_price(SYMBOL, 111.0)
    (fill,) = collector.wait_for(1)
    assert fill.client_order_id == "qslegtarget" and fill.price == pytest.approx(111.0)
    assert broker.order("qslegstop").status == OrderStatus.CANCELLED
    assert [f.client_order_id for f in broker.fills()] == ["qslegtarget"]


def test_duplicate_and_out_of_order_events_deliver_each_fill_once(fake, broker, streaming):
    collector, _ = streaming
    fake.duplicate_events = True
    fake.hold_events()
    fake.partial_next(0.4)
    broker.submit(limit("qsooo", price=101.0, qty=1.0))  # 0.4 now, the rest on the next tick
    fake.set_price(SYMBOL, 100.0)
    fake.release_events(reverse=True)  # the FILLED update arrives before the partial one
    fills = collector.wait_for(2)
    time.sleep(0.1)
    assert len(collector.fills) == 2 and len({f.fill_id for f in fills}) == 2
    assert [f.qty for f in fills] == [pytest.approx(0.4), pytest.approx(0.6)]
    assert fills[0].ts_fill_ns <= fills[1].ts_fill_ns


def test_silence_reconnects_and_backfills_what_was_missed(fake, broker, streaming):
    collector, stream = streaming
    fake.silence_stream()
    broker.submit(market("qssilent"))  # its update goes nowhere
    fills = collector.wait_for(1)
    assert fills[0].client_order_id == "qssilent"
    assert stream.connections >= 2


def test_a_dropped_connection_reconnects_and_backfills(fake, broker, streaming):
    collector, stream = streaming
    fake.drop_stream()
    broker.submit(market("qsdrop"))
    collector.wait_for(1)
    wait_until(lambda: stream.connections >= 2 and fake.stream_connections == 1)
    broker.submit(market("qsafter"))
    fills = collector.wait_for(2)
    time.sleep(0.1)
    assert [f.client_order_id for f in collector.fills] == ["qsdrop", "qsafter"]
    assert len({f.fill_id for f in fills}) == 2


# ----------------------------------------------------------------------------- stream TLS
def tls_failures(caplog) -> list[str]:
    """Stream log lines of a user-channel connect refused by certificate verification."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "live.coinbase.stream"
        and "cannot connect" in r.getMessage()
        and "CERTIFICATE_VERIFY_FAILED" in r.getMessage()
    ]


def test_the_stream_connects_to_a_venue_whose_certificate_ca_file_trusts(fake, broker, caplog):
    collector = Collector()
    stop = broker.stream_fills(collector)
    try:
        wait_until(lambda: fake.stream_connections == 1)
        broker.submit(market("qstls"))
        assert collector.wait_for(1)[0].client_order_id == "qstls"
        assert stop.__self__.connections == 1
    finally:
        stop()
    assert tls_failures(caplog) == []


@pytest.mark.parametrize("untrusted", ["system store", "another CA", "another host name"])
def test_sdk_unverified_wss_context_regression_an_untrusted_venue_gets_no_connection(
    fake, pem, tmp_path, caplog, untrusted
):
    # coinbase-advanced-py 1.8.4 opens wss:// with ssl.SSLContext(): no certificate or host-name
    # check, so the subscribe JWT would go to anyone in the middle. Here it must not connect.
    venue, ca_file = fake, None  # "system store": the fake's trustme CA is not in it
    if untrusted == "another CA":
        ca_file = str(tmp_path / "other-ca.pem")
        trustme.CA().cert_pem.write_to_path(ca_file)
    elif untrusted == "another host name":  # a trusted CA, a certificate for another host
        venue = FakeCoinbase(cert_hosts=("venue.example",)).start()
        venue.add_key(KEY_NAME, serialization.load_pem_private_key(pem.encode(), None).public_key())
        ca_file = venue.ca_file
    caplog.set_level(logging.WARNING, logger="live.coinbase.stream")
    config = config_for(venue, ca_file=ca_file)
    stop = CoinbaseBroker(config).stream_fills(Collector())
    stream = stop.__self__
    try:
        wait_until(lambda: tls_failures(caplog) or stream.connections > 0)
    finally:
        stop()
        if venue is not fake:
            venue.stop()
    assert stream.connections == 0 and venue.subscriptions == []
    reason = "mismatch" if untrusted == "another host name" else "unable to get local issuer"
    assert f"cannot connect to {config.ws_url}" in tls_failures(caplog)[0]
    assert reason in tls_failures(caplog)[0]
    assert pem_body(pem) not in caplog.text


@pytest.mark.filterwarnings("ignore:ssl.*deprecated:DeprecationWarning")  # the SDK's context
def test_a_connection_the_sdk_opened_unverified_is_never_subscribed(fake, broker, caplog):
    # The backstop for an SDK that would bypass our open_async: no JWT over such a socket.
    caplog.set_level(logging.WARNING, logger="live.coinbase.stream")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(coinbase_stream._VerifiedUserClient, "open_async", WSBase.open_async)
        stop = broker.stream_fills(Collector())
        try:
            wait_until(lambda: "without certificate and host-name verification" in caplog.text)
        finally:
            stop()
    assert stop.__self__.connections == 0 and fake.subscriptions == []


@pytest.mark.parametrize(
    ("name", "replacement", "problem"),
    [
        ("open", lambda self: None, "WSUserClient.open no longer calls open_async"),
        ("_set_headers", None, "_set_headers is gone"),
    ],
)
def test_a_changed_sdk_shape_refuses_to_stream_at_start(
    broker, monkeypatch, name, replacement, problem
):
    monkeypatch.setattr(WSBase, name, replacement)
    with pytest.raises(BrokerError, match=f"{problem}.*live/coinbase/stream.py"):
        broker.stream_fills(Collector())


def test_an_unreadable_ca_file_fails_at_stream_start(fake, pem, tmp_path):
    adapter = CoinbaseBroker(config_for(fake, ca_file=str(tmp_path / "missing.pem")))
    with pytest.raises(ConfigError, match=r"ca_file=.*missing\.pem.*cannot be read"):
        adapter.stream_fills(Collector())


# ----------------------------------------------------------------------------- candles
START_NS = 1_700_000_000 * 1_000_000_000  # 2023-11-14 22:13:20 UTC, not on a minute boundary


def test_bar_pages_split_windows_of_at_most_350_candles(fake, broker):
    end_ns = START_NS + 1000 * 60 * 1_000_000_000
    pages = list(bar_pages(broker, SYMBOL, START_NS, end_ns, "1m"))
    assert [len(p) for p in pages] == [350, 350, 300]
    bars = pages[0]
    assert list(bars.columns) == ["ts_ns", "open", "high", "low", "close", "volume"]
    assert str(bars["ts_ns"].dtype) == "int64" and str(bars["close"].dtype) == "float64"
    stamps = [t for p in pages for t in p["ts_ns"]]
    assert stamps == sorted(set(stamps))
    assert stamps[0] >= START_NS and stamps[0] % 60_000_000_000 == 0
    assert stamps[-1] < end_ns
    assert all(b - a == 60_000_000_000 for a, b in itertools.pairwise(stamps))
    assert fake.count("GET", f"/products/{SYMBOL}/candles") == 3


def test_bar_pages_wait_out_a_429_midway_without_gaps_or_repeats(fake, pem):
    config = config_for(fake, candles_per_request=100)
    fake.fail("GET", f"/market/products/{SYMBOL}/candles", 429, after=2, count=2)
    end_ns = START_NS + 500 * 300 * 1_000_000_000
    pages = list(bar_pages(config, SYMBOL, START_NS, end_ns, "5m"))  # public endpoint
    stamps = [t for p in pages for t in p["ts_ns"]]
    assert len(pages) == 5 and len(stamps) == len(set(stamps)) == 500
    assert fake.count("GET", f"/market/products/{SYMBOL}/candles") == 7


def test_bar_pages_skip_empty_windows_and_keep_gaps(fake, broker):
    step_s = 3600
    first_s = -(-START_NS // 1_000_000_000 // step_s) * step_s
    fake.candle_gaps = {first_s + step_s * k for k in range(3, 400)}
    config_pages = bar_pages(broker, SYMBOL, START_NS, START_NS + 720 * step_s * 10**9, "1h")
    pages = list(config_pages)
    assert [len(p) for p in pages] == [3, 300, 20]


def test_bar_pages_refuse_an_unknown_timeframe(broker):
    with pytest.raises(ConfigError, match="timeframe must be one of"):
        next(bar_pages(broker, SYMBOL, START_NS, START_NS + 10**12, "2h"))


# ----------------------------------------------------------------------------- malformed / echoes
@pytest.mark.parametrize(
    "body",
    [
        b'{"accounts": [{"uuid": ',
        {"accounts": [{"currency": "BTC", "available_balance": {"value": "lots"}}]},
    ],
    ids=["truncated JSON", "wrong shape"],
)
def test_a_200_answer_that_is_not_understood_is_an_adapter_error_not_a_traceback(
    fake, broker, body
):
    fake.fail("GET", "/accounts", 200, body=body)
    with pytest.raises(BrokerUnavailableError, match="the venue's answer was not understood"):
        broker.positions()
    assert broker.positions() == {}  # the next answer is read as usual


def test_a_create_answered_200_with_garbage_is_ambiguous_and_resolved_by_lookup(fake, broker):
    fake.fail("POST", "/orders", 200, land=True, body=b"<html>gateway</html>")
    with pytest.raises(BrokerAmbiguousError, match=r"not understood.*look it up"):
        broker.submit(market("qsgarbage"))
    assert broker.order("qsgarbage").status == OrderStatus.FILLED


def test_a_venue_error_echoing_the_secret_is_scrubbed_before_it_is_shown_or_logged(
    fake, broker, pem, caplog, capfd
):
    echo = f"bad gateway: upstream saw {KEY_NAME} signing with {pem}"
    fake.fail("GET", "/accounts", 502, body={"message": echo})
    with (
        caplog.at_level(logging.DEBUG, logger="live"),
        pytest.raises(BrokerUnavailableError) as caught,
    ):
        broker.positions()
    message = str(caught.value)
    assert "HTTP 502" in message and "bad gateway" in message
    printed = capfd.readouterr().err  # the SDK's own HTTP error line
    for text in (message, repr(caught.value), caplog.text, printed):
        assert KEY_NAME not in text and pem_body(pem) not in text


def test_candles_that_are_not_candles_are_an_adapter_error(fake, broker):
    fake.fail("GET", f"/products/{SYMBOL}/candles", 200, body={"candles": [{"start": "soon"}]})
    end_ns = START_NS + 10 * 60 * 1_000_000_000
    with pytest.raises(BrokerUnavailableError, match="the venue's answer was not understood"):
        list(bar_pages(broker, SYMBOL, START_NS, end_ns, "1m"))
