"""The promotion evidence of an overlay study: one sleeve of the portfolio an overlay report ran,
judged by the report's full variant (the regime allocation and the limits) out of sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from quantshift.errors import ConfigError
from quantshift.promotion import ResearchEvidence

KIND = "overlay-report"
"""The MLflow run kind ``quantshift research report`` gives an overlay study."""


def overlay_evidence(
    summary: Mapping[str, Any], sleeve: str | None, run_id: str
) -> tuple[ResearchEvidence, dict[str, Any]]:
    """The paper gate's evidence and the record's fields for sleeve ``sleeve`` of an overlay
    report's summary (the only sleeve when None).

    The evidence is the portfolio's, all sleeves together, in the report's
    ``promoted_variant`` out of sample: the sleeve's parameters were not searched, so the DSR
    deflates over every variant the spec's lineage ran on these bars; the report measures no
    PBO, Monte Carlo, lockbox or causality, and the gate says so (those checks fail unless its
    config waives them). The record pins the overlay the variant ran with.
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
        mc_max_drawdown_pct_p95=None,
        mc_source=None,
        mc_method=None,
        code_dirty=code.get("git_dirty"),
        strategy_file=code.get("strategy_file"),
        strategy_file_git=code.get("strategy_file_git"),
        causality=None,
        causal=None,
    )
    fields_ = {
        "name": f"{summary['spec']}.{sleeve}",
        "allocation": float(chosen["allocation"]),
        "strategy": chosen["strategy"],
        "params": {k: float(v) for k, v in chosen["params"].items()},
        "symbols": tuple(chosen["symbols"]),
        "code": code,
        "data": {
            "source": summary.get("data_source"),
            "first_bar": summary.get("data_first_bar"),
            "last_bar": summary.get("data_last_bar"),
            "bars": summary.get("data_bars"),
            "fingerprint": summary.get("data_fingerprint"),
        },
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
        "monte_carlo": {},
        "research_settings": dict(chosen["research_settings"]),
        "causality": {},
        "preregistration": dict(summary.get("preregistration") or {}),
        "overlay": dict(summary["overlay"]),
    }
    return evidence, fields_
