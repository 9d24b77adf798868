"""MLflow tracking for research runs: the one module through which QuantShift talks to MLflow.

Runs, nested children, params/metrics/tags, artifacts and read-back; secrets never reach MLflow.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import re
import shlex
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from quantshift.errors import ConfigError, UnknownNameError
from quantshift.urls import mask_secrets, strip_password

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3 opens an experiment without this tag in its GenAI view (traces, no metric columns);
with it, in the classic runs table that compares runs by their params and metrics."""
ENV_EXPERIMENTS_DIR = "QUANTSHIFT_EXPERIMENTS_DIR"
KIND_TAG = "quantshift.kind"
PARENT_TAG = "mlflow.parentRunId"
ERROR_TAG = "quantshift.error"
UI_HOST = "127.0.0.1"
UI_PORT = 5000

_KIND_PATTERN = re.compile(r"[a-z][a-z0-9-]*\Z")
_SECRET_WORDS = frozenset(
    {
        "key", "keys", "apikey", "secret", "secrets", "token", "tokens", "password",
        "passwords", "passwd", "pwd", "passphrase", "private", "credential", "credentials",
    }
)  # fmt: skip
_RUN_ID = re.compile(r"[A-Za-z0-9_-]+\Z")
_MLFLOW = None  # the mlflow module once imported


# --------------------------------------------------------------------------- secrets
def registered_model_name(name: str) -> str:
    """The MLflow registered model holding the promotion records of ``name``."""
    return f"quantshift.{name}"


def _check_key(key: str, where: str) -> None:
    """Refuse a param/tag key that names a secret (``api_key``, ``brokerToken``, ...)."""
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key).lower())
    hit = _SECRET_WORDS.intersection(words)
    if hit:
        raise ConfigError(
            f"{where} {key!r} looks like a secret ({sorted(hit)[0]!r}); secrets are never sent "
            "to MLflow: drop it or rename the key if it is not a secret"
        )


def _scrub(obj: Any, where: str) -> Any:
    """Return a JSON-like ``obj`` with secret-looking keys refused and URI passwords masked."""
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            _check_key(str(key), f"{where} key")
            out[key] = _scrub(value, where)
        return out
    if isinstance(obj, list | tuple):
        return [_scrub(v, where) for v in obj]
    return mask_secrets(obj) if isinstance(obj, str) else obj


# --------------------------------------------------------------------------- locations
def resolve_experiments_dir(path: str | os.PathLike | None = None) -> Path:
    """Return the absolute experiments directory, created if missing.

    ``path`` if given, else env ``QUANTSHIFT_EXPERIMENTS_DIR``, else ``./experiments``.
    """
    chosen = Path(path or os.environ.get(ENV_EXPERIMENTS_DIR) or "experiments").expanduser()
    chosen = chosen.resolve()
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


def default_tracking_uri(experiments_dir: str | os.PathLike | None = None) -> str:
    """Return env ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<experiments dir>/mlflow.db``.

    The experiments directory is ``experiments_dir``, env ``QUANTSHIFT_EXPERIMENTS_DIR`` or
    ``./experiments`` (created if missing).
    """
    from_env = os.environ.get(ENV_TRACKING_URI)
    if from_env:
        return from_env
    directory = resolve_experiments_dir(experiments_dir)
    return f"sqlite:///{directory / 'mlflow.db'}"


def _scheme(uri: str) -> str:
    return urlsplit(uri).scheme.split("+")[0].lower()


def _sqlite_path(uri: str) -> Path | None:
    """Return the database file of a ``sqlite:///`` URI (None for in-memory or other stores)."""
    if _scheme(uri) != "sqlite" or not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri[len("sqlite:///") :].split("?")[0])
    return Path(path) if path and path != ":memory:" else None


def default_artifact_root(tracking_uri: str) -> str | None:
    """Return where artifacts of a new experiment on ``tracking_uri`` go, as a file: URI.

    A SQLite store keeps them beside its database (``<experiments dir>/artifacts`` for the
    default store); another database store under ``<experiments dir>/artifacts``; an MLflow
    server (http) decides itself (None).
    """
    db_file = _sqlite_path(tracking_uri)
    if db_file is not None:
        return db_file.resolve().parent.joinpath("artifacts").as_uri()
    if _scheme(tracking_uri) in ("http", "https", "databricks"):
        return None
    return resolve_experiments_dir().joinpath("artifacts").as_uri()


def ui_command(tracking_uri: str | None = None, *, port: int = UI_PORT, host: str = UI_HOST) -> str:
    """Return the shell command that opens the MLflow UI on ``tracking_uri``'s store, served
    on ``host``:``port`` (loopback by default: the UI has no login).

    ``mlflow ui`` serves the store's runs; artifacts of runs logged to a local ``file:`` root
    are read from disk by the UI itself, and ``--default-artifact-root`` keeps experiments
    created from the UI beside ours. A password in the URI is left out of the command (for
    PostgreSQL put it in PGPASSWORD or ~/.pgpass). An MLflow server URI is opened directly.
    """
    uri = tracking_uri or default_tracking_uri()
    if _scheme(uri) in ("http", "https"):
        return f"uv run python -m webbrowser {shlex.quote(uri)}"
    parts = ["uv", "run", "mlflow", "ui", "--backend-store-uri", strip_password(uri)]
    root = default_artifact_root(uri)
    if root is not None:
        parts += ["--default-artifact-root", root]
    parts += ["--host", host, "--port", str(port)]
    return shlex.join(parts)


def study_run_name(spec_name: str, run_id: str, start_time_ms: int | None = None) -> str:
    """``<spec>-<YYYYMMDD>-<short id>``: a study run's name, distinct per run of one spec (the
    UTC date it started, the first 8 characters of its run id)."""
    from datetime import UTC, datetime

    when = datetime.fromtimestamp((start_time_ms or _now_ms()) / 1000, UTC)
    return f"{spec_name}-{when:%Y%m%d}-{run_id[:8]}"


# --------------------------------------------------------------------------- MLflow access
def _check_reachable(uri: str, shown: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds when a database store's server does not answer (MLflow itself retries
    for about two minutes before giving up)."""
    if _scheme(uri) in ("http", "https"):
        _check_http_server(uri, shown, timeout_s)
        return
    if not _scheme(uri).startswith(("postgresql", "mysql", "mssql")):
        return
    parts = urlsplit(uri)
    if not parts.hostname:
        return  # a local socket: let the driver report
    import socket

    default_port = 5432 if _scheme(uri).startswith("postgresql") else 3306
    try:
        socket.create_connection((parts.hostname, parts.port or default_port), timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach MLflow store {shown}: {exc}") from None


def _check_http_server(uri: str, shown: str, timeout_s: float) -> None:
    """Fail in seconds when an MLflow server does not answer its health check: MLflow's client
    retries a refused connection, a non-HTTP answer or an HTTP 5xx for about four minutes.

    A 401/403 counts as an answer (credentials are MLflow's business); TLS is not verified
    here, MLflow verifies it on every real request. Proxies from the environment are used.
    """
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]  # never send a user:password of the URI
    health = f"{parts.scheme}://{host}{parts.path.rstrip('/')}/health"
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(health, timeout=timeout_s, context=context):
            return
    except urllib.error.HTTPError as exc:
        status = exc.code
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        raise ConfigError(f"cannot reach MLflow server {shown}: {reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        what = "no answer" if isinstance(exc, TimeoutError) else "an answer that is not HTTP"
        raise ConfigError(f"cannot reach MLflow server {shown}: {what} from {host}") from None
    if status >= 500 or status == 404:
        raise ConfigError(
            f"MLflow server {shown} is not answering: GET {parts.path.rstrip('/')}/health "
            f"returned HTTP {status}"
        )


def _mlflow():
    """Import MLflow on first use: it costs seconds, and most commands never track."""
    global _MLFLOW
    if _MLFLOW is None:
        with warnings.catch_warnings():
            # MLflow's own ORM models use SQLAlchemy's deprecated ``noload``; not ours to fix.
            warnings.filterwarnings("ignore", message=r".*``noload``", category=DeprecationWarning)
            import mlflow
            import mlflow.store.tracking.sqlalchemy_store
            import mlflow.utils.validation
        # Our artifacts are small; MLflow's per-download progress bar only clutters CLI output.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        _MLFLOW = mlflow
    return _MLFLOW


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _plain(value: Any) -> Any:
    """Turn a numpy scalar into its Python value (``str(np.float64(1.5))`` is fine, but
    ``np.bool_`` and friends are not JSON)."""
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "ndim", None) == 0 else value


def _text(value: Any, limit: int) -> str:
    """Stringify a param/tag value, mask secrets, and cut it to MLflow's length limit."""
    text = mask_secrets(str(_plain(value)))
    if len(text) <= limit:
        return text
    marker = "...[truncated]"
    return text[: limit - len(marker)] + marker


def _json_default(value: Any) -> Any:
    """JSON for numpy scalars/arrays, dates and paths (what specs and reports hold)."""
    for convert in ("tolist", "isoformat", "__fspath__"):
        if hasattr(value, convert):
            return getattr(value, convert)()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _entities(kind: type, mapping: Mapping[str, Any] | None, what: str, limit: int) -> list:
    """Build MLflow Param/RunTag entities: keys checked for secrets, values made safe text."""
    out = []
    for key, value in _flatten(mapping or {}).items():
        _check_key(key, what)
        out.append(kind(key, _text(value, limit)))
    return out


def _run_id_of(run: RunHandle | str) -> str:
    run_id = run.run_id if isinstance(run, RunHandle) else str(run)
    if not _RUN_ID.match(run_id):
        raise UnknownNameError(f"{run_id!r} is not an MLflow run id")
    return run_id


def _with_suffix(artifact_file: str, suffix: str) -> str:
    return artifact_file if Path(artifact_file).suffix else artifact_file + suffix


# --------------------------------------------------------------------------- records
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


# --------------------------------------------------------------------------- tracker
class Tracker:
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

    # ------------------------------------------------------------------ model registry
    def register_promotion(
        self,
        name: str,
        stage: str,
        run_id: str,
        record: Mapping[str, Any],
        *,
        forced: bool = False,
        reason: str = "",
    ) -> str:
        """Register a promotion record in the MLflow Model Registry: the record as an artifact
        of its run, a version of model ``quantshift.<name>`` pointing at it, and the alias
        ``stage`` on that version (the UI then shows which run trades). A record ``forced``
        past a failed gate is marked in the version's tags (``gate`` FORCED, and the reason)
        and description. Return the version."""
        record_id = str(record["record_id"])
        folder = f"promotion/{stage}/{record_id}"
        self._call(self._client.log_dict, run_id, dict(record), f"{folder}/record.json")
        self._call(self._client.set_tag, run_id, f"quantshift.promotion.{stage}", record_id)
        model = registered_model_name(name)
        mlflow = _mlflow()
        try:
            self._client.create_registered_model(
                model, description=f"QuantShift promotion records of {name!r}"
            )
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise ConfigError(f"MLflow registry {self._where}: {exc.message}") from None
        tags = {"record_id": record_id, "stage": stage, "gate": "FORCED" if forced else "passed"}
        description = f"{stage} record {record_id}"
        if forced:
            tags["forced_reason"] = _text(reason, 5000)
            description += f", FORCED past a failed gate: {mask_secrets(reason)}"
        version = self._client.create_model_version(
            model,
            source=f"runs:/{run_id}/{folder}",
            run_id=run_id,
            tags=tags,
            description=description,
        )
        self._client.set_registered_model_alias(model, stage, version.version)
        return str(version.version)

    def set_promotion_alias(self, name: str, stage: str, record_id: str) -> str | None:
        """Point alias ``stage`` of ``quantshift.<name>`` at the version holding ``record_id``
        (a rollback); return that version, or None if no version holds it."""
        model = registered_model_name(name)
        versions = self._client.search_model_versions(f"name = '{model}'")
        for version in versions:
            if version.tags.get("record_id") == record_id:
                self._client.set_registered_model_alias(model, stage, version.version)
                return str(version.version)
        return None

    def promotion_alias(self, name: str, stage: str) -> tuple[str, str] | None:
        """Return (version, record_id) behind alias ``stage`` of ``quantshift.<name>``."""
        mlflow = _mlflow()
        try:
            version = self._client.get_model_version_by_alias(registered_model_name(name), stage)
        except mlflow.exceptions.MlflowException:
            return None
        return str(version.version), version.tags.get("record_id", "")

    def register_model_version(
        self,
        model: str,
        run_id: str,
        artifact_path: str,
        *,
        tags: Mapping[str, Any] | None = None,
        description: str = "",
        keep: int | None = None,
    ) -> str:
        """Register the run's artifact folder ``artifact_path`` as a new version of registered
        model ``model`` (created if missing), tagged with ``tags``; with ``keep``, delete all
        but the newest ``keep`` versions. Return the new version."""
        mlflow = _mlflow()
        try:
            self._client.create_registered_model(model)
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise ConfigError(f"MLflow registry {self._where}: {exc.message}") from None
        entities = _entities(mlflow.entities.RunTag, tags, "tag", 5000)
        version = self._client.create_model_version(
            model,
            source=f"runs:/{run_id}/{artifact_path.strip('/')}",
            run_id=run_id,
            tags={tag.key: tag.value for tag in entities},
            description=description,
        )
        if keep is not None:
            for old in self.model_versions(model)[keep:]:
                self._client.delete_model_version(model, old["version"])
        return str(version.version)

    def model_versions(self, model: str) -> list[dict[str, Any]]:
        """Versions of registered model ``model``, newest first: version, run_id, source, tags."""
        found = self._client.search_model_versions(f"name = '{model}'")
        rows = [
            {
                "version": str(v.version),
                "run_id": v.run_id,
                "source": v.source,
                "tags": dict(v.tags),
            }
            for v in found
        ]
        return sorted(rows, key=lambda row: -int(row["version"]))

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
