"""The Alpaca adapter against a local fake venue through the real alpaca-py clients: the broker
contract suite, fault scenarios, the fill stream, config and secrets, and bar pages.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import pytest

from live.alpaca import AlpacaBroker, AlpacaConfig, bar_pages
from live.broker import (
    BrokerAmbiguousError,
    BrokerAuthError,
    BrokerRateLimitedError,
    BrokerRejectedError,
    BrokerUnavailableError,
    OrderRequest,
    OrderStatus,
    leg_id,
)
from quantshift.errors import ConfigError
from tests.broker_contract import BrokerContract, VenueHarness, wait_final
from tests.fakes.alpaca_server import FakeAlpaca

KEY_ENV, SECRET_ENV = "QS_TEST_ALPACA_KEY_ID", "QS_TEST_ALPACA_SECRET"
WRONG_SECRET = "wrong-secret-must-never-be-printed"
SYMBOL = "AAPL"


def config_for(fake: FakeAlpaca, **overrides) -> AlpacaConfig:
    settings = {
        "mode": "paper",
        "key_id_env": KEY_ENV,
        "secret_key_env": SECRET_ENV,
        "trading_url": fake.url,
        "data_url": fake.url,
        "stream_url": fake.stream_url,
        "timeout_s": 2.0,
        "retry_base_s": 0.001,
        "max_backoff_s": 0.01,
        "stream_silence_s": 0.4,
        "stream_reconnect_s": 0.05,
        "backfill_overlap_s": 2.0,
    }
    settings.update(overrides)
    return AlpacaConfig(**settings)


def until(check, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(0.01)
    return result


def buy(cid: str, qty: float = 3.0, **kwargs) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=SYMBOL, side="buy", qty=qty, **kwargs)


@pytest.fixture
def fake():
    venue = FakeAlpaca().start()
    yield venue
    venue.stop()


@pytest.fixture
def keys(fake, monkeypatch):
    monkeypatch.setenv(KEY_ENV, fake.key_id)
    monkeypatch.setenv(SECRET_ENV, fake.secret_key)


@pytest.fixture
def waits():
    return []


@pytest.fixture
def make(fake, keys, waits):
    made: list[AlpacaBroker] = []

    def build(**overrides) -> AlpacaBroker:
        broker = AlpacaBroker(config_for(fake, **overrides), sleep=waits.append)
        made.append(broker)
        return broker

    yield build
    for broker in made:
        broker.close()


@pytest.fixture
def broker(make):
    return make()


# ----------------------------------------------------------------------------- contract
@pytest.fixture
def harness(fake, broker, monkeypatch):
    def bad_keys_broker() -> AlpacaBroker:
        monkeypatch.setenv(SECRET_ENV, WRONG_SECRET)
        return AlpacaBroker(config_for(fake))

    return VenueHarness(
        broker=broker,
        symbol=SYMBOL,
        qty=3.0,
        set_price=fake.set_price,
        bad_keys_broker=bad_keys_broker,
        secret=WRONG_SECRET,
        trade_bar=lambda symbol, o, h, low: fake.trade_bar(0, {symbol: (o, h, low)}),
    )


class TestAlpacaBroker(BrokerContract):
    pass


# ----------------------------------------------------------------------------- ambiguity
def test_504_after_the_order_landed_is_ambiguous_and_resolved_by_lookup(fake, broker):
    fake.set_price(SYMBOL, 100.0)
    fake.fail("POST", "/v2/orders", 504, land=True)
    with pytest.raises(BrokerAmbiguousError, match="look it up"):
        broker.submit(buy("qs504"))
    assert fake.calls("POST", "/v2/orders") == 1  # neither the SDK nor we resent it
    found = broker.order("qs504")
    assert found.status == OrderStatus.FILLED and found.filled_qty == 3.0
    again = broker.submit(buy("qs504"))  # the runner may resubmit: 422 duplicate -> adopted
    assert again.venue_order_id == found.venue_order_id
    assert broker.positions() == {SYMBOL: 3.0}


def test_the_sdks_own_retry_of_a_landed_504_is_adopted_not_rejected(fake, broker):
    # alpaca-py's default policy: resend POST /orders after a 504; Alpaca answers 422.
    broker._trading._retry, broker._trading._retry_codes, broker._trading._retry_wait = 1, [504], 0
    fake.set_price(SYMBOL, 100.0)
    fake.fail("POST", "/v2/orders", 504, land=True)
    order = broker.submit(buy("qssdkretry"))
    assert order.client_order_id == "qssdkretry" and order.status == OrderStatus.FILLED
    assert fake.calls("POST", "/v2/orders") == 2
    assert broker.positions() == {SYMBOL: 3.0}


def test_a_500_on_submit_is_ambiguous_and_lookup_says_it_never_arrived(fake, broker):
    fake.set_price(SYMBOL, 100.0)
    fake.fail("POST", "/v2/orders", 500)
    with pytest.raises(BrokerAmbiguousError, match="HTTP 500"):
        broker.submit(buy("qs500"))
    assert broker.order("qs500") is None
    assert broker.submit(buy("qs500")).client_order_id == "qs500"
    assert wait_final(broker, "qs500").status == OrderStatus.FILLED


def test_a_timeout_on_submit_is_ambiguous(fake, make):
    broker = make(timeout_s=0.2)
    fake.set_price(SYMBOL, 100.0)
    fake.fail("POST", "/v2/orders", 0, land=True, delay_s=0.5)
    with pytest.raises(BrokerAmbiguousError, match="no answer"):
        broker.submit(buy("qstimeout"))
    assert wait_final(broker, "qstimeout").status == OrderStatus.FILLED


# ----------------------------------------------------------------------------- 429 / 5xx
def test_a_429_burst_backs_off_per_the_reset_header_then_succeeds(fake, make, waits):
    broker = make(max_backoff_s=5.0)  # waits are recorded, not slept
    fake.rate_limit("GET", "/v2/account", count=3, reset_in_s=2)
    assert broker.account().cash == 100_000.0
    assert fake.calls("GET", "/v2/account") == 4
    assert len(waits) == 3 and all(0.5 < w <= 2.0 for w in waits)


def test_retry_after_wins_and_every_wait_is_capped(fake, make, waits):
    broker = make(max_backoff_s=1.5)
    fake.fail("GET", "/v2/positions", 429, headers={"Retry-After": "1"})
    fake.fail("GET", "/v2/positions", 429, headers={"Retry-After": "60"})
    assert broker.positions() == {}
    assert waits == [1.0, 1.5]


def test_a_429_that_does_not_end_raises_rate_limited(fake, make):
    broker = make(rate_limit_attempts=3)
    fake.rate_limit("GET", "/v2/account", count=10)
    with pytest.raises(BrokerRateLimitedError, match="3 times") as caught:
        broker.account()
    assert caught.value.retry_after_s is not None
    assert fake.calls("GET", "/v2/account") == 3


def test_a_429_on_submit_is_retried_because_nothing_landed(fake, broker):
    fake.set_price(SYMBOL, 100.0)
    fake.rate_limit("POST", "/v2/orders", count=2)
    broker.submit(buy("qs429"))
    assert wait_final(broker, "qs429").status == OrderStatus.FILLED
    assert broker.positions() == {SYMBOL: 3.0}


def test_reads_retry_5xx_then_report_unavailable(fake, make):
    broker = make(read_attempts=2)
    fake.fail("GET", "/v2/positions", 503)
    assert broker.positions() == {}
    fake.fail("GET", "/v2/account", 504, count=5)
    with pytest.raises(BrokerUnavailableError, match="HTTP 504"):
        broker.account()
    assert fake.calls("GET", "/v2/account") == 2  # the SDK's own 504 retry is off


# ----------------------------------------------------------------------------- orders
def test_partial_fill_then_cancel_keeps_the_filled_part(fake, broker):
    fake.set_price(SYMBOL, 100.0)
    fake.partial_qty = 1.0
    broker.submit(buy("qspartial"))
    assert broker.order("qspartial").status == OrderStatus.PARTIALLY_FILLED
    assert "qspartial" in {o.client_order_id for o in broker.open_orders()}
    done = broker.cancel("qspartial")
    assert done.status == OrderStatus.CANCELLED and done.filled_qty == 1.0
    assert done.avg_fill_price == pytest.approx(100.0)
    assert [f.qty for f in broker.fills() if f.client_order_id == "qspartial"] == [1.0]
    assert broker.positions() == {SYMBOL: 1.0}


def test_a_bracket_order_sends_both_legs_and_exits_at_take_profit(fake, broker):
    fake.set_price(SYMBOL, 100.0)
    entry = buy("qsbracket", take_profit_price=110.0, stop_loss_price=90.0)
    broker.submit(entry)
    body = [b for m, p, b in fake.requests if (m, p) == ("POST", "/v2/orders")][-1]
    assert body["order_class"] == "bracket"
    assert body["take_profit"] == {"limit_price": 110.0} and body["stop_loss"]["stop_price"] == 90.0
    assert broker.positions() == {SYMBOL: 3.0}
    fake.set_price(SYMBOL, 111.0)
    assert broker.positions() == {}
    legs = [o for o in fake.orders.values() if o["parent"]]
    assert sorted(o["status"] for o in legs) == ["canceled", "filled"]


def test_a_single_exit_leg_is_an_oto_order(fake, broker):
    fake.set_price(SYMBOL, 100.0)
    broker.submit(buy("qsoto", stop_loss_price=95.0))
    body = [b for m, p, b in fake.requests if (m, p) == ("POST", "/v2/orders")][-1]
    assert body["order_class"] == "oto" and "take_profit" not in body


def test_a_stop_order_rests_until_triggered(fake, broker):
    fake.set_price(SYMBOL, 100.0)
    broker.submit(buy("qsentry"))
    wait_final(broker, "qsentry")
    stop = OrderRequest(
        client_order_id="qsstop",
        symbol=SYMBOL,
        side="sell",
        qty=3.0,
        order_type="stop",
        stop_price=95.0,
        time_in_force="gtc",
    )
    assert broker.submit(stop).order_type == "stop"
    assert broker.order("qsstop").status == OrderStatus.OPEN
    fake.set_price(SYMBOL, 94.0)
    assert broker.order("qsstop").status == OrderStatus.FILLED
    assert broker.positions() == {}


def test_a_definite_refusal_is_a_rejection(fake, broker):
    fake.set_price(SYMBOL, 1_000_000.0)
    with pytest.raises(BrokerRejectedError, match="insufficient buying power"):
        broker.submit(buy("qspoor"))  # Alpaca answers 403 here: not an auth error
    assert broker.order("qspoor") is None


def test_fills_follow_the_activities_pages(fake, broker):
    fake.set_price(SYMBOL, 10.0)
    fake.fill_parts = 120  # more than one page of 100 activities
    broker.submit(buy("qsmany", qty=120.0))
    fills = broker.fills()
    assert len(fills) == 120 and len({f.fill_id for f in fills}) == 120
    assert sum(f.qty for f in fills) == pytest.approx(120.0)
    assert [f.ts_fill_ns for f in fills] == sorted(f.ts_fill_ns for f in fills)
    pages = [q for m, p, q in fake.requests if p == "/v2/account/activities/FILL"]
    assert len(pages) == 2 and "page_token" in pages[1]
    assert fake.calls("GET", f"/v2/orders/{fake.by_cid['qsmany']}") == 1  # id cached


def test_market_clock_and_latest_bar(fake, broker):
    clock = broker.market_clock()
    assert clock.is_open is True and clock.next_close.tzinfo is not None
    assert clock.next_open > clock.next_close
    fake.bars[SYMBOL] = _bars(1)
    latest = broker.latest_bar(SYMBOL)
    assert latest["ts_ns"].tolist() == [1704205800_000_000_000]
    assert latest["close"].tolist() == [10.5]


# ----------------------------------------------------------------------------- auth / mode
def test_403_at_connect_is_an_auth_error_naming_the_key_source(fake, broker, caplog):
    fake.forbid = True
    with caplog.at_level(logging.DEBUG), pytest.raises(BrokerAuthError) as caught:
        broker.connect()
    message = str(caught.value)
    assert "403" in message and f"${KEY_ENV}" in message and f"${SECRET_ENV}" in message
    assert fake.secret_key not in message and fake.secret_key not in caplog.text


def test_401_at_connect_never_shows_the_secret(fake, make, monkeypatch, caplog):
    monkeypatch.setenv(SECRET_ENV, WRONG_SECRET)
    broker = make()
    with caplog.at_level(logging.DEBUG), pytest.raises(BrokerAuthError, match="401") as caught:
        broker.connect()
    assert fake.calls("GET", "/v2/account") == 1  # fail fast, no retry
    for text in (str(caught.value), repr(caught.value), repr(broker), caplog.text):
        assert WRONG_SECRET not in text


def test_a_live_config_against_a_paper_account_is_refused(fake, make):
    live = make(mode="live")
    assert live._trading._sandbox is False  # paper=False went to the SDK explicitly
    with pytest.raises(ConfigError, match="mode is 'live' but account PA3FAKE00001 is a paper"):
        live.connect()


def test_a_paper_config_against_a_live_account_is_refused(fake, broker):
    fake.account_number = "611428730"
    with pytest.raises(ConfigError, match="is a live account"):
        broker.connect()


@pytest.mark.parametrize(
    ("mode", "key", "url"),
    [
        ("paper", "trading_url", "https://api.alpaca.markets"),
        ("live", "trading_url", "https://paper-api.alpaca.markets"),
        ("live", "stream_url", "wss://paper-api.alpaca.markets/stream"),
        ("paper", "trading_url", "https://proxy.example.com"),
    ],
)
def test_an_override_contradicting_the_mode_is_refused(mode, key, url):
    with pytest.raises(ConfigError, match=f"{key}=.*does not match mode '{mode}'"):
        AlpacaConfig(mode=mode, **{key: url})


def test_venue_urls_matching_the_mode_and_loopback_urls_are_accepted():
    AlpacaConfig(mode="live", trading_url="https://api.alpaca.markets")
    AlpacaConfig(mode="paper", trading_url="https://paper-api.alpaca.markets/")
    AlpacaConfig(mode="live", trading_url="http://[::1]:8080", stream_url="ws://localhost:1/s")


# ----------------------------------------------------------------------------- config / secrets
def test_from_options_builds_the_config_and_names_unknown_keys():
    config = AlpacaConfig.from_options(
        {"secrets_file": "~/.qs/alpaca.toml", "data_feed": "sip", "timeout_s": 3}, "live.toml"
    )
    assert config.mode == "paper" and config.paper and config.data_feed == "sip"
    with pytest.raises(ConfigError, match=r"live.toml: \[broker\] api_key: unknown key.*timeout_s"):
        AlpacaConfig.from_options({"api_key": "x"}, "live.toml", mode="live")
    with pytest.raises(ConfigError, match=r"live.toml: \[broker\].*data_feed"):
        AlpacaConfig.from_options({"data_feed": "otc"}, "live.toml")
    with pytest.raises(ConfigError, match="rate_limit_attempts"):
        AlpacaConfig.from_options({"rate_limit_attempts": 0}, "live.toml")
    with pytest.raises(ConfigError, match="mode must be one of"):
        AlpacaConfig(mode="real")


def test_keys_come_from_a_secrets_file_when_the_environment_has_none(fake, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(SECRET_ENV, raising=False)
    path = tmp_path / "alpaca.toml"
    path.write_text(f'alpaca_key_id = "{fake.key_id}"\nalpaca_secret_key = "{fake.secret_key}"\n')
    path.chmod(0o600)
    broker = AlpacaBroker(config_for(fake, secrets_file=str(path)))
    try:
        assert broker.connect().cash > 0
        assert fake.secret_key not in repr(broker) and str(path) in repr(broker)
    finally:
        broker.close()


def test_missing_keys_name_what_was_tried(fake, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"environment variable {KEY_ENV}"):
        AlpacaBroker(config_for(fake))


def test_a_whole_session_never_logs_the_secret(fake, make, caplog):
    with caplog.at_level(logging.DEBUG):
        broker = make()
        fake.set_price(SYMBOL, 100.0)
        broker.connect()
        fake.rate_limit("POST", "/v2/orders", count=1)
        broker.submit(buy("qslog"))
        got = []
        stop = broker.stream_fills(got.append)
        until(lambda: fake.stream_connects)
        fake.drop_stream()
        until(lambda: fake.stream_connects >= 2)
        stop()
    assert "rate limited" in caplog.text and "reconnecting" in caplog.text
    assert fake.secret_key not in caplog.text and fake.key_id not in caplog.text


# ----------------------------------------------------------------------------- stream
def test_the_stream_delivers_each_fill_once_despite_duplicates_and_reordering(fake, broker):
    got = []
    stop = connect_backfilled(fake, broker, got.append)
    try:
        fake.set_price(SYMBOL, 100.0)
        fake.duplicate_events, fake.hold_events, fake.fill_parts = 2, True, 3
        broker.submit(buy("qsstream"))
        fake.release_events(reverse=True)  # six messages: three fills, each twice, backwards
        until(lambda: len(got) == 3)
        time.sleep(0.1)
        assert len(got) == 3 and len({f.fill_id for f in got}) == 3
        assert sum(f.qty for f in got) == pytest.approx(3.0)
        assert {f.client_order_id for f in got} == {"qsstream"}
        assert {f.fill_id for f in got} == {f.fill_id for f in broker.fills()}  # same ids
    finally:
        stop()


def connect_backfilled(fake, broker, on_fill):
    """Start ``broker``'s fill stream and wait until its backfill at connect has polled the
    activities: the fake answers under its lock, so nothing that fills afterwards can come by
    that backfill (a fill that did made a test's reconnect look unnecessary)."""
    before = fake.calls("GET", "/v2/account/activities/FILL")
    stop = broker.stream_fills(on_fill)
    until(
        lambda: fake.stream_connects and fake.calls("GET", "/v2/account/activities/FILL") > before
    )
    return stop


def test_stream_silence_reconnects_and_backfills(fake, broker):
    got = []
    stop = connect_backfilled(fake, broker, got.append)
    try:
        fake.mute_stream()
        fake.set_price(SYMBOL, 100.0)
        broker.submit(buy("qssilent"))
        until(lambda: got, timeout_s=3.0)
        assert fake.stream_connects == 2  # reconnected after stream_silence_s, then backfilled
        assert [f.client_order_id for f in got] == ["qssilent"]
    finally:
        stop()


def test_a_dropped_stream_reconnects_and_backfills_what_it_missed(fake, make):
    broker = make(stream_reconnect_s=0.3)
    got = []
    stop = broker.stream_fills(got.append)
    try:
        until(lambda: fake.stream_connects)
        fake.drop_stream()
        until(lambda: not fake.conns)
        fake.set_price(SYMBOL, 100.0)
        broker.submit(buy("qsdropped"))  # fills while nobody listens
        until(lambda: got, timeout_s=3.0)
        assert [f.client_order_id for f in got] == ["qsdropped"]
        time.sleep(0.1)
        assert len(got) == 1
    finally:
        started = time.monotonic()
        stop()
        assert time.monotonic() - started < 1.0


def test_a_refused_stream_login_is_logged_without_the_secret(fake, make, monkeypatch, caplog):
    broker = make()
    broker._secret = type(broker._secret)(WRONG_SECRET, f"${SECRET_ENV}")
    with caplog.at_level(logging.WARNING):
        stop = broker.stream_fills(lambda fill: None)
        until(lambda: "fill stream login" in caplog.text)
        stop()
    assert fake.stream_connects == 0 and WRONG_SECRET not in caplog.text


# ----------------------------------------------------------------------------- bar pages
def _bars(n: int, start: str = "2024-01-02T14:30:00Z", step: str = "1min") -> list[dict]:
    times = pd.date_range(start, periods=n, freq=step)
    return [
        {"t": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "o": 10 + i, "h": 11 + i, "l": 9 + i}
        | {"c": 10.5 + i, "v": 100 * (i + 1), "n": 5, "vw": 10.2 + i}
        for i, t in enumerate(times)
    ]


def _ns(text: str) -> int:
    return pd.Timestamp(text).value


def test_bar_pages_follow_the_page_token_through_a_429(fake, make, waits):
    broker = make(bars_page_limit=10)
    fake.bars[SYMBOL] = _bars(25)
    start, end = _ns("2024-01-02T14:30:00Z"), _ns("2024-01-02T15:00:00Z")
    pages = bar_pages(broker, SYMBOL, start, end, "1m")
    first = next(pages)
    fake.rate_limit("GET", "/v2/stocks/bars", count=1)
    rest = list(pages)
    assert [len(p) for p in [first, *rest]] == [10, 10, 5] and len(waits) == 1
    frame = pd.concat([first, *rest], ignore_index=True)
    assert list(frame.columns) == ["ts_ns", "open", "high", "low", "close", "volume"]
    assert frame["ts_ns"].dtype == np.int64 and frame["close"].dtype == np.float64
    assert np.all(np.diff(frame["ts_ns"].to_numpy()) == 60_000_000_000)
    assert frame["ts_ns"].iloc[0] == start and frame["volume"].iloc[-1] == 2500.0
    queries = [q for m, p, q in fake.requests if p == "/v2/stocks/bars"]
    assert queries[0]["timeframe"] == ["1Min"] and queries[0]["feed"] == ["iex"]
    assert "page_token" not in queries[0] and "page_token" in queries[-1]


def test_bar_pages_window_is_half_open_and_built_from_a_config(fake, keys):
    fake.bars[SYMBOL] = _bars(5, step="1D")
    config = config_for(fake)
    start, end = _ns("2024-01-02T14:30:00Z"), _ns("2024-01-05T14:30:00Z")
    frames = list(bar_pages(config, SYMBOL, start, end, "1d"))
    assert [len(f) for f in frames] == [3]  # the bar opening at end_ns is excluded
    assert list(bar_pages(config, "MSFT", start, end, "1d")) == []


def test_bar_pages_reject_unknown_timeframes_and_empty_windows(broker):
    with pytest.raises(ConfigError, match=r"timeframe '2h'.*1m, 5m, 15m, 1h, 1d"):
        next(bar_pages(broker, SYMBOL, 0, 10, "2h"))
    with pytest.raises(ConfigError, match="end_ns"):
        next(bar_pages(broker, SYMBOL, 10, 10, "1d"))


# ----------------------------------------------------------------------------- malformed / echoes
@pytest.mark.parametrize(
    "body",
    [b'[{"symbol": "AAPL", "qty": ', [{"symbol": "AAPL", "qty": "many"}]],
    ids=["truncated JSON", "wrong shape"],
)
def test_a_200_answer_that_is_not_understood_is_an_adapter_error_not_a_traceback(
    fake, broker, body
):
    fake.fail("GET", "/v2/positions", 200, body=body)
    with pytest.raises(BrokerUnavailableError, match="positions: the venue's answer was not under"):
        broker.positions()
    assert broker.positions() == {}  # the next answer is read as usual


def test_a_submit_answered_200_with_garbage_is_ambiguous_and_resolved_by_lookup(fake, broker):
    fake.set_price(SYMBOL, 100.0)
    fake.fail("POST", "/v2/orders", 200, land=True, body=b"<html>gateway</html>")
    with pytest.raises(BrokerAmbiguousError, match=r"not understood.*look it up"):
        broker.submit(buy("qsgarbage"))
    assert broker.order("qsgarbage").status == OrderStatus.FILLED


@pytest.mark.parametrize("as_json", [True, False], ids=["JSON body", "text cut at 200"])
def test_a_venue_error_echoing_the_secret_is_scrubbed_before_it_is_shown_or_logged(
    fake, broker, caplog, as_json
):
    echo = f"bad gateway: upstream saw key {fake.key_id} and secret {fake.secret_key}"
    body = {"message": echo} if as_json else ("x" * 130 + echo).encode()  # the cut: in the secret
    fake.fail("GET", "/v2/account", 502, count=10, body=body)
    with (
        caplog.at_level(logging.DEBUG, logger="live"),
        pytest.raises(BrokerUnavailableError) as caught,
    ):
        broker.account()
    message = str(caught.value)
    assert "HTTP 502" in message
    for text in (message, repr(caught.value), caplog.text):
        assert fake.secret_key not in text and fake.key_id not in text
        assert fake.secret_key[:12] not in text  # nor the part left by a cut


def test_bar_pages_answered_with_bars_that_are_not_bars_is_an_adapter_error(fake, broker):
    fake.fail("GET", "/v2/stocks/bars", 200, body={"bars": {SYMBOL: [{"t": "yesterday"}]}})
    start, end = _ns("2024-01-02T14:30:00Z"), _ns("2024-01-02T15:00:00Z")
    with pytest.raises(BrokerUnavailableError, match="page 1: the venue's answer was not under"):
        list(bar_pages(broker, SYMBOL, start, end, "1m"))


# ----------------------------------------------------------------------------- resting orders
def _closing(cid: str, kind: str, qty: float = 3.0, **levels) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=SYMBOL, side="sell", qty=qty,
                        order_type=kind, time_in_force="gtc", **levels)  # fmt: skip


def _long(fake, broker, qty: float = 3.0, price: float = 100.0) -> None:
    fake.set_price(SYMBOL, price)
    broker.submit(buy("qslong", qty=qty))
    wait_final(broker, "qslong")


def test_a_trailing_stop_rests_by_price_and_follows_the_high_water_mark(fake, broker):
    _long(fake, broker)
    broker.submit(_closing("qstrail", "trailing_stop", trail_amount=2.0, trail_from_price=100.0))
    body = [b for m, p, b in fake.requests if (m, p) == ("POST", "/v2/orders")][-1]
    assert body["type"] == "trailing_stop" and body["trail_price"] == 2.0
    fake.set_price(SYMBOL, 105.0)
    fake.set_price(SYMBOL, 103.5)
    resting = broker.order("qstrail")
    assert resting.status == OrderStatus.OPEN and resting.order_type == "trailing_stop"
    assert (resting.trail_amount, resting.trail_best_price) == (2.0, 105.0)
    assert resting.stop_price == 103.0  # derived from the high-water mark, as Alpaca reports it
    fake.set_price(SYMBOL, 102.9)
    assert broker.order("qstrail").status == OrderStatus.FILLED
    assert broker.positions() == {}


def test_replace_moves_a_resting_level_in_one_patch_and_never_doubles(fake, broker):
    _long(fake, broker)
    broker.submit(_closing("qsstop", "stop", stop_price=95.0))
    moved = broker.replace("qsstop", _closing("qsstop2", "stop", stop_price=97.0))
    assert moved.client_order_id == "qsstop2" and moved.stop_price == 97.0
    assert fake.calls("PATCH", f"/v2/orders/{broker.order('qsstop').venue_order_id}") == 1
    assert broker.order("qsstop").status == OrderStatus.CANCELLED  # Alpaca's "replaced"
    assert [o.client_order_id for o in broker.open_orders() if o.side == "sell"] == ["qsstop2"]
    fake.set_price(SYMBOL, 96.5)
    assert broker.order("qsstop2").status == OrderStatus.FILLED
    assert broker.order("qsstop").filled_qty == 0 and broker.positions() == {}
    # The level of a filled order moves nowhere: its final state comes back, nothing is sent.
    again = broker.replace("qsstop2", _closing("qsstop3", "stop", stop_price=98.0))
    assert again.client_order_id == "qsstop2" and again.status == OrderStatus.FILLED
    assert broker.order("qsstop3") is None
    with pytest.raises(BrokerRejectedError, match="cannot replace an order's order_type"):
        broker.submit(_closing("qslimit", "limit", limit_price=120.0, qty=1.0))
        broker.replace("qslimit", _closing("qslimit2", "stop", stop_price=90.0, qty=1.0))


def test_alpaca_holds_the_shares_for_one_closing_order_an_oco_rests_stop_and_target(fake, broker):
    """Alpaca takes one closing order for a position's shares: a second one (a target beside
    a stop) is refused with "insufficient qty available". Its OCO class rests a take-profit
    limit and a stop-loss for the same shares as one order (a trailing stop cannot join it)."""
    from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
    from alpaca.trading.requests import LimitOrderRequest, StopLossRequest, TakeProfitRequest

    _long(fake, broker)
    broker.submit(_closing("qsstop", "stop", stop_price=95.0))
    with pytest.raises(BrokerRejectedError, match="insufficient qty available"):
        broker.submit(_closing("qstarget", "limit", limit_price=110.0))
    broker.cancel("qsstop")
    oco = LimitOrderRequest(symbol=SYMBOL, qty=3, side=OrderSide.SELL,
                            time_in_force=TimeInForce.GTC, order_class=OrderClass.OCO,
                            client_order_id="qsoco",
                            take_profit=TakeProfitRequest(limit_price=110.0),
                            stop_loss=StopLossRequest(stop_price=95.0))  # fmt: skip
    broker._trading.submit_order(oco)
    assert broker.order("qsoco").limit_price == 110.0
    with pytest.raises(BrokerRejectedError, match="insufficient qty available"):
        broker.submit(_closing("qstrail", "trailing_stop", trail_amount=2.0))
    fake.set_price(SYMBOL, 94.0)  # the stop leg fills, the target is cancelled with it
    assert broker.order("qsoco").status == OrderStatus.CANCELLED and broker.positions() == {}


def test_a_fractional_quantity_rests_only_as_a_day_order(fake, broker):
    _long(fake, broker, qty=2.5)
    with pytest.raises(BrokerRejectedError, match="fractional orders must be DAY orders"):
        broker.submit(_closing("qsfrac", "stop", stop_price=95.0, qty=2.5))
    day = OrderRequest(client_order_id="qsday", symbol=SYMBOL, side="sell", qty=2.5,
                       order_type="stop", stop_price=95.0, time_in_force="day")  # fmt: skip
    assert broker.submit(day).status == OrderStatus.OPEN


# ----------------------------------------------------------------------------- bar replay
SLIP_BPS = 10.0


@pytest.fixture
def replay(keys):
    venue = FakeAlpaca(replay=True, slippage_bps=SLIP_BPS).start()
    broker = AlpacaBroker(config_for(venue))
    yield venue, broker
    broker.close()
    venue.stop()


def test_replay_fills_a_market_order_at_the_next_open_with_slippage(replay):
    venue, broker = replay
    venue.open_bar(1, {SYMBOL: 100.0})
    broker.submit(buy("qsnext", qty=2.0))
    venue.trade_bar(1, {SYMBOL: (100.0, 120.0, 80.0)})
    assert broker.order("qsnext").status == OrderStatus.OPEN  # decided on a close: waits
    venue.open_bar(2, {SYMBOL: 50.0})
    done = broker.order("qsnext")
    assert done.status == OrderStatus.FILLED
    assert done.avg_fill_price == pytest.approx(50.0 * (1 + SLIP_BPS / 1e4), rel=1e-12)


@pytest.mark.parametrize(
    ("bar", "filled", "price"),
    [
        ((90.0, 92.0, 85.0), "stop", 90.0),  # a gap through the stop fills at the open
        ((100.0, 101.0, 94.0), "stop", 95.0),  # touched: the level
        ((100.0, 112.0, 94.0), "stop", 95.0),  # stop and target in one bar: the worse
        ((100.0, 111.0, 99.0), "target", 110.0),
        ((115.0, 116.0, 114.0), "target", 115.0),  # a gap through the target: the open
        ((100.0, 101.0, 99.0), None, None),
    ],
)
def test_replay_executes_an_oco_by_the_fill_models_intrabar_rules(replay, bar, filled, price):
    from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
    from alpaca.trading.requests import LimitOrderRequest, StopLossRequest, TakeProfitRequest

    venue, broker = replay
    venue.open_bar(1, {SYMBOL: 100.0})
    broker.submit(buy("qsentry", qty=3.0))
    venue.open_bar(2, {SYMBOL: 100.0})
    broker._trading.submit_order(LimitOrderRequest(
        symbol=SYMBOL, qty=3, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
        order_class=OrderClass.OCO, client_order_id="qsoco",
        take_profit=TakeProfitRequest(limit_price=110.0),
        stop_loss=StopLossRequest(stop_price=95.0)))  # fmt: skip
    venue.trade_bar(2, {SYMBOL: bar})
    parent = venue.orders[venue.by_cid["qsoco"]]
    stop = venue.orders[parent["legs"][0]]
    statuses = {"target": parent["status"], "stop": stop["status"]}
    if filled is None:
        assert set(statuses.values()) == {"new"} and broker.positions() == {SYMBOL: 3.0}
        return
    assert statuses[filled] == "filled" and sorted(statuses.values()) == ["canceled", "filled"]
    sold = [f for f in broker.fills() if f.side == "sell"]
    assert [f.price for f in sold] == [pytest.approx(price * (1 - SLIP_BPS / 1e4), rel=1e-12)]
    assert broker.positions() == {}


def test_replay_trails_a_stop_from_the_best_price_bar_by_bar(replay):
    venue, broker = replay
    venue.open_bar(1, {SYMBOL: 100.0})
    broker.submit(buy("qsentry", qty=3.0))
    venue.open_bar(2, {SYMBOL: 100.0})
    broker.submit(_closing("qstrail", "trailing_stop", trail_amount=2.0))
    venue.trade_bar(2, {SYMBOL: (100.0, 105.0, 100.5)})
    assert broker.order("qstrail").trail_best_price == 105.0
    venue.trade_bar(3, {SYMBOL: (104.0, 104.5, 102.5)})
    done = broker.order("qstrail")
    assert done.status == OrderStatus.FILLED
    assert done.avg_fill_price == pytest.approx(103.0 * (1 - SLIP_BPS / 1e4), rel=1e-12)


# ----------------------------------------------------------------------------- stream: legs
@pytest.mark.parametrize(
    ("levels", "price", "filled"),
    [
        ((("stop", 95.0), ("limit", 110.0)), 94.0, "stop"),  # the OCO's child: its own ids
        ((("stop", 95.0), ("limit", 110.0)), 111.0, "limit"),  # the OCO's parent
        ((("trailing_stop", 2.0),), 97.5, "trailing_stop"),  # a lone trailing stop
        # folded (live.alpaca.trailing): the stop rests at the tighter level, for its leg
        ((("stop", 95.0), ("trailing_stop", 2.0), ("limit", 110.0)), 97.5, "trailing_stop"),
        ((("stop", 99.0), ("trailing_stop", 5.0)), 98.5, "stop"),
    ],
)
@pytest.mark.parametrize("restarted", [False, True])
def test_a_streamed_fill_of_a_protective_leg_is_attributed_to_its_leg_id_at_once(
    fake, make, levels, price, filled, restarted
):
    """Alpaca gives an OCO's stop leg an order id and a client order id of its own, and names
    the order carrying a position's protection by the group's id: a fill of any leg that
    arrives on the stream is the leg's (``leg_id``) at once, whether the broker that streams
    sent the legs or is a new one (a restarted runner) that must look the leg up. The poll
    (activities) runs once, at connect, before anything filled: only the stream can tell."""
    sender = make(stream_silence_s=30.0)  # no reconnect (and backfill) during the test
    streamer = make(stream_silence_s=30.0) if restarted else sender
    _long(fake, sender)
    group = "qs" + "0123456789abcdef" * 2
    field = {"stop": "stop_price", "limit": "limit_price", "trailing_stop": "trail_amount"}
    sender.submit_protection([
        _closing(leg_id(group, kind), kind, oco_group=group, **{field[kind]: level},
                 **({"trail_from_price": 100.0} if kind == "trailing_stop" else {}))
        for kind, level in levels
    ])  # fmt: skip
    got = []
    stop = streamer.stream_fills(got.append)
    try:
        until(lambda: fake.stream_connects)
        # The backfill at connect has run once the entry it brings is here: its poll counted
        # before the price moves (reading the count at connect raced that poll).
        until(lambda: [f for f in got if f.side == "buy"])
        polls = fake.calls("GET", "/v2/account/activities/FILL")
        fake.set_price(SYMBOL, 99.0 if filled == "trailing_stop" else 100.0)
        fake.set_price(SYMBOL, price)
        until(lambda: [f for f in got if f.side == "sell"])
        time.sleep(0.1)
        got = [f for f in got if f.side == "sell"]  # the entry came by the backfill at connect
        assert [f.client_order_id for f in got] == [leg_id(group, filled)]
        assert fake.calls("GET", "/v2/account/activities/FILL") == polls  # the stream said it
        assert fake.stream_connects == 1
        polled = [f for f in sender.fills() if f.side == "sell"]
        assert [(f.fill_id, f.client_order_id) for f in polled] == [
            (f.fill_id, f.client_order_id) for f in got
        ]  # the same fill, the same owner, whichever source saw it
        assert sender.order(leg_id(group, filled)).status == OrderStatus.FILLED
    finally:
        stop()


# ----------------------------------------------------------------------------- folded trailing
GROUP = "qs" + "fedcba9876543210" * 2


def _folded(levels: dict, best: float = 100.0) -> list[OrderRequest]:
    field = {"stop": "stop_price", "limit": "limit_price", "trailing_stop": "trail_amount"}
    return [_closing(leg_id(GROUP, kind), kind, oco_group=GROUP, **{field[kind]: level},
                     **({"trail_from_price": best} if kind == "trailing_stop" else {}))
            for kind, level in levels.items()]  # fmt: skip


def _resting_stop(fake) -> dict:
    (order,) = [o for o in fake.orders.values() if o["type"] == "stop"
                and o["status"] not in ("filled", "canceled", "replaced")]  # fmt: skip
    return order


def test_a_trailing_stop_beside_a_stop_and_a_target_rests_as_one_oco_that_follows(fake, make):
    """Alpaca's OCO takes no trailing leg: the trailing stop is folded into the OCO's stop leg
    at the tighter level, moved by PATCH as the best price rises (never lowered), and a fresh
    adapter (a restart) finds the group from the venue's order ids and goes on with it."""
    broker = make()
    _long(fake, broker)
    legs = broker.submit_protection(_folded({"stop": 95.0, "trailing_stop": 3.0,
                                             "limit": 110.0}))  # fmt: skip
    assert [leg.status for leg in legs] == [OrderStatus.OPEN] * 3
    (post,) = [b for m, p, b in fake.requests if (m, p) == ("POST", "/v2/orders")
               and b.get("side") == "sell"]  # fmt: skip
    assert post["order_class"] == "oco" and float(post["stop_loss"]["stop_price"]) == 97.0
    assert float(post["take_profit"]["limit_price"]) == 110.0
    broker.trade_bar(1, {SYMBOL: (100.0, 99.0, 98.0)})  # no new best: nothing moves
    fake.set_price(SYMBOL, 104.0)  # the fake's market: its quote (a real one moves itself)
    broker.trade_bar(2, {SYMBOL: (100.0, 104.0, 99.0)})
    assert float(_resting_stop(fake)["stop_price"]) == 101.0
    assert len([r for r in fake.requests if r[0] == "PATCH"]) == 1
    trail = broker.order(leg_id(GROUP, "trailing_stop"))
    assert (trail.stop_price, trail.trail_best_price, trail.trail_amount) == (101.0, 104.0, 3.0)
    assert broker.order(leg_id(GROUP, "stop")).stop_price == 95.0
    assert broker.order(leg_id(GROUP, "limit")).limit_price == 110.0
    assert {o.client_order_id for o in broker.open_orders() if o.side == "sell"} == {
        leg_id(GROUP, k) for k in ("stop", "trailing_stop", "limit")}  # fmt: skip

    fresh = make()  # a restarted runner's adapter: nothing in memory
    found = fresh.order(leg_id(GROUP, "trailing_stop"))
    assert (found.stop_price, found.trail_best_price, found.status) == (101.0, 104.0, "open")
    fake.set_price(SYMBOL, 103.5)
    fresh.trade_bar(3, {SYMBOL: (103.0, 103.5, 102.0)})  # below the best: never lowered
    assert float(_resting_stop(fake)["stop_price"]) == 101.0
    fake.set_price(SYMBOL, 106.0)
    fresh.trade_bar(4, {SYMBOL: (103.0, 106.0, 102.0)})
    assert float(_resting_stop(fake)["stop_price"]) == 103.0
    fake.set_price(SYMBOL, 102.5)  # the stop fills where the trailing level is: that leg's
    statuses = {k: fresh.order(leg_id(GROUP, k)).status for k in ("stop", "trailing_stop",
                                                                   "limit")}  # fmt: skip
    assert statuses == {"stop": OrderStatus.CANCELLED, "trailing_stop": OrderStatus.FILLED,
                        "limit": OrderStatus.CANCELLED}  # fmt: skip
    sold = [f for f in make().fills() if f.side == "sell"]
    assert [f.client_order_id for f in sold] == [leg_id(GROUP, "trailing_stop")]
    assert fresh.positions() == {}


def test_a_trailing_stop_looser_than_its_stop_rests_as_the_stop_until_it_is_tighter(fake, broker):
    """Without a target the folded group is one stop order: at the fixed stop while the
    trailing level is looser (a new best then moves nothing), at the trailing level once it
    is tighter; a fill is the leg whose level the stop was at."""
    _long(fake, broker)
    broker.submit_protection(_folded({"stop": 97.0, "trailing_stop": 5.0}))
    assert float(_resting_stop(fake)["stop_price"]) == 97.0
    fake.set_price(SYMBOL, 101.5)
    broker.trade_bar(1, {SYMBOL: (100.0, 101.5, 99.0)})  # trailing 96.5: the stop binds
    assert not [r for r in fake.requests if r[0] == "PATCH"]
    assert broker.order(leg_id(GROUP, "trailing_stop")).trail_best_price == 101.5
    fake.set_price(SYMBOL, 103.0)
    broker.open_bar(2, {SYMBOL: 103.0})  # the open is a new best: trailing 98 is tighter
    assert float(_resting_stop(fake)["stop_price"]) == 98.0
    fake.set_price(SYMBOL, 97.5)
    assert broker.order(leg_id(GROUP, "trailing_stop")).status == OrderStatus.FILLED
    assert broker.order(leg_id(GROUP, "stop")).status == OrderStatus.CANCELLED
    assert broker.trade_bar(3, {SYMBOL: (120.0, 130.0, 119.0)}) is None  # filled: nothing moves
    assert len([r for r in fake.requests if r[0] == "PATCH"]) == 1


def test_a_trailing_stop_beside_a_stop_needs_the_price_to_trail_from(fake, broker):
    _long(fake, broker)
    legs = _folded({"stop": 95.0, "trailing_stop": 3.0})
    legs[1] = _closing(leg_id(GROUP, "trailing_stop"), "trailing_stop", oco_group=GROUP,
                       trail_amount=3.0)  # fmt: skip
    with pytest.raises(BrokerRejectedError, match="needs trail_from_price"):
        broker.submit_protection(legs)
    assert not [b for m, p, b in fake.requests if m == "POST" and b.get("side") == "sell"]
