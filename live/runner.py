"""The live runner: one cycle per closed bar, driving the shared decision layer with a broker.

Per bar: fill the orders decided on the previous close, apply protective stops, decide on this
close, guard, persist, export. Every write of a cycle is idempotent, so a standby that takes over
redoes the unfinished bar and arrives at the same orders, fills and trades.
"""

from __future__ import annotations

import hashlib
import logging
import math
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from live.adoption import PromotionAdopter
from live.broker import BrokerAuthError
from live.clock import MarketClock
from live.config import LiveConfig
from live.execution import VenueExecution, WorkingOrder, net_positions, positions_differ
from live.failpoints import failpoint
from live.feeds import open_feed
from live.guards import OrderGuards
from live.lease import NotLeaderError, open_lease
from live.metrics import LiveMetrics
from live.notify import note_auth_failure, start_alerts
from live.paper import VENUE, PaperVenue
from live.status import FLATTEN_MARK, HaltWatch
from live.store import Store, client_order_id
from live.store.errors import HaltedError, StaleEpochError, StoreUnavailableError
from live.systemd import Notifier
from live.venues import connect_venue
from quantshift.data import Bars
from quantshift.errors import ConfigError
from quantshift.portfolio import (
    PortfolioState,
    TargetOrder,
    check_stops,
    compute_signals,
    decide,
    fill_orders,
    flatten_orders,
)

log = logging.getLogger("quantshift.live")

PROTECTIVE = -1  # halt_exempt of a venue exit a stop level triggered: it goes out during a HALT
STORE_RETRY_S = 1.0  # pause before standing by again after losing the lease or the store
LEASE_POLL_S = 0.25  # a standby's poll for the lease
MAX_LEASE_BACKOFF_S = 4.0  # the longest wait between polls while Redis cannot be reached


@dataclass
class RunSummary:
    """What a ``run`` did: bars processed, orders sent, trades closed, how it ended."""

    bars: int = 0
    orders: int = 0
    trades: int = 0
    epochs: list[int] = field(default_factory=list)
    ended: str = ""


class Runner:
    """Drive the decision layer bar by bar against the paper broker on a replayed data set.

    Parameters
    ----------
    config : LiveConfig
    host : str, optional
        This process's name in heartbeats (default ``hostname:pid``).
    max_bars : int, optional
        Stop after this many cycles (tests; None runs to the end of the replay).
    now_ns, wait : callable, optional
        The wall clock a venue feed reads and how it waits between polls
        (``wait(stop_event, seconds)``); a simulation passes its own.
    """

    def __init__(
        self,
        config: LiveConfig,
        *,
        host: str | None = None,
        max_bars=None,
        now_ns=time.time_ns,
        wait=None,
    ) -> None:
        self.config = config
        self.host = host or f"{socket.gethostname()}:{_pid()}"
        self.max_bars = max_bars
        self._now_ns, self._wait = now_ns, wait
        self.stop_event = threading.Event()
        self._lost = threading.Event()
        self._redo_under_halt = False
        self._unreachable_polls = 0

    # ------------------------------------------------------------------ setup
    def _open(self) -> None:
        cfg = self.config
        self.portfolio = cfg.portfolio
        self.store = Store.open(cfg.store_url)
        self.store.claim_owner(cfg.name, cfg.lease.name)  # one store, one runner identity
        self.alerts = start_alerts(cfg, self.host)  # sends the store's events, off-cycle
        self.broker = self.execution = self.venue = None
        if cfg.broker.kind == "paper":
            self.venue = PaperVenue(cfg.store_url)
        else:
            try:
                self.broker = connect_venue(cfg)
            except BrokerAuthError as exc:
                note_auth_failure(self.store, cfg, self.host, exc)
                self._close()  # the alerts thread sends it before the process ends
                raise
            self.execution = VenueExecution(self.broker, self.store)
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
        self.metrics = LiveMetrics(strategies=list(cfg.portfolio.sleeve_names))
        self.server = (
            self.metrics.serve(cfg.metrics.port, cfg.metrics.host) if cfg.metrics.enabled else None
        )
        clock = MarketClock(cfg.market, cfg.bar_interval_s)
        self.guards = OrderGuards(cfg.guards, clock=clock)
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
        self.metrics.started(clock, cfg.portfolio.limits)
        self.notifier.ready()

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
        for name in ("lease", "venue", "store"):
            part = getattr(self, name, None)
            if part is not None:
                part.close() if name != "lease" else part.release()

    # ------------------------------------------------------------------ main loop
    def run(self) -> RunSummary:
        """Run until the replay ends, ``max_bars`` cycles, or SIGTERM (the cycle in flight is
        finished first; nothing of it is lost either way)."""
        summary = RunSummary()
        self._open()
        previous = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        lock = self.store.single_runner_lock() if self.config.lease.redis_url is None else None
        try:
            if lock is not None:
                lock.__enter__()
            self._loop(summary)
        except BrokerAuthError as exc:  # keys revoked mid-run
            note_auth_failure(self.store, self.config, self.host, exc)
            raise
        finally:
            if lock is not None:
                lock.__exit__(None, None, None)
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)
            self._close()
        return summary

    def _loop(self, summary: RunSummary) -> None:
        keep_alive = None
        while not self.stop_event.is_set():
            counted = summary.orders, summary.trades
            try:
                if keep_alive is None:
                    keep_alive = self._become_leader(summary)
                    if keep_alive is None:
                        continue  # still standby (or stopping): wait again
                elif self._redo_under_halt:
                    self._load()
                if self.max_bars is not None and summary.bars >= self.max_bars:
                    summary.ended = "max_bars"  # before waiting: a venue's next bar is a bar away
                    break
                t = self._next_bar()
                if t is None:
                    summary.ended = "replay finished"
                    break
                self._cycle(t, summary)
                if self._redo_under_halt:
                    self._cancel_unsent()
            except HaltedError as exc:
                # A person's HALT landed after this cycle looked for one and before an order
                # went out. Hold: redo the bar from the state saved after the last one, under
                # the HALT (what went out before it stays out, protective exits and flatten
                # orders go on), and trade again once a person runs `live resume`.
                log.warning(
                    "HALT arrived mid-cycle (%s); redoing the bar under it",
                    exc,
                    extra={"epoch": self.lease.epoch, "host": self.host},
                )
                summary.orders, summary.trades = counted
                self._redo_under_halt = True
                continue
            except (NotLeaderError, StaleEpochError, StoreUnavailableError) as exc:
                # Lost the lease, fenced out, or the store went away mid-cycle: whatever the
                # cycle wrote is idempotent, so stand by and let the next leader (maybe us,
                # once the store is back) redo the bar.
                log.warning("standing by: %s", exc, extra={"host": self.host})
                self.metrics.set_store_reachable(not isinstance(exc, StoreUnavailableError))
                if keep_alive is not None:
                    keep_alive.stop()
                    keep_alive = None
                    self.lease.release()
                self.stop_event.wait(STORE_RETRY_S)
                continue
            summary.bars += 1
            if self._lost.is_set():
                keep_alive.stop()
                keep_alive = None
            if self.config.feed.speed > 0:
                self.stop_event.wait(1.0 / self.config.feed.speed)
        if keep_alive is not None:
            keep_alive.stop()
        summary.ended = summary.ended or "stopped"

    def _become_leader(self, summary: RunSummary):
        """Poll once for the lease; on winning it, fence the store with the new epoch and load
        the state the last leader saved. Return the keep-alive, or None (still standby)."""
        self._heartbeat("standby", None)
        self.metrics.set_leader(False, 0)
        # The floor is re-read at every poll: if Redis lost its epoch counter while we waited,
        # a new term must still start above everything the store has seen.
        fence = self.store.fence_epoch()
        term = self.lease.acquire(
            poll_interval_ms=int(LEASE_POLL_S * 1000),
            timeout_s=LEASE_POLL_S,
            stop=self.stop_event,
            above_epoch=fence,
        )
        if term is None:
            self._back_off(self.lease.unreachable)
            return None
        self._unreachable_polls = 0
        self._lost.clear()
        epoch = self.lease.epoch
        if not epoch and fence:
            # Epoch 0 is the single host's; every write of it would be refused as stale.
            raise ConfigError(
                f"{self.config.name}: the store is fenced at epoch {fence} (runners with a "
                "Redis lease wrote to it), but [lease] has no redis_url, so this runner would "
                "write as epoch 0 and be refused; set [lease] redis_url or use another store"
            )
        keep_alive = None
        try:
            if epoch:
                self.store.claim_epoch(epoch, by=self.host)
            keep_alive = self.lease.keep_alive(on_lost=lambda _e: self._lost.set())
            self._load()
        except BaseException:
            # Never keep a term we cannot use: a held lease would be renewed by our next
            # acquire and no other runner could ever lead.
            if keep_alive is not None:
                keep_alive.stop()
            self.lease.release()
            raise
        summary.epochs.append(epoch)
        self.metrics.set_leader(True, epoch)
        log.info("leader with epoch %s", epoch, extra={"epoch": epoch, "host": self.host})
        return keep_alive

    def _back_off(self, unreachable: str | None) -> None:
        """While Redis cannot be reached, poll less and less often (exponentially, up to
        ``MAX_LEASE_BACKOFF_S``) and say so once per poll, instead of spinning."""
        if unreachable is None:
            self._unreachable_polls = 0
            return
        self._unreachable_polls += 1
        wait_s = min(LEASE_POLL_S * 2**self._unreachable_polls, MAX_LEASE_BACKOFF_S)
        log.warning(
            "standby: cannot reach the lease (%s); poll %d, next in %.1f s",
            unreachable,
            self._unreachable_polls,
            wait_s,
            extra={"host": self.host},
        )
        self.stop_event.wait(wait_s)

    def _load(self) -> None:
        """Load where the last leader left off: state after its last bar and pending orders,
        and the promotion record each promoted sleeve was trading."""
        self.portfolio = self.adopter.resume(self.portfolio, self.lease.epoch)
        saved = self.store.load_runner_state(self.config.name)
        self.working: list[WorkingOrder] = []
        if saved is None:
            self.state = PortfolioState.initial(self.portfolio)
            self.pending: list[tuple[TargetOrder, int | None]] = []
            self.last_ts_ns = None
        else:
            self.state = PortfolioState.from_dict(saved["state"], self.portfolio)
            self.pending = [
                (_order(p["order"]), p["halt_exempt"]) for p in saved["pending"] if "venue" not in p
            ]
            self.working = [
                WorkingOrder.from_dict(p, _order(p["order"]))
                for p in saved["pending"]
                if "venue" in p
            ]
            self.last_ts_ns = saved["bar_ts_ns"]
        if self.broker is not None:
            self._reconcile_venue(None)

    def _cancel_unsent(self) -> None:
        """After a redo under a HALT that landed mid-cycle: the order it stopped between its
        intent and the venue will never be sent; record that instead of leaving it NEW."""
        epoch = self.lease.assert_leader()
        for intent in self.store.intents(open_only=True):
            if intent.state == "NEW":
                self.store.transition(
                    intent.client_order_id,
                    "CANCELLED",
                    epoch=epoch,
                    expected_state="NEW",
                    reason="a HALT arrived before it was sent",
                )
        self._redo_under_halt = False

    def _went_out(self, order: TargetOrder) -> bool:
        """Whether ``order`` already went to the venue (a redo of its bar): a HALT written
        since cancels what had not been sent, not what had."""
        intent = self.store.intent(order_id(order))
        return intent is not None and intent.state not in ("NEW", "CANCELLED", "REJECTED")

    def _next_bar(self) -> int | None:
        """The next closed bar (a venue feed waits for it), or None at the end of a replay."""
        t = self.feed.next_index(self.last_ts_ns, self.stop_event)
        self.bars = self.feed.bars
        return t

    # ------------------------------------------------------------------ one cycle
    def _cycle(self, t: int, summary: RunSummary) -> None:
        cfg, bars, portfolio = self.config, self.bars, self.portfolio
        epoch = self.lease.assert_leader()
        ts = int(bars.ts_ns[t])
        with self.metrics.cycle():
            self.portfolio = portfolio = self.adopter.adopt(self.portfolio, ts, epoch)
            state = self.state
            halt = self.store.active_halt()
            if halt is None and state.halted:
                state = state.resumed()  # a person cleared the HALT with `live resume`
            # 1. Orders decided on the previous close fill at this open (shared fill model), or
            # whatever the venue executed of them. Orders accepted in the cycle whose own guard
            # or breaker wrote the active HALT were already in flight; a HALT a person wrote
            # since cancels whatever has not filled.
            if self.broker is None:
                state, pending = self._fill_paper(t, state, halt, epoch, summary)
            else:
                state = self._settle_venue(ts, state, halt, epoch, summary)
                pending = []
            # 2. Protective stops on this bar's range.
            stopped = check_stops(state, bars.open[t], bars.high[t], bars.low[t], ts, portfolio, t)
            if self.broker is None:
                for trade in stopped.trades:
                    order = _stop_order(trade, ts)
                    # A protective stop rests at the venue: it fills even during a HALT.
                    self._execute(
                        order, trade.units, trade.exit_price, trade.exit_fees, ts, epoch, halt, True
                    )
                    summary.orders += 1
                summary.trades += self._record_trades(stopped.trades, epoch)
                state = stopped.state
            elif stopped.trades:
                # The runner watches the levels; the venue executes a market exit, and the
                # position closes when its fills are reported (at their price, not the level).
                busy = {(w.order.sleeve, w.order.symbol) for w in self.working}
                for trade in stopped.trades:
                    if (trade.sleeve, trade.symbol) not in busy:
                        self._send(_stop_order(trade, ts), trade.units, epoch, PROTECTIVE, True)
            else:
                state = stopped.state
            # 3. Decide on this close, from signals on the history so far (kept in the store,
            # so the cycle can be replayed and `live divergence` sees the same bars).
            window = self._window(t)
            self._keep_bars(window, ts)
            history = compute_signals(portfolio, window)
            decision = decide(state, history.at(-1), portfolio)
            state = decision.state
            for order in decision.orders:
                self.metrics.record_signal(order.sleeve)
            own_halt = None
            if decision.halted_now:
                own_halt = self.store.halt(
                    decision.halt_reason, by=f"runner {self.host}", epoch=epoch
                ).halt_id
            halt = self.store.active_halt()
            self.halt_watch.observe(halt, ts, epoch)
            if halt is not None and halt.halt_id != own_halt:
                orders = (
                    list(flatten_orders(state, ts, portfolio))
                    if halt.reason.endswith(FLATTEN_MARK) and state.positions()
                    else []
                )
                if orders:
                    own_halt = halt.halt_id  # flatten orders go out despite the HALT
                orders += [o for o in decision.orders if self._went_out(o)]
                self.metrics.set_halt(True, "manual")
            else:
                orders = list(decision.orders)
                self.metrics.set_halt(False)
            # 4. Guards: a tripped guard blocks the order and halts.
            verdict = self.guards.check(
                [_Guarded.of(o) for o in orders],
                # The decision marked each symbol at its last close (what the collar anchors to).
                last_close=dict(zip(state.symbols, state.marks.tolist(), strict=True)),
                positions=net_positions(state.positions()),
                now_ns=self.feed.now_ns(t, self.interval_ns),
                bar_interval_ns=self.interval_ns,
            )
            for blocked in verdict.blocked:
                self.metrics.record_order(blocked.order.strategy, "blocked_by_guard")
            if verdict.halt_reason is not None:
                log.error("HALT: %s", verdict.halt_reason, extra={"cycle": ts, "epoch": epoch})
                tripped = self.store.halt(
                    verdict.halt_reason, by=f"runner {self.host}", epoch=epoch
                )
                own_halt = own_halt if own_halt is not None else tripped.halt_id
                self.metrics.set_halt(True, verdict.blocked[0].guard)
            accepted = [g.order for g in verdict.accepted]
            if self.broker is not None:
                self._send_decisions(accepted, state, own_halt, epoch)
                accepted = []
            elif cfg.portfolio.sim.fill == "close":
                active = self.store.active_halt()
                done = fill_orders(state, accepted, bars.close[t], ts, portfolio, bar=t)
                for fill in done.fills:
                    self._execute(fill.order, fill.units, fill.price, fill.fees, ts, epoch, active)
                    summary.orders += 1
                summary.trades += self._record_trades(done.trades, epoch)
                state, accepted = done.state, list(done.pending)
            pending.extend((order, own_halt) for order in accepted)
            # 5. Persist: positions, equity, where to resume; then tell the world.
            self._record_book(state, ts, epoch)
            self.lease.assert_leader()
            self.store.save_runner_state(
                cfg.name,
                bar_ts_ns=ts,
                epoch=epoch,
                state=state.to_dict(),
                pending=[{"order": o.to_dict(), "halt_exempt": e} for o, e in pending]
                + [w.to_dict() for w in self.working],
            )
            failpoint("after_state")
            self.state, self.pending, self.last_ts_ns = state, pending, ts
            self._heartbeat("leader", epoch)
            self.metrics.set_portfolio(
                state.equity_usd, state.equity_usd - state.day_start_equity, len(state.positions())
            )
            self.metrics.set_state(state, ts)

    # ------------------------------------------------------------------ paper and venue fills
    def _fill_paper(self, t, state, halt, epoch, summary):
        """Fill the pending orders at this bar's open with the shared fill model."""
        ts = int(self.bars.ts_ns[t])
        due = [
            order
            for order, exempt in self.pending
            if halt is None or halt.halt_id == exempt or self._went_out(order)
        ]
        filled = fill_orders(state, due, self.bars.open[t], ts, self.portfolio, bar=t)
        for fill in filled.fills:
            self._execute(fill.order, fill.units, fill.price, fill.fees, ts, epoch, halt)
            summary.orders += 1
        summary.trades += self._record_trades(filled.trades, epoch)
        exempt = {id(o): e for o, e in self.pending}
        return filled.state, [(o, exempt.get(id(o))) for o in filled.pending]

    def _settle_venue(self, ts, state, halt, epoch, summary) -> PortfolioState:
        """Apply what the venue executed of the working orders; a HALT a person wrote cancels
        what is still working (protective exits and the HALT's own orders excepted)."""
        if halt is not None:
            for item in self.working:
                if item.halt_exempt not in (halt.halt_id, PROTECTIVE):
                    self.broker.cancel(item.client_order_ids[-1])
        settled = self.execution.settle(
            self.working, state, ts, epoch, self.portfolio,
            during_halt=halt is not None, resend_exits=halt is None,
        )  # fmt: skip
        for fill in settled.result.fills:
            self.metrics.record_order(fill.order.sleeve, "filled")
            log.info(
                "%s %s %s %.6g @ %.6g (%s, %s)",
                fill.order.action, fill.order.side, fill.order.symbol, fill.units, fill.price,
                fill.order.reason, self.broker.venue,
                extra={"cycle": ts, "epoch": epoch, "sleeve": fill.order.sleeve,
                       "symbol": fill.order.symbol},
            )  # fmt: skip
        summary.orders += settled.finished
        summary.trades += self._record_trades(settled.result.trades, epoch)
        self.working = settled.working
        if not self.working:
            self._reconcile_venue(epoch, settled.result.state)
        return settled.result.state

    def _send_decisions(self, orders, state, own_halt, epoch) -> None:
        """Send the accepted decisions to the venue; a position with an order still working
        gets no new one until that order is done."""
        busy = {(w.order.sleeve, w.order.symbol) for w in self.working}
        held = {(p.sleeve, p.symbol): abs(p.units) for p in state.positions()}
        during_halt = self.store.active_halt() is not None
        for order in orders:
            key = (order.sleeve, order.symbol)
            if key in busy:
                log.warning("%s: an order is still working at the venue; skipped", order.key)
                continue
            units = order.units if order.action == "entry" else held.get(key, 0.0)
            if units > 0:
                self._send(order, units, epoch, own_halt, during_halt)

    def _send(self, order, units, epoch, halt_exempt, during_halt) -> None:
        self.lease.assert_leader()
        working = self.execution.send(
            order, units, epoch, halt_exempt=halt_exempt, during_halt=during_halt
        )
        outcome = "submitted" if working is not None else "rejected"
        self.metrics.record_order(order.sleeve, outcome)
        if working is not None:
            self.working.append(working)

    def _reconcile_venue(self, epoch, state: PortfolioState | None = None) -> None:
        """Compare the venue's positions with ours (at start-up, on takeover, and after every
        settlement with nothing working); a mismatch HALTs, it is never fixed silently."""
        if self.store.active_halt() is not None:
            return  # already stopped; a person looks at `live reconcile` before resuming
        newest = self.store.latest_intent_bar()
        if newest is not None and self.last_ts_ns is not None and newest > self.last_ts_ns:
            # Orders of a bar a crashed leader did not finish are at the venue but not yet in
            # our state; the redo settles them, and the next settlement compares.
            return
        ours = net_positions((state or self.state).positions())
        differs = positions_differ(self.broker.positions(), ours)
        if not differs:
            return
        detail = "; ".join(f"{s} venue {a:g} vs ours {b:g}" for s, (a, b) in differs.items())
        log.error("reconcile: positions differ: %s", detail)
        self.store.halt(f"reconcile: {detail}"[:500], by=f"runner {self.host}", epoch=epoch)
        self.metrics.set_halt(True, "reconcile_mismatch")

    def _window(self, t: int) -> Bars:
        """The bars the signals see: the whole replay so far (a live venue would keep a window
        of ``warmup_bars``; recursive indicators depend on where it starts)."""
        warmup = self.config.warmup_bars
        lo = 0 if warmup is None else max(0, t + 1 - warmup)
        return self.bars[lo : t + 1]

    def _keep_bars(self, window: Bars, ts: int) -> None:
        stored = getattr(self, "_bars_kept_ns", None)
        first = 0 if stored is None else int(np.searchsorted(window.ts_ns, stored, "right"))
        self.store.record_bars(window, first)
        if stored is None:
            self.store.mark_decided_from(self.config.name, ts)
        self._bars_kept_ns = ts

    def _execute(
        self, order, units, price, fee, ts_fill_ns, epoch, halt=None, protective=False
    ) -> None:
        """Intent first (committed), then the venue, then the fill: each step idempotent.

        Called only for orders allowed to go out: during a HALT those are the ones already in
        flight when it was written, flatten orders and protective stops."""
        cid = order_id(order)
        self.lease.assert_leader()
        intent = self.store.record_intent(
            strategy=order.sleeve,
            symbol=order.symbol,
            side=order.side,
            qty=units,
            bar_ts_ns=order.ts_ns,
            venue=VENUE,
            epoch=epoch,
            client_order_id=cid,
            details={"action": order.action, "reason": order.reason},
        )
        failpoint("after_intent")
        if intent.state == "NEW":
            self.store.transition(
                cid,
                "SUBMITTING",
                epoch=epoch,
                expected_state="NEW",
                during_halt=halt is not None or protective,
            )
        self.lease.assert_leader()
        executed = self.venue.submit(
            client_order_id=cid,
            symbol=order.symbol,
            side=order.side,
            qty=units,
            price=price,
            fee=fee,
            ts_fill_ns=ts_fill_ns,
        )
        failpoint("after_submit")
        self.store.record_fill(
            venue=VENUE,
            fill_id=cid,
            client_order_id=cid,
            qty=executed.qty,
            price=executed.price,
            fee=executed.fee,
            ts_fill_ns=executed.ts_fill_ns,
            epoch=epoch,
        )
        failpoint("after_fill")
        self.metrics.record_order(order.sleeve, "filled")
        log.info(
            "%s %s %s %.6g @ %.6g (%s)",
            order.action,
            order.side,
            order.symbol,
            executed.qty,
            executed.price,
            order.reason,
            extra={
                "cycle": ts_fill_ns,
                "epoch": epoch,
                "client_order_id": cid,
                "sleeve": order.sleeve,
                "symbol": order.symbol,
            },
        )

    def _record_trades(self, trades, epoch) -> int:
        """Record closed trades and refresh the performance of the sleeves they belong to."""
        for trade in trades:
            self.store.record_trade(
                trade_id=trade_id(trade),
                strategy=trade.sleeve,
                symbol=trade.symbol,
                direction=trade.direction,
                qty=trade.units,
                entry_ts_ns=trade.entry_ts_ns,
                exit_ts_ns=trade.exit_ts_ns,
                entry_price=trade.entry_price,
                exit_price=trade.exit_price,
                pnl=trade.pnl,
                epoch=epoch,
                fees=trade.entry_fees + trade.exit_fees,
                exit_reason=trade.exit_reason,
            )
        for sleeve in dict.fromkeys(t.sleeve for t in trades):
            self.store.update_performance(sleeve, periods_per_year=self._periods_per_year)
        return len(trades)

    def _record_book(self, state: PortfolioState, ts: int, epoch: int) -> None:
        now = {(p.sleeve, p.symbol): p for p in state.positions()}
        before = {(p.sleeve, p.symbol): p for p in self.state.positions()}
        for key in before.keys() - now.keys():
            self.store.upsert_position(
                strategy=key[0], symbol=key[1], qty=0.0, avg_price=None, ts_ns=ts, epoch=epoch
            )
        for key, p in now.items():
            if key not in before or before[key].to_dict() != p.to_dict():
                self.store.upsert_position(
                    strategy=p.sleeve,
                    symbol=p.symbol,
                    qty=p.units,
                    avg_price=p.entry_price,
                    ts_ns=ts,
                    epoch=epoch,
                    details=p.to_dict(),
                )
        cash = state.sleeve_cash()
        snapshots = {"*": (state.equity_usd, None, None, None)}
        for sleeve, equity in state.sleeve_equity().items():
            snapshots[sleeve] = (equity, cash[sleeve], None, None)
        self.store.record_equities(ts_ns=ts, epoch=epoch, snapshots=snapshots)

    def _heartbeat(self, role: str, epoch: int | None) -> None:
        self.store.heartbeat(self.host, role, epoch, time.time_ns())
        self.metrics.heartbeat()
        self.notifier.alive(role if epoch is None else f"{role} epoch {epoch}")


@dataclass(frozen=True)
class _Guarded:
    """The fields of a decision's order that the guards read."""

    order: TargetOrder
    strategy: str
    symbol: str
    side: str
    units: float
    price: float
    ts_ns: int
    is_entry: bool

    @classmethod
    def of(cls, order: TargetOrder) -> _Guarded:
        return cls(
            order=order,
            strategy=order.sleeve,
            symbol=order.symbol,
            side=order.side,
            units=order.units,
            price=order.reference_price,
            ts_ns=order.ts_ns,
            is_entry=order.action == "entry",
        )


def order_id(order: TargetOrder) -> str:
    """The client order id of a decision: (sleeve and action, symbol, bar time, side)."""
    return client_order_id(f"{order.sleeve}/{order.action}", order.symbol, order.ts_ns, order.side)


def trade_id(trade) -> str:
    """A closed trade's id: sleeve, symbol, entry and exit time (the same after a redo)."""
    key = f"{trade.sleeve}|{trade.symbol}|{trade.entry_ts_ns}|{trade.exit_ts_ns}"
    return "t" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _stop_order(trade, ts_ns: int) -> TargetOrder:
    """The exit a protective stop made, as an order (the venue's stop order that filled)."""
    return TargetOrder(
        sleeve=trade.sleeve,
        strategy=trade.strategy,
        symbol=trade.symbol,
        action="exit",
        side="sell" if trade.direction == "long" else "buy",
        units=trade.units,
        reason=trade.exit_reason,
        ts_ns=ts_ns,
        reference_price=trade.exit_price,
    )


def _order(data: dict[str, Any]) -> TargetOrder:
    values = {k: (math.nan if v is None and k.endswith("distance") else v) for k, v in data.items()}
    if values.get("max_units") is None:
        values["max_units"] = math.inf
    return TargetOrder(**values)


def periods_per_year(market: str, bar_interval_s: int) -> float:
    """Bars a year: daily equity bars trade ~252 sessions, intraday equity bars 6.5 hours of
    each; crypto trades every interval of the year."""
    if market == "crypto":
        return 365 * 86_400 / bar_interval_s
    if bar_interval_s >= 86_400:
        return 252.0
    return 252 * 6.5 * 3600 / bar_interval_s


def _pid() -> int:
    import os

    return os.getpid()
