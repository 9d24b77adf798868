"""A live runner's parts: opening them (store, venue, lease, feed, metrics, overlay inputs,
promotion records, notifications), warming the kernels before the first cycle, and closing
them. ``live.runner.Runner`` is these parts driven bar by bar."""

from __future__ import annotations

import logging

from live.adoption import PromotionAdopter
from live.book import periods_per_year
from live.broker import BrokerAuthError
from live.clock import MarketClock
from live.config import LiveConfig
from live.drift import DriftExport
from live.execution import VenueExecution
from live.feeds import open_feed
from live.guards import OrderGuards
from live.inputs import OverlayInputs
from live.lease import open_lease
from live.metrics import LiveMetrics
from live.notify import note_auth_failure, start_alerts
from live.paper import PaperBroker, warm_fills
from live.protection import RestingProtection
from live.status import HaltWatch
from live.store import Store
from live.systemd import Notifier
from live.venues import connect_venue
from quantshift.data import Bars
from quantshift.errors import ConfigError
from quantshift.portfolio import warm_kernels

log = logging.getLogger("quantshift.live")


class RunnerParts:
    """Open, warm and close what a runner is made of (``self.config``, ``self.host`` and the
    ``self._now_ns`` / ``self._wait`` clocks are the runner's)."""

    def _open(self) -> None:
        cfg = self.config
        self.portfolio = cfg.portfolio
        self.store = Store.open(cfg.store_url)
        self.store.claim_owner(cfg.name, cfg.lease.name)  # one store, one runner identity
        self.alerts = start_alerts(cfg, self.host)  # sends the store's events, off-cycle
        self.broker = None
        try:
            self.broker = connect_venue(cfg) if cfg.broker.kind != "paper" else paper_broker(cfg)
        except BrokerAuthError as exc:
            note_auth_failure(self.store, cfg, self.host, exc)
            self._close()  # the alerts thread sends it before the process ends
            raise
        # The lease is checked again right before each order leaves, after its intent is
        # committed: a cycle that outlives the local deadline sends nothing more.
        self.execution = VenueExecution(self.broker, self.store,
                                        before_send=self._lease_check)  # fmt: skip
        self.lease = open_lease(
            cfg.lease.redis_url,
            cfg.lease.name,
            **(
                {}
                if cfg.lease.redis_url is None
                else {
                    "ttl_ms": cfg.lease.ttl_ms,
                    "renew_interval_ms": cfg.lease.renew_interval_ms,
                    "deadline_ms": cfg.lease.deadline_ms,
                }
            ),
        )
        self.metrics = LiveMetrics(sleeves=list(cfg.portfolio.sleeve_names))
        self.metrics.set_execution_model(cfg.portfolio.sim.slippage_bps, cfg.portfolio.symbols)
        self.drift = None
        if cfg.metrics.enabled:
            self.drift = DriftExport(
                cfg, self.store, self.metrics, interval_s=cfg.metrics.drift_interval_s
            )
        self.resting = None
        if self.broker.supports_resting_protection:
            self.resting = RestingProtection(
                self.broker, self.store, self.metrics, before_send=self._lease_check,
                on_working=lambda w: self.working.append(w),  # rests of partly filled legs
            )  # fmt: skip
            self._check_whole_units()
        else:
            log.warning(
                "%s: protective exits are watched by the runner after each bar closes and sent "
                "as market orders, not resting at the venue (the adapter cannot rest them yet)",
                self.broker.venue,
            )
        self.server = (
            self.metrics.serve(cfg.metrics.port, cfg.metrics.host) if cfg.metrics.enabled else None
        )
        self.clock = clock = MarketClock(cfg.market, cfg.bar_interval_s)
        self.guards = OrderGuards(cfg.guards, clock=clock)
        self.inputs = OverlayInputs(cfg, self.broker)
        self.notifier = Notifier.from_environment()
        self.feed = open_feed(
            cfg, self.portfolio, clock, self.broker, now_ns=self._now_ns,
            wait=self.notifier.watched(self._wait),
        )  # fmt: skip
        self.bars: Bars = self.feed.bars
        self.adopter = PromotionAdopter(cfg, self.store, self.metrics, self.host)
        self.halt_watch = HaltWatch(self.store)
        self.interval_ns = cfg.bar_interval_s * 1_000_000_000
        self._periods_per_year = periods_per_year(cfg.market, cfg.bar_interval_s)
        self._warm()
        self.metrics.started(clock, cfg.portfolio.limits)
        self.notifier.ready()

    def _warm(self) -> None:
        """Load the kernels and the exchange calendar a cycle uses before saying ready, so the
        first cycle (a standby's first after a takeover too) takes milliseconds, not seconds."""
        took = warm_kernels(self.portfolio, self.bars)
        if isinstance(self.broker, PaperBroker):
            warm_fills()
        if self.bars.n_bars:  # the calendar's sessions and minutes, built on first use
            first, last = int(self.bars.ts_ns[0]), int(self.bars.ts_ns[-1])
            self.clock.bar_close_ns(first)
            self.clock.intervals_between(first, last + self.interval_ns)
        log.info("kernels ready in %.1f s", took, extra={"host": self.host})

    def _lease_check(self) -> None:
        """Raise ``NotLeaderError`` unless this runner holds the lease now (before its local
        deadline)."""
        self.lease.assert_leader()

    def _check_whole_units(self) -> None:
        """Refuse to start where the venue could not rest the protection of fractional units."""
        cfg = self.config
        levels = [s.name for s in cfg.portfolio.sleeves
                  if s.strategy_object.uses_stops or s.stop_atr is not None]  # fmt: skip
        whole = cfg.portfolio.sim.whole_units
        if levels and self.broker.protection_needs_whole_units and not whole:
            self._close()
            raise ConfigError(
                f"{cfg.path or cfg.name}: [costs] whole_units = true is needed: sleeves "
                f"{', '.join(levels)} set protective levels, and {self.broker.venue} rests "
                "protective orders for whole shares only"
            )

    def _close(self) -> None:
        if getattr(self, "notifier", None) is not None:
            self.notifier.stopping()
        if getattr(self, "alerts", None) is not None:
            self.alerts.stop()
        if getattr(self, "server", None) is not None:
            self.server.close()
        if getattr(self, "feed", None) is not None:
            self.feed.close()
        if getattr(self, "broker", None) is not None:
            self.broker.close()
        for name in ("lease", "store"):
            part = getattr(self, name, None)
            if part is not None:
                part.close() if name != "lease" else part.release()


def paper_broker(config: LiveConfig) -> PaperBroker:
    """The paper venue of ``config``: its book in the store, its fees and slippage the costs of
    the portfolio (so it fills as the backtest's fill model does)."""
    sim = config.portfolio.sim
    if sim.fill == "close":
        raise ConfigError(
            f"{config.path or config.name}: [costs] fill = 'close' is a backtest assumption; "
            "a venue, paper included, fills market orders after the decision"
        )
    return PaperBroker(
        config.store_url,
        cash=sim.cash,
        fee_rate=sim.fees_bps / 1e4,
        slippage_rate=sim.slippage_bps / 1e4,
    )
