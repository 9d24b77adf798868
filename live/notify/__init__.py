"""Notifications: HALTs, breaker trips, takeovers, reconciliation mismatches, venue auth
failures, promotion adoptions and refusals, and a daily summary, sent to the configured channels.

Events are written to the store's outbox with the facts they report; :class:`Notifier` claims
and sends them off the cycle thread. See the README section "Notifications".
"""

from __future__ import annotations

import logging
import time

from live.notify.config import ChannelConfig, NotifyConfig, parse_notify
from live.notify.notifier import Notifier, send_test

log = logging.getLogger("quantshift.live.notify")

__all__ = [
    "ChannelConfig",
    "Notifier",
    "NotifyConfig",
    "note_auth_failure",
    "parse_notify",
    "send_test",
    "start_alerts",
]


def start_alerts(config, host: str) -> Notifier | None:
    """Start the notifier of a live config (None without channels). Raises ConfigError when a
    channel's secret is missing (at start, like the broker keys)."""
    if not config.notify.channels:
        return None
    return Notifier(config.notify, config.store_url, config.name, host).start()


def note_auth_failure(store, config, host: str, error: Exception) -> None:
    """Record a venue's refusal of our keys; one event per runner, venue and hour, whichever
    host saw it first. Never raises: the runner is already failing for the real reason."""
    hour = time.strftime("%Y-%m-%dT%H", time.gmtime())
    try:
        store.notify(
            key=f"auth_failure:{config.name}:{config.broker.kind}:{hour}",
            kind="auth_failure",
            title=f"{config.broker.kind} refused the keys of {config.name} on {host}",
            body=str(error),
        )
    except Exception as exc:
        log.warning("notify: cannot record the auth failure: %s", exc)
