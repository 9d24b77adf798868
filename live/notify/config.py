"""The ``[notify]`` table of the live config: which channels get which events, how often.

Validated when the config is read; the channels' secrets (webhook URLs, bot tokens, SMTP
passwords) are read only when the notifier starts, from ``*_env`` variables or the secrets file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from live.store.outbox import KINDS
from quantshift.tables import Table

CHANNEL_KINDS = ("slack", "discord", "telegram", "email", "webhook")
TELEGRAM_API = "https://api.telegram.org"
SECRET_FIELD = {
    "slack": "url",
    "discord": "url",
    "webhook": "url",
    "telegram": "token",
    "email": "password",
}
"""The secret each channel kind needs: given as ``<field>_env`` or ``<name>_<field>`` in the
secrets file (an email channel needs its password only with a ``username``)."""
_KEYS = {
    "slack": {"url_env"},
    "discord": {"url_env"},
    "webhook": {"url_env"},
    "telegram": {"token_env", "chat_id", "api_url"},
    "email": {"host", "port", "starttls", "username", "password_env", "from", "to"},
}
_NOTIFY_KEYS = {
    "channels",
    "events",
    "secrets_file",
    "min_interval_s",
    "retries",
    "retry_backoff_s",
    "timeout_s",
    "queue_size",
    "poll_s",
    "max_age_s",
    "reclaim_after_s",
    "summary_utc",
}


@dataclass(frozen=True, kw_only=True)
class ChannelConfig:
    """One destination. ``secret_env`` names the environment variable of its secret."""

    kind: str
    name: str
    secret_env: str | None = None
    chat_id: str | None = None
    api_url: str = TELEGRAM_API
    host: str | None = None
    port: int = 587
    starttls: bool = True
    username: str | None = None
    sender: str | None = None
    recipients: tuple[str, ...] = ()

    @property
    def needs_secret(self) -> bool:
        return self.kind != "email" or self.username is not None


@dataclass(frozen=True, kw_only=True)
class NotifyConfig:
    """Notification settings; without channels nothing is sent (events are still recorded).

    ``min_interval_s`` is the least time between two messages to one channel (events arriving
    meanwhile go out together in one message); a failed send is tried ``retries`` more times,
    ``retry_backoff_s`` doubling; a channel keeps at most ``queue_size`` messages waiting.
    ``summary_utc`` ("HH:MM" or None) is when the daily summary goes out; events older than
    ``max_age_s`` when first seen are not sent; an event a host claimed but did not finish
    within ``reclaim_after_s`` (it died) is sent by another.
    """

    channels: tuple[ChannelConfig, ...] = ()
    events: tuple[str, ...] = KINDS
    secrets_file: str | None = None
    min_interval_s: float = 10.0
    retries: int = 3
    retry_backoff_s: float = 1.0
    timeout_s: float = 10.0
    queue_size: int = 100
    poll_s: float = 2.0
    max_age_s: float = 86_400.0
    reclaim_after_s: float = 300.0
    summary_utc: str | None = "21:30"
    source: str = field(default="<live config>", compare=False)


def parse_notify(table: Table) -> NotifyConfig:
    """Validate the ``[notify]`` table; each error is one line naming file, table and key."""
    table.refuse_unknown(_NOTIFY_KEYS)
    numbers: dict[str, Any] = {}
    for key, low in (
        ("min_interval_s", 0.0),
        ("retry_backoff_s", 0.0),
        ("timeout_s", 1e-9),
        ("poll_s", 1e-9),
        ("max_age_s", 1e-9),
        ("reclaim_after_s", 1e-9),
    ):
        if key in table:
            value = table.number(key, 0.0)
            if value < low:
                raise table.error(key, f"must be seconds >= {low:g}, got {value!r}")
            numbers[key] = value
    for key, low in (("retries", 0), ("queue_size", 1)):
        if key in table:
            numbers[key] = table.integer(key, None, minimum=low)
    events = table.get("events", list(KINDS))
    if not isinstance(events, list) or any(e not in KINDS for e in events):
        raise table.error("events", f"must list some of {_list(KINDS)}")
    summary = table.get("summary_utc", "21:30")
    if summary == "off":
        summary = None
    elif not _is_clock(summary):
        raise table.error("summary_utc", f'must be "HH:MM" or "off", got {summary!r}')
    # `channels = []` is no channel, like no key: events are recorded, nothing is sent.
    listed = table.get("channels", []) != []
    channels = tuple(_channel(t) for t in table.tables("channels")) if listed else ()
    names = [c.name for c in channels]
    for name in names:
        if names.count(name) > 1:
            raise table.error("channels", f"name {name!r} is used twice; name each one")
    return NotifyConfig(
        channels=channels,
        events=tuple(events),
        secrets_file=table.string("secrets_file"),
        summary_utc=summary,
        source=table.source,
        **numbers,
    )


def _channel(table: Table) -> ChannelConfig:
    kind = table.choice("kind", CHANNEL_KINDS, None)
    allowed = _KEYS[kind] | {"kind", "name"}
    for key in table.raw:
        if key not in allowed:
            hint = f" (secrets go in {SECRET_FIELD[kind]}_env or the secrets file)"
            hint = hint if key == SECRET_FIELD[kind] else ""
            raise table.error(key, f"unknown key for {kind}{hint}; allowed: {_list(allowed)}")
    values: dict[str, Any] = {"kind": kind, "name": table.string("name") or kind}
    values["secret_env"] = table.string(f"{SECRET_FIELD[kind]}_env")
    if kind == "telegram":
        chat_id = table.get("chat_id")
        if isinstance(chat_id, bool) or not isinstance(chat_id, int | str) or chat_id == "":
            raise table.error("chat_id", "is required: the chat's id or @channel name")
        values["chat_id"] = str(chat_id)
        api_url = table.string("api_url")
        if api_url is not None:
            if not api_url.startswith(("https://", "http://")):
                raise table.error("api_url", f"must be an http(s) URL, got {api_url!r}")
            values["api_url"] = api_url.rstrip("/")
    if kind == "email":
        port = table.integer("port", 587, minimum=1)
        if port > 65535:
            raise table.error("port", f"must be 1-65535, got {port!r}")
        recipients = table.get("to")
        if isinstance(recipients, str):
            recipients = [recipients]
        if not recipients or not all(isinstance(r, str) and "@" in r for r in recipients):
            raise table.error("to", "must be an address or a list of addresses")
        sender = table.string("from", required=True)
        if "@" not in sender:
            raise table.error("from", f"must be an address, got {sender!r}")
        values.update(
            host=table.string("host", required=True),
            port=port,
            starttls=table.boolean("starttls", True),
            username=table.string("username"),
            sender=sender,
            recipients=tuple(recipients),
        )
    return ChannelConfig(**values)


def _is_clock(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
        return False
    hours, minutes = value[:2], value[3:]
    return hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60


def _list(values) -> str:
    return ", ".join(sorted(values))
