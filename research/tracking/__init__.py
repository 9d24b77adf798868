"""MLflow tracking for research runs: the one package through which QuantShift talks to MLflow.

Runs, nested children, params/metrics/tags, artifacts and read-back; secrets never reach MLflow.
``locations`` resolves the store, its artifact root and the UI command, ``entities`` turns our
values into MLflow's (refusing secrets), ``runs`` holds the run handle and the record read back,
``tracker`` the :class:`Tracker`, and ``model_registry`` its Model Registry methods.
"""

from research.tracking.locations import (
    ENV_EXPERIMENTS_DIR,
    ENV_TRACKING_URI,
    UI_HOST,
    UI_PORT,
    _check_reachable,  # noqa: F401  (the tests probe stores through it, from here)
    default_artifact_root,
    default_tracking_uri,
    resolve_experiments_dir,
    ui_command,
)
from research.tracking.model_registry import registered_model_name
from research.tracking.runs import (
    ERROR_TAG,
    KIND_TAG,
    PARENT_TAG,
    RunHandle,
    RunRecord,
    study_run_name,
)
from research.tracking.tracker import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, Tracker

__all__ = [
    "ENV_EXPERIMENTS_DIR",
    "ENV_TRACKING_URI",
    "ERROR_TAG",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "KIND_TAG",
    "PARENT_TAG",
    "UI_HOST",
    "UI_PORT",
    "RunHandle",
    "RunRecord",
    "Tracker",
    "default_artifact_root",
    "default_tracking_uri",
    "registered_model_name",
    "resolve_experiments_dir",
    "study_run_name",
    "ui_command",
]
