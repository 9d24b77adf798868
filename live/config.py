"""The live runner's one config file (TOML): validated once at start, refused with a clear message.

Strategies and risk limits feed the shared decision layer; the rest says where bars come from,
where orders go, where state lives, who leads, and what is exported.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from live.broker import TIMEFRAME_SECONDS
from live.guards import GuardLimits
from live.lease import lease_timing
from live.notify.config import NotifyConfig, parse_notify
from live.store.db import resolve_sqlite_url
from quantshift.errors import ConfigError
from quantshift.portfolio import PortfolioConfig

BROKERS = ("paper", "alpaca", "coinbase")
FEEDS = ("replay", "venue")
MODES = ("paper", "live")
MARKETS = ("equities", "crypto")
_INTERVALS = TIMEFRAME_SECONDS


@dataclass(frozen=True, kw_only=True)
class FeedConfig:
    """Where closed bars come from. ``replay`` plays a data set bar by bar; ``speed`` is bars per
    second (0: as fast as the cycle runs). ``venue`` polls the broker's own bars on the wall
    clock: ``history_bars`` of warm-up, a poll every ``poll_s``, a bar asked for ``settle_s``
    after its close, and a symbol without a bar waited for ``late_after_s``."""

    kind: str = "replay"
    source: str = "builtin:sp500"
    start: str | None = None
    end: str | None = None
    speed: float = 0.0
    history_bars: int = 500
    poll_s: float = 5.0
    settle_s: float = 2.0
    late_after_s: float = 60.0


@dataclass(frozen=True, kw_only=True)
class BrokerConfig:
    """Where orders go, and whether real money is at stake (``mode``)."""

    kind: str = "paper"
    mode: str = "paper"
    # Venue settings, validated by the venue's adapter (they may name secrets' sources).
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, kw_only=True)
class LeaseConfig:
    """Primary/standby: a Redis lease, or none (single host, guarded by a local lock)."""

    redis_url: str | None = field(default=None, repr=False)  # may carry a password
    name: str = "quantshift"
    ttl_ms: int = 3000
    renew_interval_ms: int = 1000
    deadline_ms: int | None = None


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    """The Prometheus exporter (bound to localhost unless told otherwise)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9200


@dataclass(frozen=True, kw_only=True)
class LiveConfig:
    """A validated live runner configuration."""

    name: str
    market: str
    mode: str
    bar_interval_s: int
    warmup_bars: int | None
    portfolio: PortfolioConfig
    feed: FeedConfig
    broker: BrokerConfig
    promotions: Mapping[str, str]
    """Sleeve name -> promotion record name, for sleeves whose parameters come from records."""
    store_url: str
    lease: LeaseConfig
    guards: GuardLimits
    metrics: MetricsConfig
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    path: Path | None = None


_TOP = {
    "runner",
    "sleeves",
    "risk",
    "costs",
    "feed",
    "broker",
    "store",
    "lease",
    "guards",
    "metrics",
    "notify",
}


def load_config(path: str | os.PathLike) -> LiveConfig:
    """Read and validate a live config file; every error names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: live config not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, source=str(path), path=path)


def parse_config(
    raw: Mapping[str, Any], *, source: str = "<live config>", path: Path | None = None
) -> LiveConfig:
    """Validate a config already parsed into dicts (``load_config`` reads the file)."""
    _keys(source, "", raw, _TOP)
    runner = _table(source, raw, "runner", required=True)
    _keys(source, "runner", runner, {"name", "market", "mode", "bar_interval", "warmup_bars"})
    name = _string(source, "runner", runner, "name", required=True)
    market = _choice(source, "runner", runner, "market", MARKETS, "equities")
    mode = _choice(source, "runner", runner, "mode", MODES, "paper")
    interval = runner.get("bar_interval", "1d")
    if interval not in _INTERVALS:
        raise _error(source, "runner", "bar_interval", f"must be one of {', '.join(_INTERVALS)}")
    warmup = runner.get("warmup_bars")
    if warmup is not None and (not isinstance(warmup, int) or warmup < 1):
        raise _error(source, "runner", "warmup_bars", f"must be a positive integer, got {warmup!r}")

    sleeves = raw.get("sleeves")
    if not isinstance(sleeves, list) or not sleeves:
        raise ConfigError(f"{source}: [[sleeves]] must list at least one strategy")
    # `promotion = "<name>"`: the sleeve trades the active promotion record of that name for
    # this mode's stage; the runner adopts records at cycle boundaries.
    promotion_names = []
    for i, sleeve in enumerate(sleeves):
        if not isinstance(sleeve, Mapping):
            raise ConfigError(f"{source}: [[sleeves]] #{i + 1} must be a table")
        promoted = sleeve.get("promotion")
        if promoted is not None and (not isinstance(promoted, str) or not promoted.strip()):
            raise ConfigError(
                f"{source}: [[sleeves]] #{i + 1} promotion must be a record name, got {promoted!r}"
            )
        promotion_names.append(promoted)
    sleeves = [{k: v for k, v in s.items() if k != "promotion"} for s in sleeves]
    risk = _table(source, raw, "risk")
    conflict = risk.pop("conflict", "net")
    portfolio = PortfolioConfig.from_dict(
        {
            "sleeves": sleeves,
            "sim": _table(source, raw, "costs"),
            "limits": risk,
            "conflict": conflict,
        },
        source=source,
    )

    feed_raw = _table(source, raw, "feed")
    venue_keys = {"history_bars", "poll_s", "settle_s", "late_after_s"}
    replay_keys = {"source", "start", "end", "speed"}
    _keys(source, "feed", feed_raw, {"kind"} | venue_keys | replay_keys)
    feed_kind = _choice(source, "feed", feed_raw, "kind", FEEDS, "replay")
    wrong = sorted(set(feed_raw) & (replay_keys if feed_kind == "venue" else venue_keys))
    if wrong:
        raise _error(source, "feed", wrong[0], f"does not apply to a {feed_kind!r} feed")
    timing = {}
    for key in sorted(venue_keys & set(feed_raw)):
        value = feed_raw[key]
        integer = key == "history_bars"
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or value <= 0:
            raise _error(source, "feed", key, f"must be a positive number, got {value!r}")
        timing[key] = int(value) if integer else float(value)
    speed = feed_raw.get("speed", 0.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or speed < 0:
        raise _error(source, "feed", "speed", f"must be bars per second >= 0, got {speed!r}")
    feed = FeedConfig(
        kind=feed_kind,
        **timing,
        source=_string(source, "feed", feed_raw, "source") or "builtin:sp500",
        start=_string(source, "feed", feed_raw, "start"),
        end=_string(source, "feed", feed_raw, "end"),
        speed=float(speed),
    )

    broker_raw = _table(source, raw, "broker")
    kind = _choice(source, "broker", broker_raw, "kind", BROKERS, "paper")
    broker_mode = _choice(source, "broker", broker_raw, "mode", MODES, "paper")
    if broker_mode != mode:
        raise ConfigError(
            f"{source}: [runner] mode is {mode!r} but [broker] mode is {broker_mode!r}; "
            "live and paper must agree (a paper config never reaches a live account)"
        )
    if kind == "paper" and mode == "live":
        raise ConfigError(f"{source}: [broker] kind 'paper' cannot run with mode 'live'")
    options = {k: v for k, v in broker_raw.items() if k not in ("kind", "mode")}
    if kind == "paper" and options:
        raise _error(source, "broker", sorted(options)[0], "unknown key for the paper broker")
    if feed.kind == "venue" and kind == "paper":
        raise _error(
            source,
            "feed",
            "kind",
            "a 'venue' feed reads a venue's bars: set [broker] kind to alpaca or coinbase "
            "(the paper broker replays a data set)",
        )

    store_raw = _table(source, raw, "store")
    _keys(source, "store", store_raw, {"url"})
    store_url = _string(source, "store", store_raw, "url") or "sqlite:///data/live/state.db"
    if not store_url.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
        raise _error(source, "store", "url", "must be sqlite:///PATH or postgresql://...")
    if path is not None:
        # Every command reading this file (run, halt, status, ...) must reach one database,
        # whatever directory it runs in: a relative SQLite path is relative to the file.
        try:
            store_url = resolve_sqlite_url(store_url, path.resolve().parent)
        except ConfigError as exc:
            raise _error(source, "store", "url", str(exc)) from None

    lease_raw = _table(source, raw, "lease")
    _keys(
        source,
        "lease",
        lease_raw,
        {"redis_url", "name", "ttl_ms", "renew_interval_ms", "deadline_ms"},
    )
    ttl_ms = _positive_int(source, "lease", lease_raw, "ttl_ms", 3000)
    renew_ms = _positive_int(source, "lease", lease_raw, "renew_interval_ms", 1000)
    deadline_ms = lease_raw.get("deadline_ms")
    try:
        lease_timing(ttl_ms, renew_ms, deadline_ms)
    except ConfigError as exc:
        raise ConfigError(f"{source}: [lease] {exc}") from None
    redis_url = _string(source, "lease", lease_raw, "redis_url")
    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise _error(source, "lease", "redis_url", "must be redis://host:port/db")
    lease = LeaseConfig(
        redis_url=redis_url,
        name=_string(source, "lease", lease_raw, "name") or name,
        ttl_ms=ttl_ms,
        renew_interval_ms=renew_ms,
        deadline_ms=deadline_ms,
    )

    guards = GuardLimits.from_dict(_table(source, raw, "guards"), source=f"{source}: [guards]")
    metrics_raw = _table(source, raw, "metrics")
    _keys(source, "metrics", metrics_raw, {"enabled", "host", "port"})
    port = metrics_raw.get("port", 9200)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise _error(source, "metrics", "port", f"must be 0-65535, got {port!r}")
    enabled = metrics_raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _error(source, "metrics", "enabled", "must be true or false")
    metrics = MetricsConfig(
        enabled=enabled,
        host=_string(source, "metrics", metrics_raw, "host") or "127.0.0.1",
        port=port,
    )
    return LiveConfig(
        name=name,
        market=market,
        mode=mode,
        bar_interval_s=_INTERVALS[interval],
        warmup_bars=warmup,
        portfolio=portfolio,
        feed=feed,
        broker=BrokerConfig(kind=kind, mode=broker_mode, options=options),
        promotions={
            sleeve.name: promoted
            for sleeve, promoted in zip(portfolio.sleeves, promotion_names, strict=True)
            if promoted is not None
        },
        store_url=store_url,
        lease=lease,
        guards=guards,
        metrics=metrics,
        notify=parse_notify(_table(source, raw, "notify"), source),
        path=path,
    )


def _error(source: str, section: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: [{section}] {key}: {problem}")


def _keys(source: str, section: str, raw: Mapping[str, Any], allowed: set[str]) -> None:
    for key in raw:
        if key not in allowed:
            where = f"[{section}] {key}" if section else key
            kind = "key" if section else "section"
            raise ConfigError(
                f"{source}: {where}: unknown {kind}; allowed: {', '.join(sorted(allowed))}"
            )


def _table(source: str, raw: Mapping[str, Any], key: str, required: bool = False) -> dict:
    value = raw.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{source}: missing section [{key}]")
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: [{key}] must be a table")
    return dict(value)


def _string(source, section, raw, key, required=False) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise _error(source, section, key, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise _error(source, section, key, f"must be a non-empty string, got {value!r}")
    return value


def _choice(source, section, raw, key, allowed, default) -> str:
    value = raw.get(key, default)
    if value not in allowed:
        raise _error(source, section, key, f"must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _positive_int(source, section, raw, key, default) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _error(source, section, key, f"must be a positive integer, got {value!r}")
    return value
