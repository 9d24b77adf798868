"""The effective number of independent trials: trials clustered by the correlation of their
returns, as Bailey and Lopez de Prado suggest for the deflated Sharpe ratio's N.

Method (documented, so that its number can be checked): each trial's per-bar portfolio returns
are summarised by a signature of K block sums (the registry keeps K = 64); identical signatures
are one trial; trials that never vary (no position) are one more; the rest are clustered
hierarchically (average linkage, distance 1 - correlation) and cut where the average
correlation between clusters falls below ``min_correlation`` (0.5). The clusters are N_eff.
Beyond ``max_trials`` distinct trials a seeded sample is clustered and the number of clusters
in the whole set is estimated with Chao's (1984) bias-corrected estimator from the sample's
singleton and doubleton clusters, capped at the number of distinct trials.

References
----------
D. H. Bailey and M. Lopez de Prado, "The Deflated Sharpe Ratio", Journal of Portfolio
Management 40(5), 2014, section on the number of independent trials (clustering);
M. Lopez de Prado and M. J. Lewis, "Detection of false investment strategies using
unsupervised learning methods", Quantitative Finance 19(9), 2019;
A. Chao, "Nonparametric estimation of the number of classes in a population", Scandinavian
Journal of Statistics 11(4), 1984.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantshift.errors import ConfigError

SIGNATURE_BLOCKS = 64
MIN_CORRELATION = 0.5
MAX_CLUSTERED = 2_000


@dataclass(frozen=True)
class EffectiveTrials:
    """The effective number of trials and how it was found."""

    n_effective: float
    n_trials: int
    n_distinct: int
    n_clustered: int
    clusters_in_sample: int
    min_correlation: float
    method: str = "hierarchical clustering of return correlations (average linkage)"


def return_signature(returns: np.ndarray, blocks: int = SIGNATURE_BLOCKS) -> np.ndarray:
    """Return (n_trials, min(blocks, n_bars)) block sums of per-bar returns (trials x bars):
    enough to estimate the correlation between trials, a fixed size whatever the bars."""
    values = np.nan_to_num(np.asarray(returns, dtype=np.float64), nan=0.0)
    if values.ndim != 2:
        raise ConfigError(f"return_signature needs (trials, bars) returns, got {values.shape}")
    k = max(1, min(blocks, values.shape[1]))
    edges = np.linspace(0, values.shape[1], k + 1).astype(np.int64)
    sums = np.add.reduceat(values, edges[:-1], axis=1) if values.shape[1] else values
    return sums.astype(np.float32)


def effective_trials(
    signatures: np.ndarray,
    *,
    min_correlation: float = MIN_CORRELATION,
    max_trials: int = MAX_CLUSTERED,
    seed: int = 0,
) -> EffectiveTrials:
    """Return the effective number of independent trials among ``signatures`` (one row per
    trial: its per-bar returns or their block sums); see the module docstring."""
    from scipy.cluster.hierarchy import fcluster, linkage

    data = np.asarray(signatures, dtype=np.float64)
    if data.ndim != 2:
        raise ConfigError(f"effective_trials needs a (trials, length) array, got {data.shape}")
    if not 0.0 < min_correlation < 1.0:
        raise ConfigError(f"min_correlation must be in (0, 1), got {min_correlation}")
    n = data.shape[0]
    if n == 0:
        return EffectiveTrials(math.nan, 0, 0, 0, 0, min_correlation)
    distinct = np.unique(data, axis=0)
    spread = distinct.std(axis=1)
    flat = spread <= 1e-12 * (np.abs(distinct).max(axis=1) + 1e-300)
    varying = distinct[~flat]
    extra = int(flat.any())
    m = varying.shape[0]
    sample = varying
    if m > max_trials:
        pick = np.random.default_rng(seed).choice(m, max_trials, replace=False)
        sample = varying[np.sort(pick)]
    s = sample.shape[0]
    if s <= 1:
        clusters = s
        labels = np.zeros(s, dtype=np.int64)
    else:
        centred = sample - sample.mean(axis=1, keepdims=True)
        centred /= np.linalg.norm(centred, axis=1, keepdims=True)
        corr = np.clip(centred @ centred.T, -1.0, 1.0)
        distance = 1.0 - corr[np.triu_indices(s, k=1)]
        tree = linkage(np.maximum(distance, 0.0), method="average")
        labels = fcluster(tree, t=1.0 - min_correlation, criterion="distance")
        clusters = int(labels.max())
    estimate = float(clusters)
    if s < m:
        sizes = np.bincount(labels)[1:]
        f1, f2 = int((sizes == 1).sum()), int((sizes == 2).sum())
        estimate = min(float(m), clusters + f1 * (f1 - 1) / (2.0 * (f2 + 1)))
    return EffectiveTrials(
        n_effective=estimate + extra,
        n_trials=n,
        n_distinct=int(distinct.shape[0]),
        n_clustered=s,
        clusters_in_sample=clusters + extra,
        min_correlation=min_correlation,
    )


def lineage_statistics(
    sharpes: np.ndarray,
    n_trials: int,
    signatures: np.ndarray,
    params: Sequence[str] = (),
) -> dict[str, Any]:
    """Return the numbers the DSR takes from a lineage: the trial count N, the population
    variance of the finite per-bar Sharpe ratios, the effective N and the hurdle (expected
    maximum per-bar Sharpe ratio of unskilled trials) each count implies."""
    from research.stats import expected_max_sharpe

    finite = np.asarray(sharpes, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    variance = float(np.var(finite)) if finite.size else math.nan
    out: dict[str, Any] = {
        "sharpe_trials": int(finite.size),
        "sharpe_variance": variance,
        "hurdle_sharpe_per_bar": (
            expected_max_sharpe(n_trials, variance)
            if n_trials >= 1 and math.isfinite(variance)
            else math.nan
        ),
    }
    effective = effective_trials(signatures) if len(signatures) else None
    n_eff = effective.n_effective if effective is not None else math.nan
    out["n_effective"] = n_eff
    out["n_effective_from"] = 0 if effective is None else effective.n_trials
    out["n_effective_method"] = (
        None
        if effective is None
        else f"{effective.method}, min correlation {effective.min_correlation}"
    )
    out["hurdle_sharpe_per_bar_effective"] = (
        expected_max_sharpe(max(1, round(n_eff)), variance)
        if math.isfinite(n_eff) and math.isfinite(variance)
        else math.nan
    )
    out["distinct_params"] = len(set(params))
    return out
