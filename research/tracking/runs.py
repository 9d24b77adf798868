"""Runs: the record of a run read back from the store, the handle of a run being written (params,
metrics, tags, figures, frames, files, nested children) and the names study runs get."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantshift.errors import ConfigError, UnknownNameError
from quantshift.urls import mask_secrets
from research.tracking.entities import _json_default, _now_ms, _scrub

if TYPE_CHECKING:
    import pandas as pd

    from research.tracking.tracker import Tracker

KIND_TAG = "quantshift.kind"
PARENT_TAG = "mlflow.parentRunId"
ERROR_TAG = "quantshift.error"

_KIND_PATTERN = re.compile(r"[a-z][a-z0-9-]*\Z")
_RUN_ID = re.compile(r"[A-Za-z0-9_-]+\Z")


def study_run_name(spec_name: str, run_id: str, start_time_ms: int | None = None) -> str:
    """``<spec>-<YYYYMMDD>-<short id>``: a study run's name, distinct per run of one spec (the
    UTC date it started, the first 8 characters of its run id)."""
    from datetime import UTC, datetime

    when = datetime.fromtimestamp((start_time_ms or _now_ms()) / 1000, UTC)
    return f"{spec_name}-{when:%Y%m%d}-{run_id[:8]}"


def _run_id_of(run: RunHandle | str) -> str:
    run_id = run.run_id if isinstance(run, RunHandle) else str(run)
    if not _RUN_ID.match(run_id):
        raise UnknownNameError(f"{run_id!r} is not an MLflow run id")
    return run_id


def _with_suffix(artifact_file: str, suffix: str) -> str:
    return artifact_file if Path(artifact_file).suffix else artifact_file + suffix


@dataclass(frozen=True)
class RunRecord:
    """A run read back from the store: what promotion and reports need."""

    run_id: str
    experiment_id: str
    name: str
    status: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    artifacts: tuple[str, ...]
    artifact_uri: str
    start_time_ms: int | None = None
    end_time_ms: int | None = None

    @property
    def kind(self) -> str | None:
        """The ``quantshift.kind`` tag (optimize, walk-forward, trial, ...)."""
        return self.tags.get(KIND_TAG)

    @property
    def parent_run_id(self) -> str | None:
        """The run this one is nested under, if any."""
        return self.tags.get(PARENT_TAG)


class RunHandle:
    """An active (or finished) MLflow run; created by :meth:`Tracker.run`."""

    def __init__(self, tracker: Tracker, run_id: str, experiment_id: str, name: str, kind: str):
        self._tracker = tracker
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.name = name
        self.kind = kind

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r}, name={self.name!r}, kind={self.kind!r})"

    def _write_artifact(self, artifact_file: str, write: Callable[[Path], object]) -> None:
        """Write ``artifact_file`` with ``write(local_path)`` in a scratch dir, then upload it."""
        directory, _, filename = artifact_file.strip("/").rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp, filename)
            write(local)
            tracker = self._tracker
            tracker._call(tracker._client.log_artifact, self.run_id, str(local), directory or None)

    def rename(self, name: str) -> None:
        """Give the run another name (shown in the runs table)."""
        tracker = self._tracker
        tracker._call(tracker._client.update_run, self.run_id, name=mask_secrets(name))
        self.name = name

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters; nested mappings become dotted keys, values are stringified."""
        self._tracker._log_batch(self.run_id, params=params)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` (0 if None); None and NaN values are skipped."""
        self._tracker._log_batch(self.run_id, metrics=metrics, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values stringified, URI passwords masked)."""
        self._tracker._log_batch(self.run_id, tags=tags)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Save a matplotlib figure as a PNG artifact (``.png`` added if no suffix)."""
        self._write_artifact(
            _with_suffix(artifact_file, ".png"),
            lambda path: figure.savefig(path, format="png", dpi=100, bbox_inches="tight"),
        )

    def log_frame(self, frame: pd.DataFrame, name: str) -> None:
        """Log a DataFrame as a Parquet artifact (``.parquet`` added if no suffix)."""
        self._write_artifact(_with_suffix(name, ".parquet"), frame.to_parquet)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Log a JSON artifact; secret-looking keys are refused and URI passwords masked."""
        text = json.dumps(_scrub(obj, artifact_file), indent=2, default=_json_default) + "\n"
        self._write_artifact(_with_suffix(artifact_file, ".json"), lambda p: p.write_text(text))

    def log_file(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log a local file (e.g. the experiment spec) under ``artifact_path``; a text file
        is logged with URI passwords masked."""
        source = Path(path)
        if not source.is_file():
            raise ConfigError(f"cannot log {source}: no such file")
        raw = source.read_bytes()
        with suppress(UnicodeDecodeError):
            raw = mask_secrets(raw.decode("utf-8")).encode("utf-8")
        target = f"{artifact_path.strip('/')}/{source.name}" if artifact_path else source.name
        self._write_artifact(target, lambda p: p.write_bytes(raw))

    def log_fingerprints(
        self, data_fingerprint: str | None = None, code: Mapping[str, Any] | None = None
    ) -> None:
        """Tag the data fingerprint and each entry of a code fingerprint
        (``quantshift.code_fingerprint``: version, strategy_hash, git_commit, git_dirty)."""
        tags = {} if data_fingerprint is None else {"quantshift.data_fingerprint": data_fingerprint}
        for key, value in (code or {}).items():
            if value is not None:
                tags[f"quantshift.code.{key}"] = (
                    str(value).lower() if isinstance(value, bool) else value
                )
        self.set_tags(tags)

    def log_seed(self, seed: int, *, purpose: str | None = None) -> None:
        """Tag the seed that made this run repeatable (``quantshift.seed[.purpose]``)."""
        self.set_tags({"quantshift.seed" + (f".{purpose}" if purpose else ""): int(seed)})

    def child(
        self,
        name: str,
        *,
        kind: str = "trial",
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str:
        """Record a finished nested run (e.g. one best trial) and return its run id.

        Three store round trips (create, log, end): cheap, but a study should still log
        only its best trials this way and the whole ledger with :meth:`log_frame`.
        """
        tracker = self._tracker
        child = tracker._create_run(name, kind, self.run_id, tags)
        tracker._log_batch(child.run_id, params=params, metrics=metrics)
        tracker._end(child.run_id, "FINISHED")
        return child.run_id

    @property
    def ui_url(self) -> str:
        """The run's page in the MLflow UI (see :func:`ui_command` for a local store)."""
        return self._tracker.ui_url(self.run_id, self.experiment_id)

    def summary(self) -> str:
        """Return a readable multi-line summary of the run as stored now."""
        return self._tracker.summary(self.run_id)
