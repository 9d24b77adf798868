"""The live runner's one config file (TOML): validated once at start, refused with a clear message.

Strategies and risk limits feed the shared decision layer; the rest says where bars come from,
where orders go, where state lives, who leads, and what is exported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from live.broker import TIMEFRAME_SECONDS
from live.guards import GuardLimits
from live.lease import lease_timing
from live.notify.config import NotifyConfig, parse_notify
from live.store.db import resolve_sqlite_url
from quantshift.errors import ConfigError, QuantShiftError
from quantshift.portfolio import PortfolioConfig
from quantshift.portfolio.config import OVERLAY_TABLES
from quantshift.sentiment import DEFAULT_LOOKBACK, DEFAULT_TTL_S, SCORERS
from quantshift.strategies import add_strategy_path, get_strategy
from quantshift.strategies.loading import (
    absolute_reference,
    is_reference,
    resolve_path,
    strategy_path_entries,
)
from quantshift.tables import Table, is_number, read_toml

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
    after its close, and a symbol without a bar waited for ``late_after_s``; with ``stream``
    each bar comes from the venue's stream as it closes (REST backfills after a reconnect)."""

    kind: str = "replay"
    source: str = "builtin:sp500"
    start: str | None = None
    end: str | None = None
    speed: float = 0.0
    history_bars: int = 500
    poll_s: float = 5.0
    settle_s: float = 2.0
    late_after_s: float = 60.0
    stream: bool = False


@dataclass(frozen=True, kw_only=True)
class RegimeModelConfig:
    """The registered regime model that labels each bar for ``[regimes]``: ``name`` at the
    pinned ``version`` (never "latest") in the MLflow store ``tracking_uri`` (default:
    ``MLFLOW_TRACKING_URI``), downloaded once under ``cache_dir`` (default: the data folder)."""

    name: str
    version: str
    tracking_uri: str | None = field(default=None, repr=False)  # may carry a password
    cache_dir: str | None = None


NEWS_SOURCES = ("file", "alpaca")


@dataclass(frozen=True, kw_only=True)
class NewsConfig:
    """Where ``[sentiment]`` scores come from: a ``file`` of headlines (CSV or JSON; replays) or
    Alpaca's news API; headlines scored by ``scorer`` ("lexicon", or "finbert" with the
    weights in ``finbert_path``) through a ``ttl_s`` cache, each symbol's mean over
    ``lookback`` before a bar's close (only news published before the close counts)."""

    source: str = "file"
    file: str | None = None
    scorer: str = "lexicon"
    finbert_path: str | None = None
    ttl_s: float = DEFAULT_TTL_S
    lookback: str = DEFAULT_LOOKBACK


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
    drift_interval_s: float = 300.0  # least time between two drift computations (0: every bar)


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
    regime_model: RegimeModelConfig | None = None
    news: NewsConfig | None = None
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
    *OVERLAY_TABLES,  # [sectors], [regimes], [sentiment]: quantshift.portfolio.overlay
    "regime_model",  # where [regimes] labels come from (live.inputs)
    "news",  # where [sentiment] scores come from (live.inputs)
}


def load_config(path: str | os.PathLike) -> LiveConfig:
    """Read and validate a live config file; every error names the file and the key."""
    top, _ = read_toml(path, "live config")
    return parse_config(top.raw, source=top.source, path=Path(path))


def _user_strategies(runner: Table, sleeves: list[Table], path: Path | None) -> list[Table]:
    """Load ``[runner] strategy_path`` and sleeves' strategy references (``file.py:STRATEGY``,
    ``module:STRATEGY``; relative to this file); return the sleeves naming strategies by name."""
    base = None if path is None else path.resolve().parent
    try:
        add_strategy_path(strategy_path_entries(runner.get("strategy_path", []), base))
    except QuantShiftError as exc:
        raise runner.error("strategy_path", str(exc)) from None
    out = []
    for sleeve in sleeves:
        named = sleeve.get("strategy")
        if isinstance(named, str) and is_reference(named):
            try:
                named = get_strategy(absolute_reference(named, base)).name
            except QuantShiftError as exc:
                raise sleeve.error("strategy", str(exc)) from None
            sleeve = Table({**sleeve.raw, "strategy": named}, sleeve.source, sleeve.name)
        out.append(sleeve)
    return out


def parse_config(
    raw: Mapping[str, Any], *, source: str = "<live config>", path: Path | None = None
) -> LiveConfig:
    """Validate a config already parsed into dicts (``load_config`` reads the file)."""
    top = Table(raw, source)
    top.refuse_unknown(_TOP)
    runner = top.table("runner", required=True)
    runner.refuse_unknown(
        {"name", "market", "mode", "bar_interval", "warmup_bars", "strategy_path"}
    )
    name = runner.string("name", required=True)
    market = runner.choice("market", MARKETS, "equities")
    mode = runner.choice("mode", MODES, "paper")
    interval = runner.choice("bar_interval", _INTERVALS, "1d")
    warmup = runner.integer("warmup_bars", None, minimum=1)

    # `promotion = "<name>"`: the sleeve trades the active promotion record of that name for
    # this mode's stage; the runner adopts records at cycle boundaries.
    sleeves = _user_strategies(runner, top.tables("sleeves"), path)
    promotion_names = [sleeve.string("promotion") for sleeve in sleeves]
    risk = top.table("risk")
    costs = top.table("costs")
    if costs.raw.get("size_at", "decision") != "decision":
        raise costs.error(
            "size_at",
            "a live runner sizes at the decision: a venue's market order names its units "
            "before the open (remove the key, or set 'decision')",
        )
    portfolio = PortfolioConfig.from_tables(
        sleeves=[sleeve.without("promotion") for sleeve in sleeves],
        sim=Table({**costs.raw, "size_at": "decision"}, costs.source, costs.name),
        limits=risk.without("conflict"),
        conflict_in=risk,
        overlay_in=top,
        base_dir=None if path is None else path.resolve().parent,  # [sectors] file
    )
    if warmup is not None and warmup < portfolio.limits.history_rows:
        raise runner.error(
            "warmup_bars",
            f"the correlation limit reads {portfolio.limits.history_rows} closes "
            "([risk] correlation_window_bars + 1); set at least that many",
        )

    feed_table = top.table("feed")
    venue_keys = {"history_bars", "poll_s", "settle_s", "late_after_s", "stream"}
    replay_keys = {"source", "start", "end", "speed"}
    feed_table.refuse_unknown({"kind"} | venue_keys | replay_keys)
    feed_kind = feed_table.choice("kind", FEEDS, "replay")
    wrong = sorted(set(feed_table.raw) & (replay_keys if feed_kind == "venue" else venue_keys))
    if wrong:
        raise feed_table.error(wrong[0], f"does not apply to a {feed_kind!r} feed")
    timing = {}
    stream = feed_table.boolean("stream", False)
    for key in sorted((venue_keys - {"stream"}) & set(feed_table.raw)):
        value = feed_table.get(key)
        integer = key == "history_bars"
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or value <= 0:
            raise feed_table.error(key, f"must be a positive number, got {value!r}")
        timing[key] = int(value) if integer else float(value)
    speed = feed_table.get("speed", 0.0)
    if not is_number(speed) or speed < 0:
        raise feed_table.error("speed", f"must be bars per second >= 0, got {speed!r}")
    feed = FeedConfig(
        kind=feed_kind,
        **timing,
        source=feed_table.string("source") or "builtin:sp500",
        start=feed_table.string("start"),
        end=feed_table.string("end"),
        speed=float(speed),
        stream=stream,
    )

    broker_table = top.table("broker")
    kind = broker_table.choice("kind", BROKERS, "paper")
    broker_mode = broker_table.choice("mode", MODES, "paper")
    if broker_mode != mode:
        raise ConfigError(
            f"{source}: [runner] mode is {mode!r} but [broker] mode is {broker_mode!r}; "
            "live and paper must agree (a paper config never reaches a live account)"
        )
    if kind == "paper" and mode == "live":
        raise ConfigError(f"{source}: [broker] kind 'paper' cannot run with mode 'live'")
    options = broker_table.without("kind", "mode").raw
    if kind == "paper" and options:
        raise broker_table.error(sorted(options)[0], "unknown key for the paper broker")
    if feed.kind == "venue" and kind == "paper":
        raise feed_table.error(
            "kind",
            "a 'venue' feed reads a venue's bars: set [broker] kind to alpaca or coinbase "
            "(the paper broker replays a data set)",
        )

    store_table = top.table("store")
    store_table.refuse_unknown({"url"})
    store_url = store_table.string("url") or "sqlite:///data/live/state.db"
    if not store_url.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
        raise store_table.error("url", "must be sqlite:///PATH or postgresql://...")
    if path is not None:
        # Every command reading this file (run, halt, status, ...) must reach one database,
        # whatever directory it runs in: a relative SQLite path is relative to the file.
        try:
            store_url = resolve_sqlite_url(store_url, path.resolve().parent)
        except ConfigError as exc:
            raise store_table.error("url", str(exc)) from None

    lease_table = top.table("lease")
    lease_table.refuse_unknown({"redis_url", "name", "ttl_ms", "renew_interval_ms", "deadline_ms"})
    ttl_ms = lease_table.integer("ttl_ms", 3000, minimum=1)
    renew_ms = lease_table.integer("renew_interval_ms", 1000, minimum=1)
    deadline_ms = lease_table.get("deadline_ms")
    try:
        lease_timing(ttl_ms, renew_ms, deadline_ms)
    except ConfigError as exc:
        raise lease_table.table_error(str(exc)) from None
    redis_url = lease_table.string("redis_url")
    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise lease_table.error("redis_url", "must be redis://host:port/db")
    lease = LeaseConfig(
        redis_url=redis_url,
        name=lease_table.string("name") or name,
        ttl_ms=ttl_ms,
        renew_interval_ms=renew_ms,
        deadline_ms=deadline_ms,
    )

    guards = GuardLimits.from_table(top.table("guards"))
    metrics_table = top.table("metrics")
    metrics_table.refuse_unknown({"enabled", "host", "port", "drift_interval_s"})
    port = metrics_table.get("port", 9200)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise metrics_table.error("port", f"must be 0-65535, got {port!r}")
    metrics = MetricsConfig(
        enabled=metrics_table.boolean("enabled", True),
        host=metrics_table.string("host") or "127.0.0.1",
        port=port,
        drift_interval_s=metrics_table.seconds(
            "drift_interval_s", MetricsConfig.drift_interval_s, "0: every bar"
        ),
    )
    base = None if path is None else path.resolve().parent
    regime_model, news = _overlay_sources(top, portfolio, base, source)
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
        notify=parse_notify(top.table("notify")),
        regime_model=regime_model,
        news=news,
        path=path,
    )


def _overlay_sources(top: Table, portfolio: PortfolioConfig, base: Path | None, source: str):
    """``[regime_model]`` and ``[news]``: each required by its overlay table and refused
    without it (nothing would read it)."""
    regime_table, news_table = top.table("regime_model"), top.table("news")
    regime_model = news = None
    if regime_table.raw:
        regime_table.refuse_unknown({"name", "version", "tracking_uri", "cache_dir"})
        version = regime_table.get("version")
        if isinstance(version, int) and not isinstance(version, bool):
            version = str(version)
        if not (isinstance(version, str) and version.isdigit()):
            raise regime_table.error(
                "version", f"must be a registered version number (a runner trades a pinned "
                f"version, never 'latest'), got {version!r}"
            )  # fmt: skip
        cache = regime_table.string("cache_dir")
        regime_model = RegimeModelConfig(
            name=regime_table.string("name", required=True),
            version=version,
            tracking_uri=regime_table.string("tracking_uri"),
            cache_dir=None if cache is None else str(resolve_path(cache, base)),
        )
    if news_table.raw:
        news_table.refuse_unknown({"source", "file", "scorer", "finbert_path", "ttl_s", "lookback"})
        kind = news_table.choice("source", NEWS_SOURCES, "file")
        file = news_table.string("file")
        if (kind == "file") != (file is not None):
            raise news_table.error("file", "names the headlines file of source 'file' (only)")
        weights = news_table.string("finbert_path")
        news = NewsConfig(
            source=kind,
            file=None if file is None else str(resolve_path(file, base)),
            scorer=news_table.choice("scorer", SCORERS, "lexicon"),
            finbert_path=None if weights is None else str(resolve_path(weights, base)),
            ttl_s=news_table.seconds("ttl_s", DEFAULT_TTL_S, "0: no cache"),
            lookback=news_table.string("lookback") or DEFAULT_LOOKBACK,
        )
    for table, needed, made, what in (
        ("regimes", portfolio.regimes, regime_model, "[regime_model] name and version"),
        ("sentiment", portfolio.sentiment, news, "[news] (a headlines file, or Alpaca's news)"),
    ):
        if needed is not None and made is None:
            raise ConfigError(f"{source}: [{table}] needs {what}: where its input comes from")
        if needed is None and made is not None:
            raise ConfigError(f"{source}: {what.split()[0]} without [{table}]: nothing reads it")
    return regime_model, news
