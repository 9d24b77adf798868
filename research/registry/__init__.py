"""The persistent trial registry: every evaluation of every strategy, by every path, kept in the
tracking database so that the deflated Sharpe ratio counts all of them.

Every ``qs.sweep`` / ``qs.sweep_equity`` (notebooks, ``quantshift sweep``, grid studies, each
Optuna worker's batches, walk-forward folds, ``--no-track`` runs, reruns with other seeds) is
offered to :func:`record_sweep` through the core's entry point group
``quantshift.trial_recorders``; it appends one row per parameter set. Append-only: nothing
here updates or deletes a row.

Where it lives: env ``QUANTSHIFT_REGISTRY_URL`` (``sqlite:///path.db`` or
``postgresql://user@host/db``), else the MLflow tracking database when that is PostgreSQL
(env ``MLFLOW_TRACKING_URI``), else ``sqlite:///<experiments dir>/registry.db`` beside the local
MLflow store. SQLite runs in WAL mode; PostgreSQL takes batches by COPY; the schema is created
and migrated on first use, under a lock, by whichever process comes first.

A row: ``lineage`` (the strategy's name; its history of ``source_hash`` values, from
:func:`quantshift.provenance.strategy_hash`, is the lineage's), ``data_key`` (universe, bar
interval, first and last bar: :func:`data_key`), ``spec_hash`` (set by a pre-registered study
through :func:`trial_context`), ``source``, ``study``, ``stage``, ``evaluation`` (one per
sweep call), ``params`` (JSON), ``sharpe_per_bar`` (the unit the winner is judged on: the
symbol's per-bar Sharpe ratio, or the per-bar Sharpe ratio of the summed portfolio of several
symbols), ``n_bars``, ``n_symbols``, ``trades``, ``state`` (complete, pruned, infeasible,
failed), ``worker``, ``seed``, ``recorded_ns`` and a 64-number return ``signature`` where the
equity curves were kept (for the effective number of trials).

API
---
``TrialRegistry.open(url=None)``                     open / create (``default_registry()``
                                                     returns this process's shared one)
``.record(batch)``                                   append a :class:`TrialBatch` (or several)
``.count(lineage, data_key=None, spec_hash=None)``   trials run on data (not infeasible)
``.sharpes(...)``, ``.dsr_inputs(...)``              per-bar Sharpe ratios; (N, variance)
``.frame(...)``, ``.signatures(...)``                the rows; the return signatures
``.lineages()``                                      one row per strategy name
``.summary(strategy, data_key=None)``                counts, sources, studies, specs, hashes,
                                                     N, N_eff and the DSR hurdles they imply
``trial_context(source=..., study=..., spec_hash=..., seed=..., record=False)``
                                                     tag the sweeps inside a block
``trial_defaults(...)``                              the same for tags not set outside
``dsr_report(ledger, strategy, bars, sharpe, ...)``   the gate's DSR: N = max(study, registry)
``effective_trials(signatures)``                     N_eff by clustering correlated trials
"""

from research.registry.deflation import dsr_report
from research.registry.effective import (
    EffectiveTrials,
    effective_trials,
    lineage_statistics,
    return_signature,
)
from research.registry.keys import ENV_REGISTRY_URL, DataKey, data_key, registry_url, source_hash
from research.registry.recorder import (
    current_tags,
    default_registry,
    portfolio_returns,
    record_sweep,
    record_unevaluated,
    sharpe_per_bar,
    sweep_batch,
    trial_context,
    trial_defaults,
    trial_sharpes,
)
from research.registry.store import COUNTED_STATES, STATES, TrialBatch, TrialRegistry

__all__ = [
    "COUNTED_STATES",
    "ENV_REGISTRY_URL",
    "STATES",
    "DataKey",
    "EffectiveTrials",
    "TrialBatch",
    "TrialRegistry",
    "current_tags",
    "data_key",
    "default_registry",
    "dsr_report",
    "effective_trials",
    "lineage_statistics",
    "portfolio_returns",
    "record_sweep",
    "record_unevaluated",
    "registry_url",
    "return_signature",
    "sharpe_per_bar",
    "source_hash",
    "sweep_batch",
    "trial_context",
    "trial_defaults",
    "trial_sharpes",
]
