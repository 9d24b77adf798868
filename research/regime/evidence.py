"""The promotion evidence of an overlay study: one sleeve of the portfolio an overlay report ran,
judged by the report's full variant (the regime allocation and the limits) out of sample, with
the checks the report measures for it (a Monte Carlo of that variant, each sleeve's causality).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from quantshift.data import Bars
from quantshift.errors import ConfigError
from quantshift.promotion import ResearchEvidence
from quantshift.promotion.gate import OOS_RETURNS
from research.promote import data_block

KIND = "overlay-report"
"""The MLflow run kind ``quantshift research report`` gives an overlay study."""


MC_PATHS = 10_000


def measure_checks(
    sleeves, bars: Bars, returns: np.ndarray, periods_per_year: float, seed: int
) -> dict[str, Any]:
    """What the gate asks of a promoted sleeve besides its out-of-sample numbers: a stationary
    block bootstrap of the promoted variant's out-of-sample bar ``returns``
    (``oos_mc_*``) and each sleeve's causality verdict on the study's ``bars``
    (``causality``: sleeve name -> verdict)."""
    from quantshift.strategies.causality import check_bars
    from research.montecarlo import monte_carlo

    outcome = monte_carlo(returns=returns, method="block", n_paths=MC_PATHS, seed=seed,
                          periods_per_year=periods_per_year)  # fmt: skip
    out: dict[str, Any] = {f"oos_mc_{k}": v for k, v in outcome.summary().items()}
    out["oos_mc_method"] = outcome.method
    causality = {}
    for sleeve in sleeves:
        strategy = sleeve.strategy_object
        symbol, verdict = check_bars(
            strategy, bars.select(list(sleeve.symbols)), strategy.vector(sleeve.params)
        )
        causality[sleeve.name] = {**verdict.to_dict(), "symbol": symbol,
                                  "summary": f"{symbol}: {verdict.summary()}"}  # fmt: skip
    out["causality"] = causality
    return out


def overlay_evidence(
    summary: Mapping[str, Any], sleeve: str | None, run_id: str
) -> tuple[ResearchEvidence, dict[str, Any]]:
    """The paper gate's evidence and the record's fields for sleeve ``sleeve`` of an overlay
    report's summary (the only sleeve when None).

    The evidence is the portfolio's, all sleeves together, in the report's
    ``promoted_variant`` out of sample: the sleeve's parameters were not searched, so the DSR
    deflates over every variant the spec's lineage ran on these bars; the Monte Carlo is a block
    bootstrap of that variant's out-of-sample returns and the causality the sleeve's own. The
    report measures no PBO and keeps no lockbox, and the gate says so: those checks fail (the
    lockbox's unless the gate config waives it), so such a record goes out only forced. The
    record pins the overlay the variant ran with.
    """
    for key in ("sleeves", "promoted_variant", "overlay", "wf_folds", "trials"):
        if key not in summary:
            raise ConfigError(
                f"MLflow run {run_id}: its overlay summary lacks {key!r}; rerun "
                "`quantshift research report` on the overlay spec with this version of QuantShift"
            )
    sleeves = {s["name"]: s for s in summary["sleeves"]}
    if sleeve is None:
        if len(sleeves) != 1:
            raise ConfigError(
                f"MLflow run {run_id} is an overlay study of sleeves {', '.join(sleeves)}: "
                "name the one to promote with --sleeve"
            )
        sleeve = next(iter(sleeves))
    if sleeve not in sleeves:
        raise ConfigError(
            f"MLflow run {run_id} has no sleeve {sleeve!r}; sleeves: {', '.join(sleeves)}"
        )
    chosen = sleeves[sleeve]
    variant = summary["promoted_variant"]
    if not summary["overlay"]:
        raise ConfigError(
            f"MLflow run {run_id}: the overlay study registered no regime model (was it run "
            "with --no-track?), so a record could not pin the model its evidence came from"
        )

    def measured(key: str) -> float | None:
        value = summary.get(f"{variant}_{key}")
        if value is None or isinstance(value, bool):
            return None
        value = float(value)
        return value if math.isfinite(value) else None

    code = dict(chosen["code"])
    causality = (summary.get("causality") or {}).get(sleeve) or {}
    mc_p95 = summary.get("oos_mc_max_drawdown_pct_p95")
    trades = measured("trades")
    folds = int(summary["wf_folds"])
    evidence = ResearchEvidence(
        oos_method="walk-forward" if folds else None,
        oos_folds=folds,
        oos_trades=None if trades is None else int(trades),
        oos_sharpe=measured("sharpe"),
        oos_psr=measured("psr"),
        dsr=measured("dsr"),
        n_trials=int(summary["trials"]),
        pbo=None,
        mc_max_drawdown_pct_p95=None if mc_p95 is None else float(mc_p95),
        mc_source=None if mc_p95 is None else OOS_RETURNS,
        mc_method=summary.get("oos_mc_method"),
        code_dirty=code.get("git_dirty"),
        strategy_file=code.get("strategy_file"),
        strategy_file_git=code.get("strategy_file_git"),
        strategy_git_dirty=code.get("strategy_git_dirty"),
        core_pinned=code.get("core_pinned"),
        core_pinned_by=code.get("core_pinned_by"),
        causality=causality.get("summary"),
        causal=causality.get("causal"),
    )
    fields_ = {
        "name": f"{summary['spec']}.{sleeve}",
        "allocation": float(chosen["allocation"]),
        "strategy": chosen["strategy"],
        "params": {k: float(v) for k, v in chosen["params"].items()},
        "symbols": tuple(chosen["symbols"]),
        "code": code,
        "data": data_block(summary, summary.get("data_fingerprint")),
        "in_sample": {},
        "out_of_sample": {
            k: measured(k) for k in ("sharpe", "cagr_pct", "max_drawdown_pct", "trades", "psr")
        },
        "statistics": {
            "dsr": evidence.dsr,
            "oos_psr": evidence.oos_psr,
            "n_trials": evidence.n_trials,
            "pbo": None,
            "wf_folds": folds,
        },
        "monte_carlo": {
            k[len("oos_mc_") :]: v
            for k, v in summary.items()
            if k.startswith("oos_mc_") and isinstance(v, int | float)
        },
        "research_settings": dict(chosen["research_settings"]),
        "causality": dict(causality),
        "preregistration": dict(summary.get("preregistration") or {}),
        "overlay": dict(summary["overlay"]),
    }
    return evidence, fields_
