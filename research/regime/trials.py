"""The overlay report's variants as trials of the persistent registry: the overlay spec is
registered by content hash, each run's variants are recorded under its lineage, and every
variant's deflated Sharpe ratio counts every variant the lineage ever ran on the same bars.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from quantshift.data import Bars
from research.preregistration import Registration, register_spec
from research.registry import (
    COUNTED_STATES,
    DataKey,
    TrialBatch,
    default_registry,
    return_signature,
    source_hash,
)
from research.stats import (
    deflated_sharpe_ratio,
    probabilistic_sharpe_ratio,
    return_moments,
    sharpe_ratio,
)

LINEAGE_PREFIX = "overlay:"
VARIANT_PARAMS = ("limits", "regime", "persistence", "sentiment")
"""A variant as a parameter set: limits on, regime allocation on, labels from persistence,
news filter on."""
SOURCE = "overlay-report"


def overlay_lineage(strategies: Sequence[str]) -> str:
    """``overlay:<strategy>+<strategy>``: the portfolio's sleeves' strategies, sorted (a renamed
    study or sleeve is the same lineage, as a renamed strategy study is)."""
    return LINEAGE_PREFIX + "+".join(sorted(set(strategies)))


def register_overlay(
    canonical: dict[str, Any], strategies: Sequence[str], oos: Bars
) -> Registration:
    """Register the overlay spec (``canonical``) for its lineage on the out-of-sample bars
    ``oos`` before its variants run; an edited spec is a child of the lineage's last one."""
    return register_spec(canonical, overlay_lineage(strategies), str(DataKey.of(oos)))


def record_variants(
    registration: Registration,
    strategies: Sequence[object],
    oos: Bars,
    variants: Sequence[tuple[bool, bool, bool, bool]],
    returns: Sequence[np.ndarray],
    trades: Sequence[int],
    study: str,
) -> None:
    """Append one evaluation: each variant (``VARIANT_PARAMS`` flags) with its per-bar Sharpe
    ratio, trades and return signature on ``oos``, under the registration's spec hash."""
    key = DataKey.of(oos)
    matrix = np.asarray(variants, dtype=np.float64).reshape(len(variants), len(VARIANT_PARAMS))
    sharpes = np.array([sharpe_ratio(r) for r in returns], dtype=np.float64)
    digest = hashlib.sha256(
        "\x1f".join(sorted(source_hash(s) for s in strategies)).encode()
    ).hexdigest()[:16]
    batch = TrialBatch(
        lineage=registration.spec.lineage,
        source_hash=digest,
        data_key=str(key),
        universe=key.universe,
        interval=key.interval,
        start_ns=key.start_ns,
        end_ns=key.end_ns,
        source=SOURCE,
        evaluation=uuid.uuid4().hex,
        param_names=VARIANT_PARAMS,
        params=matrix,
        integer_params=[True] * len(VARIANT_PARAMS),
        sharpe_per_bar=sharpes,
        n_bars=int(oos.valid.any(axis=1).sum()),
        trades=np.asarray(trades, dtype=np.float64),
        states=["complete" if math.isfinite(s) else "failed" for s in sharpes],
        n_symbols=oos.n_symbols,
        spec_hash=registration.spec.spec_hash,
        study=study,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        signature=return_signature(np.vstack(returns)),
    )
    default_registry().record(batch)


def deflate(
    table: pd.DataFrame, returns: Sequence[np.ndarray], lineage: str, oos: Bars
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Add each variant's PSR (against 0) and DSR to ``table``, deflated by every counted trial
    of ``lineage`` on ``oos`` in the registry (this run's variants included): N is their
    count, V the variance of their per-bar Sharpe ratios. Return the table and (N, V)."""
    registry = default_registry()
    key = str(DataKey.of(oos))
    n = registry.count(lineage, key, states=COUNTED_STATES)
    counted = registry.sharpes(lineage, key)
    variance = float(np.var(counted)) if counted.size > 1 else math.nan
    psr, dsr = [], []
    for r in returns:
        sr = sharpe_ratio(r)
        skew, kurt = return_moments(r)
        psr.append(probabilistic_sharpe_ratio(sr, 0.0, len(r), skew, kurt))
        ok = n >= 2 and math.isfinite(variance) and math.isfinite(sr)
        dsr.append(
            deflated_sharpe_ratio(sr, n_observations=len(r), skew=skew, kurtosis=kurt,
                                  n_trials=n, trial_sharpe_variance=variance)
            if ok else math.nan
        )  # fmt: skip
    table = table.copy()
    table["psr"], table["dsr"] = psr, dsr
    return table, {"registry_trials": n, "registry_sharpe_variance": variance, "data_key": key}
