"""Structured logs of the live runner: one JSON object per line, with cycle, epoch and order ids.

Secrets never reach a log line: passwords in URLs and secret query parameters are masked, and
the venue keys loaded in this process are scrubbed.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from live.secrets import scrub
from quantshift.urls import mask_secrets

FIELDS = ("cycle", "bar", "epoch", "client_order_id", "sleeve", "symbol", "host")


def mask(text: str) -> str:
    """Mask URL passwords and secret query parameters in ``text`` (``***``) and every venue
    key loaded in this process (``****``)."""
    return scrub(mask_secrets(text))


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
