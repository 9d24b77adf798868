"""The live config file: the shipped example loads; mistakes are refused at start, by name."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest

from live.config import load_config, parse_config
from quantshift.errors import ConfigError

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "live" / "examples").glob("*.toml"))
PAPER_EXAMPLE = next(p for p in EXAMPLES if p.name == "paper_sp500.toml")
BASE = tomllib.loads(PAPER_EXAMPLE.read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_shipped_examples_load(path):
    config = load_config(path)
    assert config.mode == config.broker.mode and config.portfolio.sleeves
    # A replay runs on the paper broker; a venue's bars come with the venue's broker.
    assert (config.feed.kind == "replay") == (config.broker.kind == "paper")


def _changed(section, key, value):
    raw = copy.deepcopy(BASE)
    if value is None:
        raw[section].pop(key)
    else:
        raw.setdefault(section, {})[key] = value
    return raw


def test_drift_interval_defaults_to_five_minutes_and_zero_means_every_bar():
    assert parse_config(BASE, source="live.toml").metrics.drift_interval_s == 300.0
    raw = _changed("metrics", "drift_interval_s", 0)
    assert parse_config(raw, source="live.toml").metrics.drift_interval_s == 0.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**BASE, "brokr": {}}, r"brokr: unknown section"),
        (_changed("runner", "name", None), r"\[runner\] name: is required"),
        (_changed("runner", "bar_interval", "2d"), r"bar_interval: must be one of"),
        (_changed("broker", "mode", "live"), r"live and paper must agree"),
        (_changed("broker", "api_key", "x"), r"\[broker\] api_key: unknown key"),
        (_changed("store", "url", "mysql://x"), r"\[store\] url: must be sqlite"),
        (_changed("lease", "redis_url", "http://x"), r"redis_url: must be redis://"),
        (_changed("lease", "renew_interval_ms", 5000), r"renew_interval_ms < deadline_ms"),
        (_changed("guards", "price_collar", 3), r"\[guards\] price_collar: unknown key; allowed"),
        (_changed("metrics", "port", 70000), r"\[metrics\] port: must be 0-65535"),
        (_changed("metrics", "drift_interval_s", -1), r"\[metrics\] drift_interval_s: must be s"),
        (_changed("metrics", "drift_interval_s", "5m"), r"drift_interval_s: must be a number, "),
        (_changed("metrics", "drift_interval_s", float("inf")), r"drift_interval_s: must be a n"),
        (
            {**BASE, "news": {"file": "headlines.csv", "ttl_s": -60}},
            r"live.toml: \[news\] ttl_s: must be seconds >= 0 \(0: no cache\), got -60.0",
        ),
        ({**BASE, "news": {"file": "h.csv", "ttl_s": "1h"}}, r"\[news\] ttl_s: must be a number"),
        (_changed("risk", "max_drawdown_pct", -1), r"live.toml: \[risk\] max_drawdown_pct=-1"),
        (_changed("risk", "max_heat", 1), r"\[risk\] max_heat: unknown key; allowed: correl"),
        (_changed("risk", "conflict", "vote"), r"\[risk\] conflict: must be one of net, prio"),
        (_changed("costs", "fees", 1), r"\[costs\] fees: unknown key; allowed: cash"),
        (_changed("costs", "whole_units", "yes"), r"\[costs\] whole_units: must be true or"),
        (_changed("feed", "speed", -2), r"\[feed\] speed"),
        (_changed("runner", "warmup_bars", 0), r"\[runner\] warmup_bars: must be an integer >= 1"),
        ({**BASE, "sleeves": []}, r"live.toml: sleeves: must be a non-empty list of tables"),
    ],
)
def test_mistakes_are_refused_by_name(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, source="live.toml")


def test_regression_portfolio_errors_name_the_live_files_own_tables():
    """[costs] and [risk] were reported as the portfolio's 'sim' and 'limits'."""
    with pytest.raises(ConfigError) as caught:
        parse_config(_changed("costs", "fees", 1), source="live.toml")
    assert "[costs]" in str(caught.value) and "sim" not in str(caught.value).split(";")[0]


def test_a_sleeves_promotion_must_name_a_record():
    raw = copy.deepcopy(BASE)
    raw["sleeves"][0]["promotion"] = " "
    with pytest.raises(ConfigError, match=r"\[sleeves\[0\]\] promotion: must be a non-empty"):
        parse_config(raw, source="live.toml")


def test_unknown_strategy_and_parameter_and_allocations():
    raw = copy.deepcopy(BASE)
    raw["sleeves"][0]["strategy"] = "nope"
    with pytest.raises(ConfigError, match=r"sleeves\[0\].*nope"):
        parse_config(raw, source="live.toml")
    raw = copy.deepcopy(BASE)
    raw["sleeves"][0]["params"] = {"speed": 3}
    with pytest.raises(ConfigError, match="speed"):
        parse_config(raw, source="live.toml")
    raw = copy.deepcopy(BASE)
    raw["sleeves"][0]["allocation"] = 0.9
    with pytest.raises(ConfigError, match="sum to"):
        parse_config(raw, source="live.toml")


def test_redis_password_stays_out_of_the_repr():
    raw = _changed("lease", "redis_url", "redis://:hunter2@127.0.0.1:6379/0")
    config = parse_config(raw, source="live.toml")
    assert config.lease.redis_url.endswith("/0") and "hunter2" not in repr(config)
