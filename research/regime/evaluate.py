"""Out-of-sample evaluation of regime models: purged walk-forward predictions, the naive
baselines (majority class, persistence) and the scores every one of them gets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from quantshift.data import Bars
from quantshift.regime_features import FEATURES, NO_REGIME, REGIMES, regime_features
from research.regime.labels import forward_labels
from research.regime.spec import RegimeSpec
from research.splitters import WalkForward

CURRENT = FEATURES.index("current_regime")


@dataclass(frozen=True)
class Panel:
    """Features (time, symbol, feature) and labels (time, symbol) of every bar."""

    features: np.ndarray
    labels: np.ndarray
    index: pd.DatetimeIndex
    symbols: tuple[str, ...]

    @property
    def has_features(self) -> np.ndarray:
        return np.isfinite(self.features).all(axis=2)

    @property
    def labelled(self) -> np.ndarray:
        return self.has_features & (self.labels != NO_REGIME)


def build_panel(bars: Bars, spec: RegimeSpec) -> Panel:
    """Compute the causal features and the forward labels of every symbol."""
    s = spec.settings
    feats, labels = [], []
    for j in range(bars.n_symbols):
        feats.append(
            regime_features(
                bars.open[:, j], bars.high[:, j], bars.low[:, j], bars.close[:, j],
                bars.volume[:, j], s,
            )
        )  # fmt: skip
        labels.append(forward_labels(bars.close[:, j], s))
    return Panel(np.stack(feats, axis=1), np.stack(labels, axis=1), bars.index, bars.symbols)


def make_model(kind: str, options: Mapping[str, Any], seed: int):
    """Return an unfitted scikit-learn classifier of ``kind`` with the spec's options."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    if kind == "random_forest":
        defaults = dict(n_estimators=200, min_samples_leaf=20, max_features="sqrt", n_jobs=1)
        return RandomForestClassifier(**{**defaults, **options, "random_state": seed})
    defaults = dict(max_iter=200, learning_rate=0.05, max_depth=3, l2_regularization=1.0)
    return HistGradientBoostingClassifier(**{**defaults, **options, "random_state": seed})


def fit(model, X: np.ndarray, y: np.ndarray):
    """Fit on one thread: the same result on any machine, and no oversubscribed cores when
    several studies share one."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return model.fit(X, y)


def thinned(panel: Panel, stride: int) -> np.ndarray:
    """The labelled rows, every ``stride``-th bar."""
    rows = panel.labelled.copy()
    rows[np.arange(rows.shape[0]) % stride != 0] = False
    return rows


def splitter(spec: RegimeSpec) -> WalkForward:
    """Walk-forward over bars, purging the label horizon from the end of each training window."""
    wf = spec.walk_forward
    return WalkForward(
        wf.train, wf.test, anchored=wf.anchored, purge=spec.settings.horizon, embargo=wf.embargo
    )


@dataclass
class Evaluation:
    """Out-of-sample predictions (time x symbol, ``NO_REGIME`` outside test folds) of each
    model and baseline, the fold bounds, and the scores."""

    predictions: dict[str, np.ndarray]
    truth: np.ndarray
    tested: np.ndarray
    folds: list[tuple[int, int, int, int]]
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    legacy_style: dict[str, float] = field(default_factory=dict)

    def frame(self, name: str, index, symbols) -> pd.DataFrame:
        """The predictions of ``name`` as a DataFrame (index time, columns symbols)."""
        return pd.DataFrame(self.predictions[name], index=index, columns=list(symbols))


def walk_forward_predictions(
    panel: Panel, spec: RegimeSpec, progress: Callable[[int, int], None] | None = None
) -> Evaluation:
    """Fit every model of the spec in each purged walk-forward fold and predict its test bars;
    the baselines predict the same bars (majority: the training fold's most frequent label;
    persistence: the current regime)."""
    n_time, n_sym = panel.labels.shape
    names = [*spec.models, "majority", "persistence"]
    preds = {name: np.full((n_time, n_sym), NO_REGIME, dtype=np.int64) for name in names}
    tested = np.zeros((n_time, n_sym), dtype=bool)
    folds = splitter(spec).folds(panel.index)
    labelled, has_features = panel.labelled, panel.has_features
    for k, (a, b, c, d) in enumerate(folds):
        train_mask = np.zeros_like(labelled)
        train_mask[a:b] = labelled[a:b]
        train_mask[np.arange(n_time) % spec.walk_forward.train_stride != 0] = False
        if not train_mask.any():
            continue
        X_train, y_train = panel.features[train_mask], panel.labels[train_mask]
        test_mask = np.zeros_like(labelled)
        test_mask[c:d] = has_features[c:d]
        X_test = panel.features[test_mask]
        tested |= test_mask
        for kind, options in spec.models.items():
            model = fit(make_model(kind, options, spec.seed), X_train, y_train)
            preds[kind][test_mask] = model.predict(X_test)
        counts = np.bincount(y_train, minlength=len(REGIMES))
        preds["majority"][test_mask] = int(np.argmax(counts))
        preds["persistence"][test_mask] = X_test[:, CURRENT].astype(np.int64)
        if progress is not None:
            progress(k + 1, len(folds))
    evaluation = Evaluation(preds, panel.labels, tested, folds)
    scored = tested & (panel.labels != NO_REGIME)
    for name in names:
        evaluation.scores[name] = score(panel.labels[scored], preds[name][scored])
    return evaluation


def score(truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Accuracy, balanced accuracy, Cohen's kappa, per-class precision/recall/support and the
    confusion matrix (rows: true regime, columns: predicted)."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    labels = list(range(len(REGIMES)))
    precision, recall, _, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)),
        "kappa": float(cohen_kappa_score(truth, predicted, labels=labels)),
        "precision": dict(zip(REGIMES, map(float, precision), strict=True)),
        "recall": dict(zip(REGIMES, map(float, recall), strict=True)),
        "support": dict(zip(REGIMES, map(int, support), strict=True)),
        "confusion": confusion_matrix(truth, predicted, labels=labels).tolist(),
        "n": len(truth),
    }


def legacy_style_accuracy(panel: Panel, spec: RegimeSpec, kind: str) -> dict[str, float]:
    """How the legacy system's "91.7% accuracy" could have been measured, on our data: the
    model's in-sample accuracy, and a shuffled 5-fold CV that neither purges the overlapping
    forward windows nor respects time (each test bar has its neighbours in training)."""
    from sklearn.model_selection import KFold, cross_val_score
    from threadpoolctl import threadpool_limits

    rows = thinned(panel, spec.walk_forward.train_stride)
    X, y = panel.features[rows], panel.labels[rows]
    model = make_model(kind, spec.models[kind], spec.seed)
    shuffled = KFold(5, shuffle=True, random_state=spec.seed)
    with threadpool_limits(1):
        cv = cross_val_score(model, X, y, cv=shuffled, scoring="accuracy")
    in_sample = fit(make_model(kind, spec.models[kind], spec.seed), X, y).score(X, y)
    return {"shuffled_cv_accuracy": float(np.mean(cv)), "in_sample_accuracy": float(in_sample)}


def skill(accuracy: float, baseline: float) -> float:
    """Share of the baseline's errors the model removes: (acc - base) / (1 - base)."""
    return (accuracy - baseline) / (1.0 - baseline) if baseline < 1.0 else float("nan")
