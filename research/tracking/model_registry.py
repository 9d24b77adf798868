"""The MLflow Model Registry side of a tracker: promotion records as model versions with a stage
alias (which run trades), and plain model versions of a run's artifact folder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quantshift.errors import ConfigError
from quantshift.urls import mask_secrets
from research.tracking.entities import _entities, _mlflow, _text


def registered_model_name(name: str) -> str:
    """The MLflow registered model holding the promotion records of ``name``."""
    return f"quantshift.{name}"


class ModelRegistry:
    """Model Registry methods of :class:`~research.tracking.Tracker` (its base): they use the
    tracker's MLflow client, ``_call`` and ``_where``."""

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
