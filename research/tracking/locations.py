"""Where tracking goes: the experiments directory, the store URI, the artifact root of a new
experiment, the command that opens the MLflow UI, and the fail-fast check that a store answers."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from urllib.parse import unquote, urlsplit

from quantshift.errors import ConfigError
from quantshift.urls import strip_password

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENTS_DIR = "QUANTSHIFT_EXPERIMENTS_DIR"
UI_HOST = "127.0.0.1"
UI_PORT = 5000


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
