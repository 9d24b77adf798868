"""Regime model: causal features, leak-free labels, purged folds, naive baselines, the MLflow
registry keeping the last versions, the live loader and the CLI's errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from quantshift.cli import app
from quantshift.data import load_bars
from quantshift.errors import ConfigError
from quantshift.regime_features import (
    BULL,
    FEATURES,
    HIGH_VOL,
    NO_REGIME,
    RANGE,
    RegimeSettings,
    classify,
    current_regime,
    regime_features,
    window_stats,
)
from quantshift.regime_model import load_regime_model
from research.regime.evaluate import build_panel, score, splitter, walk_forward_predictions
from research.regime.labels import forward_labels
from research.regime.spec import load_regime_spec
from research.regime.train import train

SMALL = RegimeSettings(horizon=5, quantile_window=120, min_history=60, sma_trend=60, atr_slow=40,
                       vol_long=40, volume_window=20)  # fmt: skip

SPEC = """
[regime]
name = "regime-test"
seed = 3

[data]
source = "synthetic:symbols=2,bars=900,seed=11,gaps=0"

[labels]
horizon = 5
quantile_window = 120
min_history = 60

[features]
sma_trend = 60
atr_slow = 40
vol_long = 40
volume_window = 20

[models]
fit = ["random_forest", "gradient_boosting"]
register = "random_forest"

[models.random_forest]
n_estimators = 15
max_depth = 5

[models.gradient_boosting]
max_iter = 10

[walk_forward]
train = 400
test = 150
train_stride = 2

[registry]
keep_versions = 3
"""


@pytest.fixture(scope="module")
def bars():
    return load_bars("synthetic:symbols=2,bars=900,seed=11,gaps=0")


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "regime.toml"
    path.write_text(SPEC)
    return path


def _features(bars, j=0, settings=SMALL):
    return regime_features(bars.open[:, j], bars.high[:, j], bars.low[:, j], bars.close[:, j],
                           bars.volume[:, j], settings)  # fmt: skip


def test_features_at_t_do_not_change_when_later_bars_change(bars):
    full = _features(bars)
    t = 500
    rng = np.random.default_rng(0)
    cols = {k: getattr(bars, k)[:, 0].copy() for k in ("open", "high", "low", "close", "volume")}
    shock = rng.uniform(0.5, 2.0, size=len(cols["close"]) - t - 1)
    for k in ("open", "high", "low", "close"):
        cols[k][t + 1 :] *= shock
    cols["volume"][t + 1 :] *= 3.0
    changed = regime_features(cols["open"], cols["high"], cols["low"], cols["close"],
                              cols["volume"], SMALL)  # fmt: skip
    np.testing.assert_array_equal(changed[: t + 1], full[: t + 1])
    assert not np.allclose(changed[t + 10 :], full[t + 10 :], equal_nan=True)
    assert np.isfinite(full[SMALL.warmup :]).all()


def test_the_label_reads_only_its_forward_window(bars):
    close = bars.close[:, 0].copy()
    labels = forward_labels(close, SMALL)
    t = 500
    h = SMALL.horizon
    changed = close.copy()
    changed[t + h + 1 :] *= 1.7  # after the label's forward window
    np.testing.assert_array_equal(forward_labels(changed, SMALL)[: t + 1], labels[: t + 1])
    changed = close.copy()
    changed[t + h] *= 1.5  # the last bar of bar t's window decides its return
    assert forward_labels(changed, SMALL)[t] != labels[t] or labels[t] == HIGH_VOL
    assert (labels[-h:] == NO_REGIME).all()


def test_the_label_of_t_is_the_current_regime_of_t_plus_horizon_under_ts_thresholds(bars):
    close = bars.close[:, 1]
    h = SMALL.horizon
    ret, vol = window_stats(close, h)
    # pandas as the oracle of the window statistics
    series = pd.Series(close)
    np.testing.assert_allclose(ret, series.pct_change(h).to_numpy(), equal_nan=True)
    log_ret = np.log(series).diff()
    np.testing.assert_allclose(vol, log_ret.rolling(h).std().to_numpy(), equal_nan=True)
    labels = forward_labels(close, SMALL)
    current = current_regime(close, SMALL)
    known = (labels[:-h] != NO_REGIME) & (current[h:] != NO_REGIME)
    agree = np.mean(labels[:-h][known] == current[h:][known])
    assert 0.7 < agree < 1.0  # same window, thresholds of a different day


def test_rule_precedence_by_hand():
    limits = {k: np.array([v] * 5) for k, v in
              {"bull": 0.02, "bear": -0.02, "high_vol": 0.03, "low_vol": 0.01}.items()}  # fmt: skip
    ret = np.array([0.05, 0.05, -0.05, 0.0, 0.0])
    vol = np.array([0.04, 0.02, 0.02, 0.005, 0.02])
    assert classify(ret, vol, limits).tolist() == [HIGH_VOL, BULL, 1, 3, RANGE]
    ret[0] = np.nan
    assert classify(ret, vol, limits)[0] == NO_REGIME


def test_walk_forward_training_is_purged_of_the_label_horizon(spec_path):
    spec = load_regime_spec(spec_path)
    folds = splitter(spec).folds(np.arange(900))
    assert folds[0] == (0, 400 - 5, 400, 550)
    for _, train_stop, test_start, _ in folds:
        # the last training label's forward window ends just before the test fold
        assert train_stop - 1 + spec.settings.horizon < test_start


def test_baselines_and_scores(spec_path, bars):
    spec = load_regime_spec(spec_path)
    panel = build_panel(bars, spec)
    evaluation = walk_forward_predictions(panel, spec)
    tested = evaluation.tested
    scored = tested & (panel.labels != NO_REGIME)
    persistence = evaluation.predictions["persistence"]
    np.testing.assert_array_equal(
        persistence[tested], panel.features[..., FEATURES.index("current_regime")][tested]
    )
    for k, (a, b, c, d) in enumerate(evaluation.folds):
        training = panel.labels[a:b][panel.labelled[a:b]]
        majority = np.bincount(training, minlength=5).argmax()
        assert (evaluation.predictions["majority"][c:d][tested[c:d]] == majority).all(), k
    assert (evaluation.predictions["random_forest"][~tested] == NO_REGIME).all()
    s = evaluation.scores["persistence"]
    truth, pred = panel.labels[scored], persistence[scored]
    assert s["accuracy"] == pytest.approx(np.mean(truth == pred))
    assert np.sum(s["confusion"]) == scored.sum()
    assert s["recall"]["range_bound"] == pytest.approx(
        np.mean(pred[truth == RANGE] == RANGE) if (truth == RANGE).any() else 0.0
    )


def test_score_against_hand_counts():
    truth = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 2, 0])
    s = score(truth, pred)
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["precision"]["bull_trending"] == pytest.approx(1 / 2)
    assert s["recall"]["high_volatility"] == pytest.approx(2 / 3)
    assert s["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)


def test_registry_keeps_the_last_versions_and_live_loads_a_pinned_one(spec_path, tmp_path, bars):
    from live.regime import load_registered_model
    from research.tracking import Tracker

    spec = load_regime_spec(spec_path)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="regime-test",
                      artifact_root=(tmp_path / "artifacts").as_uri())  # fmt: skip
    report = train(spec, tracker=tracker, bars=bars)
    report.close_figures()
    versions = [report.model_version]
    first = tracker.model_versions(spec.model_name)[0]
    for _ in range(3):  # as a weekly retraining would, without paying for three more fits
        versions.append(
            tracker.register_model_version(spec.model_name, report.run_id, "regime_model",
                                           tags=first["tags"], keep=spec.keep_versions)
        )  # fmt: skip
    kept = tracker.model_versions(spec.model_name)
    assert [v["version"] for v in kept] == ["4", "3", "2"]
    tags = kept[0]["tags"]
    assert tags["quantshift.data_fingerprint"] == bars.fingerprint()
    assert len(tags["quantshift.code.regime_code_hash"]) == 64
    run = tracker.get_run(report.run_id)
    assert "plots/confusion_random_forest.png" in run.artifacts
    assert run.metrics["persistence_accuracy"] == pytest.approx(
        report.summary["persistence_accuracy"]
    )
    model = load_registered_model(tracker.resolved_tracking_uri, spec.model_name, "4",
                                  tmp_path / "cache")  # fmt: skip
    np.testing.assert_array_equal(model.predict(bars), report.model.predict(bars))
    assert model.predict_last(bars).shape == (2,)
    with pytest.raises(ConfigError, match="version 1"):
        load_registered_model(tracker.resolved_tracking_uri, spec.model_name, "1", tmp_path / "c")
    # the runner's adoption check: a record pinning a deleted version is refused
    from live.regime import pinned_model_problem

    def pin(version):
        return {"regime_model": {"name": spec.model_name, "version": version,
                                 "tracking_uri": tracker.resolved_tracking_uri}}  # fmt: skip

    assert pinned_model_problem(pin("4"), tmp_path / "runner") is None
    problem = pinned_model_problem(pin("1"), tmp_path / "runner")
    assert "version 1" in problem and "versions kept: 4, 3, 2" in problem
    assert pinned_model_problem({}, tmp_path / "runner") is None


def test_a_promotion_record_pins_an_exact_model_version_and_the_sentiment_settings():
    from tests.test_promotion_record import record

    plain = record()
    sentiment = {"scorer": "lexicon", "ttl_s": 3600.0, "lookback": "1D", "min_score": -0.5,
                 "size_scaling": 0.5}  # fmt: skip
    pinned = record(overlay={"regime_model": {"name": "quantshift.regime.x", "version": "3"},
                             "sentiment": sentiment})  # fmt: skip
    assert pinned.record_id != plain.record_id
    assert "overlay" not in plain.to_dict()  # records written before the field keep their ids
    from quantshift.promotion import PromotionRecord

    assert PromotionRecord.from_json(pinned.to_json()).overlay == pinned.overlay
    with pytest.raises(ConfigError, match="must pin a version number"):
        record(overlay={"regime_model": {"name": "quantshift.regime.x", "version": "latest"}})
    with pytest.raises(ConfigError, match="lacks"):
        record(overlay={"sentiment": {"scorer": "lexicon"}})


def test_a_tampered_model_file_is_refused(tmp_path, bars, spec_path):
    spec = load_regime_spec(spec_path)
    report = train(spec, track=False, bars=bars)
    report.close_figures()
    folder = report.model.save(tmp_path / "model")
    assert load_regime_model(folder).predict(bars).shape == bars.close.shape
    blob = (folder / "model.pkl").read_bytes()
    (folder / "model.pkl").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(ConfigError, match="SHA-256"):
        load_regime_model(folder)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace('register = "random_forest"', 'register = "svm"'), "register"),
        (lambda s: s.replace("horizon = 5", "horizon = 0"), "horizon"),
        (lambda s: s + "\n[bogus]\n", "bogus"),
        (lambda s: s.replace("bull_quantile", "x"), None),
    ],
)
def test_cli_bad_spec_is_one_line_and_exit_2(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    text = edit(SPEC)
    if message is None:
        text = SPEC.replace("min_history = 60", "min_history = 60\nbull_quantile = 1.5")
        message = "bull_quantile"
    path.write_text(text)
    result = CliRunner().invoke(app, ["research", "regime", "train", str(path), "--no-track"])
    assert isinstance(result.exception, ConfigError), result.output
    text = str(result.exception)
    assert "\n" not in text and message in text and str(path) in text


def test_the_installed_command_exits_2_on_a_bad_spec(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(SPEC.replace("horizon = 5", "horizon = 'five'"))
    command = Path(sys.executable).with_name("quantshift")
    done = subprocess.run([str(command), "research", "regime", "train", str(path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and "horizon" in lines[0] and str(path) in lines[0], done.stderr


def test_cli_trains_and_prints_json(spec_path):
    result = CliRunner().invoke(
        app, ["research", "regime", "train", str(spec_path), "--no-track", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["folds"] == 3
    assert 0.0 <= summary["random_forest_accuracy"] <= 1.0
    assert "persistence_accuracy" in summary and "majority_accuracy" in summary


OVERLAY = """
[overlay]
name = "overlay-test"
regime_spec = "regime.toml"

[[portfolio.sleeves]]
name = "breakout"
strategy = "breakout_momentum"
symbols = ["SYN000", "SYN001"]
allocation = 0.5

[[portfolio.sleeves]]
name = "reversion"
strategy = "rsi_reversion"
symbols = ["SYN000", "SYN001"]
allocation = 0.5

[limits]
max_position_correlation = 0.7
max_sector_exposure_pct = 10.0

[sectors]
map = { SYN000 = "a", SYN001 = "b" }

[regimes]
legacy = true
"""


def test_research_report_on_an_overlay_spec_compares_the_variants_out_of_sample(spec_path):
    overlay = spec_path.with_name("overlay.toml")
    overlay.write_text(OVERLAY)
    result = CliRunner().invoke(app, ["research", "report", str(overlay), "--no-track", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    variants = {row["variant"]: row for row in summary["variants"]}
    assert list(variants) == ["base", "limits", "regime", "regime-and-limits",
                              "persistence-regime-and-limits"]  # fmt: skip
    assert summary["trials"] == 5 and summary["oos_start"] > "2000"
    assert all(0.0 <= row["dsr"] <= row["psr"] <= 1.0 for row in variants.values())
    # the sector cap and the regime table change what the portfolio trades
    assert variants["limits"]["cagr_pct"] != variants["base"]["cagr_pct"]
    assert variants["regime"]["cagr_pct"] != variants["base"]["cagr_pct"]
    bad = spec_path.with_name("bad_overlay.toml")
    bad.write_text(OVERLAY.replace(', SYN001 = "b"', ""))
    result = CliRunner().invoke(app, ["research", "report", str(bad), "--no-track"])
    assert isinstance(result.exception, ConfigError)
    assert "no sector for SYN001" in str(result.exception)
