"""Prometheus metrics of one live runner: its own registry, an HTTP exporter on localhost that
also answers the health checks (``/healthz``, ``/readyz``, ``/leader``).

Label values are bounded: order outcomes and HALT reasons come from fixed lists, sleeves and
symbols from the config.
"""

from __future__ import annotations

import math
import socket
import socketserver
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest, make_wsgi_app

from live.guards import GUARDS
from quantshift.errors import ConfigError

ORDER_OUTCOMES = ("submitted", "filled", "rejected", "unknown", "blocked_by_guard")
PROTECTION_OUTCOMES = ("reprotected", "orphan_cancelled", "market_fallback")
"""What reconciliation of resting protective orders did: a naked position protected again, a
resting order without its position cancelled, a stop the market went through that still
rested unfilled cancelled for a market exit."""
"""Outcomes an order is counted under (``unknown``: the broker's answer was ambiguous)."""

HALT_REASONS = (
    *GUARDS,
    "daily_loss_limit",
    "max_drawdown",
    "manual",
    "reconcile_mismatch",
    "runner_error",
)
"""HALT reasons: a guard name, a circuit breaker, ``live halt``, positions that differ from the
venue's, or a runner failure."""

CYCLE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Cycle duration histogram buckets (seconds); the decision goal is 20 ms."""

SLIPPAGE_BUCKETS_BPS = (-50.0, -20.0, -10.0, -5.0, -2.0, 0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0,
                        15.0, 20.0, 30.0, 50.0, 100.0, 200.0)  # fmt: skip
"""Realised slippage histogram buckets (bps). Above 1 bps each bound is at most twice the one
below, so fills that slip exactly the assumed amount never put a quantile above twice it."""

SLIPPAGE_PRECISION_BPS = 1e-6
"""Realised slippage is rounded to this: a fill at exactly the assumed slippage lands in the
bucket bounded by it, not one above through float noise."""

DEFAULT_PORT = 9200

HEALTH_PATHS = ("/healthz", "/readyz", "/leader")
"""Health checks served next to ``/metrics``: alive, ready to lead, and leading."""


class _QuietHandler(WSGIRequestHandler):
    """Serve without a stderr line per scrape (the runner's own logs say what matters)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class MetricsServer:
    """A running exporter; ``port`` is the bound port (useful after asking for port 0)."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        """The scrape URL."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _GaugeOnceSet:
    """A gauge with no sample until its first value: a runner exports no portfolio value
    before its first cycle, where a 0 would fire every alert on a restart."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.value: float | None = None
        registry.register(self)

    def set(self, value: float) -> None:
        self.value = float(value)

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation)
        if self.value is not None:
            family.add_metric([], self.value)
        yield family


class LiveMetrics:
    """The metrics one runner exports, in a registry of its own (never the global one).

    Parameters
    ----------
    sleeves : iterable of str, optional
        The runner's sleeves. When given, their series start at 0 and any other sleeve
        name is refused (bounded label values); when None any name is accepted.
    namespace : str
        Prefix of every metric name.
    """

    def __init__(
        self, sleeves: Iterable[str] | None = None, *, namespace: str = "quantshift_live"
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.sleeves = None if sleeves is None else tuple(sleeves)
        r, ns = self.registry, namespace
        self._heartbeat = Gauge(
            f"{ns}_heartbeat_timestamp_seconds", "Last heartbeat, UTC epoch seconds", registry=r
        )
        self._cycle = Histogram(
            f"{ns}_cycle_duration_seconds",
            "Duration of one cycle (bars in to state persisted)",
            buckets=CYCLE_BUCKETS_S,
            registry=r,
        )
        self._portfolio_value = _GaugeOnceSet(
            f"{ns}_portfolio_value", "Portfolio value (account currency)", r
        )
        self._daily_pnl = _GaugeOnceSet(f"{ns}_daily_pnl", "P&L since the day began", r)
        self._open_positions = Gauge(f"{ns}_open_positions", "Open positions", registry=r)
        self._signals = Counter(f"{ns}_signals", "Signals by sleeve", ["sleeve"], registry=r)
        self._orders = Counter(
            f"{ns}_orders", "Orders by sleeve and outcome", ["sleeve", "outcome"], registry=r
        )
        self._protection = Counter(
            f"{ns}_protection_repairs",
            "Resting protective orders repaired by reconciliation, by sleeve and outcome",
            ["sleeve", "outcome"],
            registry=r,
        )
        self._leader = Gauge(f"{ns}_leader", "1 while this runner holds the lease", registry=r)
        self._epoch = Gauge(f"{ns}_epoch", "Fencing epoch of the current or last term", registry=r)
        self._halt_active = Gauge(f"{ns}_halt_active", "1 while a HALT is in force", registry=r)
        self._halts = Counter(f"{ns}_halts", "HALTs raised, by reason", ["reason"], registry=r)
        self._promoted = Info(
            f"{ns}_promoted_record", "Promotion record in use", ["sleeve"], registry=r
        )
        self._forced = Gauge(
            f"{ns}_record_forced",
            "1 while the sleeve trades a promotion record FORCED past a failed gate",
            ["sleeve"],
            registry=r,
        )
        self._terms = Counter(
            f"{ns}_leader_terms", "Terms this runner won (lease acquisitions)", registry=r
        )
        self._ready = Gauge(
            f"{ns}_ready", "1 while the feed is warm and the store answered last", registry=r
        )
        self._last_bar = Gauge(
            f"{ns}_last_bar_timestamp_seconds", "Time of the last bar decided on", registry=r
        )
        self._data_age = Gauge(
            f"{ns}_data_age_intervals",
            "Bar intervals the market traded since the last bar decided on",
            registry=r,
        )
        self._data_age.set_function(self._data_age_intervals)
        self._bar_interval = Gauge(
            f"{ns}_bar_interval_seconds", "The runner's bar interval", registry=r
        )
        self._drawdown = Gauge(
            f"{ns}_drawdown_pct", "Drawdown from the peak equity (percent)", registry=r
        )
        self._daily_loss = Gauge(
            f"{ns}_daily_loss_pct", "Loss since the day began (percent of its start)", registry=r
        )
        self._breaker_limit = Gauge(
            f"{ns}_breaker_limit_pct",
            "Circuit breaker limits (percent; +Inf: off)",
            ["breaker"],
            registry=r,
        )
        self._sleeve_equity = Gauge(
            f"{ns}_sleeve_equity", "Equity of each sleeve (account currency)", ["sleeve"],
            registry=r,
        )  # fmt: skip
        self._position = Gauge(
            f"{ns}_position_units", "Open position (signed units)", ["sleeve", "symbol"],
            registry=r,
        )  # fmt: skip
        # Execution against the backtest: realised slippage of each fill and the drift of the
        # live P&L from the backtest of the same bars (live.drift computes it).
        self._slippage = Histogram(
            f"{ns}_fill_slippage_bps",
            "Realised slippage of each market-order fill against the price the fill model slips "
            "from (the open after the decision), bps, positive is worse",
            ["sleeve", "symbol"],
            buckets=SLIPPAGE_BUCKETS_BPS,
            registry=r,
        )
        self._assumed_slippage = _GaugeOnceSet(
            f"{ns}_assumed_slippage_bps", "Slippage the backtest and fill model assume (bps)", r
        )
        self._drift_pnl = Gauge(
            f"{ns}_drift_pnl",
            "Live minus backtest P&L of the trades closed since the first decision "
            "(account currency)",
            ["sleeve", "symbol"],
            registry=r,
        )
        self._drift_pct = Gauge(
            f"{ns}_drift_pct",
            "Live minus backtest P&L in percent of the starting cash (sums to the drift of "
            "`live divergence`)",
            ["sleeve", "symbol"],
            registry=r,
        )
        self._drift_equity = _GaugeOnceSet(
            f"{ns}_drift_equity_pct",
            "Live against backtest portfolio equity at the last computation (percent)",
            r,
        )
        self._drift_bar = _GaugeOnceSet(
            f"{ns}_drift_bar_timestamp_seconds", "Last bar the drift was computed at", r
        )
        self._drift_seconds = _GaugeOnceSet(
            f"{ns}_drift_computation_seconds", "Duration of the last drift computation", r
        )
        self._clock: Any = None
        self._last_bar_ns: int | None = None
        self._warm = self._store_ok = self._is_leader = False
        self._epoch_value: int | None = None
        self._halted = False
        self._promoted_sleeves: set[str] = set()
        self._cycle_started_s: float | None = None
        for sleeve in self.sleeves or ():
            self._signals.labels(sleeve=sleeve)
            for outcome in ORDER_OUTCOMES:
                self._orders.labels(sleeve=sleeve, outcome=outcome)
        for reason in HALT_REASONS:
            self._halts.labels(reason=reason)

    def _sleeve(self, sleeve: str) -> str:
        if not isinstance(sleeve, str) or not sleeve:
            raise ConfigError(f"metrics: sleeve must be a non-empty string, got {sleeve!r}")
        if self.sleeves is not None and sleeve not in self.sleeves:
            raise ConfigError(
                f"metrics: unknown sleeve {sleeve!r}; known: {', '.join(self.sleeves)}"
            )
        return sleeve

    def heartbeat(self, ts_s: float | None = None) -> None:
        """Record a heartbeat at ``ts_s`` (UTC epoch seconds; now by default).

        The runner calls it after writing its heartbeat to the store: the store answered."""
        self._heartbeat.set(time.time() if ts_s is None else ts_s)
        self.set_store_reachable(True)

    def set_store_reachable(self, reachable: bool) -> None:
        """Export whether the store answered the last write (part of readiness)."""
        self._store_ok = bool(reachable)
        self._ready.set(1 if self.ready else 0)

    def started(self, clock: Any = None, limits: Any = None) -> None:
        """Mark the runner started: its feed holds the warm-up bars.

        Parameters
        ----------
        clock : live.clock.MarketClock, optional
            Counts the traded intervals since the last bar (``data_age_intervals``).
        limits : quantshift.portfolio.RiskLimits, optional
            The circuit breakers, exported next to how close the portfolio is to them.
        """
        self._clock = clock
        if clock is not None:
            self._bar_interval.set(clock.bar_interval_s)
        if limits is not None:
            self._breaker_limit.labels(breaker="max_drawdown").set(limits.max_drawdown_pct)
            self._breaker_limit.labels(breaker="daily_loss_limit").set(limits.daily_loss_limit_pct)
        self._warm = True
        self._ready.set(1 if self.ready else 0)

    @property
    def ready(self) -> bool:
        """Whether the runner could lead now: feed warm and store reachable."""
        return self._warm and self._store_ok

    @property
    def is_leader(self) -> bool:
        """Whether this runner holds the lease (as last exported)."""
        return self._is_leader

    def set_state(self, state: Any, ts_ns: int) -> None:
        """Export a portfolio state decided at bar ``ts_ns``: positions, sleeve equity, and
        drawdown and the day's loss against the circuit breakers."""
        self._last_bar_ns = int(ts_ns)
        self._last_bar.set(ts_ns / 1e9)
        equity, peak, day_start = state.equity_usd, state.peak_equity, state.day_start_equity
        self._drawdown.set(max(0.0, 100.0 * (peak - equity) / peak) if peak > 0 else 0.0)
        self._daily_loss.set(
            max(0.0, 100.0 * (day_start - equity) / day_start) if day_start > 0 else 0.0
        )
        for sleeve, value in state.sleeve_equity().items():
            self._sleeve_equity.labels(sleeve=self._sleeve(sleeve)).set(value)
        held = {(p.sleeve, p.symbol): p.units for p in state.positions()}
        # Every (sleeve, symbol) of the config has a series, 0 while flat: bounded, and a
        # closed position reads 0 rather than vanishing.
        for sleeve in state.sleeves:
            for symbol in state.symbols:
                units = held.get((sleeve, symbol), 0.0)
                self._position.labels(sleeve=self._sleeve(sleeve), symbol=symbol).set(units)

    def _data_age_intervals(self) -> float:
        if self._last_bar_ns is None or self._clock is None:
            return 0.0  # no bar decided on yet (or no clock to count with): nothing is late
        return float(self._clock.intervals_between(self._last_bar_ns, time.time_ns()))

    def cycle_started(self) -> None:
        """Mark the start of a cycle (or use :meth:`cycle`)."""
        self._cycle_started_s = time.perf_counter()

    def cycle_finished(self) -> float:
        """Record the cycle begun by :meth:`cycle_started`; return its duration (s)."""
        if self._cycle_started_s is None:
            raise ConfigError("metrics: cycle_finished() without cycle_started()")
        duration_s = time.perf_counter() - self._cycle_started_s
        self._cycle_started_s = None
        self._cycle.observe(duration_s)
        return duration_s

    @contextmanager
    def cycle(self) -> Iterator[None]:
        """Time the enclosed cycle, also when it raises."""
        self.cycle_started()
        try:
            yield
        finally:
            self.cycle_finished()

    def record_signal(self, sleeve: str, count: int = 1) -> None:
        """Count ``count`` signals of ``sleeve``."""
        self._signals.labels(sleeve=self._sleeve(sleeve)).inc(count)

    def record_order(self, sleeve: str, outcome: str, count: int = 1) -> None:
        """Count orders of ``sleeve`` under ``outcome`` (one of :data:`ORDER_OUTCOMES`)."""
        if outcome not in ORDER_OUTCOMES:
            raise ConfigError(
                f"metrics: unknown order outcome {outcome!r}; allowed: {', '.join(ORDER_OUTCOMES)}"
            )
        self._orders.labels(sleeve=self._sleeve(sleeve), outcome=outcome).inc(count)

    def record_protection(self, sleeve: str, outcome: str) -> None:
        """Count a repair of resting protection (one of :data:`PROTECTION_OUTCOMES`)."""
        if outcome not in PROTECTION_OUTCOMES:
            raise ConfigError(f"metrics: unknown protection outcome {outcome!r}; allowed: "
                              f"{', '.join(PROTECTION_OUTCOMES)}")  # fmt: skip
        self._protection.labels(sleeve=self._sleeve(sleeve), outcome=outcome).inc()

    def set_leader(self, is_leader: bool, epoch: int | None) -> None:
        """Export leadership (0/1) and the epoch (left unchanged when ``epoch`` is None)."""
        self._leader.set(1 if is_leader else 0)
        if is_leader and (not self._is_leader or epoch != self._epoch_value):
            self._terms.inc()
        self._is_leader = bool(is_leader)
        if epoch is not None:
            self._epoch.set(epoch)
            self._epoch_value = epoch

    def set_portfolio(self, value: float, daily_pnl: float, open_positions: int) -> None:
        """Export portfolio value, P&L of the day and the number of open positions."""
        self._portfolio_value.set(value)
        self._daily_pnl.set(daily_pnl)
        self._open_positions.set(open_positions)

    def set_halt(self, active: bool, reason: str | None = None) -> None:
        """Export the HALT state; a HALT's start counts once under ``reason``.

        ``reason`` (one of :data:`HALT_REASONS`) is required when ``active``. Calling again
        while halted (every cycle, or after a restart found the HALT in the store) does not
        count again.
        """
        if active:
            if reason not in HALT_REASONS:
                raise ConfigError(
                    f"metrics: unknown HALT reason {reason!r}; allowed: {', '.join(HALT_REASONS)}"
                )
            if not self._halted:
                self._halts.labels(reason=reason).inc()
        self._halted = bool(active)
        self._halt_active.set(1 if active else 0)

    def set_promoted(self, sleeve: str, record_id: str | None, *, forced: bool = False) -> None:
        """Export the promotion record ``sleeve`` trades (None: parameters from the config),
        and whether it was FORCED past a failed gate (``record_forced`` 1)."""
        sleeve = self._sleeve(sleeve)
        self._forced.labels(sleeve=sleeve).set(1 if record_id is not None and forced else 0)
        if record_id is None:
            if sleeve in self._promoted_sleeves:
                self._promoted.remove(sleeve)
                self._promoted_sleeves.discard(sleeve)
            return
        self._promoted.labels(sleeve=sleeve).info({"record_id": str(record_id)})
        self._promoted_sleeves.add(sleeve)

    def set_execution_model(self, assumed_slippage_bps: float, symbols: Iterable[str]) -> None:
        """Export the assumed slippage, and start every (sleeve, symbol) slippage series empty
        (needs the sleeves given at construction)."""
        self._assumed_slippage.set(assumed_slippage_bps)
        for sleeve in self.sleeves or ():
            for symbol in symbols:
                self._slippage.labels(sleeve=sleeve, symbol=symbol)

    def observe_slippage(self, sleeve: str, symbol: str, slippage_bps: float) -> None:
        """Record the realised slippage of one fill (bps, positive is worse)."""
        rounded = round(slippage_bps / SLIPPAGE_PRECISION_BPS) * SLIPPAGE_PRECISION_BPS
        self._slippage.labels(sleeve=self._sleeve(sleeve), symbol=symbol).observe(rounded)

    def set_drift(
        self,
        pnl_by_position: dict[tuple[str, str], float],
        initial_cash: float,
        equity_pct: float,
        bar_ts_ns: int,
        duration_s: float,
    ) -> None:
        """Export the drift from the backtest: live minus backtest P&L per (sleeve, symbol), in
        currency and in percent of ``initial_cash``, and the equity difference (percent)."""
        for (sleeve, symbol), pnl in pnl_by_position.items():
            sleeve = self._sleeve(sleeve)
            self._drift_pnl.labels(sleeve=sleeve, symbol=symbol).set(pnl)
            self._drift_pct.labels(sleeve=sleeve, symbol=symbol).set(100.0 * pnl / initial_cash)
        if math.isfinite(equity_pct):  # NaN: no live snapshot yet; keep what was exported
            self._drift_equity.set(equity_pct)
        self._drift_bar.set(bar_ts_ns / 1e9)
        self._drift_seconds.set(duration_s)

    def render(self) -> str:
        """Return the exposition text (what a scrape gets)."""
        return generate_latest(self.registry).decode()

    def health(self, path: str) -> tuple[int, str] | None:
        """Answer a health check: (HTTP status, one-line body), or None for another path.

        ``/healthz``: 200 while the process serves. ``/readyz``: 200 once the feed is warm and
        while the store answers. ``/leader``: 200 only while this runner holds the lease.
        """
        if path == "/healthz":
            return 200, "ok"
        if path == "/readyz":
            if self.ready:
                return 200, "ready"
            return 503, "feed warming up" if not self._warm else "store unreachable"
        if path == "/leader":
            epoch = self._epoch_value
            if self._is_leader:
                return 200, f"leader epoch {epoch}"
            return 503, "standby"
        return None

    def wsgi_app(self):
        """The exporter's WSGI application: the health checks, and metrics on any other path."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ, start_response):
            answer = self.health(environ.get("PATH_INFO", ""))
            if answer is None:
                return metrics_app(environ, start_response)
            status, body = answer
            reason = "OK" if status == 200 else "Service Unavailable"
            start_response(f"{status} {reason}", [("Content-Type", "text/plain; charset=utf-8")])
            return [body.encode() + b"\n"]

        return app

    def serve(self, port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> MetricsServer:
        """Start the HTTP exporter in a daemon thread; port 0 picks a free port.

        Bound to localhost unless ``host`` says otherwise (metrics reveal positions and P&L).
        """
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"metrics port must be an integer 0-65535, got {port!r}")

        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]

            class Server(socketserver.ThreadingMixIn, WSGIServer):
                """Threaded, so a slow scraper never holds a health check; family per host."""

                address_family = family
                daemon_threads = True

            server = make_server(sockaddr[0], port, self.wsgi_app(), Server, _QuietHandler)
        except OSError as exc:
            raise ConfigError(f"metrics: cannot listen on {host}:{port}: {exc.strerror}") from None
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        bound_host, bound_port = server.server_address[:2]
        return MetricsServer(host=bound_host, port=bound_port, _server=server, _thread=thread)
