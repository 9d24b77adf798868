"""The registered regime model a live runner predicts with: a pinned version from the MLflow
Model Registry, downloaded once, its pickle checked against the digest the registry recorded.
"""

from __future__ import annotations

from pathlib import Path

from quantshift.errors import ConfigError
from quantshift.regime_model import RegimeModel, load_regime_model
from quantshift.urls import mask_secrets

MODEL_ARTIFACT = "regime_model"
"""The run's artifact folder research registers (research/regime/train.py writes it)."""


def load_registered_model(
    tracking_uri: str,
    name: str,
    version: str | int,
    cache_dir: str | Path,
    model_sha256: str | None = None,
) -> RegimeModel:
    """Load version ``version`` of registered model ``name`` (never "latest": a runner trades
    the version its promotion record pins), and when ``model_sha256`` is given, only if the
    registry holds that very model file under the version.

    Raises
    ------
    ConfigError
        One line naming the model, the version and the store when the version is not
        registered (deleted versions included) or its file does not match the registry.
    """
    import mlflow

    where = f"regime model {name!r} version {version} in {mask_secrets(tracking_uri)}"
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        found = client.get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException:
        try:
            versions = client.search_model_versions(f"name = '{name}'")
            kept = sorted((int(v.version) for v in versions), reverse=True)
        except mlflow.exceptions.MlflowException:
            kept = []
        listed = ", ".join(map(str, kept)) or "none"
        raise ConfigError(f"{where}: not in the registry (versions kept: {listed})") from None
    registered = found.tags.get("quantshift.model_sha256")
    if model_sha256 is not None and registered != model_sha256:
        raise ConfigError(
            f"{where}: holds model file {str(registered)[:12]}, not the {model_sha256[:12]} the "
            "record pins (the registry was rebuilt or the version re-registered)"
        )
    target = Path(cache_dir) / name / str(found.version)
    if not (target / MODEL_ARTIFACT).is_dir():
        target.mkdir(parents=True, exist_ok=True)
        try:
            client.download_artifacts(found.run_id, MODEL_ARTIFACT, str(target))
        except (mlflow.exceptions.MlflowException, OSError) as exc:
            raise ConfigError(f"{where}: artifacts unavailable ({type(exc).__name__})") from None
    try:
        return load_regime_model(
            target / MODEL_ARTIFACT, expected_sha256=found.tags.get("quantshift.model_sha256")
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_pinned(
    name: str,
    version: str | int,
    tracking_uri: str | None,
    cache_dir: str | Path | None,
    model_sha256: str | None = None,
) -> RegimeModel:
    """Load a pinned version from ``tracking_uri`` (else ``MLFLOW_TRACKING_URI``), downloaded
    under ``cache_dir`` (else the data folder): what a runner and its adoption check both do.

    Raises
    ------
    ConfigError
        When no store is named, or as :func:`load_registered_model`.
    """
    import os

    from quantshift.data.sources import data_dir

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError(
            f"regime model {name} version {version}: no MLflow store is named (set "
            "tracking_uri, or MLFLOW_TRACKING_URI)"
        )
    folder = Path(cache_dir) if cache_dir is not None else data_dir() / "regime_models"
    return load_registered_model(uri, name, version, folder, model_sha256)


def pinned_model_problem(
    overlay, cache_dir: str | Path | None = None, tracking_uri: str | None = None
) -> str | None:
    """Why the regime model a promotion record pins (``overlay["regime_model"]``) cannot be
    loaded here (None: it loads, or the record pins none); see :func:`load_pinned`.

    A pin with the model file's digest is looked up in the runner's store ``tracking_uri``
    when it has one (the digest, not the store, says it is the study's model), else in the
    record's store; a pin without one in the record's store, or the runner's when the record
    names none.
    """
    pin = (overlay or {}).get("regime_model")
    if not pin:
        return None
    sha = pin.get("model_sha256")
    uri = (tracking_uri or pin.get("tracking_uri")) if sha else (
        pin.get("tracking_uri") or tracking_uri)  # fmt: skip
    try:
        load_pinned(pin["name"], pin["version"], uri, cache_dir, sha)
    except ConfigError as exc:
        return f"cannot load its pinned {exc}"
    return None
