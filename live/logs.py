"""Structured logs of the live runner: one JSON object per line, with cycle, epoch and order ids.

Secrets never reach a log line: URLs in messages have their passwords masked, and the venue
keys loaded in this process are scrubbed.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from live.secrets import scrub

_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.I)
FIELDS = ("cycle", "bar", "epoch", "client_order_id", "sleeve", "symbol", "host")


def mask(text: str) -> str:
    """Replace the password of any URL in ``text`` with ``***``, and every venue key loaded
    in this process with ``****``."""
    return scrub(_PASSWORD_IN_URL.sub(lambda m: f"{m.group('head')}***@", text))


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, message and the runner's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["error"] = mask(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


LOGGERS = ("quantshift.live", "live", "coinbase")
"""The runner's logger, the module loggers of the ``live`` package (lease, venue adapters) and
the Coinbase SDK's (which logs each HTTP error)."""


class ScrubSecrets(logging.Filter):
    """Mask passwords and venue keys in the records of a logger we do not write (a venue
    SDK's, whose HTTP error lines quote the venue's answer)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask(record.getMessage()), None
        return True


def configure(level: int = logging.INFO, stream=None) -> None:
    """Send the records of the runner's loggers (``LOGGERS``) to ``stream`` (stderr) as JSON
    lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
