"""Regime model specs: one TOML file (``experiments/regime_*.toml``) says what a regime model is
trained on, how it is judged out of sample and where it is registered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantshift.errors import ConfigError
from quantshift.regime_features import RegimeSettings
from quantshift.tables import Table, read_toml
from research.spec import DataSpec, parse_data_table

MODELS = ("random_forest", "gradient_boosting")
"""Model kinds a spec can fit (scikit-learn's RandomForestClassifier and
HistGradientBoostingClassifier)."""


@dataclass(frozen=True, kw_only=True)
class RegimeWalkForward:
    """Walk-forward evaluation in bars: the purge is always at least the label horizon."""

    train: int = 1260
    test: int = 252
    anchored: bool = True
    embargo: int = 0
    train_stride: int = 1
    """Train on every ``train_stride``-th bar: neighbouring bars' features and forward windows
    overlap almost entirely, so thinning costs little information and much time."""


@dataclass(frozen=True, kw_only=True)
class RegimeSpec:
    """A validated regime model spec."""

    name: str
    seed: int
    data: DataSpec
    settings: RegimeSettings
    models: Mapping[str, Mapping[str, Any]]
    register: str
    walk_forward: RegimeWalkForward
    keep_versions: int = 3
    model_name: str = ""
    tracking_uri: str | None = None
    experiment: str = ""
    path: Path | None = None
    text: str = field(default="", repr=False)


_TOP = {"regime", "data", "labels", "features", "models", "walk_forward", "registry", "tracking"}
_LABEL_KEYS = {
    "horizon",
    "quantile_window",
    "min_history",
    "bull_quantile",
    "bear_quantile",
    "high_vol_quantile",
    "low_vol_quantile",
}


def load_regime_spec(path: str | Path) -> RegimeSpec:
    """Read and validate a regime spec; errors name the file, the table and the key."""
    top, text = read_toml(path, "regime spec")
    return parse_regime_spec(top, path=Path(path), text=text)


def parse_regime_spec(top: Table, *, path: Path | None = None, text: str = "") -> RegimeSpec:
    top.refuse_unknown(_TOP)
    head = top.table("regime", required=True)
    head.refuse_unknown({"name", "seed"})
    name = head.string("name", required=True)
    labels = top.table("labels")
    labels.refuse_unknown(_LABEL_KEYS)
    features = top.table("features")
    features.refuse_unknown({f.name for f in dataclasses.fields(RegimeSettings)} - _LABEL_KEYS)
    settings = Table({**labels.raw, **features.raw}, top.source, "labels/features").build(
        RegimeSettings
    )
    models = top.table("models", required=True)
    models.refuse_unknown({"fit", "register", *MODELS})
    fit = models.get("fit", ["random_forest", "gradient_boosting"])
    if isinstance(fit, str):
        fit = [fit]
    if not isinstance(fit, list) or not fit or any(m not in MODELS for m in fit):
        raise models.error("fit", f"must be a non-empty list of {', '.join(MODELS)}; got {fit!r}")
    register = models.choice("register", fit, fit[0])
    options = {}
    for kind in fit:
        table = models.table(kind)
        for key, value in table.raw.items():
            if isinstance(value, Mapping | list):
                raise table.error(key, "must be a number, string or boolean")
        options[kind] = dict(table.raw)
    wf = top.table("walk_forward").build(RegimeWalkForward)
    if wf.train < 2 * settings.horizon:
        raise ConfigError(f"{top.source}: [walk_forward] train must be at least 2 x horizon")
    registry = top.table("registry")
    registry.refuse_unknown({"keep_versions", "model_name"})
    tracking = top.table("tracking")
    tracking.refuse_unknown({"uri", "experiment"})
    return RegimeSpec(
        name=name,
        seed=head.integer("seed", default=0, minimum=0),
        data=parse_data_table(top.table("data", required=True)),
        settings=settings,
        models=options,
        register=register,
        walk_forward=wf,
        keep_versions=registry.integer("keep_versions", default=3, minimum=1),
        model_name=registry.string("model_name") or f"quantshift.regime.{name}",
        tracking_uri=tracking.string("uri"),
        experiment=tracking.string("experiment") or name,
        path=path,
        text=text,
    )
