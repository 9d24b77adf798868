"""Structured logs of the live runner: one JSON object per line, with cycle, epoch and order ids.

Secrets never reach a log line: passwords in URLs and secret query parameters are masked.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from quantshift.urls import mask_secrets

FIELDS = ("cycle", "bar", "epoch", "client_order_id", "sleeve", "symbol", "host")


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, message and the runner's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["error"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


def configure(level: int = logging.INFO, stream=None) -> None:
    """Send the ``quantshift.live`` logger's records to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("quantshift.live")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
