"""`quantshift research regime train SPEC`: judge regime models out of sample against naive
baselines, log the verdict to MLflow and register the chosen model (fit on all labelled bars).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantshift.data import Bars, load_bars
from quantshift.provenance import git_state, package_digest
from quantshift.regime_features import NO_REGIME, REGIMES
from quantshift.regime_model import RegimeModel
from research.regime.evaluate import (
    Evaluation,
    Panel,
    build_panel,
    fit,
    legacy_style_accuracy,
    make_model,
    skill,
    thinned,
    walk_forward_predictions,
)
from research.regime.spec import RegimeSpec

LEGACY_ACCURACY = 0.917
"""The replaced system's claim: "91.7% accuracy" (RandomForest, 5 regimes, retrained weekly),
stated without its labels, its evaluation or a baseline."""
MODEL_ARTIFACT = "regime_model"
_ROOT = Path(__file__).resolve().parents[2]
_CODE_FILES = ("quantshift/regime_features.py", "quantshift/regime_model.py", "research/regime")


@dataclass(eq=False)
class RegimeReport:
    """What a training run produced: scores, out-of-sample predictions, the final model."""

    spec: RegimeSpec
    panel: Panel
    evaluation: Evaluation
    model: RegimeModel
    summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict, repr=False)
    run_id: str | None = None
    model_version: str | None = None
    tracking_uri: str | None = None
    """The MLflow store the model version is registered in (None: not registered)."""
    model_sha256: str | None = None
    """The SHA-256 of the registered model file (the registry's ``quantshift.model_sha256``)."""

    def predictions(self, name: str | None = None) -> pd.DataFrame:
        """Out-of-sample (walk-forward) regime codes of ``name`` (default: the registered
        model), time x symbol; ``NO_REGIME`` (-1) before the first test fold."""
        return self.evaluation.frame(
            name or self.spec.register, self.panel.index, self.panel.symbols
        )

    def close_figures(self) -> None:
        from quantshift.engine.plotting import pyplot

        for fig in self.figures.values():
            pyplot().close(fig)


def regime_code_fingerprint() -> dict[str, Any]:
    """Version, core hash, git state and a SHA-256 over the regime model's own sources."""
    from quantshift import __version__

    h = hashlib.sha256()
    for entry in _CODE_FILES:
        path = _ROOT / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(file.relative_to(_ROOT).as_posix().encode())
            h.update(file.read_bytes())
    commit, dirty = git_state()
    return {
        "version": __version__,
        "core_hash": package_digest().hex(),
        "regime_code_hash": h.hexdigest(),
        "git_commit": commit,
        "git_dirty": dirty,
    }


def load_regime_bars(spec: RegimeSpec) -> Bars:
    d = spec.data
    return load_bars(d.source, symbols=d.symbols, start=d.start, end=d.end)


def train(
    spec: RegimeSpec,
    *,
    tracker=None,
    track: bool = True,
    progress: Callable[[int, int], None] | None = None,
    bars: Bars | None = None,
) -> RegimeReport:
    """Evaluate the spec's models by purged walk-forward, fit the registered kind on every
    labelled bar, and (``track``) log everything to MLflow and register the model."""
    started = time.perf_counter()
    bars = load_regime_bars(spec) if bars is None else bars
    panel = build_panel(bars, spec)
    evaluation = walk_forward_predictions(panel, spec, progress)
    evaluation.legacy_style = legacy_style_accuracy(panel, spec, spec.register)
    rows = thinned(panel, spec.walk_forward.train_stride)
    estimator = fit(
        make_model(spec.register, spec.models[spec.register], spec.seed),
        panel.features[rows],
        panel.labels[rows],
    )
    summary = _summary(spec, evaluation, bars)
    meta = {
        "kind": spec.register,
        "spec": spec.name,
        "data_fingerprint": bars.fingerprint(),
        "code": regime_code_fingerprint(),
        "trained_through": str(bars.index[-1]),
        "oos_accuracy": summary[f"{spec.register}_accuracy"],
        "oos_balanced_accuracy": summary[f"{spec.register}_balanced_accuracy"],
    }
    report = RegimeReport(spec, panel, evaluation, RegimeModel(estimator, spec.settings, meta))
    report.summary = summary
    report.figures = {
        f"confusion_{name}": plot_confusion(evaluation.scores[name], name)
        for name in (*spec.models, "persistence")
    }
    if track:
        _track(report, bars, tracker)
    report.summary["elapsed_s"] = round(time.perf_counter() - started, 3)
    return report


def _summary(spec: RegimeSpec, evaluation: Evaluation, bars: Bars) -> dict[str, Any]:
    scores = evaluation.scores
    out: dict[str, Any] = {
        "spec": spec.name,
        "symbols": list(bars.symbols),
        "data_fingerprint": bars.fingerprint(),
        "folds": len(evaluation.folds),
        "oos_samples": scores["majority"]["n"],
        "horizon_bars": spec.settings.horizon,
        "registered_kind": spec.register,
    }
    for name, s in scores.items():
        out[f"{name}_accuracy"] = s["accuracy"]
        out[f"{name}_balanced_accuracy"] = s["balanced_accuracy"]
        out[f"{name}_kappa"] = s["kappa"]
    for name in spec.models:
        acc = scores[name]["accuracy"]
        out[f"{name}_skill_vs_persistence"] = skill(acc, scores["persistence"]["accuracy"])
        out[f"{name}_skill_vs_majority"] = skill(acc, scores["majority"]["accuracy"])
    out["legacy_claim_accuracy"] = LEGACY_ACCURACY
    out.update({f"legacy_style_{k}": v for k, v in evaluation.legacy_style.items()})
    best_baseline = max(scores["majority"]["accuracy"], scores["persistence"]["accuracy"])
    out["best_baseline_accuracy"] = best_baseline
    out["verdict"] = verdict(out, spec.register, best_baseline)
    return out


def verdict(summary: dict[str, Any], kind: str, best_baseline: float) -> str:
    """One honest sentence: the model's out-of-sample accuracy against the best baseline and
    the legacy claim."""
    acc = summary[f"{kind}_accuracy"]
    lift = acc - best_baseline
    return (
        f"{kind}: {acc:.1%} out of sample (purged walk-forward) vs {best_baseline:.1%} for the "
        f"best naive baseline ({lift:+.1%} points, "
        f"{summary[f'{kind}_skill_vs_persistence']:+.1%} of persistence's errors removed); "
        f"leaky evaluations of the same model score it higher (shuffled unpurged CV "
        f"{summary['legacy_style_shuffled_cv_accuracy']:.1%}, in sample "
        f"{summary['legacy_style_in_sample_accuracy']:.1%}). The legacy "
        f"{LEGACY_ACCURACY:.1%} came with no labels, evaluation or baseline, so it has no "
        "measurable baseline-adjusted skill; "
        + (
            "the measured edge here is the better result"
            if lift > 0
            else "here the model does not beat the naive baseline"
        )
    )


def plot_confusion(score: dict[str, Any], title: str):
    """A confusion matrix (rows true, columns predicted) with counts and row shares."""
    from quantshift.engine.plotting import pyplot

    matrix = np.asarray(score["confusion"], dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)
    fig, ax = pyplot().subplots(figsize=(6.4, 5.2))
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    names = [r.replace("_", "\n") for r in REGIMES]
    ax.set_xticks(range(len(REGIMES)), names, fontsize=8)
    ax.set_yticks(range(len(REGIMES)), names, fontsize=8)
    for i in range(len(REGIMES)):
        for j in range(len(REGIMES)):
            ax.text(j, i, f"{int(matrix[i, j])}\n{shares[i, j]:.0%}", ha="center", va="center",
                    fontsize=7, color="white" if shares[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (next bars)")
    ax.set_title(
        f"{title}: accuracy {score['accuracy']:.1%}, balanced {score['balanced_accuracy']:.1%}"
    )
    fig.tight_layout()
    return fig


def _metrics(summary: dict[str, Any], evaluation: Evaluation) -> dict[str, float]:
    out = {
        k: float(v)
        for k, v in summary.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }
    for name, s in evaluation.scores.items():
        for part in ("precision", "recall"):
            for regime, value in s[part].items():
                out[f"{name}.{part}.{regime}"] = value
    return out


def _track(report: RegimeReport, bars: Bars, tracker) -> None:
    spec = report.spec
    if tracker is None:
        from research.tracking import Tracker

        tracker = Tracker(spec.tracking_uri, experiment=spec.experiment)
    params = {
        "data": {"source": spec.data.source, "start": spec.data.start, "end": spec.data.end},
        "settings": spec.settings.to_dict(),
        "models": {k: dict(v) for k, v in spec.models.items()},
        "register": spec.register,
        "walk_forward": vars(spec.walk_forward),
        "seed": spec.seed,
    }
    with tracker.run(f"{spec.name}:regime-train", kind="regime-train", params=params) as run:
        code = report.model.meta["code"]
        run.log_fingerprints(data_fingerprint=bars.fingerprint(), code=code)
        run.log_seed(spec.seed)
        if spec.path is not None:
            run.log_file(spec.path, artifact_path="spec")
        run.log_metrics(_metrics(report.summary, report.evaluation))
        run.log_dict(report.evaluation.scores, "scores.json")
        run.log_dict(report.summary, "summary.json")
        frame = report.predictions().reset_index(names="time")
        frame.columns = [str(c) for c in frame.columns]
        run.log_frame(frame, "oos_predictions")
        for name, fig in report.figures.items():
            run.log_figure(fig, f"plots/{name}.png")
        with tempfile.TemporaryDirectory() as tmp:
            folder = report.model.save(Path(tmp) / MODEL_ARTIFACT)
            for file in sorted(folder.iterdir()):
                run.log_file(file, artifact_path=MODEL_ARTIFACT)
            import json

            sha = json.loads((folder / "regime_model.json").read_text())["model_sha256"]
        tags = {
            "quantshift.data_fingerprint": bars.fingerprint(),
            "quantshift.model_sha256": sha,
            "quantshift.kind": spec.register,
            "quantshift.oos_accuracy": f"{report.summary[f'{spec.register}_accuracy']:.4f}",
            **{f"quantshift.code.{k}": v for k, v in code.items() if v is not None},
        }
        report.model_version = tracker.register_model_version(
            spec.model_name,
            run.run_id,
            MODEL_ARTIFACT,
            tags=tags,
            description=report.summary["verdict"],
            keep=spec.keep_versions,
        )
        run.set_tags({"quantshift.regime_model": f"{spec.model_name}/{report.model_version}"})
        report.run_id = run.run_id
        report.tracking_uri = tracker.resolved_tracking_uri
        report.model_sha256 = sha
    report.summary["model_name"] = spec.model_name
    report.summary["model_version"] = report.model_version
    report.summary["run_id"] = report.run_id


def oos_regimes(report: RegimeReport) -> np.ndarray:
    """The registered model's walk-forward regime codes as an int64 array (time x symbol)."""
    out = report.predictions().to_numpy(dtype=np.int64)
    out[~report.evaluation.tested] = NO_REGIME
    return out
