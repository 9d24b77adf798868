"""The notifier: claims events from the store's outbox and sends them, off the cycle thread.

One poller thread claims events (each claimed by one host of those sharing the store) and
queues them to one worker thread per channel; a worker rate-limits its channel, sends what
queued up meanwhile as one message, retries with backoff, and logs a failure, never raises it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from live.notify.channels import Channel, ChannelError, Message, open_channels
from live.notify.config import NotifyConfig
from live.notify.summary import daily_summary, summary_due
from live.store import Notification, Store
from quantshift.urls import mask_secrets

log = logging.getLogger("quantshift.live.notify")

_HEADLINES = {
    "takeover": "takeover",
    "adoption": "promotion adopted",
    "refusal": "promotion refused",
    "auth_failure": "venue auth failure",
    "summary": "daily summary",
}


def headline(event: Notification) -> str:
    """What kind of event this is, in words: a HALT is a breaker trip when the runner wrote
    it (a guard or the circuit breaker), a reconciliation mismatch when reconciling did."""
    if event.kind != "halt":
        return _HEADLINES[event.kind]
    if event.body.startswith("reconcile:"):
        return "reconciliation mismatch"
    return "breaker trip" if event.title.startswith("HALT by runner ") else "HALT"


@dataclass
class _Pending:
    """An event queued to several channels: finished in the store once all have answered."""

    event: Notification
    waiting: int
    failures: list[str]


class Notifier:
    """Send the outbox's events of one runner's store to the configured channels.

    Parameters
    ----------
    config : NotifyConfig
    store_url : str
        The runner's store (the notifier opens its own connection).
    runner, host : str
        The runner's name (daily summary) and this process's name (who claimed an event).
    """

    def __init__(self, config: NotifyConfig, store_url: str, runner: str, host: str) -> None:
        self.config, self.store_url, self.runner, self.host = config, store_url, runner, host
        self.channels = open_channels(config)
        self._secrets = tuple(s for c in self.channels for s in c.secrets)
        self._stop = threading.Event()
        self._polling = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._workers = [_Worker(self, channel) for channel in self.channels]
        self._summary_day: str | None = None
        self._closed = False
        self.store: Store | None = None

    def start(self) -> Notifier:
        """Open the store and start the poller and one worker per channel; return self."""
        self.store = Store.open(self.store_url)
        self._polling.set()
        self._threads = [threading.Thread(target=self._poll, name="notify-poll", daemon=True)]
        self._threads += [
            threading.Thread(target=w.run, name=f"notify-{w.channel.name}", daemon=True)
            for w in self._workers
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, drain_s: float = 5.0) -> None:
        """Stop polling, claim what the runner wrote last (its final HALT, an auth failure),
        give the workers up to ``drain_s`` to send what is queued (without rate limit), close."""
        deadline = time.monotonic() + drain_s
        self._polling.clear()
        if self._threads:
            self._threads[0].join(max(0.0, deadline - time.monotonic()))
            try:
                self.poll_once()
            except Exception as exc:
                log.warning("notify: last poll failed: %s", self.mask(str(exc)))
        self._stop.set()
        for thread in self._threads[1:]:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._closed = True  # a send still in flight is logged, not recorded
        if self.store is not None:
            self.store.close()

    def mask(self, text: str) -> str:
        """``text`` with every secret of the channels (and URL passwords) masked."""
        return mask_secrets(text, *self._secrets)

    # ------------------------------------------------------------------ poller
    def _poll(self) -> None:
        while self._polling.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # the store may be away; the next poll tries again
                log.warning("notify: poll failed: %s", self.mask(str(exc)))
            deadline = time.monotonic() + self.config.poll_s
            while self._polling.is_set() and time.monotonic() < deadline:
                time.sleep(min(0.05, self.config.poll_s))

    def poll_once(self, summary_clock_ns: int | None = None) -> list[Notification]:
        """Write the daily summary when due at ``summary_clock_ns`` (default: now), claim new
        events and queue them; return them."""
        now_ns = time.time_ns()
        if self.config.summary_utc is not None:
            clock_ns = now_ns if summary_clock_ns is None else summary_clock_ns
            day = summary_due(self.config.summary_utc, clock_ns, self._summary_day)
            if day is not None:
                title, body = daily_summary(self.store, self.runner, day)
                self.store.notify(
                    key=f"summary:{self.runner}:{day}", kind="summary", title=title, body=body
                )
                self._summary_day = day
        events = self.store.claim_notifications(
            self.host,
            not_before_ns=int(now_ns - self.config.max_age_s * 1e9),
            reclaim_before_ns=int(now_ns - self.config.reclaim_after_s * 1e9),
        )
        for event in events:
            self._dispatch(event)
        return events

    def _dispatch(self, event: Notification) -> None:
        if event.kind not in self.config.events or not self._workers:
            self.store.finish_notification(event.notification_id, "not sent: no channel wants it")
            return
        with self._lock:
            self._pending[event.notification_id] = _Pending(event, len(self._workers), [])
        for worker in self._workers:
            worker.put(event)

    def done(self, event: Notification, channel: str, failure: str | None) -> None:
        """A worker's answer for ``event``; the last one records the outcome in the store."""
        with self._lock:
            pending = self._pending[event.notification_id]
            pending.waiting -= 1
            if failure is not None:
                pending.failures.append(f"{channel}: {failure}")
            if pending.waiting:
                return
            del self._pending[event.notification_id]
            closed = self._closed
        outcome = "; ".join(pending.failures)[:1000] or "sent"
        if closed:
            log.warning("notify: %s after shutdown: %s", event.event_key, outcome)
            return
        try:
            self.store.finish_notification(event.notification_id, outcome)
        except Exception as exc:
            log.warning("notify: cannot record the outcome: %s", self.mask(str(exc)))


class _Worker:
    """One channel's queue: rate limit, coalescing, retries."""

    def __init__(self, notifier: Notifier, channel: Channel) -> None:
        self.notifier, self.channel = notifier, channel
        self.queue: queue.Queue[Notification] = queue.Queue(notifier.config.queue_size)
        self.last_sent = -float("inf")

    def put(self, event: Notification) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            log.error(
                "notify: %s queue full; dropped %s", self.channel.name, event.event_key,
                extra={"channel": self.channel.name},
            )  # fmt: skip
            self.notifier.done(event, self.channel.name, "dropped: queue full")

    def run(self) -> None:
        stop, cfg = self.notifier._stop, self.notifier.config
        while True:
            try:
                first = self.queue.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            # Rate limit: wait out the interval since the last send, then send everything that
            # queued up meanwhile as one message (a stop cuts the wait short).
            wait_s = self.last_sent + cfg.min_interval_s - time.monotonic()
            if wait_s > 0:
                stop.wait(wait_s)
            batch = [first]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            failure = self._send(batch)
            self.last_sent = time.monotonic()
            for event in batch:
                self.notifier.done(event, self.channel.name, failure)

    def _send(self, batch: list[Notification]) -> str | None:
        cfg, mask = self.notifier.config, self.notifier.mask
        message = compose(batch, mask)
        backoff_s = cfg.retry_backoff_s
        for attempt in range(cfg.retries + 1):
            try:
                self.channel.send(message)
                return None
            except Exception as exc:  # whatever went wrong, the worker lives on
                failure = mask(str(exc) if isinstance(exc, ChannelError) else repr(exc))
                log.warning(
                    "notify: %s failed (attempt %d of %d): %s",
                    self.channel.name, attempt + 1, cfg.retries + 1, failure,
                    extra={"channel": self.channel.name},
                )  # fmt: skip
                wait_s = getattr(exc, "retry_after_s", None) or backoff_s
                if attempt < cfg.retries and self.notifier._stop.wait(min(wait_s, 300.0)):
                    break  # stopping: report what we have rather than hold up shutdown
                backoff_s *= 2
        log.error(
            "notify: %s gave up on %d event(s): %s", self.channel.name, len(batch), failure,
            extra={"channel": self.channel.name},
        )  # fmt: skip
        return failure


def compose(batch: list[Notification], mask) -> Message:
    """One message for the events of ``batch`` (several: a count and one line each), masked."""
    events = tuple(
        {
            "kind": e.kind,
            "event": headline(e),
            "key": e.event_key,
            "title": mask(e.title),
            "text": mask(e.body),
            "ts_ns": e.ts_created_ns,
        }
        for e in batch
    )
    if len(events) == 1:
        only = events[0]
        return Message(f"{only['event']}: {only['title']}", only["text"], events)
    lines = [f"- {e['event']}: {e['title']}: {e['text']}" for e in events]
    return Message(f"{len(events)} events", "\n".join(lines), events)


def send_test(config, host: str) -> dict[str, str | None]:
    """Send one test message to each channel of a live config, now (no outbox, no rate limit);
    return channel name -> None (sent) or what failed, masked."""
    channels = open_channels(config.notify)
    secrets = tuple(s for c in channels for s in c.secrets)
    message = Message(
        f"test from {config.name} on {host}",
        "If you read this, QuantShift can reach you here.",
        (
            {
                "kind": "test",
                "event": "test",
                "key": "test",
                "title": "test",
                "text": "",
                "ts_ns": 0,
            },
        ),
    )
    results: dict[str, str | None] = {}
    for channel in channels:
        try:
            channel.send(message)
            results[channel.name] = None
        except Exception as exc:
            results[channel.name] = mask_secrets(str(exc), *secrets)
    return results
