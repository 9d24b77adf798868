"""What reaches MLflow and in what form: secret-looking keys refused, URI passwords masked,
nested mappings flattened, values made MLflow params, tags and metrics; MLflow imported lazily."""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Mapping
from typing import Any

from quantshift.errors import ConfigError
from quantshift.urls import mask_secrets

_SECRET_WORDS = frozenset(
    {
        "key", "keys", "apikey", "secret", "secrets", "token", "tokens", "password",
        "passwords", "passwd", "pwd", "passphrase", "private", "credential", "credentials",
    }
)  # fmt: skip
_MLFLOW = None  # the mlflow module once imported


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
