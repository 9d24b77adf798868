"""The deflated Sharpe ratio of a study's winner, deflated by the trial registry: every trial of
the strategy's lineage on the same data, in the unit the winner is judged on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from quantshift.data.bars import Bars
from research.registry.effective import lineage_statistics
from research.registry.keys import data_key
from research.registry.recorder import default_registry
from research.registry.store import COUNTED_STATES


def dsr_report(
    ledger,
    strategy,
    bars: Bars,
    sharpe: float,
    n_observations: int,
    skew: float,
    kurtosis: float,
    *,
    spec_hash: str | Sequence[str] | None = None,
    registry=None,
) -> dict[str, Any]:
    """Return the deflated Sharpe ratio of a study's winner and what it was deflated by.

    ``ledger`` is the study's :class:`research.ledger.TrialLedger`; ``sharpe`` the winner's
    per-bar Sharpe ratio over ``n_observations`` returns with their ``skew`` and ``kurtosis``.

    N is the larger of the study's own trial count and the trial registry's cumulative count
    for the strategy's lineage (its name, every source hash) on the same data key (universe,
    bar interval, window) and, if given, ``spec_hash``; V is the population variance of the
    per-bar Sharpe ratios of those registry trials (the study's own where the registry has
    none), in the unit the winner is judged on. The gate's ``dsr`` uses this N: the count of
    every trial, the conservative one. ``dsr_n_effective`` deflates by the effective number of
    independent trials instead (:func:`research.registry.effective_trials`), reported only and
    not a test at 5%: V is the spread of correlated trials, which already shrinks with what they
    share, so a smaller N counts their correlation twice (on driftless random walks a grid of
    MA crossovers clusters into N_eff = 1, hurdle 0, and ``dsr_n_effective`` >= 0.95 for about
    a fifth of the data sets, while ``dsr`` stays under 5%: ``tests/test_research_noise.py``).

    Keys: ``dsr``, ``dsr_trials``, ``dsr_trial_variance``, ``dsr_hurdle_sharpe_per_bar``,
    ``registry_trials``, ``registry_data``, ``registry``, ``n_effective``,
    ``n_effective_method``, ``dsr_n_effective``, ``dsr_hurdle_sharpe_per_bar_effective``.
    """
    from research.stats import deflated_sharpe_ratio, expected_max_sharpe

    registry = registry if registry is not None else default_registry()
    key = data_key(bars)
    n_study, variance_study = ledger.dsr_inputs()
    frame = registry.frame(strategy.name, key, spec_hash=spec_hash, states=COUNTED_STATES)
    signatures = registry.signatures(strategy.name, key, spec_hash=spec_hash)
    sharpes = frame["sharpe_per_bar"].to_numpy(dtype=np.float64)
    found = lineage_statistics(sharpes, len(frame), signatures, frame["params"])
    n = max(n_study, len(frame))
    variance = found["sharpe_variance"] if found["sharpe_trials"] > 1 else variance_study

    def deflated(count: float, least: int) -> float:
        if not (count >= least and math.isfinite(variance) and math.isfinite(sharpe)):
            return math.nan
        return deflated_sharpe_ratio(
            sharpe, n_observations=n_observations, skew=skew, kurtosis=kurtosis,
            n_trials=round(count), trial_sharpe_variance=variance,
        )  # fmt: skip

    n_effective = min(found["n_effective"], n) if math.isfinite(found["n_effective"]) else math.nan
    hurdle = expected_max_sharpe(n, variance) if n >= 1 and math.isfinite(variance) else math.nan
    return {
        "dsr": deflated(n, 2),
        "dsr_trials": n,
        "dsr_trial_variance": variance,
        "dsr_hurdle_sharpe_per_bar": hurdle,
        "registry_trials": len(frame),
        "registry_data": key,
        "registry": registry.shown,
        "n_effective": n_effective,
        "n_effective_method": found["n_effective_method"],
        "dsr_n_effective": deflated(n_effective, 1) if math.isfinite(n_effective) else math.nan,
        "dsr_hurdle_sharpe_per_bar_effective": (
            expected_max_sharpe(max(1, round(n_effective)), variance)
            if math.isfinite(n_effective) and math.isfinite(variance)
            else math.nan
        ),
    }
