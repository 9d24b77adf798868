"""Runner logs are JSON lines with cycle, epoch and client order id, and never hold a secret."""

from __future__ import annotations

import contextlib
import io
import json
import logging

import pytest

from live.logs import LOGGERS, JsonFormatter, configure
from quantshift.urls import mask_secrets


@contextlib.contextmanager
def json_log_buffer():
    """The runner's JSON logging into a buffer; the loggers as they were afterwards."""
    saved = {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate)
    stream = io.StringIO()
    configure(stream=stream)
    try:
        yield stream
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:], logger.propagate = handlers, propagate
            logger.setLevel(level)


@pytest.fixture
def json_logs():
    with json_log_buffer() as stream:
        yield stream


def test_json_lines_carry_the_runner_fields_and_mask_passwords(json_logs):
    stream = json_logs
    log = logging.getLogger("quantshift.live")
    log.info(
        "store postgresql://quant:hunter2@db/live ready",
        extra={"cycle": 5, "epoch": 3, "client_order_id": "qsabc"},
    )
    record = json.loads(stream.getvalue().strip())
    assert record["level"] == "info" and record["epoch"] == 3 and record["cycle"] == 5
    assert record["client_order_id"] == "qsabc"
    assert "hunter2" not in stream.getvalue() and "quant:***@db" in record["message"]


def test_mask_leaves_urls_without_passwords_alone():
    assert mask_secrets("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask_secrets("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert isinstance(JsonFormatter(), logging.Formatter)


def test_the_live_packages_module_loggers_write_json_too(json_logs):
    logging.getLogger("live.lease").warning("lease main: renew failed")
    record = json.loads(json_logs.getvalue().strip())
    assert record["logger"] == "live.lease" and record["level"] == "warning"


def test_regression_secret_query_parameters_are_masked_in_logs(json_logs):
    """The runner's logs masked only user:password@; a ?password= or ?token= went out whole."""
    stream = json_logs
    logging.getLogger("quantshift.live").warning("lease at redis://h:6379/0?password=hunter2")
    logging.getLogger("quantshift.live").warning("feed https://venue/api?token=tok-123&x=1")
    assert "hunter2" not in stream.getvalue() and "tok-123" not in stream.getvalue()
    assert "?password=***" in stream.getvalue() and "?token=***&x=1" in stream.getvalue()
