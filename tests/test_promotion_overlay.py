"""Promoting an overlay study: the record pins the regime model version the study ran with, the
printout shows it, the runner refuses a pin it cannot load and says when its own overlay
differs; every overlay report's variants are trials of the registry."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from live.config import parse_config
from live.runner import Runner
from quantshift.cli import app
from quantshift.data import load_bars, write_parquet
from quantshift.errors import ConfigError
from quantshift.promotion import PromotionRecord, open_promotion_store
from quantshift.promotion.record import SENTIMENT_PIN_KEYS
from research.promote import promote
from research.regime.evidence import overlay_evidence
from research.regime.overlay import load_overlay_spec, run_overlay
from research.registry import default_registry
from research.tracking import Tracker
from tests.test_live_overlay import HEADLINES
from tests.test_research_regime import OVERLAY, SPEC

SOURCE = "synthetic:symbols=2,bars=900,seed=11,gaps=0"
LINEAGE = "overlay:breakout_momentum+rsi_reversion"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tracked overlay report (its regime model registered as version 1) and its tracker."""
    root = tmp_path_factory.mktemp("overlay-promotion")
    (root / "regime.toml").write_text(SPEC)
    (root / "overlay.toml").write_text(OVERLAY)
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", experiment="overlay-test",
                      artifact_root=(root / "artifacts").as_uri())  # fmt: skip
    spec = load_overlay_spec(root / "overlay.toml")
    report = run_overlay(spec, tracker=tracker, track=True)
    report.regime_report.close_figures()
    yield root, tracker, spec, report
    tracker.close()


def _promote(study, url, **options):
    _, tracker, _, report = study
    return promote(report.summary["run_id"], "paper", store_url=url, tracker=tracker,
                   sleeve="breakout", force=True, reason="overlay test", **options)  # fmt: skip


def test_a_promoted_overlay_sleeve_pins_the_regime_model_and_shows_it(study):
    root, tracker, spec, report = study
    outcome = _promote(study, f"sqlite:///{root}/live-a.db")
    record = outcome.record
    assert record.name == "overlay-test.breakout" and record.strategy == "breakout_momentum"
    assert record.allocation == 0.5 and record.symbols == ("SYN000", "SYN001")
    assert record.overlay == {
        "regime_model": {"name": spec.regime.model_name, "version": "1",
                         "tracking_uri": tracker.resolved_tracking_uri,
                         "model_sha256": report.regime_report.model_sha256}
    }  # fmt: skip
    # the evidence is the full overlay variant's, deflated over the lineage's variants
    table = report.table.loc["regime-and-limits"]
    assert record.out_of_sample["sharpe"] == pytest.approx(table["sharpe"])
    assert record.statistics["dsr"] == pytest.approx(table["dsr"])
    assert record.preregistration["lineage"] == LINEAGE
    assert record.registry["trials"] >= 5 and record.registry["sources"] == {
        "overlay-report": record.registry["trials"]
    }
    lines = "\n".join(outcome.lines())
    assert f"overlay: regime model {spec.regime.model_name} version 1 in sqlite:///" in lines
    assert "FAIL PBO missing" in lines  # what the overlay report does not measure fails closed
    assert "FAIL lockbox Sharpe missing" in lines
    # what it does measure: a block bootstrap of the variant's returns, the sleeve's causality
    assert "PASS Monte Carlo is a block bootstrap of out-of-sample bars yes" in lines
    mc = record.monte_carlo["max_drawdown_pct_p95"]
    assert mc == report.summary["oos_mc_max_drawdown_pct_p95"] and 0.0 < mc < 100.0
    assert "PASS strategy causal on the study's data yes" in lines
    assert record.causality["causal"] is True
    stored = PromotionRecord.from_json(record.to_json())
    assert stored.overlay == record.overlay and stored.record_id == record.record_id


def test_an_overlay_study_of_several_sleeves_needs_one_named():
    summary = {"spec": "s", "sleeves": [{"name": "a"}, {"name": "b"}], "promoted_variant": "x",
               "overlay": {}, "wf_folds": 1, "trials": 5}  # fmt: skip
    with pytest.raises(ConfigError, match="name the one to promote with --sleeve"):
        overlay_evidence(summary, None, "run1")
    with pytest.raises(ConfigError, match="has no sleeve 'c'; sleeves: a, b"):
        overlay_evidence(summary, "c", "run1")
    with pytest.raises(ConfigError, match="registered no regime model"):
        overlay_evidence(summary, "a", "run1")


def test_every_overlay_report_counts_its_variants_in_the_registry(study):
    _, _, spec, report = study
    pre = report.summary["preregistration"]
    before = default_registry().summary(LINEAGE, pre["data"])
    assert before["sources"] == {"overlay-report": before["trials"]}
    assert before["trials"] % 5 == 0 and before["trials"] >= 5
    # a rerun (here without tracking, on the same walk-forward predictions) adds its variants
    again = run_overlay(spec, regime_report=report.regime_report, track=False)
    assert again.summary["trials"] == before["trials"] + 5
    assert again.summary["preregistration"]["spec_hash"] == pre["spec_hash"]
    # and deflates by all of them: same Sharpe ratios, a higher bar
    assert (again.table["sharpe"] == report.table["sharpe"]).all()
    assert (again.table["dsr"] <= report.table["dsr"] + 1e-12).all()
    result = CliRunner().invoke(app, ["research", "trials", LINEAGE, "--data", pre["data"],
                                      "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["trials"] == before["trials"] + 5
    assert shown["specs"] == 1 and shown["sources"] == {"overlay-report": shown["trials"]}


def _runner_raw(root, tracker, spec, version) -> dict:
    bars = load_bars(SOURCE)
    write_parquet(bars, root / "bars.parquet")
    return {
        "runner": {"name": "overlay-promoted", "market": "crypto", "mode": "paper"},
        "sleeves": [
            {"name": "breakout", "strategy": "breakout_momentum", "symbols": ["SYN000", "SYN001"],
             "allocation": 0.5, "promotion": "overlay-test.breakout"},
            {"name": "reversion", "strategy": "rsi_reversion", "symbols": ["SYN000", "SYN001"],
             "allocation": 0.5},
        ],
        "regimes": {"bear_trending": {"allocation": {"breakout": 0.0}}},
        "regime_model": {"name": spec.regime.model_name, "version": version,
                         "tracking_uri": tracker.resolved_tracking_uri,
                         "cache_dir": str(root / "models")},
        "feed": {"source": str(root / "bars.parquet")},
        "store": {"url": f"sqlite:///{root}/live-{version}.db"},
        "guards": {"price_collar_pct": 100.0},
        "metrics": {"enabled": False},
    }  # fmt: skip


def test_the_runner_says_when_its_regime_model_is_not_the_studys(study, caplog):
    root, tracker, spec, report = study
    raw = _runner_raw(root, tracker, spec, "1")
    _promote(study, raw["store"]["url"])
    with caplog.at_level(logging.WARNING, logger="quantshift.live"):
        Runner(parse_config(raw, source="runner.toml"), max_bars=2).run()
    assert "regime model" not in caplog.text  # the study's version: nothing to say
    caplog.clear()
    # a retrained version registered since: the runner labels bars with another model
    first = tracker.model_versions(spec.regime.model_name)[0]
    tracker.register_model_version(spec.regime.model_name, report.regime_report.run_id,
                                   "regime_model", tags=first["tags"], keep=3)  # fmt: skip
    raw = _runner_raw(root, tracker, spec, "2")
    _promote(study, raw["store"]["url"])
    with caplog.at_level(logging.WARNING, logger="quantshift.live"):
        Runner(parse_config(raw, source="runner.toml"), max_bars=2).run()
    name = spec.regime.model_name
    # said as the other terms are (the runner also sizes at the decision, the study at the fill)
    assert (
        "on other terms than its study (size_at 'fill' in the study, 'decision' here; "
        + (f"regime model {name} version 1 in the study, {name} version 2 here)")
        in caplog.text
    )


def test_the_runner_refuses_a_record_whose_model_version_it_cannot_load(study):
    root, tracker, spec, _ = study
    raw = _runner_raw(root, tracker, spec, "1")
    raw["store"]["url"] = f"sqlite:///{root}/live-missing.db"
    record = _promote(study, raw["store"]["url"]).record
    pin = dict(record.overlay["regime_model"], version="9")
    missing = dataclasses.replace(record, overlay={"regime_model": pin})
    store = open_promotion_store(raw["store"]["url"])
    try:
        store.add(missing, by="test", reason="a pin of a version the registry does not keep")
    finally:
        store.close()
    with pytest.raises(ConfigError, match=r"cannot load its pinned regime model .* version 9"):
        Runner(parse_config(raw, source="runner.toml"), max_bars=2).run()
    # the same version number holding another model file than the study's is refused too
    other = dataclasses.replace(
        record, overlay={"regime_model": dict(pin, version="1", model_sha256="0" * 64)}
    )
    store = open_promotion_store(raw["store"]["url"])
    try:
        store.add(other, by="test", reason="a rebuilt registry's version 1")
    finally:
        store.close()
    with pytest.raises(ConfigError, match="not the 000000000000 the record pins"):
        Runner(parse_config(raw, source="runner.toml"), max_bars=2).run()
    # a pin with the file's digest is looked up in the runner's own store: the research
    # machine's store need not be reachable from the runner
    away = dict(record.overlay["regime_model"], tracking_uri=f"sqlite:///{root}/gone/mlflow.db")
    store = open_promotion_store(raw["store"]["url"])
    try:
        store.add(dataclasses.replace(record, overlay={"regime_model": away}), by="test",
                  reason="promoted on another machine")  # fmt: skip
    finally:
        store.close()
    assert Runner(parse_config(raw, source="runner.toml"), max_bars=2).run().bars == 2


def test_other_overlay_names_each_difference():
    from tests.test_promotion_record import record

    sentiment = {"scorer": "lexicon", "ttl_s": 3600.0, "lookback": "1D", "min_score": -0.5,
                 "size_scaling": 0.5}  # fmt: skip
    pinned = record(overlay={"regime_model": {"name": "m", "version": "3"},
                             "sentiment": sentiment})  # fmt: skip
    same = {"regime_model": {"name": "m", "version": "3"}, "sentiment": dict(sentiment)}
    assert pinned.other_overlay(same) == []
    assert pinned.other_overlay({"sentiment": dict(sentiment, min_score=-0.2)}) == [
        "regime model m version 3 in the study, none here",
        "sentiment min_score -0.5 in the study, -0.2 here",
    ]
    assert record().other_overlay(same) == [
        "regime model none in the study, m version 3 here",
        "sentiment filter off in the study, on here",
    ]
    lines = "\n".join(pinned.summary_lines())
    assert "overlay: regime model m version 3 (in the runner's MLflow store)" in lines
    assert "overlay: sentiment filter scorer lexicon, ttl_s 3600, lookback 1D" in lines


def test_the_report_says_when_it_has_no_news(study):
    _, _, _, report = study
    assert "no historical news" in report.summary["verdict"]
    assert "sentiment" not in report.summary["overlay"]


def test_an_overlay_study_with_a_news_file_measures_the_filter_and_pins_its_settings(study):
    root, tracker, _, report = study
    rng = np.random.default_rng(5)
    bars = load_bars(SOURCE)
    rows = ["published,symbols,headline"]
    for t in rng.choice(np.arange(100, bars.n_bars), 500, replace=False):
        symbol = bars.symbols[int(rng.integers(0, 2))]
        stamp = pd.Timestamp(int(bars.ts_ns[t]), tz="UTC") - pd.Timedelta(hours=3)
        headline = HEADLINES[int(rng.integers(0, len(HEADLINES)))].format(s=symbol)
        rows.append(f"{stamp.isoformat()},{symbol},{headline}")
    (root / "news.csv").write_text("\n".join(rows) + "\n")
    with_news = root / "overlay_news.toml"
    with_news.write_text(
        OVERLAY + '\n[news]\nfile = "news.csv"\n\n[sentiment]\nmin_score = -0.2\n'
        "size_scaling = 0.5\n"
    )
    news_spec = load_overlay_spec(with_news)
    assert (
        news_spec.canonical["news"]["sha256"]
        == hashlib.sha256((root / "news.csv").read_bytes()).hexdigest()
    )
    news_report = run_overlay(news_spec, regime_report=report.regime_report, tracker=tracker,
                              track=True)  # fmt: skip
    table = news_report.table
    assert list(table.index)[-1] == "regime-limits-and-sentiment" and len(table) == 6
    full, filtered = table.loc["regime-and-limits"], table.loc["regime-limits-and-sentiment"]
    assert filtered["vetoes"] > full["vetoes"]  # the filter skipped entries on bad news
    assert "with the news filter (news.csv)" in news_report.summary["verdict"]
    # other headlines are another spec: a child of the first in the same lineage
    pre = news_report.summary["preregistration"]
    assert pre["lineage"] == LINEAGE and pre["spec_hash"] != pre["root_hash"]
    outcome = promote(news_report.summary["run_id"], "paper", store_url=f"sqlite:///{root}/n.db",
                      tracker=tracker, sleeve="reversion", force=True,
                      reason="news test")  # fmt: skip
    pin = outcome.record.overlay["sentiment"]
    assert {k: pin[k] for k in SENTIMENT_PIN_KEYS} == {
        "scorer": "lexicon", "ttl_s": 3600.0, "lookback": "1D", "min_score": -0.2,
        "size_scaling": 0.5,
    }  # fmt: skip
    assert pin["news_sha256"] == news_spec.canonical["news"]["sha256"]
    assert outcome.record.out_of_sample["sharpe"] == pytest.approx(filtered["sharpe"])
    assert "overlay: sentiment filter scorer lexicon" in "\n".join(outcome.lines())
    bad = root / "overlay_bad.toml"
    bad.write_text(OVERLAY + '\n[news]\nfile = "news.csv"\n')
    with pytest.raises(ConfigError, match=r"\[news\] .* and \[sentiment\] .* go together"):
        load_overlay_spec(bad)
    bad.write_text(OVERLAY + '\n[news]\nfile = "news.csv"\nttl_s = -60\n\n[sentiment]\n'
                   "min_score = -0.2\nsize_scaling = 0.5\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"\[news\] ttl_s: must be seconds >= 0"):
        load_overlay_spec(bad)


def test_the_report_and_the_promotion_print_the_overlay(study, capsys):
    from research.cli import print_overlay

    root, tracker, spec, report = study
    print_overlay(report)
    text = " ".join(capsys.readouterr().out.split())  # as read, whatever the console's width
    assert "regime-and-limits" in text and "no historical news: the spec has no [news] file" in text
    assert f"promote a sleeve with `quantshift promote {report.summary['run_id']} --sleeve" in text
    result = CliRunner().invoke(app, [
        "promote", report.summary["run_id"], "--sleeve", "reversion", "--store",
        f"sqlite:///{root}/cli.db", "--tracking-uri", tracker.resolved_tracking_uri, "--force",
        "--reason", "cli test",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "overlay-test.reversion -> paper  (FORCED)" in result.output
    assert f"overlay: regime model {spec.regime.model_name} version 1 in " in result.output
    assert "not measured: the study has no [pbo] section" in result.output
