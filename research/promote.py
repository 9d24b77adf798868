"""The promotion script: gate a research run (or its paper record) and publish the record.

Reads the MLflow run and its ledger, evaluates the gate, writes the record into the live store
(through ``quantshift.promotion.open_promotion_store``) and registers it in the Model Registry.
"""

from __future__ import annotations

import dataclasses
import getpass
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from quantshift.errors import ConfigError, UnknownNameError
from quantshift.promotion import (
    STAGES,
    GateConfig,
    GateResult,
    PromotionRecord,
    PromotionStore,
    ResearchEvidence,
    StoredPromotion,
    evaluate_live_gate,
    evaluate_paper_gate,
    open_promotion_store,
)
from quantshift.promotion.gate import OOS_RETURNS
from research.tracking import PARENT_TAG, Tracker, registered_model_name

CODE_TAG = "quantshift.code."


@dataclass
class PromotionOutcome:
    """What ``promote`` did: the gate's verdict, and the record it published (None: refused,
    nothing changed)."""

    stage: str
    gate: GateResult
    record: PromotionRecord | None = None
    stored: StoredPromotion | None = None
    registry_version: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.record is not None

    def lines(self) -> list[str]:
        out = self.gate.lines()
        if self.record is None:
            out.append("nothing changed: the gate failed (use --force to override, recorded)")
        else:
            out += self.record.summary_lines()
            out.append(
                f"  active for stage {self.stage} in the live store (promotion id "
                f"{self.stored.promotion_id}); MLflow model "
                f"{registered_model_name(self.record.name)!r} version "
                f"{self.registry_version}, alias {self.stage!r}"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "promoted": self.promoted,
            "gate": self.gate.to_dict(),
            "record": None if self.record is None else self.record.to_dict(),
            "promotion_id": None if self.stored is None else self.stored.promotion_id,
            "registry_version": self.registry_version,
            "evidence": self.evidence,
        }


def default_actor() -> str:
    """Who is promoting: ``user@host``."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def research_evidence(
    tracker: Tracker, run_id: str, sleeve: str | None = None
) -> tuple[ResearchEvidence, dict[str, Any]]:
    """Read what the paper gate needs from a study run (``quantshift research report``), and
    the record's research fields (strategy, parameters, data, metrics, code). An overlay
    study's run gives one of its sleeves (``sleeve``) with the overlay it ran with
    (:func:`research.regime.evidence.overlay_evidence`)."""
    from research.regime.evidence import KIND as OVERLAY_KIND
    from research.regime.evidence import overlay_evidence

    run = tracker.get_run(run_id)
    if run.tags.get(PARENT_TAG):
        raise ConfigError(
            f"MLflow run {run_id} is the {run.kind!r} part of run {run.tags[PARENT_TAG]}; "
            "promote the parent run (the one `quantshift research report` printed)"
        )
    if run.kind not in ("report", "optimize", OVERLAY_KIND):
        raise ConfigError(
            f"MLflow run {run_id} is a {run.kind!r} run; promotion reads a study run "
            "(`quantshift research report SPEC`)"
        )
    if run.status != "FINISHED":
        raise ConfigError(f"MLflow run {run_id} is {run.status}, not FINISHED")
    summary = tracker.load_dict(run_id, "summary.json")
    if run.kind == OVERLAY_KIND:
        return overlay_evidence(summary, sleeve, run_id)
    if sleeve is not None:
        raise ConfigError(f"MLflow run {run_id} is a study of one strategy: it has no sleeves")
    for key in ("strategy", "best_params", "trials", "symbols"):
        if key not in summary:
            raise ConfigError(
                f"MLflow run {run_id}: its summary lacks {key!r}; rerun the study with this "
                "version of QuantShift"
            )
    ledger = tracker.load_frame(_ledger_run(tracker, run), "ledger")
    if len(ledger) < int(summary["trials"]):
        raise ConfigError(
            f"MLflow run {run_id}: the ledger has {len(ledger)} trials but the summary counts "
            f"{summary['trials']}; the DSR would not be honest"
        )
    code = {k[len(CODE_TAG) :]: v for k, v in run.tags.items() if k.startswith(CODE_TAG)}
    flag = {"true": True, "false": False}.get
    code = {
        "version": code.get("version"),
        "strategy_hash": code.get("strategy_hash"),
        "core_hash": code.get("core_hash"),
        "git_commit": code.get("git_commit"),
        "git_dirty": flag(code.get("git_dirty", "")),
        # Absent from runs made before core_pin: the gate then asks git alone, as it did.
        **(
            {"core_pinned": flag(code["core_pinned"]), "core_pinned_by": code["core_pinned_by"]}
            if "core_pinned_by" in code
            else {}
        ),
        "strategy_file": code.get("strategy_file"),
        "strategy_file_sha256": code.get("strategy_file_sha256"),
        "strategy_file_git": code.get("strategy_file_git"),
        "strategy_git_commit": code.get("strategy_git_commit"),
        "strategy_git_dirty": flag(code.get("strategy_git_dirty", "")),
    }
    if not code["version"] or not code["strategy_hash"]:
        raise ConfigError(f"MLflow run {run_id} has no code fingerprint tags")
    return evidence_from_summary(summary, code, run.tags.get("quantshift.data_fingerprint"))


def data_block(summary: Mapping[str, Any], fingerprint: str | None) -> dict[str, Any]:
    """The record's ``data`` field: the study's data source, first and last bar, bar count
    (from its summary) and ``fingerprint``."""
    return {
        "source": summary.get("data_source"),
        "first_bar": summary.get("data_first_bar"),
        "last_bar": summary.get("data_last_bar"),
        "bars": summary.get("data_bars"),
        "fingerprint": fingerprint,
    }


def evidence_from_summary(
    summary: Mapping[str, Any], code: Mapping[str, Any], data_fingerprint: str | None
) -> tuple[ResearchEvidence, dict[str, Any]]:
    """The paper gate's evidence and the record's research fields from a study's summary
    (``StudyReport.summary`` as JSON) and the code fingerprint it ran with; the lockbox is not
    looked at here (see :func:`look_at_lockbox`)."""
    folds = int(summary.get("wf_folds") or 0)
    mc_key = next(
        (k for k in ("oos_mc_max_drawdown_pct_p95", "mc_max_drawdown_pct_p95") if k in summary),
        None,
    )
    pbo = _number(summary.get("pbo"))
    causality = summary.get("causality") or {}
    evidence = ResearchEvidence(
        oos_method="walk-forward" if folds else None,
        oos_folds=folds,
        oos_trades=None if "oos_trades" not in summary else int(summary["oos_trades"]),
        oos_sharpe=_number(summary.get("oos_sharpe")),
        oos_psr=_number(summary.get("oos_psr")),
        dsr=_number(summary.get("dsr")),
        n_trials=int(summary["trials"]),
        pbo=pbo,
        mc_max_drawdown_pct_p95=None if mc_key is None else _number(summary[mc_key]),
        mc_source=None
        if mc_key is None
        else (OOS_RETURNS if mc_key.startswith("oos") else "in-sample bar or trade returns"),
        mc_method=None
        if mc_key is None
        else summary.get(mc_key[: -len("max_drawdown_pct_p95")] + "method"),
        code_dirty=code["git_dirty"],
        strategy_file=code["strategy_file"],
        strategy_file_git=code["strategy_file_git"],
        strategy_git_dirty=code.get("strategy_git_dirty"),
        core_pinned=code.get("core_pinned"),
        core_pinned_by=code.get("core_pinned_by"),
        causality=causality.get("summary"),
        causal=causality.get("causal"),
    )
    fields_ = {
        "strategy": summary["strategy"],
        "params": {k: float(v) for k, v in summary["best_params"].items()},
        "symbols": tuple(summary["symbols"]),
        "code": code,
        "data": data_block(summary, data_fingerprint),
        "in_sample": _section(summary, "is_"),
        "out_of_sample": _section(summary, "oos_", skip="oos_mc_"),
        "statistics": {
            "dsr": evidence.dsr,
            "psr": _number(summary.get("psr")),
            "oos_psr": evidence.oos_psr,
            "n_trials": evidence.n_trials,
            "pbo": pbo,
            "walk_forward_efficiency": _number(summary.get("walk_forward_efficiency")),
            "wf_folds": folds,
        },
        "monte_carlo": _section(summary, "oos_mc_" if mc_key and mc_key[0] == "o" else "mc_"),
        "research_settings": dict(summary.get("research_settings") or {}),
        "causality": dict(causality),
        "preregistration": dict(summary.get("preregistration") or {}),
    }
    return evidence, fields_


def look_at_lockbox(
    summary: Mapping[str, Any], run_id: str, registry_url: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate the study's chosen parameters on its lockbox once, record the look, and return
    (the lockbox result with its look count, the registry's counts for the lineage on the
    study's data). A study without a lockbox returns ``({}, counts)``.

    The whole data window is loaded again and its research part must be the study's bars
    (same fingerprint): a lockbox measured on other data would not be the one kept back.
    """
    from quantshift.data import load_bars
    from quantshift.engine.config import SimConfig
    from research.lockbox import LookRegistry, evaluate_lockbox, split_lockbox
    from research.registry import default_registry
    from research.registry import registry_url as resolve_url

    pre = summary.get("preregistration") or {}
    box = summary.get("lockbox") or {}
    counts = _registry_counts(default_registry(registry_url), pre)
    if not pre or not box.get("bars"):
        return {}, counts
    window = summary.get("data_window") or {}
    bars = load_bars(
        summary["data_source"],
        symbols=list(summary["symbols"]),
        start=window.get("start"),
        end=window.get("end"),
    )
    research, lockbox = split_lockbox(bars, float(box["fraction"]))
    if research.fingerprint() != summary.get("data_fingerprint") or lockbox is None:
        raise ConfigError(
            f"MLflow run {run_id}: the data {summary['data_source']} no longer gives the "
            "study's bars (fingerprint differs), so its lockbox cannot be evaluated"
        )
    config = SimConfig.build(**dict(summary.get("research_settings") or {}))
    params = {k: float(v) for k, v in summary["best_params"].items()}
    result = evaluate_lockbox(summary["strategy"], bars, params, config, int(box["first_ns"]))
    looks_registry = LookRegistry(resolve_url(registry_url))
    try:
        looks = looks_registry.record(
            lineage=pre["lineage"],
            data_source=f"{summary['data_source']}[{','.join(summary['symbols'])}]",
            first_ns=int(box["first_ns"]),
            last_ns=int(box["last_ns"]),
            spec_hash=pre["spec_hash"],
            params=params,
            run_id=run_id,
            result=result,
        )
    finally:
        looks_registry.close()
    out = {
        **{k: box[k] for k in ("fraction", "first_bar", "last_bar")},
        **result,
        "looks": looks.looks,
        "choices": looks.choices,
        "other_choices_before": looks.other_choices_before,
        "note": looks.note(),
    }
    return out, counts


def with_lockbox(evidence: ResearchEvidence, lockbox: Mapping[str, Any]) -> ResearchEvidence:
    """``evidence`` with the lockbox look's result (unchanged if the study kept no lockbox)."""
    if not lockbox:
        return evidence
    return dataclasses.replace(
        evidence,
        lockbox_sharpe=lockbox["sharpe"],
        lockbox_note=(
            f"{lockbox['first_bar'][:10]}..{lockbox['last_bar'][:10]} ({lockbox['bars']} bars, "
            f"return {lockbox['total_return_pct'] or 0.0:.2f}%): {lockbox['note']}"
        ),
        lockbox_other_choices_before=lockbox["other_choices_before"],
    )


def _registry_counts(registry, pre: Mapping[str, Any]) -> dict[str, Any]:
    """The registry's counts for the study's lineage and data (empty without a registration)."""
    if not pre:
        return {}
    summary = registry.summary(pre["lineage"], pre["data"])
    keys = ("trials", "n_effective", "studies", "specs", "sources", "evaluations")
    return {"lineage": pre["lineage"], "data": pre["data"]} | {k: summary[k] for k in keys}


def promote(
    run_id: str,
    stage: str,
    *,
    store_url: str,
    tracker: Tracker,
    name: str | None = None,
    allocation: float | None = None,
    gate: GateConfig | None = None,
    force: bool = False,
    by: str | None = None,
    reason: str = "",
    sleeve: str | None = None,
) -> PromotionOutcome:
    """Gate ``run_id`` for ``stage`` and, if it passes (or ``force``), publish the record.

    ``paper`` reads the study run's evidence (of ``sleeve`` when the run is an overlay study;
    its record then pins the overlay); ``live`` reads the paper-trading record of the active
    paper record that came from ``run_id``. A failed gate changes nothing.
    """
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {stage!r}")
    gate = gate or GateConfig()
    by = by or default_actor()
    store = open_promotion_store(store_url)
    try:
        if stage == "paper":
            evidence, fields_ = research_evidence(tracker, run_id, sleeve)
            lockbox, counts = look_at_lockbox(tracker.load_dict(run_id, "summary.json"), run_id)
            evidence = with_lockbox(evidence, lockbox)
            fields_.update(lockbox=lockbox, registry=counts)
            result = evaluate_paper_gate(evidence, gate.paper, force=force)
            # An overlay study names its sleeve's record and gives the sleeve's allocation.
            sleeve_name, sleeve_share = fields_.pop("name", None), fields_.pop("allocation", None)
            name = name or sleeve_name or _spec_name(tracker, run_id)
            allocation = sleeve_share if allocation is None else allocation
            outcome = PromotionOutcome(stage=stage, gate=result, evidence=vars(evidence).copy())
            if not (result.passed or force):
                return outcome
            record = PromotionRecord(
                name=name,
                stage="paper",
                allocation=1.0 if allocation is None else float(allocation),
                gates=(result,),
                mlflow_run_id=run_id,
                created_by=by,
                created_at=_now(),
                **fields_,
            )
        else:
            if name is None and sleeve is not None:
                name = f"{_spec_name(tracker, run_id)}.{sleeve}"
            paper = _paper_record_of(store, tracker, run_id, name)
            evidence = store.paper_evidence(paper.promotion_id)
            result = evaluate_live_gate(evidence, gate.live, force=force)
            outcome = PromotionOutcome(stage=stage, gate=result, evidence=evidence.to_dict())
            if not (result.passed or force):
                return outcome
            source = paper.record
            record = dataclasses.replace(
                source,
                stage="live",
                gates=(*source.gates, result),
                allocation=source.allocation if allocation is None else float(allocation),
                paper_record=evidence.to_dict(),
                parent_record_id=source.record_id,
                created_by=by,
                created_at=_now(),
            )
        forced_note = " FORCED past a failed gate" if record.forced else ""
        outcome.record = record
        active = store.active(record.name, stage)
        if active is not None and active.record.record_id == record.record_id:
            # The same record again (same evidence, same second): already published.
            outcome.stored = active
            alias = tracker.promotion_alias(record.name, stage)
            outcome.registry_version = None if alias is None else alias[0]
            return outcome
        outcome.stored = store.add(record, by=by, reason=(reason or f"promote{forced_note}"))
        outcome.registry_version = tracker.register_promotion(
            record.name, stage, run_id, record.to_dict(), forced=record.forced, reason=reason
        )
        return outcome
    finally:
        store.close()


def rollback(
    name: str, stage: str, *, store_url: str, tracker: Tracker | None, by: str | None = None
) -> tuple[StoredPromotion, StoredPromotion]:
    """Make the record active before the current one of (name, stage) active again, in the
    store and on the registry alias; return (rolled back from, rolled back to)."""
    by = by or default_actor()
    store = open_promotion_store(store_url)
    try:
        current = store.active(name, stage)
        if current is None:
            raise UnknownNameError(f"no active {stage} record named {name!r} to roll back")
        earlier = [
            p
            for p in store.history(name)
            if p.record.stage == stage
            and p.promotion_id < current.promotion_id
            and p.record.record_id != current.record.record_id
        ]
        if not earlier:
            raise ConfigError(
                f"{name!r} has no {stage} record before {current.record.record_id}; "
                "nothing to roll back to (use `live halt` to stop trading)"
            )
        target = earlier[-1]
        restored = store.activate(
            target.promotion_id, by=by, reason=f"rollback from {current.record.record_id}"
        )
        if tracker is not None:
            tracker.set_promotion_alias(name, stage, target.record.record_id)
        return current, restored
    finally:
        store.close()


def history(name: str | None, *, store_url: str) -> list[StoredPromotion]:
    """Every stored record (of one name, or all), oldest first."""
    store = open_promotion_store(store_url)
    try:
        return store.history(name)
    finally:
        store.close()


def show(name: str, stage: str, *, store_url: str) -> tuple[StoredPromotion, list[dict]]:
    """The active record of (name, stage) and its events (promotions, rollbacks)."""
    store = open_promotion_store(store_url)
    try:
        active = store.active(name, stage)
        if active is None:
            names = sorted({p.record.name for p in store.history()})
            raise UnknownNameError(
                f"no active {stage} record named {name!r}; records exist for {names or 'none'}"
            )
        return active, store.events(active.promotion_id)
    finally:
        store.close()


# --------------------------------------------------------------------------- helpers
def _paper_record_of(
    store: PromotionStore, tracker: Tracker, run_id: str, name: str | None
) -> StoredPromotion:
    name = name or _spec_name(tracker, run_id)
    paper = store.active(name, "paper")
    if paper is None:
        raise ConfigError(
            f"no active paper record named {name!r}: promote run {run_id} to paper and trade "
            "it on paper first"
        )
    if paper.record.mlflow_run_id != run_id:
        raise ConfigError(
            f"the active paper record of {name!r} ({paper.record.record_id}) came from MLflow "
            f"run {paper.record.mlflow_run_id}, not {run_id}; live needs this run's own paper "
            "record"
        )
    return paper


def _spec_name(tracker: Tracker, run_id: str) -> str:
    name = tracker.get_run(run_id).name or ""
    return name.rsplit(":", 1)[0] or run_id


def _ledger_run(tracker: Tracker, run) -> str:
    """The run holding the search's ledger: the run itself, or its ``optimize`` part."""
    if "ledger.parquet" in run.artifacts and run.kind == "optimize":
        return run.run_id
    parts = tracker.find_runs(kind="optimize", parent=run.run_id, experiment_id=run.experiment_id)
    if not parts:
        raise ConfigError(f"MLflow run {run.run_id} has no optimize part with a trial ledger")
    return parts[0].run_id


def _section(summary: dict, prefix: str, skip: str | None = None) -> dict[str, float | None]:
    return {
        k[len(prefix) :]: _number(v)
        for k, v in summary.items()
        if k.startswith(prefix)
        and (skip is None or not k.startswith(skip))
        and isinstance(v, int | float)
    }


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
