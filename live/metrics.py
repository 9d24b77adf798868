"""Prometheus metrics of one live runner: its own registry, an HTTP exporter on localhost.

Label values are bounded: order outcomes and HALT reasons come from fixed lists.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest, start_wsgi_server

from live.guards import GUARDS
from quantshift.errors import ConfigError

ORDER_OUTCOMES = ("submitted", "filled", "rejected", "unknown", "blocked_by_guard")
"""Outcomes an order is counted under (``unknown``: the broker's answer was ambiguous)."""

HALT_REASONS = (*GUARDS, "daily_loss_limit", "max_drawdown", "manual", "runner_error")
"""HALT reasons: a guard name, a circuit breaker, ``live halt``, or a runner failure."""

CYCLE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Cycle duration histogram buckets (seconds); the decision goal is 20 ms."""

DEFAULT_PORT = 9200


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


class LiveMetrics:
    """The metrics one runner exports, in a registry of its own (never the global one).

    Parameters
    ----------
    strategies : iterable of str, optional
        The runner's strategies. When given, their series start at 0 and any other strategy
        name is refused (bounded label values); when None any name is accepted.
    namespace : str
        Prefix of every metric name.
    """

    def __init__(
        self, strategies: Iterable[str] | None = None, *, namespace: str = "quantshift_live"
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.strategies = None if strategies is None else tuple(strategies)
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
        self._portfolio_value = Gauge(
            f"{ns}_portfolio_value", "Portfolio value (account currency)", registry=r
        )
        self._daily_pnl = Gauge(f"{ns}_daily_pnl", "P&L since the day began", registry=r)
        self._open_positions = Gauge(f"{ns}_open_positions", "Open positions", registry=r)
        self._signals = Counter(f"{ns}_signals", "Signals by strategy", ["strategy"], registry=r)
        self._orders = Counter(
            f"{ns}_orders", "Orders by strategy and outcome", ["strategy", "outcome"], registry=r
        )
        self._leader = Gauge(f"{ns}_leader", "1 while this runner holds the lease", registry=r)
        self._epoch = Gauge(f"{ns}_epoch", "Fencing epoch of the current or last term", registry=r)
        self._halt_active = Gauge(f"{ns}_halt_active", "1 while a HALT is in force", registry=r)
        self._halts = Counter(f"{ns}_halts", "HALTs raised, by reason", ["reason"], registry=r)
        self._promoted = Info(
            f"{ns}_promoted_record", "Promotion record in use", ["strategy"], registry=r
        )
        self._halted = False
        self._promoted_strategies: set[str] = set()
        self._cycle_started_s: float | None = None
        for strategy in self.strategies or ():
            self._signals.labels(strategy=strategy)
            for outcome in ORDER_OUTCOMES:
                self._orders.labels(strategy=strategy, outcome=outcome)
        for reason in HALT_REASONS:
            self._halts.labels(reason=reason)

    def _strategy(self, strategy: str) -> str:
        if not isinstance(strategy, str) or not strategy:
            raise ConfigError(f"metrics: strategy must be a non-empty string, got {strategy!r}")
        if self.strategies is not None and strategy not in self.strategies:
            raise ConfigError(
                f"metrics: unknown strategy {strategy!r}; known: {', '.join(self.strategies)}"
            )
        return strategy

    def heartbeat(self, ts_s: float | None = None) -> None:
        """Record a heartbeat at ``ts_s`` (UTC epoch seconds; now by default)."""
        self._heartbeat.set(time.time() if ts_s is None else ts_s)

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

    def record_signal(self, strategy: str, count: int = 1) -> None:
        """Count ``count`` signals of ``strategy``."""
        self._signals.labels(strategy=self._strategy(strategy)).inc(count)

    def record_order(self, strategy: str, outcome: str, count: int = 1) -> None:
        """Count orders of ``strategy`` under ``outcome`` (one of :data:`ORDER_OUTCOMES`)."""
        if outcome not in ORDER_OUTCOMES:
            raise ConfigError(
                f"metrics: unknown order outcome {outcome!r}; allowed: {', '.join(ORDER_OUTCOMES)}"
            )
        self._orders.labels(strategy=self._strategy(strategy), outcome=outcome).inc(count)

    def set_leader(self, is_leader: bool, epoch: int | None) -> None:
        """Export leadership (0/1) and the epoch (left unchanged when ``epoch`` is None)."""
        self._leader.set(1 if is_leader else 0)
        if epoch is not None:
            self._epoch.set(epoch)

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

    def set_promoted(self, strategy: str, record_id: str | None) -> None:
        """Export the promotion record ``strategy`` trades (None: parameters from the config)."""
        strategy = self._strategy(strategy)
        if record_id is None:
            if strategy in self._promoted_strategies:
                self._promoted.remove(strategy)
                self._promoted_strategies.discard(strategy)
            return
        self._promoted.labels(strategy=strategy).info({"record_id": str(record_id)})
        self._promoted_strategies.add(strategy)

    def render(self) -> str:
        """Return the exposition text (what a scrape gets)."""
        return generate_latest(self.registry).decode()

    def serve(self, port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> MetricsServer:
        """Start the HTTP exporter in a daemon thread; port 0 picks a free port.

        Bound to localhost unless ``host`` says otherwise (metrics reveal positions and P&L).
        """
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"metrics port must be an integer 0-65535, got {port!r}")
        try:
            server, thread = start_wsgi_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"metrics: cannot listen on {host}:{port}: {exc.strerror}") from None
        bound_host, bound_port = server.server_address[:2]
        return MetricsServer(host=bound_host, port=bound_port, _server=server, _thread=thread)
