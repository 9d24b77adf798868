"""A trained regime model as files: the fitted estimator (pickle, with its SHA-256), the
feature settings and names. Research writes it, live loads it and predicts at each bar close.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantshift.data import Bars
from quantshift.errors import ConfigError
from quantshift.regime_features import (
    FEATURES,
    NO_REGIME,
    REGIMES,
    RegimeSettings,
    regime_features,
)

MODEL_FILE = "model.pkl"
META_FILE = "regime_model.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RegimeModel:
    """A fitted classifier (scikit-learn API) over ``FEATURES`` with the settings that made
    them; ``meta`` holds what research recorded (kind, fingerprints, scores)."""

    estimator: Any
    settings: RegimeSettings
    meta: dict[str, Any]

    def features(self, bars: Bars) -> np.ndarray:
        """Features of every symbol, shape (bars, symbols, features)."""
        return np.stack(
            [
                regime_features(
                    bars.open[:, j], bars.high[:, j], bars.low[:, j], bars.close[:, j],
                    bars.volume[:, j], self.settings,
                )
                for j in range(bars.n_symbols)
            ],
            axis=1,
        )  # fmt: skip

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """Regime codes for rows of features (..., len(FEATURES)); ``NO_REGIME`` where a
        feature is missing (warm-up)."""
        flat = features.reshape(-1, features.shape[-1])
        out = np.full(flat.shape[0], NO_REGIME, dtype=np.int64)
        ok = np.isfinite(flat).all(axis=1)
        if ok.any():
            out[ok] = np.asarray(self.estimator.predict(flat[ok]), dtype=np.int64)
        return out.reshape(features.shape[:-1])

    def predict(self, bars: Bars) -> np.ndarray:
        """Regime code of every bar and symbol, shape (bars, symbols): the prediction made at
        each bar's close for the next ``horizon`` bars."""
        return self.predict_features(self.features(bars))

    def predict_last(self, bars: Bars) -> np.ndarray:
        """Regime code of each symbol at the last bar (live: one call per bar close)."""
        return self.predict(bars)[-1]

    def save(self, directory: str | Path) -> Path:
        """Write the model into ``directory`` (created); return the directory."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        blob = pickle.dumps(self.estimator, protocol=pickle.HIGHEST_PROTOCOL)
        (folder / MODEL_FILE).write_bytes(blob)
        meta = {
            "format_version": FORMAT_VERSION,
            "model_sha256": hashlib.sha256(blob).hexdigest(),
            "features": list(FEATURES),
            "regimes": list(REGIMES),
            "settings": self.settings.to_dict(),
            "meta": self.meta,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return folder


def load_regime_model(directory: str | Path, *, expected_sha256: str | None = None) -> RegimeModel:
    """Load a model written by :meth:`RegimeModel.save`.

    The pickle is opened only if its SHA-256 equals the one saved beside it (and
    ``expected_sha256``, the digest a registry recorded, when given); features and regimes must
    be this code's, so a model trained on other features is refused rather than misread.
    """
    folder = Path(directory)
    meta_path, model_path = folder / META_FILE, folder / MODEL_FILE
    if not meta_path.is_file() or not model_path.is_file():
        raise ConfigError(f"{folder}: not a regime model (needs {META_FILE} and {MODEL_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{meta_path}: not valid JSON ({exc.msg})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{meta_path}: format_version {meta.get('format_version')!r} unknown")
    if meta.get("features") != list(FEATURES) or meta.get("regimes") != list(REGIMES):
        raise ConfigError(
            f"{meta_path}: the model was trained on other features or regimes than this code "
            "computes; train it again"
        )
    blob = model_path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    for what, wanted in (
        ("its metadata", meta.get("model_sha256")),
        ("the registry", expected_sha256),
    ):
        if wanted is not None and digest != wanted:
            raise ConfigError(f"{model_path}: SHA-256 {digest[:12]} differs from {what}'s")
    settings = RegimeSettings.from_dict(meta["settings"])
    return RegimeModel(pickle.loads(blob), settings, dict(meta.get("meta", {})))
