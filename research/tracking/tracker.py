"""The tracker: one MLflow store and experiment, opened on first use; runs opened and ended
around a block, logged in batches within MLflow's limits, and read back."""

from __future__ import annotations

import getpass
import json
import math
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from quantshift.errors import ConfigError, UnknownNameError
from quantshift.urls import mask_secrets
from research.tracking.entities import _entities, _flatten, _mlflow, _now_ms, _plain
from research.tracking.locations import (
    UI_HOST,
    UI_PORT,
    _check_reachable,
    _scheme,
    _sqlite_path,
    default_artifact_root,
    default_tracking_uri,
    ui_command,
)
from research.tracking.model_registry import ModelRegistry
from research.tracking.runs import (
    _KIND_PATTERN,
    ERROR_TAG,
    KIND_TAG,
    PARENT_TAG,
    RunHandle,
    RunRecord,
    _run_id_of,
    _with_suffix,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3 opens an experiment without this tag in its GenAI view (traces, no metric columns);
with it, in the classic runs table that compares runs by their params and metrics."""


class Tracker(ModelRegistry):
    """Log research runs to one MLflow store and experiment, and read them back.

    Parameters
    ----------
    tracking_uri : str, optional
        MLflow store: ``sqlite:///...``, ``postgresql+psycopg://...``, ``http://server``.
        Default :func:`default_tracking_uri`, resolved on first use.
    experiment : str
        Experiment name; created on first run if missing.
    artifact_root : str, optional
        Artifact location of the experiment when this tracker creates it; default
        :func:`default_artifact_root`. An existing experiment keeps its own.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "quantshift",
        *,
        artifact_root: str | None = None,
    ):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_root = artifact_root
        self._resolved_uri: str | None = None
        self._mlflow_client: MlflowClient | None = None
        self._experiment_id: str | None = None

    def __repr__(self) -> str:
        uri = None if self.tracking_uri is None else mask_secrets(self.tracking_uri)
        return f"Tracker(tracking_uri={uri!r}, experiment={self.experiment!r})"

    # ------------------------------------------------------------------ connection
    @property
    def resolved_tracking_uri(self) -> str:
        """The store URI in use: ``tracking_uri``, or the default resolved at first use."""
        if self._resolved_uri is None:
            self._resolved_uri = self.tracking_uri or default_tracking_uri()
        return self._resolved_uri

    @property
    def _where(self) -> str:
        return mask_secrets(self.resolved_tracking_uri)

    @property
    def _client(self) -> MlflowClient:
        if self._mlflow_client is None:
            uri = self.resolved_tracking_uri
            db_file = _sqlite_path(uri)
            if db_file is not None:
                db_file.parent.mkdir(parents=True, exist_ok=True)
            _check_reachable(uri, self._where)
            mlflow = _mlflow()
            try:
                # An explicit URI per client, not mlflow.set_tracking_uri: trackers on
                # different stores in one process must not share global state.
                self._mlflow_client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
            except Exception as exc:
                raise ConfigError(
                    f"cannot open MLflow store {self._where}: {mask_secrets(str(exc))}"
                ) from None
        return self._mlflow_client

    def close(self) -> None:
        """Release the database connections MLflow pooled for this store; MLflow caches one
        engine per URI for the process, and it reconnects if the store is used again."""
        store = getattr(getattr(self._mlflow_client, "_tracking_client", None), "store", None)
        engine = getattr(store, "engine", None)
        if engine is not None:
            engine.dispose()

    def _experiment(self) -> str:
        if self._experiment_id is None:
            client = self._client
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                location = self.artifact_root or default_artifact_root(self.resolved_tracking_uri)
                try:
                    client.create_experiment(
                        self.experiment, location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
                    )
                except _mlflow().exceptions.MlflowException:
                    pass  # another worker created it between our lookup and create
                found = client.get_experiment_by_name(self.experiment)
            if EXPERIMENT_KIND_TAG not in found.tags:
                # An experiment made before (or by MLflow's defaults): show it as runs too.
                client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            self._experiment_id = found.experiment_id
        return self._experiment_id

    def _call(self, method, run_id: str, *args: Any, **kwargs: Any) -> Any:
        """Call a client method on ``run_id`` with MLflow's errors turned into ours."""
        try:
            return method(run_id, *args, **kwargs)
        except _mlflow().exceptions.MlflowException as exc:
            message = mask_secrets(str(exc.message))
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise UnknownNameError(
                    f"MLflow run {run_id!r} not found in {self._where}: {message}"
                ) from None
            raise ConfigError(f"MLflow run {run_id!r} in {self._where}: {message}") from None

    # ------------------------------------------------------------------ writing
    def _log_batch(
        self,
        run_id: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        step: int | None = None,
    ) -> None:
        mlflow = _mlflow()
        limits = mlflow.utils.validation
        out_params = _entities(mlflow.entities.Param, params, "param", limits.MAX_PARAM_VAL_LENGTH)
        out_tags = _entities(mlflow.entities.RunTag, tags, "tag", limits.MAX_TAG_VAL_LENGTH)
        out_metrics = []
        now = _now_ms()
        for key, value in _flatten(metrics or {}).items():
            value = _plain(value)
            if value is None:
                continue
            if not isinstance(value, int | float):
                raise ConfigError(f"metric {key!r} must be a number, got {value!r}")
            if not math.isnan(value):
                out_metrics.append(mlflow.entities.Metric(key, float(value), now, int(step or 0)))
        # One store transaction per batch, within MLflow's per-request limits.
        n_keyed = limits.MAX_PARAMS_TAGS_PER_BATCH
        n_metrics = min(limits.MAX_METRICS_PER_BATCH, limits.MAX_ENTITIES_PER_BATCH - 2 * n_keyed)
        n_batches = max(
            -(-len(out_params) // n_keyed),
            -(-len(out_tags) // n_keyed),
            -(-len(out_metrics) // n_metrics),
        )
        for i in range(n_batches):
            self._call(
                self._client.log_batch,
                run_id,
                params=out_params[i * n_keyed : (i + 1) * n_keyed],
                tags=out_tags[i * n_keyed : (i + 1) * n_keyed],
                metrics=out_metrics[i * n_metrics : (i + 1) * n_metrics],
            )

    def _create_run(
        self, name: str, kind: str, parent_id: str | None, tags: Mapping[str, Any] | None
    ) -> RunHandle:
        if not isinstance(kind, str) or not _KIND_PATTERN.match(kind):
            raise ConfigError(f"run kind {kind!r} must be lower-case words joined by '-'")
        run_tags = {**_flatten(tags or {}), KIND_TAG: kind}
        if parent_id is not None:
            run_tags[PARENT_TAG] = parent_id
        with suppress(OSError, KeyError):  # no user name in some containers
            run_tags.setdefault("mlflow.user", getpass.getuser())
        client = self._client  # first: an unreachable store fails before MLflow's slow import
        limit = _mlflow().utils.validation.MAX_TAG_VAL_LENGTH
        entities = _entities(_mlflow().entities.RunTag, run_tags, "tag", limit)
        run = client.create_run(
            self._experiment(),
            start_time=_now_ms(),
            tags={tag.key: tag.value for tag in entities},
            run_name=mask_secrets(name),
        )
        info = run.info
        return RunHandle(self, info.run_id, info.experiment_id, info.run_name, kind)

    def _end(self, run_id: str, status: str) -> None:
        self._client.set_terminated(run_id, status, end_time=_now_ms())

    @contextmanager
    def run(
        self,
        name: str,
        *,
        kind: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        parent: RunHandle | str | None = None,
    ) -> Iterator[RunHandle]:
        """Open a run; it ends FINISHED, or FAILED if the block raises (the error propagates).

        Parameters
        ----------
        name : str
            Run name shown in the UI.
        kind : str
            What the run is (``optimize``, ``walk-forward``, ``montecarlo``, ``report``);
            stored as tag ``quantshift.kind``.
        params, tags : mapping, optional
            Logged at start (nested mappings become dotted keys).
        parent : RunHandle or str, optional
            Make this a nested child run of ``parent`` (tag ``mlflow.parentRunId``).

        Yields
        ------
        RunHandle
        """
        parent_id = None
        if parent is not None:
            parent_id = self._call(self._client.get_run, _run_id_of(parent)).info.run_id
        handle = self._create_run(name, kind, parent_id, tags)
        try:
            if params:
                handle.log_params(params)
            yield handle
        except BaseException as exc:
            status = "FAILED" if isinstance(exc, Exception) else "KILLED"
            try:
                self._log_batch(handle.run_id, tags={ERROR_TAG: f"{type(exc).__name__}: {exc}"})
                self._end(handle.run_id, status)
            except Exception as store_error:
                # The run's own error matters more; say why the store may still show RUNNING.
                note = f"MLflow run {handle.run_id} could not be marked {status}: {store_error}"
                exc.add_note(mask_secrets(note))
            raise
        self._end(handle.run_id, "FINISHED")

    # ------------------------------------------------------------------ reading
    def _artifact_paths(self, run_id: str, path: str | None = None) -> list[str]:
        found: list[str] = []
        for info in self._client.list_artifacts(run_id, path):
            found.extend(self._artifact_paths(run_id, info.path) if info.is_dir else [info.path])
        return found

    def _record(self, run: Any) -> RunRecord:
        info, data = run.info, run.data
        return RunRecord(
            run_id=info.run_id,
            experiment_id=info.experiment_id,
            name=info.run_name,
            status=info.status,
            params=MappingProxyType(dict(data.params)),
            metrics=MappingProxyType(dict(data.metrics)),
            tags=MappingProxyType(dict(data.tags)),
            artifacts=tuple(sorted(self._artifact_paths(info.run_id))),
            artifact_uri=info.artifact_uri,
            start_time_ms=info.start_time,
            end_time_ms=info.end_time,
        )

    def get_run(self, run_id: str) -> RunRecord:
        """Read a run back: params, latest metrics, tags, status and artifact paths.

        Raises
        ------
        UnknownNameError
            If the store has no run ``run_id``.
        """
        return self._record(self._call(self._client.get_run, run_id))

    def find_runs(
        self,
        *,
        kind: str | None = None,
        parent: RunHandle | str | None = None,
        max_results: int = 1000,
        experiment_id: str | None = None,
    ) -> list[RunRecord]:
        """Return runs of this tracker's experiment (or ``experiment_id``), newest first,
        filtered by kind/parent."""
        clauses = []
        if kind is not None:
            if not _KIND_PATTERN.match(kind):
                raise ConfigError(f"run kind {kind!r} must be lower-case words joined by '-'")
            clauses.append(f"tags.`{KIND_TAG}` = '{kind}'")
        if parent is not None:
            clauses.append(f"tags.`{PARENT_TAG}` = '{_run_id_of(parent)}'")
        runs = self._client.search_runs(
            [experiment_id or self._experiment()],
            filter_string=" and ".join(clauses),
            max_results=max_results,
            order_by=["attributes.start_time DESC"],
        )
        return [self._record(run) for run in runs]

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Return the ``(step, value)`` pairs of metric ``key`` of a run, in step order."""
        history = self._call(self._client.get_metric_history, run_id, key)
        if not history:  # MLflow answers an unknown run with an empty history
            self._call(self._client.get_run, run_id)
        return sorted((metric.step, metric.value) for metric in history)

    def _download(self, run_id: str, artifact_file: str, tmp: str) -> Path:
        artifacts = self.get_run(run_id).artifacts
        if artifact_file not in artifacts:
            raise UnknownNameError(
                f"MLflow run {run_id!r} in {self._where} has no artifact {artifact_file!r}; "
                f"it has {list(artifacts)}"
            )
        return Path(self._client.download_artifacts(run_id, artifact_file, dst_path=tmp))

    def load_frame(self, run_id: str, name: str) -> pd.DataFrame:
        """Read back a DataFrame logged with :meth:`RunHandle.log_frame`."""
        import pandas as pd

        with tempfile.TemporaryDirectory() as tmp:
            return pd.read_parquet(self._download(run_id, _with_suffix(name, ".parquet"), tmp))

    def load_dict(self, run_id: str, artifact_file: str) -> Any:
        """Read back a JSON artifact logged with :meth:`RunHandle.log_dict`."""
        with tempfile.TemporaryDirectory() as tmp:
            path = self._download(run_id, _with_suffix(artifact_file, ".json"), tmp)
            return json.loads(path.read_text())

    def ui_url(self, run_id: str, experiment_id: str | None = None) -> str:
        """Return the run's page on the MLflow server of an http store, else on the UI that
        :func:`ui_command` starts."""
        uri = self.resolved_tracking_uri
        base = uri if _scheme(uri) in ("http", "https") else f"http://{UI_HOST}:{UI_PORT}"
        experiment_id = experiment_id or self.get_run(run_id).experiment_id
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def summary(self, run_id: str, *, max_metrics: int = 12) -> str:
        """Return a readable multi-line summary of a stored run."""
        record = self.get_run(run_id)
        lines = [
            f"MLflow run {record.name!r} ({record.kind or 'run'}) {record.status}",
            f"  run id   {record.run_id}",
            f"  store    {self._where} (experiment {record.experiment_id})",
            f"  logged   {len(record.params)} params, {len(record.metrics)} metrics, "
            f"{len(record.artifacts)} artifacts",
        ]
        shown = sorted(record.metrics)[:max_metrics]
        lines += [f"  {key:<22} {record.metrics[key]:.6g}" for key in shown]
        if len(record.metrics) > max_metrics:
            lines.append(f"  ... and {len(record.metrics) - max_metrics} more metrics")
        lines.append(f"  open     {self.ui_url(record.run_id, record.experiment_id)}")
        if _scheme(self.resolved_tracking_uri) not in ("http", "https"):
            lines.append(f"  (start the UI first: {ui_command(self.resolved_tracking_uri)})")
        return "\n".join(lines)
