"""Notifications: each channel in its service's format against local fake servers and a local
SMTP server, one alert per event across hosts sharing a store, rate limiting with coalescing,
a slow or dead channel never slowing the cycle, secrets never sent or logged, and config errors
in one line."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from test_live_runner import _config as paper_config
from test_live_store import new_pg_database, pg_admin  # noqa: F401 (fixture)
from test_live_venue_runner import SECRET_ENV, alpaca, alpaca_config  # noqa: F401 (fixture)
from typer.testing import CliRunner

from live import cli
from live.broker import BrokerAuthError
from live.config import load_config
from live.notify import Notifier, parse_notify
from live.notify.notifier import headline
from live.runner import Runner
from live.store import Store
from quantshift.errors import ConfigError
from quantshift.tables import Table

SLACK_URL_SECRET = "T0001/B0002/slack-s3cret-path"
TELEGRAM_TOKEN = "123456:telegram-s3cret-token"
SMTP_PASSWORD = "smtp-s3cret-password"
SECRETS = (SLACK_URL_SECRET, TELEGRAM_TOKEN, SMTP_PASSWORD, "webhook-s3cret")


class FakeService:
    """An HTTP server on 127.0.0.1 recording every POST (path and JSON body); answers
    ``status`` after ``delay_s`` with ``answer``."""

    def __init__(self, status: int = 200, delay_s: float = 0.0, answer: bytes = b"ok") -> None:
        self.status, self.delay_s, self.answer = status, delay_s, answer
        self.requests: list[tuple[str, dict, float]] = []
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with service.lock:
                    service.requests.append((self.path, body, time.monotonic()))
                time.sleep(service.delay_s)
                self.send_response(service.status)
                self.send_header("Content-Length", str(len(service.answer)))
                self.end_headers()
                self.wfile.write(service.answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[dict]:
        with self.lock:
            return [body for _, body, _ in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def services():
    made: list[FakeService] = []

    def make(**kwargs) -> FakeService:
        made.append(FakeService(**kwargs))
        return made[-1]

    yield make
    for service in made:
        service.close()


class Mailbox:
    """aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def smtp():
    mailbox = Mailbox()

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"ops" and auth_data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok)

    with socket.socket() as probe:  # aiosmtpd's readiness check cannot use port 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    yield mailbox, port
    controller.stop()


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def notifier(store_url, channels, host="host-a", **settings) -> Notifier:
    # The daily summary is off unless a test asks for it: the default clock (21:30 UTC) would
    # otherwise add a summary to whatever a test started after that hour expects.
    raw = {"channels": channels, "poll_s": 0.05, "min_interval_s": 0, "retry_backoff_s": 0.01,
           "summary_utc": "off"}  # fmt: skip
    config = parse_notify(Table({**raw, **settings}, "test.toml", "notify"))
    return Notifier(config, store_url, "paper-sp500", host)


def webhook(service, monkeypatch, env="QS_WEBHOOK", name="webhook", path="/hook"):
    monkeypatch.setenv(env, f"{service.url}{path}")
    return {"kind": "webhook", "name": name, "url_env": env}


def sent_keys(service) -> list[str]:
    return [e["key"] for body in service.bodies() for e in body["events"]]


def test_each_channel_gets_the_event_in_its_services_format(
    tmp_path, services, smtp, monkeypatch, caplog
):
    slack, discord, telegram, hook = (
        services(),
        services(),
        services(answer=b'{"ok": true}'),
        services(),
    )
    mailbox, smtp_port = smtp
    monkeypatch.setenv("QS_SLACK", f"{slack.url}/services/{SLACK_URL_SECRET}")
    monkeypatch.setenv("QS_DISCORD", f"{discord.url}/api/webhooks/1/discord")
    monkeypatch.setenv("QS_TELEGRAM", TELEGRAM_TOKEN)
    monkeypatch.setenv("QS_SMTP", SMTP_PASSWORD)
    channels = [
        {"kind": "slack", "url_env": "QS_SLACK"},
        {"kind": "discord", "url_env": "QS_DISCORD"},
        {"kind": "telegram", "token_env": "QS_TELEGRAM", "chat_id": -100, "api_url": telegram.url},
        webhook(hook, monkeypatch, path="/hook/webhook-s3cret"),
        {"kind": "email", "host": "127.0.0.1", "port": smtp_port, "starttls": False,
         "username": "ops", "password_env": "QS_SMTP", "from": "qs@example.org",
         "to": ["desk@example.org"]},
    ]  # fmt: skip
    url = f"sqlite:///{tmp_path / 'live.db'}"
    with Store.open(url) as store:
        # A reason quoting secrets (as an error message might): masked before it leaves.
        store.halt(f"max_drawdown breached; tried {TELEGRAM_TOKEN} {SMTP_PASSWORD}", "runner h1")
        sender = notifier(url, channels).start()
        try:
            https = (slack, discord, telegram, hook)
            wait_for(lambda: mailbox.messages and all(s.requests for s in https))
            wait_for(lambda: store.notifications()[0].outcome is not None)
        finally:
            sender.stop()
        assert store.notifications()[0].outcome == "sent"
    assert slack.requests[0][0] == f"/services/{SLACK_URL_SECRET}"
    assert slack.bodies()[0]["text"].startswith("*breaker trip: HALT by runner h1*\n")
    assert discord.bodies()[0]["content"].startswith("**breaker trip: HALT by runner h1**")
    assert telegram.requests[0][0] == f"/bot{TELEGRAM_TOKEN}/sendMessage"
    assert telegram.bodies()[0]["chat_id"] == "-100"
    (event,) = hook.bodies()[0]["events"]
    assert event["kind"] == "halt" and event["event"] == "breaker trip" and event["key"] == "halt:1"
    recipients, mail = mailbox.messages[0]
    assert recipients == ["desk@example.org"]
    assert "Subject: [QuantShift] breaker trip: HALT by runner h1" in mail
    payloads = json.dumps([s.bodies() for s in (slack, discord, telegram, hook)]) + mail
    assert "max_drawdown breached; tried *** ***" in payloads
    for secret in SECRETS:
        assert secret not in payloads and secret not in caplog.text


def test_two_hosts_on_one_store_send_each_event_once(tmp_path, services, monkeypatch, request):
    dedupe_across_hosts(f"sqlite:///{tmp_path / 'live.db'}", services, monkeypatch)


def test_two_hosts_on_one_postgresql_store_send_each_event_once(
    pg_admin,  # noqa: F811 (the imported fixture)
    services,
    monkeypatch,
    request,
):
    dedupe_across_hosts(new_pg_database(pg_admin, request), services, monkeypatch)


EVENING_NS = (time.time_ns() // (86_400 * 10**9)) * 86_400 * 10**9 + 22 * 3600 * 10**9


def dedupe_across_hosts(url, services, monkeypatch):
    hook = services()
    channel = [webhook(hook, monkeypatch)]
    with Store.open(url) as store:
        hosts = [
            notifier(url, channel, host=h, summary_utc="21:30").start()
            for h in ("primary", "standby")
        ]
        try:
            for i in range(1, 16):
                store.claim_epoch(i, by="primary" if i % 2 else "standby")
                store.claim_epoch(i, by="standby")  # the same term seen again: no new event
                store.halt(f"guard {i}", "runner primary", epoch=i)
                store.resume("alice")
                # Both hosts saw the venue refuse the keys and both write the day's summary.
                for host in hosts:
                    store.notify(key=f"auth_failure:{i}", kind="auth_failure", title="t", body="b")
                    host.poll_once(summary_clock_ns=EVENING_NS)
            wait_for(lambda: len(sent_keys(hook)) >= 46)
            time.sleep(0.3)  # let a duplicate, if any, arrive
        finally:
            for host in hosts:
                host.stop()
        keys = sent_keys(hook)
        assert len(keys) == len(set(keys)) == 46  # 15 takeovers, halts, auth failures; 1 summary
        claimers = {n.claimed_by for n in store.notifications()}
        assert all(n.outcome == "sent" for n in store.notifications())
    assert claimers <= {"primary", "standby"}


def test_a_rate_limited_channel_sends_what_queued_meanwhile_as_one_message(
    tmp_path, services, monkeypatch
):
    hook = services()
    url = f"sqlite:///{tmp_path / 'live.db'}"
    with Store.open(url) as store:
        sender = notifier(url, [webhook(hook, monkeypatch)], min_interval_s=1.0).start()
        try:
            store.halt("first", "alice")
            wait_for(lambda: len(hook.requests) == 1)
            store.resume("alice")
            for i in range(4):
                store.halt(f"again {i}", "alice")
                store.resume("alice")
            wait_for(lambda: len(sent_keys(hook)) == 5)
            time.sleep(1.2)
        finally:
            sender.stop()
    assert len(hook.requests) == 2
    second = hook.bodies()[1]
    assert second["title"] == "4 events" and len(second["events"]) == 4
    assert hook.requests[1][2] - hook.requests[0][2] >= 0.95


def test_a_failing_channel_is_retried_with_backoff_and_logged_masked(
    tmp_path, services, monkeypatch, caplog
):
    down = services(status=500)
    url = f"sqlite:///{tmp_path / 'live.db'}"
    with Store.open(url) as store:
        store.halt("stop", "alice")
        sender = notifier(url, [webhook(down, monkeypatch, path="/webhook-s3cret")], retries=2)
        sender.start()
        try:
            wait_for(lambda: store.notifications()[0].outcome is not None)
        finally:
            sender.stop()
        outcome = store.notifications()[0].outcome
    assert len(down.requests) == 3 and outcome == "webhook: HTTP 500 Internal Server Error"
    assert "gave up on 1 event(s)" in caplog.text and "webhook-s3cret" not in caplog.text


def test_a_slow_or_dead_channel_never_slows_the_cycle(tmp_path, services, monkeypatch):
    slow = services(delay_s=5.0)
    with socket.socket() as probe:  # a port nobody listens on: the channel is down
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    monkeypatch.setenv("QS_DEAD", f"http://127.0.0.1:{dead}/hook")
    durations: dict[str, list[float]] = {}
    for label, notify in (
        ("quiet", {}),
        ("busy", {"channels": [webhook(slow, monkeypatch),
                               {"kind": "slack", "name": "dead", "url_env": "QS_DEAD"}],
                  "poll_s": 0.05, "min_interval_s": 0}),
    ):  # fmt: skip
        (tmp_path / label).mkdir()
        config = paper_config(tmp_path / label, notify=notify)
        with Store.open(config.store_url) as store:
            for i in range(200):  # a backlog that keeps the channels busy the whole run
                store.notify(key=f"backlog:{i}", kind="summary", title=f"#{i}", body="x")
        runner = Runner(config, max_bars=60)
        cycle = runner._cycle
        times = durations.setdefault(label, [])

        def timed(t, summary, cycle=cycle, times=times):
            start = time.perf_counter()
            cycle(t, summary)
            times.append(time.perf_counter() - start)

        runner._cycle = timed
        started = time.monotonic()
        runner.run()
        durations[label + " run"] = [time.monotonic() - started]
    assert len(durations["busy"]) == len(durations["quiet"]) == 60
    assert slow.requests  # the channel was being written to while the cycles ran
    busy, quiet = sorted(durations["busy"]), sorted(durations["quiet"])
    assert busy[30] < quiet[30] * 2 + 0.05  # median cycle (a shared CPU adds noise)
    assert busy[-1] < 2.5  # never waits on a channel answering in 5 s
    # Shutdown waits at most the drain time for the stuck channel.
    assert durations["busy run"][0] < durations["quiet run"][0] + 6.0


def test_store_events_are_written_once_with_the_fact_they_report(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 'live.db'}") as store:
        store.halt("reconcile: SP500 venue 7 vs ours 0", "runner h1", epoch=None)
        store.halt("a guard trips again", "runner h1")  # the HALT is already active
        store.resume("alice")
        store.halt("stop everything", "alice")
        store.claim_epoch(0)  # single host: no term to announce
        store.claim_epoch(3, by="h2")
        store.claim_epoch(3, by="h2")
        promotion = store.add_promotion(
            name="ma_crossover",
            stage="paper",
            code_fingerprint="c",
            record={"id": "r1"},
            created_by="alice",
        )
        for _ in range(2):  # a redo of the bar writes the same adoption
            store.record_adoption(runner="r", sleeve="trend", promotion_id=promotion.promotion_id,
                                  record_id="r1", bar_ts_ns=5, epoch=3)  # fmt: skip
        store.record_promotion_event(promotion.promotion_id, "refuse", by="runner h2",
                                     reason="code fingerprint differs")  # fmt: skip
        store.record_promotion_event(promotion.promotion_id, "promote", by="alice", reason="ok")
        events = store.notifications()
    assert [(e.kind, headline(e)) for e in events] == [
        ("halt", "reconciliation mismatch"),
        ("halt", "HALT"),
        ("takeover", "takeover"),
        ("adoption", "promotion adopted"),
        ("refusal", "promotion refused"),
    ]
    assert events[2].title == "h2 leads with epoch 3"
    assert events[4].body == "code fingerprint differs"


def test_the_daily_summary_is_written_once_a_day_with_the_days_numbers(tmp_path):
    config = paper_config(tmp_path, feed={"start": "2015-01-01", "end": "2016-01-01"})
    Runner(config).run()
    url = config.store_url
    with Store.open(url) as store:
        last_exit = max(t.exit_ts_ns for t in store.trades())
        sleeves = {p.sleeve for p in store.performance()}
        day_ns = 86_400 * 10**9
        closed = sum(t.exit_ts_ns // day_ns == last_exit // day_ns for t in store.trades())
    evening = last_exit - last_exit % day_ns + 22 * 3600 * 10**9

    def summaries(host, now_ns):
        return [e for e in host.poll_once(summary_clock_ns=now_ns) if e.kind == "summary"]

    a, b = (notifier(url, [], host=h, summary_utc="21:30") for h in ("a", "b"))
    for host in (a, b):
        host.store = Store.open(url)
    try:
        assert summaries(a, evening - 3 * 3600 * 10**9) == []  # before 21:30 UTC
        (summary,) = summaries(a, evening)
        assert summaries(b, evening) == summaries(a, evening + 60 * 10**9) == []
    finally:
        a.store.close()
        b.store.close()
    assert summary.kind == "summary" and summary.title.startswith("paper-sp500 on 2015-")
    assert summary.body.startswith("equity ") and f"trades closed today {closed}," in summary.body
    for sleeve in sleeves:
        assert f"sleeve {sleeve}: today" in summary.body


def test_a_venue_refusing_the_keys_is_notified_once(alpaca, tmp_path, services, monkeypatch):  # noqa: F811
    hook = services()
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    config = alpaca_config(alpaca, tmp_path)
    raw_notify = {
        "channels": [webhook(hook, monkeypatch)],
        "min_interval_s": 0,
        "summary_utc": "off",
    }
    config = dataclasses.replace(config, notify=parse_notify(Table(raw_notify, "t.toml", "notify")))
    for _ in range(2):  # a restart loop must not page twice for the same hour
        with pytest.raises(BrokerAuthError):
            Runner(config).run()
    (event,) = [e for body in hook.bodies() for e in body["events"]]
    assert event["kind"] == "auth_failure" and event["event"] == "venue auth failure"
    assert "not-the-secret" not in json.dumps(hook.bodies())


def test_a_reconciliation_mismatch_is_notified(alpaca, tmp_path, services, monkeypatch):  # noqa: F811
    hook = services()
    with alpaca.lock:
        alpaca.positions["SP500"] = 7.0
    config = alpaca_config(alpaca, tmp_path)
    raw_notify = {
        "channels": [webhook(hook, monkeypatch)],
        "min_interval_s": 0,
        "summary_utc": "off",
    }
    config = dataclasses.replace(config, notify=parse_notify(Table(raw_notify, "t.toml", "notify")))
    Runner(config, max_bars=3).run()
    (event,) = [e for body in hook.bodies() for e in body["events"]]
    assert event["event"] == "reconciliation mismatch"
    assert "SP500 venue 7 vs ours 0" in event["text"]


BASE = """
[runner]
name = "n"
[[sleeves]]
name = "trend"
strategy = "ma_crossover"
symbols = ["SP500"]
allocation = 1.0
"""


@pytest.mark.parametrize(
    ("table", "where"),
    [
        ("[notify]\nmin_interval = 3", "[notify] min_interval: unknown key"),
        ("[notify]\nretries = -1", "[notify] retries: must be an integer >= 0"),
        ('[notify]\nevents = ["halt", "lunch"]', "[notify] events: must list some of"),
        ('[notify]\nsummary_utc = "9pm"', '[notify] summary_utc: must be "HH:MM" or "off"'),
        ('[[notify.channels]]\nkind = "pager"', "[notify.channels[0]] kind: must be one of"),
        (
            '[[notify.channels]]\nkind = "slack"\nurl = "https://hooks.slack.com/x"',
            "[notify.channels[0]] url: unknown key for slack (secrets go in url_env",
        ),
        ('[[notify.channels]]\nkind = "telegram"', "[notify.channels[0]] chat_id: is required"),
        (
            '[[notify.channels]]\nkind = "email"\nhost = "h"\nfrom = "a@b"',
            "[notify.channels[0]] to: must be an address",
        ),
        (
            '[[notify.channels]]\nkind = "webhook"\n[[notify.channels]]\nkind = "webhook"',
            "[notify] channels: name 'webhook' is used twice",
        ),
    ],
)
def test_config_errors_name_the_file_the_table_and_the_key(tmp_path, table, where):
    path = tmp_path / "live.toml"
    path.write_text(BASE + table + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {where}") and "\n" not in message


def test_a_missing_or_unsafe_secret_stops_the_start_naming_where_not_what(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    monkeypatch.delenv("QS_NOWHERE", raising=False)
    missing = r"test.toml: \[notify.channels\] slack: secret 'slack_url' not found; tried "
    with pytest.raises(ConfigError, match=missing + "environment variable QS_NOWHERE"):
        notifier(url, [{"kind": "slack", "url_env": "QS_NOWHERE"}])
    monkeypatch.setenv("QS_PLAIN", "http://hooks.example.org/services/webhook-s3cret")
    with pytest.raises(ConfigError, match=r"must be an https:// URL") as caught:
        notifier(url, [{"kind": "discord", "url_env": "QS_PLAIN"}])
    assert "webhook-s3cret" not in str(caught.value) and "$QS_PLAIN" in str(caught.value)


def test_the_readme_notify_example_is_a_valid_config(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = [b for b in readme.split("```toml\n")[1:] if b.startswith("[notify]")]
    path = tmp_path / "live.toml"
    path.write_text(BASE + block.split("```")[0])
    notify = load_config(path).notify
    assert [c.kind for c in notify.channels] == ["slack", "telegram", "email"]
    assert notify.channels[2].port == 587 and notify.channels[2].starttls


def test_a_channel_answering_nonsense_fails_that_send_and_the_worker_goes_on(
    tmp_path, services, monkeypatch
):
    telegram = services(answer=b"<html>bad gateway</html>")
    monkeypatch.setenv("QS_TELEGRAM", TELEGRAM_TOKEN)
    channel = {
        "kind": "telegram",
        "token_env": "QS_TELEGRAM",
        "chat_id": 7,
        "api_url": telegram.url,
    }
    url = f"sqlite:///{tmp_path / 'live.db'}"
    with Store.open(url) as store:
        sender = notifier(url, [channel], retries=0).start()
        try:
            store.halt("one", "alice")
            wait_for(lambda: store.notifications()[0].outcome is not None)
            store.resume("alice")
            store.halt("two", "alice")
            wait_for(lambda: all(n.outcome for n in store.notifications()))
        finally:
            sender.stop()
        outcomes = [n.outcome for n in store.notifications()]
    assert len(outcomes) == 2 and len(telegram.requests) == 2
    assert all(o.startswith("telegram: telegram refused the message") for o in outcomes)


def test_notify_test_reports_each_channel_and_fails_on_an_unreachable_one(
    tmp_path, services, monkeypatch, capsys
):
    hook, down = services(), services(status=403)
    monkeypatch.setenv("QS_HOOK", f"{hook.url}/hook")
    monkeypatch.setenv("QS_DOWN", f"{down.url}/services/{SLACK_URL_SECRET}")
    path = tmp_path / "live.toml"
    path.write_text(BASE)
    monkeypatch.setattr("sys.argv", ["live", "notify-test", "--config", str(path)])
    with pytest.raises(SystemExit) as exit_code:
        cli.main()
    assert exit_code.value.code == 2
    assert (
        capsys.readouterr().err
        == f"error: {path}: [notify] names no channels ([[notify.channels]])\n"
    )
    path.write_text(
        BASE + '[[notify.channels]]\nkind = "webhook"\nurl_env = "QS_HOOK"\n'
        '[[notify.channels]]\nkind = "slack"\nurl_env = "QS_DOWN"\n'
    )
    result = CliRunner().invoke(cli.app, ["notify-test", "--config", str(path)])
    assert result.exit_code == 1
    assert result.output == "webhook: sent\nslack: failed: HTTP 403 Forbidden\n"
    assert hook.bodies()[0]["title"].startswith("test from n on ")


def test_an_event_a_dead_host_claimed_is_sent_by_the_other_one(tmp_path, services, monkeypatch):
    hook = services()
    url = f"sqlite:///{tmp_path / 'live.db'}"
    with Store.open(url) as store:
        store.halt("guard tripped", "runner primary")
        (held,) = store.claim_notifications("primary")  # then the primary is killed
        assert store.claim_notifications("standby") == []  # held, for now
        standby = notifier(url, [webhook(hook, monkeypatch)], host="standby", reclaim_after_s=0.5)
        standby.start()
        try:
            wait_for(lambda: store.notifications()[0].outcome == "sent")
        finally:
            standby.stop()
        (event,) = store.notifications()
    assert sent_keys(hook) == [held.event_key] and event.claimed_by == "standby"
