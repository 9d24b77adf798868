"""The ``[notify]`` table of the live config: which channels get which events, how often.

Validated when the config is read; the channels' secrets (webhook URLs, bot tokens, SMTP
passwords) are read only when the notifier starts, from ``*_env`` variables or the secrets file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from live.store.outbox import KINDS
from quantshift.errors import ConfigError

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


def parse_notify(raw: Mapping[str, Any], source: str) -> NotifyConfig:
    """Validate the ``[notify]`` table; each error is one line naming file, table and key."""
    for key in raw:
        if key not in _NOTIFY_KEYS:
            raise _error(source, "[notify]", key, f"unknown key; allowed: {_list(_NOTIFY_KEYS)}")
    numbers = {}
    for key, low in (
        ("min_interval_s", 0.0),
        ("retry_backoff_s", 0.0),
        ("timeout_s", 1e-9),
        ("poll_s", 1e-9),
        ("max_age_s", 1e-9),
        ("reclaim_after_s", 1e-9),
    ):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise _error(source, "[notify]", key, f"must be seconds >= {low:g}, got {value!r}")
            if not math.isfinite(value):
                raise _error(source, "[notify]", key, f"must be finite, got {value!r}")
            numbers[key] = float(value)
    for key, low in (("retries", 0), ("queue_size", 1)):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise _error(source, "[notify]", key, f"must be an integer >= {low}, got {value!r}")
            numbers[key] = value
    events = raw.get("events", list(KINDS))
    if not isinstance(events, list) or any(e not in KINDS for e in events):
        raise _error(source, "[notify]", "events", f"must list some of {_list(KINDS)}")
    summary = raw.get("summary_utc", "21:30")
    if summary == "off":
        summary = None
    elif not _is_clock(summary):
        raise _error(
            source, "[notify]", "summary_utc", f'must be "HH:MM" or "off", got {summary!r}'
        )
    secrets_file = raw.get("secrets_file")
    if secrets_file is not None and (not isinstance(secrets_file, str) or not secrets_file):
        raise _error(source, "[notify]", "secrets_file", "must be a file path")
    channels_raw = raw.get("channels", [])
    if not isinstance(channels_raw, list):
        raise _error(
            source, "[notify]", "channels", "must be an array of tables [[notify.channels]]"
        )
    channels = tuple(_channel(source, i + 1, c) for i, c in enumerate(channels_raw))
    names = [c.name for c in channels]
    for name in names:
        if names.count(name) > 1:
            raise _error(
                source, "[[notify.channels]]", "name", f"{name!r} is used twice; name each one"
            )
    return NotifyConfig(
        channels=channels,
        events=tuple(events),
        secrets_file=secrets_file,
        summary_utc=summary,
        source=source,
        **numbers,
    )


def _channel(source: str, number: int, raw: Any) -> ChannelConfig:
    where = f"[[notify.channels]] #{number}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {where} must be a table")
    kind = raw.get("kind")
    if kind not in CHANNEL_KINDS:
        raise _error(source, where, "kind", f"must be one of {_list(CHANNEL_KINDS)}, got {kind!r}")
    allowed = _KEYS[kind] | {"kind", "name"}
    for key in raw:
        if key not in allowed:
            hint = f" (secrets go in {SECRET_FIELD[kind]}_env or the secrets file)"
            hint = hint if key == SECRET_FIELD[kind] else ""
            raise _error(
                source, where, key, f"unknown key for {kind}{hint}; allowed: {_list(allowed)}"
            )
    values: dict[str, Any] = {"kind": kind, "name": _text(source, where, raw, "name") or kind}
    values["secret_env"] = _text(source, where, raw, f"{SECRET_FIELD[kind]}_env")
    if kind == "telegram":
        chat_id = raw.get("chat_id")
        if isinstance(chat_id, bool) or not isinstance(chat_id, int | str) or chat_id == "":
            raise _error(source, where, "chat_id", "is required: the chat's id or @channel name")
        values["chat_id"] = str(chat_id)
        api_url = _text(source, where, raw, "api_url")
        if api_url is not None:
            if not api_url.startswith(("https://", "http://")):
                raise _error(source, where, "api_url", f"must be an http(s) URL, got {api_url!r}")
            values["api_url"] = api_url.rstrip("/")
    if kind == "email":
        values["host"] = _text(source, where, raw, "host", required=True)
        port = raw.get("port", 587)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
            raise _error(source, where, "port", f"must be 1-65535, got {port!r}")
        starttls = raw.get("starttls", True)
        if not isinstance(starttls, bool):
            raise _error(source, where, "starttls", "must be true or false")
        recipients = raw.get("to")
        if isinstance(recipients, str):
            recipients = [recipients]
        if not recipients or not all(isinstance(r, str) and "@" in r for r in recipients):
            raise _error(source, where, "to", "must be an address or a list of addresses")
        sender = _text(source, where, raw, "from", required=True)
        if "@" not in sender:
            raise _error(source, where, "from", f"must be an address, got {sender!r}")
        values.update(
            port=port,
            starttls=starttls,
            username=_text(source, where, raw, "username"),
            sender=sender,
            recipients=tuple(recipients),
        )
    return ChannelConfig(**values)


def _text(source: str, where: str, raw: Mapping, key: str, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise _error(source, where, key, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise _error(source, where, key, f"must be a non-empty string, got {value!r}")
    return value


def _is_clock(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
        return False
    hours, minutes = value[:2], value[3:]
    return hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60


def _error(source: str, where: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {where} {key}: {problem}")


def _list(values) -> str:
    return ", ".join(sorted(values))
