"""Promotion records in the runner: each promoted sleeve trades the active record of its name.

A new record is adopted only at a cycle boundary, after its strategy, symbols, allocation and
code fingerprint are checked; a refused one is logged and recorded, the sleeve keeps its record.
A record that no longer verifies against the id saved with its adoption HALTs the runner.
"""

from __future__ import annotations

import dataclasses
import logging

from live.config import LiveConfig
from live.inputs import running_overlay
from live.regime import pinned_model_problem
from quantshift.errors import ConfigError
from quantshift.formatting import number
from quantshift.promotion import PromotionRecord, fingerprint_mismatch
from quantshift.provenance import code_fingerprint

log = logging.getLogger("quantshift.live")


class PromotionAdopter:
    """Which promotion record each promoted sleeve of one runner trades."""

    def __init__(self, config: LiveConfig, store, metrics, host: str) -> None:
        self.config, self.store, self.metrics, self.host = config, store, metrics, host
        self._adopted: dict[str, int] = {}  # sleeve -> promotion id it trades
        self._refused: set[int] = set()
        # sleeve -> (promotion id, why): its adopted record no longer verifies
        self._unverified: dict[str, tuple[int, str]] = {}
        self._running_code = {
            sleeve.strategy_name: code_fingerprint(sleeve.strategy_name)
            for sleeve in config.portfolio.sleeves
            if sleeve.name in config.promotions
        }

    def resume(self, portfolio, epoch: int | None = None):
        """After a takeover or restart: the records this runner's sleeves were trading (from
        the store's adoptions), applied to ``portfolio``. A stored record that does not verify
        against the id saved with its adoption is not applied: it is refused and HALTs."""
        current = self.store.current_adoptions(self.config.name)
        self._adopted, self._unverified = {}, {}
        for sleeve, adoption in current.items():
            row = self.store.promotion(adoption.promotion_id)
            # A sleeve the config no longer points at that record name starts afresh.
            if row.name != self.config.promotions.get(sleeve):
                continue
            problem = adoption_problem(row, adoption.record_id)
            if problem is not None:
                self._unverified[sleeve] = (row.promotion_id, problem)
                self._refuse(sleeve, row.promotion_id, problem, None, epoch)
                continue
            self._adopted[sleeve] = adoption.promotion_id
            portfolio = _with_params(portfolio, sleeve, row)
            record = PromotionRecord.from_json(row.record)
            self.metrics.set_promoted(sleeve, record.record_id, forced=record.forced)
            _warn_forced(sleeve, record, {"epoch": epoch, "sleeve": sleeve})
        return portfolio

    def _refuse(self, sleeve, promotion_id, problem, ts, epoch) -> None:
        """Record, log and HALT on a sleeve whose trusted record is gone: it must not trade
        the config's parameters in its place, and a person decides what it trades next."""
        reason = f"sleeve {sleeve}: promotion {promotion_id} refused: {problem}"
        if promotion_id not in self._refused:
            self._refused.add(promotion_id)
            self.store.record_promotion_event(
                promotion_id, "refuse", by=f"runner {self.host}", reason=problem
            )
        log.error("HALT: %s", reason, extra={"cycle": ts, "epoch": epoch, "sleeve": sleeve})
        self.store.halt(reason[:500], by=f"runner {self.host}", epoch=epoch)
        self.metrics.set_halt(True, "runner_error")

    def adopt(self, portfolio, ts: int, epoch: int):
        """At a cycle boundary, switch each promoted sleeve to its active record (stage = the
        runner's mode). A record that fails validation is refused, logged and recorded, and the
        sleeve keeps trading the record it had; with none to keep, the runner stops. Return the
        portfolio with the adopted parameters."""
        stage = self.config.mode
        for sleeve, name in self.config.promotions.items():
            active = self.store.active_promotion(name, stage)
            current = self._adopted.get(sleeve)
            if active is not None and active.promotion_id == current:
                continue
            if sleeve in self._unverified and (
                active is None or active.promotion_id == self._unverified[sleeve][0]
            ):
                # Nothing trusted to trade until a person promotes or rolls back: HALT again
                # if they resumed without doing so.
                if self.store.active_halt() is None:
                    self._refuse(sleeve, *self._unverified[sleeve], ts, epoch)
                continue
            problem = (
                f"no active {stage} record named {name!r} (run `quantshift promote`)"
                if active is None
                else self._refusal(portfolio, sleeve, active)
            )
            if problem is None:
                record = PromotionRecord.from_json(active.record)
                portfolio = _with_params(portfolio, sleeve, active)
                self._adopted[sleeve] = active.promotion_id
                self._unverified.pop(sleeve, None)
                self.store.record_adoption(
                    runner=self.config.name,
                    sleeve=sleeve,
                    promotion_id=active.promotion_id,
                    record_id=record.record_id,
                    bar_ts_ns=ts,
                    epoch=epoch,
                )
                self.metrics.set_promoted(sleeve, record.record_id, forced=record.forced)
                self._warn_other_terms(portfolio, sleeve, record)
                log.info(
                    "sleeve %s adopts %s record %s (%s)",
                    sleeve,
                    stage,
                    record.record_id,
                    ", ".join(f"{k}={number(v)}" for k, v in record.params.items()),
                    extra={"cycle": ts, "epoch": epoch, "sleeve": sleeve},
                )
                _warn_forced(sleeve, record, {"cycle": ts, "epoch": epoch, "sleeve": sleeve})
                continue
            if current is None and sleeve in self._unverified:
                if active.promotion_id not in self._refused or self.store.active_halt() is None:
                    self._refuse(sleeve, active.promotion_id, problem, ts, epoch)
                continue
            if current is None:
                raise ConfigError(f"sleeve {sleeve!r} cannot trade: {problem}")
            if active is not None and active.promotion_id not in self._refused:
                self._refused.add(active.promotion_id)
                self.store.record_promotion_event(
                    active.promotion_id, "refuse", by=f"runner {self.host}", reason=problem
                )
                log.error(
                    "sleeve %s refuses record %s and keeps trading promotion %s: %s",
                    sleeve,
                    active.promotion_id,
                    current,
                    problem,
                    extra={"cycle": ts, "epoch": epoch, "sleeve": sleeve},
                )
        return portfolio

    def _warn_other_terms(self, portfolio, sleeve_name: str, record: PromotionRecord) -> None:
        """Say when the sleeve sizes, trades or pays otherwise than the study did, or with
        another regime model or sentiment filter: its paper record then measures these terms,
        not the study's."""
        sleeve = next(s for s in portfolio.sleeves if s.name == sleeve_name)
        differs = record.other_terms(sleeve.sim_config(portfolio.sim).to_dict())
        differs += record.other_overlay(running_overlay(self.config))
        if differs:
            log.warning(
                "sleeve %s trades record %s on other terms than its study (%s); the portfolio's "
                "risk limits cap it further",
                sleeve_name,
                record.record_id,
                "; ".join(differs),
                extra={"sleeve": sleeve_name},
            )

    def _refusal(self, portfolio, sleeve_name: str, row) -> str | None:
        """Why the stored record ``row`` cannot drive sleeve ``sleeve_name`` (None: it can)."""
        try:
            record = PromotionRecord.from_json(row.record, f"promotion {row.promotion_id}")
        except ConfigError as exc:
            return str(exc)
        sleeve = next(s for s in portfolio.sleeves if s.name == sleeve_name)
        if record.strategy != sleeve.strategy_name:
            return (
                f"record is for strategy {record.strategy!r}, sleeve runs {sleeve.strategy_name!r}"
            )
        if sorted(record.symbols) != sorted(sleeve.symbols):
            return f"record trades {list(record.symbols)}, sleeve trades {list(sleeve.symbols)}"
        if abs(record.allocation - sleeve.allocation) > 1e-9:
            return (
                f"record allocation {record.allocation:g} differs from the sleeve's "
                f"{sleeve.allocation:g} in the config"
            )
        differs = fingerprint_mismatch(record.code, self._running_code[sleeve.strategy_name])
        if differs:
            return "code fingerprint does not match the running code: " + "; ".join(differs)
        model = self.config.regime_model
        return pinned_model_problem(
            record.overlay, model and model.cache_dir, model and model.tracking_uri
        )


def _warn_forced(sleeve: str, record: PromotionRecord, extra: dict) -> None:
    """Say loudly that a sleeve trades a record a person published past a failed gate."""
    if not record.forced:
        return
    failed = "; ".join(
        f"{g.stage}: " + ", ".join(c.name for c in g.failed) for g in record.gates if not g.passed
    )
    log.warning(
        "sleeve %s trades record %s that was FORCED past a failed gate (%s)",
        sleeve,
        record.record_id,
        failed,
        extra=extra,
    )


def record_forced(record: dict) -> bool:
    """Whether a stored record (its parsed JSON) was published past a failed gate; a record
    that does not load is not (``adoption_problem`` says what is wrong with it)."""
    try:
        return PromotionRecord.from_dict(record).forced
    except ConfigError:
        return False


def adoption_problem(row, record_id: str) -> str | None:
    """Why stored record ``row`` is not the record adopted as ``record_id`` (None: it is):
    its content must load, hash to its own id, and that id be the one saved at adoption."""
    try:
        record = PromotionRecord.from_json(row.record, f"promotion {row.promotion_id}")
    except ConfigError as exc:
        return str(exc)
    if record.record_id != record_id:
        return (
            f"promotion {row.promotion_id} is record {record.record_id}, but record {record_id} "
            "was adopted; the stored record was replaced after adoption"
        )
    return None


def traded_portfolios(config: LiveConfig, store, first_ns: int):
    """What runner ``config`` traded from bar ``first_ns`` on, by its store's adoptions: the
    portfolio of that bar (each promoted sleeve on the parameters of the record it had adopted
    by then) and ``(bar time, portfolio)`` from each later adoption on, the ``switches`` of
    :func:`quantshift.portfolio.portfolio_backtest`."""
    names = set(config.portfolio.sleeve_names)
    by_bar: dict[int, list] = {}
    for adoption in store.adoptions():
        if adoption.runner == config.name and adoption.sleeve in names:
            by_bar.setdefault(max(int(adoption.bar_ts_ns), int(first_ns)), []).append(adoption)
    # Adoptions before the first bar compared are clamped to it: they all hold from there.
    start = portfolio = config.portfolio
    switches = []
    for bar_ts_ns in sorted(by_bar):
        for adoption in by_bar[bar_ts_ns]:
            row = store.promotion(adoption.promotion_id)
            portfolio = _with_params(portfolio, adoption.sleeve, row)
        if bar_ts_ns > first_ns:
            switches.append((bar_ts_ns, portfolio))
        else:
            start = portfolio
    return start, switches


def _with_params(portfolio, sleeve_name: str, row):
    """The portfolio with sleeve ``sleeve_name`` on the parameters of stored record ``row``."""
    params = PromotionRecord.from_json(row.record).params
    sleeves = tuple(
        dataclasses.replace(s, params=dict(params)) if s.name == sleeve_name else s
        for s in portfolio.sleeves
    )
    return dataclasses.replace(portfolio, sleeves=sleeves)
