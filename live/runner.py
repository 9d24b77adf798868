"""The live runner: one cycle per closed bar, driving the shared decision layer with a broker.

Per bar: settle what the venue executed of the orders decided on the previous close, keep every
position's protection resting at the venue, decide on this close, guard, send, persist, export.
Every venue (paper, Alpaca, Coinbase) goes through the same path. Every write of a cycle is
idempotent, so a standby that takes over redoes the unfinished bar and arrives at the same
orders, fills and trades.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np

from live.book import (
    Guarded,
    order_from_dict,
    record_book,
    record_trades,
    stop_order,
)
from live.broker import BrokerAuthError
from live.config import LiveConfig
from live.drift import fill_slippage
from live.execution import (
    PROTECTIVE,
    WorkingOrder,
    net_positions,
    order_id,
    positions_differ,
)
from live.failpoints import failpoint
from live.lease import NotLeaderError
from live.notify import note_auth_failure
from live.parts import RunnerParts
from live.status import FLATTEN_MARK
from live.stopping import StopSignals
from live.store.errors import HaltedError, StaleEpochError, StoreUnavailableError
from quantshift.data import Bars
from quantshift.errors import ConfigError
from quantshift.portfolio import (
    PortfolioState,
    TargetOrder,
    check_stops,
    compute_signals,
    decide,
    flatten_orders,
)

log = logging.getLogger("quantshift.live")

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


class Runner(RunnerParts):
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

    # ------------------------------------------------------------------ main loop
    def run(self) -> RunSummary:
        """Run until the replay ends, ``max_bars`` cycles, or SIGTERM (the cycle in flight is
        finished first; nothing of it is lost either way)."""
        summary = RunSummary()
        self._open()
        with ExitStack() as stack:  # left in reverse: the lock, the signals, then the parts
            stack.callback(self._close)
            stack.enter_context(StopSignals(self.stop_event))  # SIGTERM stops, SIGUSR1 dumps
            if self.config.lease.redis_url is None:
                stack.enter_context(self.store.single_runner_lock())
            try:
                self._loop(summary)
            except BrokerAuthError as exc:  # keys revoked mid-run
                note_auth_failure(self.store, self.config, self.host, exc)
                raise
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
                if self.drift is not None:  # after the timed cycle: not in decision latency
                    self.drift.after_cycle(self.last_ts_ns)
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
        if self.drift is not None:
            self.drift.finish(getattr(self, "last_ts_ns", None))
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
            self.last_ts_ns = None
        else:
            self.state = PortfolioState.from_dict(saved["state"], self.portfolio)
            unsent = [p for p in saved["pending"] if "venue" not in p]
            if unsent:
                # A store written by a runner from before the one execution path: its paper
                # orders waited in the runner, not at the venue. Refuse rather than drop them.
                raise ConfigError(
                    f"{self.config.name}: the saved state holds {len(unsent)} order(s) of the "
                    "old paper path; finish that run with the version that wrote it"
                )
            self.working = [
                WorkingOrder.from_dict(p, order_from_dict(p["order"])) for p in saved["pending"]
            ]
            self.last_ts_ns = saved["bar_ts_ns"]
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
            # 1. The bar opens: the venue fills what was sent on the previous close (a simulated
            # venue at this open, by the shared fill model). A HALT a person wrote since cancels
            # what has not filled (the HALT's own orders and protective exits excepted).
            if halt is not None:
                for item in self.working:
                    if item.halt_exempt not in (halt.halt_id, PROTECTIVE):
                        self.broker.cancel(item.client_order_ids[-1])
            self.broker.open_bar(ts, self._prices(bars.open[t]))
            state = self._settle_venue(ts, state, halt, epoch, summary)
            # 2. Protective exits on this bar's range: resting at the venue from the entry's
            # fill on, or watched by the runner after the close where the venue cannot rest them.
            if self.resting is not None:
                state = self._rest_protection(t, state, epoch, summary)
            else:
                self._watch_protection(t, state, epoch)
            if not self.working:
                self._reconcile_venue(epoch, state)
            # 3. Decide on this close, from signals on the history so far (kept in the store,
            # so the cycle can be replayed and `live divergence` sees the same bars).
            window = self._window(t)
            self._keep_bars(window, ts)
            history = compute_signals(portfolio, window)
            inputs = self.inputs.at(window, self.clock.bar_close_ns(ts))
            if inputs:  # kept with the bar: news cannot be read again identically later
                self.store.record_inputs(cfg.name, ts, epoch=epoch, **inputs)
            decision = decide(state, history.at(-1), portfolio, **inputs)
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
                [Guarded.of(o) for o in orders],
                # The decision marked each symbol at its last close (what the collar anchors to).
                last_close=dict(zip(state.symbols, state.marks.tolist(), strict=True)),
                positions=net_positions(state.positions()),
                now_ns=self.feed.now_ns(t, self.interval_ns),
                bar_interval_ns=self.interval_ns,
            )
            for blocked in verdict.blocked:
                self.metrics.record_order(blocked.order.sleeve, "blocked_by_guard")
            if verdict.halt_reason is not None:
                log.error("HALT: %s", verdict.halt_reason, extra={"cycle": ts, "epoch": epoch})
                tripped = self.store.halt(
                    verdict.halt_reason, by=f"runner {self.host}", epoch=epoch
                )
                own_halt = own_halt if own_halt is not None else tripped.halt_id
                self.metrics.set_halt(True, verdict.blocked[0].guard)
            self._send_decisions([g.order for g in verdict.accepted], state, own_halt, epoch)
            # 5. Persist: positions, equity, where to resume; then tell the world.
            record_book(self.store, self.state, state, ts, epoch)
            self.lease.assert_leader()
            self.store.save_runner_state(
                cfg.name,
                bar_ts_ns=ts,
                epoch=epoch,
                state=state.to_dict(),
                pending=[w.to_dict() for w in self.working],
            )
            failpoint("after_state")
            self.state, self.last_ts_ns = state, ts
            self._heartbeat("leader", epoch)
            self.metrics.set_portfolio(
                state.equity_usd, state.equity_usd - state.day_start_equity, len(state.positions())
            )
            self.metrics.set_state(state, ts)

    # ------------------------------------------------------------------ the venue
    def _prices(self, row) -> dict[str, float]:
        return dict(zip(self.bars.symbols, row.tolist(), strict=True))

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
        for sleeve, symbol, bps in fill_slippage(settled.result.fills, self.bars):
            self.metrics.observe_slippage(sleeve, symbol, bps)
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
        summary.trades += record_trades(
            self.store, settled.result.trades, epoch, self._periods_per_year
        )
        self.working = settled.working
        failpoint("after_fill")
        return settled.result.state

    def _rest_protection(self, t, state, epoch, summary) -> PortfolioState:
        """Send the protection of positions opened at this open (and of any position found
        without it), let the bar trade, then apply what the protection executed."""
        bars, ts = self.bars, int(self.bars.ts_ns[t])
        fresh = {(p.sleeve, p.symbol) for p in state.positions() if p.entry_ts_ns == ts}
        if fresh:
            failpoint("after_entry_fill")
        self.resting.protect(state, epoch, fresh)
        ranges = zip(bars.symbols, bars.open[t].tolist(), bars.high[t].tolist(),
                     bars.low[t].tolist(), strict=True)  # fmt: skip
        self.broker.trade_bar(ts, {s: (o, h, lo) for s, o, h, lo in ranges})
        settled = self.resting.settle(state, self.portfolio, ts, epoch)
        for trade in settled.trades:
            self.metrics.record_order(trade.sleeve, "filled")
            log.info(
                "%s exit %s %.6g @ %.6g (%s, resting at %s)",
                trade.sleeve, trade.symbol, trade.units, trade.exit_price, trade.exit_reason,
                self.broker.venue,
                extra={"cycle": ts, "epoch": epoch, "sleeve": trade.sleeve, "symbol": trade.symbol},
            )  # fmt: skip
        summary.orders += len(settled.trades)
        summary.trades += self._record(settled.trades, epoch)
        self.resting.cancel_orphans(settled.state, epoch)
        refused = self.resting.refused(settled.state)
        stranded = self.resting.stranded(state, settled.state, bars, t, self.portfolio, epoch,
                                         refused)  # fmt: skip
        if stranded:  # a stop the bar went through rests unfilled: exit at market, cancelled
            self._watch_protection(t, state, epoch, only=stranded)
        if refused:  # the venue would not rest their protection: watch it after the close
            self._watch_protection(t, settled.state, epoch, only=refused)
        return settled.state

    def _watch_protection(self, t, state, epoch, only=None) -> None:
        """The runner watches the levels on the closed bar (of the positions in ``only``, if
        given); the venue executes a market exit, and the position closes when its fills are
        reported (at their price, not the level)."""
        bars, ts = self.bars, int(self.bars.ts_ns[t])
        stopped = check_stops(state, bars.open[t], bars.high[t], bars.low[t], ts,
                              self.portfolio, t)  # fmt: skip
        busy = {(w.order.sleeve, w.order.symbol) for w in self.working}
        for trade in stopped.trades:
            key = (trade.sleeve, trade.symbol)
            if key not in busy and (only is None or key in only):
                self._send(stop_order(trade, ts), trade.units, epoch, PROTECTIVE, True)

    def _send_decisions(self, orders, state, own_halt, epoch) -> None:
        """Send the accepted decisions to the venue; a position with an order still working
        gets no new one until that order is done."""
        busy = {(w.order.sleeve, w.order.symbol) for w in self.working}
        positions = {(p.sleeve, p.symbol): p for p in state.positions()}
        held = {key: abs(p.units) for key, p in positions.items()}
        during_halt = self.store.active_halt() is not None
        for order in orders:
            key = (order.sleeve, order.symbol)
            if key in busy:
                log.warning("%s: an order is still working at the venue; skipped", order.key)
                continue
            units = order.units if order.action == "entry" else held.get(key, 0.0)
            if units > 0 and order.action == "exit" and self.resting is not None:
                if not self.resting.release(positions[key], epoch, order):
                    continue  # its protection filled first (in part: its rest went out already)
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
        if self.working:
            return  # orders in flight (e.g. filled before a crash): the settlement compares
        newest = self.store.latest_intent_bar()
        if newest is not None and self.last_ts_ns is not None and newest > self.last_ts_ns:
            # Orders of a bar a crashed leader did not finish are at the venue but not yet in
            # our state; the redo settles them, and the next settlement compares.
            return
        state = state or self.state
        ours = net_positions(state.positions())
        if self.resting is not None:
            for symbol, units in self.resting.unsettled(state).items():
                ours[symbol] = ours.get(symbol, 0.0) + units  # the next settlement applies it
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

    def _record(self, trades, epoch: int) -> int:
        return record_trades(self.store, trades, epoch, self._periods_per_year)

    def _heartbeat(self, role: str, epoch: int | None) -> None:
        self.store.heartbeat(self.host, role, epoch, time.time_ns())
        self.metrics.heartbeat()
        self.notifier.alive(role if epoch is None else f"{role} epoch {epoch}")


def _pid() -> int:
    import os

    return os.getpid()
