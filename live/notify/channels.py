"""Where notifications go: Slack, Discord, Telegram, email and a plain JSON webhook.

Each channel is a plain HTTPS POST in the service's documented format (SMTP for email), so a
test points it at a local server; the notifier masks every text before it reaches a channel.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from urllib.parse import urlsplit

from live.broker import is_loopback_host
from live.notify.config import SECRET_FIELD, ChannelConfig, NotifyConfig
from live.secrets import Secret, load_secret
from quantshift.errors import ConfigError

# Longest message each service accepts (Discord 2000 characters, Telegram 4096).
_LIMITS = {"discord": 2000, "telegram": 4096, "slack": 40_000}


@dataclass(frozen=True)
class Message:
    """What one send carries: a headline, a text, and the events it reports (one, or several
    coalesced while the channel was rate-limited)."""

    title: str
    text: str
    events: tuple[dict, ...] = field(default=())


class ChannelError(Exception):
    """A send failed; ``retry_after_s`` is the service's own wait (HTTP 429), if it gave one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Channel:
    """One configured destination; ``send`` raises :class:`ChannelError` on failure."""

    def __init__(self, config: ChannelConfig, secret: Secret | None, timeout_s: float) -> None:
        self.config, self.timeout_s = config, timeout_s
        self.name, self.kind = config.name, config.kind
        self._secret = secret

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values this channel holds (for scrubbing texts and logs)."""
        return () if self._secret is None else (self._secret.reveal(),)

    def send(self, message: Message) -> None:
        kind, title, text = self.kind, message.title, message.text
        if kind == "email":
            return self._mail(message)
        if kind == "telegram":
            url = f"{self.config.api_url}/bot{self._secret.reveal()}/sendMessage"
            payload = {"chat_id": self.config.chat_id, "text": _cut(f"{title}\n{text}", kind)}
        elif kind == "slack":
            url, payload = self._secret.reveal(), {"text": _cut(f"*{title}*\n{text}", kind)}
        elif kind == "discord":
            url, payload = self._secret.reveal(), {"content": _cut(f"**{title}**\n{text}", kind)}
        else:
            url = self._secret.reveal()
            payload = {"title": title, "text": text, "events": list(message.events)}
        self._post(url, payload)

    def _post(self, url: str, payload: dict) -> None:
        request = urllib.request.Request(
            url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "quantshift-notify"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = response.read()
        except urllib.error.HTTPError as exc:
            wait = exc.headers.get("Retry-After") if exc.code == 429 else None
            raise ChannelError(
                f"HTTP {exc.code} {exc.reason}", float(wait) if _is_number(wait) else None
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ChannelError(f"cannot reach {self.kind}: {getattr(exc, 'reason', exc)}") from None
        if self.kind == "telegram" and not _telegram_ok(answer):
            raise ChannelError(f"telegram refused the message: {answer[:200]!r}")

    def _mail(self, message: Message) -> None:
        cfg = self.config
        mail = EmailMessage()
        mail["Subject"] = f"[QuantShift] {message.title}"
        mail["From"], mail["To"] = cfg.sender, ", ".join(cfg.recipients)
        mail.set_content(message.text)
        try:
            with smtplib.SMTP(cfg.host, cfg.port, timeout=self.timeout_s) as smtp:
                if cfg.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if cfg.username is not None:
                    smtp.login(cfg.username, self._secret.reveal())
                smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError(f"email via {cfg.host}:{cfg.port}: {exc}") from None


def open_channels(notify: NotifyConfig) -> list[Channel]:
    """Open every channel of ``notify`` (see :func:`open_channel`)."""
    return [
        open_channel(
            c, secrets_file=notify.secrets_file, timeout_s=notify.timeout_s, source=notify.source
        )
        for c in notify.channels
    ]


def open_channel(
    config: ChannelConfig, *, secrets_file: str | None, timeout_s: float, source: str
) -> Channel:
    """Load the channel's secret and check where it points; raise ConfigError naming the
    channel (never the value) if the secret is missing or the URL is not acceptable."""
    where = f"{source}: [notify.channels] {config.name}"
    secret = None
    if config.needs_secret:
        field_name = SECRET_FIELD[config.kind]
        secret = load_secret(
            f"{config.name}_{field_name}",
            env=config.secret_env,
            secrets_file=secrets_file,
            where=where,
        )
        if field_name == "url":
            _check_url(secret.reveal(), f"{where} {field_name} (from {secret.source})")
    if config.kind == "telegram":
        _check_url(config.api_url, f"{where} api_url")
    return Channel(config, secret, timeout_s)


def _check_url(url: str, where: str) -> None:
    # Plain http only to this machine (a local relay or a test server): a webhook URL is a
    # credential and must not cross a network in clear text.
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and is_loopback_host(parts.hostname or ""):
        return
    raise ConfigError(f"{where}: must be an https:// URL (http:// only to a loopback host)")


def _telegram_ok(answer: bytes) -> bool:
    try:
        return json.loads(answer).get("ok") is True
    except (ValueError, AttributeError):
        return False


def _cut(text: str, kind: str) -> str:
    limit = _LIMITS[kind]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_number(text: str | None) -> bool:
    try:
        return text is not None and float(text) >= 0
    except ValueError:
        return False
