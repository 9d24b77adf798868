"""The promotion gate: thresholds a careful quant would choose, and the checks against them.

Research evidence (out-of-sample, DSR over every trial, PBO, Monte Carlo) opens the way to
paper; a paper-trading record of the exact record opens the way to live.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from quantshift.data.validate import iso_utc
from quantshift.errors import ConfigError
from quantshift.promotion.record import GateCheck, GateResult
from quantshift.tables import Table, is_number, read_toml

NS_PER_DAY = 86_400 * 1_000_000_000
OOS_RETURNS = "out-of-sample bar returns"


@dataclass(frozen=True, kw_only=True)
class _Thresholds:
    """A gate's thresholds: flags, and numbers that must be finite and (but for a Sharpe
    ratio, which may be below zero) not negative."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                continue
            signed = f.name in ("min_oos_sharpe", "min_lockbox_sharpe")
            if not (is_number(value, finite=True) and (signed or value >= 0)):
                wanted = "a finite number" if signed else "a number >= 0"
                raise ConfigError(f"{f.name} = {value!r} must be {wanted}")


@dataclass(frozen=True, kw_only=True)
class PaperGate(_Thresholds):
    """Thresholds to promote research results to paper trading."""

    require_out_of_sample: bool = True
    min_oos_sharpe: float = 0.0
    """The out-of-sample Sharpe must be above this (it is the only evidence not fitted)."""
    min_oos_psr: float = 0.95
    """Out-of-sample significance: the probability that the true Sharpe is above zero."""
    min_dsr: float = 0.95
    max_pbo: float = 0.2
    max_mc_drawdown_pct_p95: float = 25.0
    require_block_bootstrap: bool = True
    """The drawdown bound must come from a stationary block bootstrap of out-of-sample bar
    returns: a trade-order reshuffle misses the drawdowns inside trades."""
    min_oos_trades: int = 20
    require_committed_code: bool = True
    min_lockbox_sharpe: float = 0.0
    """The chosen parameters' Sharpe ratio on the lockbox (the data no research step read,
    evaluated once by ``promote``) must be above this."""
    require_lockbox: bool = True
    allow_lockbox_relook: bool = False
    """A lockbox another choice (spec or parameters) has already looked at is spent: the gate
    fails unless this waives it (shown WAIVED). The same choice looking again adds nothing and
    is only counted."""


@dataclass(frozen=True, kw_only=True)
class LiveGate(_Thresholds):
    """Thresholds to promote a paper-trading record to live."""

    min_trades: int = 10
    min_days: float = 30.0
    min_win_rate_pct: float = 45.0
    max_drawdown_pct: float = 20.0
    allow_halts: bool = False


@dataclass(frozen=True, kw_only=True)
class GateConfig:
    """Both gates; ``GateConfig()`` is the default, ``load_gate_config`` reads a TOML file with
    ``[paper]`` and ``[live]`` tables overriding some thresholds."""

    paper: PaperGate = PaperGate()
    live: LiveGate = LiveGate()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "<gate config>") -> GateConfig:
        """Build from plain data (a parsed TOML file); errors name ``source``, the table and
        the threshold."""
        top = Table(raw, source)
        top.refuse_unknown(("paper", "live"))
        return cls(
            paper=top.table("paper").build(PaperGate), live=top.table("live").build(LiveGate)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            name: {f.name: getattr(getattr(self, name), f.name) for f in fields(kind)}
            for name, kind in (("paper", PaperGate), ("live", LiveGate))
        }


def load_gate_config(path: str | Path | None) -> GateConfig:
    """Read a gate TOML file (None: the defaults)."""
    if path is None:
        return GateConfig()
    top, _ = read_toml(path, "gate config")
    return GateConfig.from_dict(top.raw, source=top.source)


# ----------------------------------------------------------------------------- evidence
@dataclass(frozen=True, kw_only=True)
class ResearchEvidence:
    """What a study showed, as the paper gate reads it (None: not measured)."""

    oos_method: str | None
    oos_folds: int
    oos_trades: int | None
    oos_sharpe: float | None
    oos_psr: float | None
    dsr: float | None
    n_trials: int
    pbo: float | None
    mc_max_drawdown_pct_p95: float | None
    mc_source: str | None
    mc_method: str | None
    code_dirty: bool | None
    strategy_file: str | None
    strategy_file_git: str | None
    """The strategy's source in git (``quantshift.provenance.strategy_source``)."""
    strategy_git_dirty: bool | None = None
    core_pinned: bool | None = None
    core_pinned_by: str | None = None
    """How the core is pinned, or why not (``quantshift.provenance.core_pin``); None in a run
    recorded before it, whose core only a clean git checkout pins."""
    causality: str | None
    """The study's causality verdict on its data, one line (None: not checked)."""
    causal: bool | None
    lockbox_sharpe: float | None = None
    """The chosen parameters' annualised Sharpe ratio on the lockbox (None: none looked at)."""
    lockbox_note: str = "the study kept no lockbox"
    lockbox_other_choices_before: int | None = None
    """Earlier looks at an overlapping lockbox by another spec or parameters."""


@dataclass(frozen=True, kw_only=True)
class PaperStretch:
    """One stretch in which a runner's sleeve traded a record: the bars it traded, when (wall
    clock) it adopted the record, the P&L of the trades it closed and its equity snapshots."""

    runner: str
    sleeve: str
    first_bar_ts_ns: int
    last_bar_ts_ns: int | None
    ts_adopted_ns: int
    trade_pnls: tuple[float, ...]
    equity: tuple[float, ...]


MAX_WALL_CLOCK_LAG_NS = 4 * NS_PER_DAY
"""A stretch is traded on the wall clock when its first bar is at most this old when the runner
adopts the record (a daily bar closes a weekend or a holiday before it); a replay trades bars
that are months or years old."""


@dataclass(frozen=True, kw_only=True)
class PaperEvidence:
    """A paper-trading record of one promotion record, as the live gate reads it.

    The numbers count only stretches traded on the wall clock after the record was published
    and after the study's data window; ``uncounted_days`` and ``uncounted_why`` say what else
    was traded and why it does not count, ``stretches`` lists every stretch with its verdict.
    """

    trades: int
    days: float
    win_rate_pct: float | None
    max_drawdown_pct: float | None
    total_pnl: float
    halts: int
    first_ts_ns: int | None
    last_ts_ns: int | None
    uncounted_days: float = 0.0
    uncounted_trades: int = 0
    uncounted_why: str = ""
    stretches: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def paper_evidence(
    stretches: Sequence[PaperStretch],
    *,
    published_ts_ns: int,
    data_last_bar_ts_ns: int | None,
    halts: int,
) -> PaperEvidence:
    """Summarise a paper-trading record: the stretches that count (wall clock, after the record
    was published at ``published_ts_ns`` and after the study's last bar), the HALTs written
    since, and every stretch with whether it counts and why not."""
    pnls: list[float] = []
    curve: list[float] = []
    counted_days = uncounted_days = 0.0
    uncounted_trades = 0
    first = last = None
    reasons: list[str] = []
    listed = []
    for s in stretches:
        end = s.first_bar_ts_ns if s.last_bar_ts_ns is None else s.last_bar_ts_ns
        days = max(0.0, (end - s.first_bar_ts_ns) / NS_PER_DAY)
        why = _uncounted_reason(s, published_ts_ns, data_last_bar_ts_ns)
        replay = s.ts_adopted_ns - s.first_bar_ts_ns > MAX_WALL_CLOCK_LAG_NS
        listed.append(
            {
                "runner": s.runner,
                "sleeve": s.sleeve,
                "clock": "replay" if replay else "wall-clock",
                "first_bar": iso_utc(s.first_bar_ts_ns),
                "last_bar": iso_utc(end),
                "adopted_at": iso_utc(s.ts_adopted_ns),
                "published_at": iso_utc(published_ts_ns),
                "study_last_bar": None
                if data_last_bar_ts_ns is None
                else iso_utc(data_last_bar_ts_ns),
                "days": days,
                "trades": len(s.trade_pnls),
                "counts": why is None,
                "why_not": why or "",
            }
        )
        if why is not None:
            uncounted_days += days
            uncounted_trades += len(s.trade_pnls)
            reasons += [why] if why not in reasons else []
            continue
        counted_days += days
        pnls += [p for p in s.trade_pnls if math.isfinite(p)]
        curve += list(s.equity)
        first = s.first_bar_ts_ns if first is None else min(first, s.first_bar_ts_ns)
        last = end if last is None else max(last, end)
    pnl = np.asarray(pnls, dtype=float)
    equity = np.asarray(curve, dtype=float)
    equity = equity[np.isfinite(equity)]
    drawdown = None
    if equity.size:
        peak = np.maximum.accumulate(equity)
        drawdown = float(np.max((peak - equity) / peak) * 100.0)
    return PaperEvidence(
        trades=int(pnl.size),
        days=counted_days,
        win_rate_pct=float(np.mean(pnl > 0) * 100.0) if pnl.size else None,
        max_drawdown_pct=drawdown,
        total_pnl=float(pnl.sum()),
        halts=int(halts),
        first_ts_ns=first,
        last_ts_ns=last,
        uncounted_days=uncounted_days,
        uncounted_trades=uncounted_trades,
        uncounted_why="; ".join(reasons),
        stretches=tuple(listed),
    )


def _uncounted_reason(
    s: PaperStretch, published_ts_ns: int, data_last_bar_ts_ns: int | None
) -> str | None:
    """Why a stretch does not count as paper trading (None: it counts)."""
    lag_days = (s.ts_adopted_ns - s.first_bar_ts_ns) / NS_PER_DAY
    if lag_days * NS_PER_DAY > MAX_WALL_CLOCK_LAG_NS:
        return (
            f"a replay ({s.runner}/{s.sleeve} traded bars from {iso_utc(s.first_bar_ts_ns)[:10]} "
            f"on {iso_utc(s.ts_adopted_ns)[:10]}, {lag_days:.0f} days after they happened; only "
            "trading on the wall clock counts)"
        )
    if s.ts_adopted_ns < published_ts_ns:
        return f"traded before the record was published ({iso_utc(published_ts_ns)})"
    if data_last_bar_ts_ns is not None and s.first_bar_ts_ns <= data_last_bar_ts_ns:
        return f"inside the study's data window (its last bar is {iso_utc(data_last_bar_ts_ns)})"
    return None


# ----------------------------------------------------------------------------- the gates
def evaluate_paper_gate(
    evidence: ResearchEvidence, gate: PaperGate, *, force: bool = False
) -> GateResult:
    """Check research evidence against the paper thresholds (every check, pass or fail)."""
    checks = [
        _required(
            gate.require_out_of_sample,
            "require_out_of_sample",
            _check(
                "out-of-sample folds",
                evidence.oos_folds,
                ">=",
                1,
                evidence.oos_method or "no walk-forward or CPCV in the run",
            ),
        ),
        _check(
            "out-of-sample trades",
            evidence.oos_trades,
            ">=",
            gate.min_oos_trades,
            "" if evidence.oos_trades is not None else "no out-of-sample trades recorded",
        ),
        _check("out-of-sample Sharpe", evidence.oos_sharpe, ">", gate.min_oos_sharpe),
        _check(
            "out-of-sample PSR",
            evidence.oos_psr,
            ">=",
            gate.min_oos_psr,
            "probability that the out-of-sample Sharpe is above 0",
        ),
        _check(
            "deflated Sharpe ratio",
            evidence.dsr,
            ">=",
            gate.min_dsr,
            f"over {evidence.n_trials} trials",
        ),
        _check(
            "PBO",
            evidence.pbo,
            "<=",
            gate.max_pbo,
            "probability of overfitting"
            if evidence.pbo is not None
            else "not measured: the study has no [pbo] section or too few trials",
        ),
        _check(
            "Monte Carlo max drawdown p95 (%)",
            evidence.mc_max_drawdown_pct_p95,
            "<=",
            gate.max_mc_drawdown_pct_p95,
            evidence.mc_source or "no Monte Carlo in the run",
        ),
        _required(
            gate.require_block_bootstrap,
            "require_block_bootstrap",
            _monte_carlo_method_check(evidence),
        ),
        _required(
            gate.require_committed_code,
            "require_committed_code",
            _code_check(evidence),
        ),
        _check(
            "strategy causal on the study's data",
            evidence.causal,
            "==",
            True,
            evidence.causality or "the study did not run the causality check",
        ),
        _required(
            gate.require_lockbox,
            "require_lockbox",
            _check(
                "lockbox Sharpe",
                evidence.lockbox_sharpe,
                ">",
                gate.min_lockbox_sharpe,
                evidence.lockbox_note,
            ),
        ),
        _required(
            not gate.allow_lockbox_relook,
            "allow_lockbox_relook",
            _check(
                "lockbox looks by other choices before this one",
                evidence.lockbox_other_choices_before,
                "==",
                0,
                evidence.lockbox_note,
            ),
            waived_when="true",
        ),
    ]
    return GateResult(stage="paper", checks=tuple(checks), forced=force)


def _monte_carlo_method_check(evidence: ResearchEvidence) -> GateCheck:
    """The drawdown bound's method: a block bootstrap of out-of-sample bar returns."""
    if evidence.mc_method is None:
        value, note = None, "no Monte Carlo method recorded"
    else:
        value = evidence.mc_method == "block" and evidence.mc_source == OOS_RETURNS
        note = f"{evidence.mc_method} of {evidence.mc_source or 'unknown returns'}"
        if not value:
            note += "; the bound needs the stationary block bootstrap of " + OOS_RETURNS
    return _check("Monte Carlo is a block bootstrap of out-of-sample bars", value, "==", True, note)


def _code_check(evidence: ResearchEvidence) -> GateCheck:
    """The run's code is pinned: quantshift's core by a clean git checkout or an installed
    release matching its RECORD, and the strategy by a commit of the repository holding it."""
    from quantshift.provenance import IN_RELEASE  # here: it imports the strategy framework

    file, state = evidence.strategy_file, evidence.strategy_file_git
    problems = []
    if evidence.core_pinned_by is None:  # recorded before core_pin: git alone pinned the core
        if evidence.code_dirty is None:
            problems.append("the run's code is not in a git checkout")
        elif evidence.code_dirty:
            problems.append("tracked files differ from the run's git commit")
        known = evidence.code_dirty is not None
    else:
        if evidence.core_pinned is not True:
            problems.append(f"quantshift's core is not pinned: {evidence.core_pinned_by}")
        known = evidence.core_pinned is not None
    if state is None:
        problems.append("the run does not name its strategy's source file (rerun the study)")
    elif state == IN_RELEASE and evidence.core_pinned_by is not None:
        pass  # shipped in the release: pinned with the core (or not, and that fails above)
    elif state != "committed":
        where = "" if state in ("outside git", "no file") else " in git"
        problems.append(f"the strategy's source {file or '(no file)'} is {state}{where}")
    elif evidence.core_pinned_by is not None and evidence.strategy_git_dirty is not False:
        problems.append(
            f"the run does not say whether the repository of {file} is clean (rerun the study)"
            if evidence.strategy_git_dirty is None
            else f"tracked files in the repository of {file} differ from its commit (commit "
            "them and rerun the study)"
        )
    value = None if not known or state is None else not problems
    note = "; ".join(problems) or f"strategy source {file} is {state}" + (
        "" if evidence.core_pinned_by is None else f"; core pinned by {evidence.core_pinned_by}"
    )
    return _check("code committed (git clean)", value, "==", True, note)


def evaluate_live_gate(evidence: PaperEvidence, gate: LiveGate, *, force: bool = False):
    """Check a paper-trading record against the live thresholds (every check, pass or fail)."""
    checks = [
        _check(
            "paper trades", evidence.trades, ">=", gate.min_trades, _uncounted(evidence, "trades")
        ),
        _check("paper days", evidence.days, ">=", gate.min_days, _uncounted(evidence, "days")),
        _check("paper win rate (%)", evidence.win_rate_pct, ">=", gate.min_win_rate_pct),
        _check("paper max drawdown (%)", evidence.max_drawdown_pct, "<", gate.max_drawdown_pct),
    ]
    checks.append(
        _required(
            not gate.allow_halts,
            "allow_halts",
            _check("HALTs during paper trading", evidence.halts, "==", 0),
            waived_when="true",
        )
    )
    return GateResult(stage="live", checks=tuple(checks), forced=force)


def _uncounted(evidence: PaperEvidence, what: str) -> str:
    """The note of a paper count: what was traded but does not count, and why."""
    if not evidence.uncounted_why:
        return "on the wall clock, after publication and the study's data"
    amount = evidence.uncounted_days if what == "days" else evidence.uncounted_trades
    return (
        f"counted on the wall clock; {amount:.0f} {what} traded otherwise do not count: "
        f"{evidence.uncounted_why}"
    )


def _required(required: bool, setting: str, check: GateCheck, waived_when="false") -> GateCheck:
    """``check``, or the same check marked waived (passed, and saying which setting waived
    it) when the gate config turned it off: a waiver stays visible in the record."""
    if required or check.passed:
        return check
    return dataclasses.replace(
        check, passed=True, note=f"WAIVED by {setting} = {waived_when}; would fail"
    )


def _defined(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


_OPERATORS = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}


def _check(name: str, value, op: str, threshold, note: str = "") -> GateCheck:
    """``value op threshold`` as a check; a missing value (None or NaN) fails it."""
    defined = _defined(value)
    return GateCheck(
        name=name,
        value=value if defined else None,
        op=op,
        threshold=threshold,
        passed=bool(defined and _OPERATORS[op](value, threshold)),
        note=note,
    )
