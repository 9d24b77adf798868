"""The runner feeds the overlay: each bar's regime labels from the pinned registered model and
news scores from a headlines file, decided as ``portfolio_backtest`` decides with the same
model's predictions and the same news (causal: only news published before a bar's close)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from live.clock import MarketClock
from live.config import parse_config
from live.divergence import divergence
from live.regime import load_registered_model
from live.runner import Runner
from live.store import Store
from quantshift.data import load_bars, write_parquet
from quantshift.errors import ConfigError
from quantshift.portfolio import portfolio_backtest
from quantshift.sentiment import LexiconScorer, load_news_file, sentiment_scores
from research.regime.spec import load_regime_spec
from research.regime.train import train
from research.tracking import Tracker
from tests.test_live_runner import assert_same_trades
from tests.test_research_regime import SPEC

SOURCE = "synthetic:symbols=2,bars=900,seed=11,gaps=0"
HEADLINES = ["{s} beats estimates, raises outlook", "{s} plunges after fraud probe",
             "{s} faces lawsuit and weak demand", "{s} wins record contract"]  # fmt: skip


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A regime model trained and registered in a fresh MLflow store (version 1)."""
    root = tmp_path_factory.mktemp("overlay")
    (root / "regime.toml").write_text(SPEC)
    spec = load_regime_spec(root / "regime.toml")
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", experiment="regime-live",
                      artifact_root=(root / "artifacts").as_uri())  # fmt: skip
    report = train(spec, tracker=tracker, bars=load_bars(SOURCE))
    report.close_figures()
    return root, tracker.resolved_tracking_uri, spec.model_name, report.model_version


def _raw(root, uri, name, version) -> dict:
    bars = load_bars(SOURCE)
    write_parquet(bars, root / "bars.parquet")
    rng = np.random.default_rng(5)
    rows = ["published,symbols,headline"]
    for t in rng.choice(np.arange(100, bars.n_bars), 700, replace=False):
        stamp = pd.Timestamp(int(bars.ts_ns[t]), tz="UTC") + pd.Timedelta(
            hours=int(rng.integers(1, 30))
        )
        symbol = bars.symbols[int(rng.integers(0, 2))]
        rows.append(
            f"{stamp.isoformat()},{symbol},{HEADLINES[int(rng.integers(0, 4))].format(s=symbol)}"
        )
    (root / "news.csv").write_text("\n".join(rows) + "\n")
    return {
        "runner": {"name": "overlay-test", "market": "crypto", "mode": "paper"},
        "sleeves": [{"name": "trend", "strategy": "ma_crossover", "symbols": list(bars.symbols),
                     "params": {"fast": 5, "slow": 20}, "allocation": 1.0}],
        "risk": {"max_position_pct": 20.0, "daily_loss_limit_pct": 100.0,
                 "max_drawdown_pct": 100.0},
        "costs": {"size": 0.5},
        "regimes": {"bear_trending": {"allocation": {"trend": 0.0}},
                    "high_volatility": {"allocation": {"trend": 0.5}, "stop_scale": 0.5}},
        "sentiment": {"min_score": -0.2, "size_scaling": 0.5},
        "regime_model": {"name": name, "version": version, "tracking_uri": uri,
                         "cache_dir": str(root / "models")},
        "news": {"file": str(root / "news.csv")},
        "feed": {"source": str(root / "bars.parquet")},
        "store": {"url": f"sqlite:///{root}/state.db"},
        "guards": {"price_collar_pct": 100.0},
        "metrics": {"enabled": False},
    }  # fmt: skip


@pytest.fixture(scope="module")
def replayed(registered):
    """The overlay runner replayed once on the paper broker: its config, with the model's
    labels and the news scores computed here, independently of the runner, on every bar."""
    root, uri, name, version = registered
    config = parse_config(_raw(root, uri, name, version), source="overlay-test.toml")
    summary = Runner(config).run()
    assert summary.ended == "replay finished" and summary.trades >= 5
    bars = load_bars(str(root / "bars.parquet"))
    model = load_registered_model(uri, name, version, root / "check")
    regime = pd.DataFrame(model.predict(bars), index=bars.index, columns=list(bars.symbols))
    clock = MarketClock("crypto", 86_400)
    closes = [clock.bar_close_ns(int(t)) for t in bars.ts_ns]
    news = load_news_file(root / "news.csv")
    scores = pd.DataFrame(sentiment_scores(news, LexiconScorer(), closes, list(bars.symbols)),
                          index=bars.index, columns=list(bars.symbols))  # fmt: skip
    return config, bars, regime, scores


def test_the_runner_decides_with_the_model_and_the_news_as_the_backtest_does(replayed):
    config, bars, regime, scores = replayed
    with Store.open(config.store_url) as store:
        live = sorted((t.sleeve, t.symbol, t.direction, t.entry_ts_ns, t.exit_ts_ns,
                       t.entry_price, t.exit_price, t.qty, t.pnl, t.exit_reason)
                      for t in store.trades())  # fmt: skip
    result = portfolio_backtest(config.portfolio, bars, regime=regime, sentiment=scores)
    closed = result.trades[result.trades["exit_reason"] != "open"]
    tested = sorted((r.sleeve, r.symbol, r.direction, r.entry_time.value, r.exit_time.value,
                     r.entry_price, r.exit_price, r.units, r.pnl, r.exit_reason)
                    for r in closed.itertuples())  # fmt: skip
    assert_same_trades(live, tested)
    reasons = set(result.vetoes["reason"])
    assert {"regime", "sentiment"} <= reasons  # the overlay decided something


def test_the_inputs_kept_with_each_bar_are_the_ones_it_was_decided_with(replayed):
    config, bars, regime, scores = replayed
    with Store.open(config.store_url, create=False) as store:
        first = store.decided_from(config.name)
        kept = store.decided_inputs(config.name, bars.ts_ns, list(bars.symbols))
    # A replay decides from its first bar on: every bar has its inputs, equal to the model's
    # labels and the news scores computed above (unknown / no news included).
    assert first == bars.ts_ns[0] and kept.stored.all()
    np.testing.assert_array_equal(kept.regime, regime.to_numpy())
    np.testing.assert_allclose(kept.sentiment, scores.to_numpy(), rtol=0, atol=1e-12)
    assert np.isnan(kept.sentiment).any() and (~np.isnan(kept.sentiment)).any()
    assert -1 in kept.regime and len(set(kept.regime.ravel().tolist())) >= 3


def test_divergence_rebuilds_the_overlay_backtest_from_the_stored_inputs(replayed):
    config, _, _, _ = replayed
    with Store.open(config.store_url, create=False) as store:
        report = divergence(config, store)
    assert report.counts()["missing"] == 0 and report.counts()["extra"] == 0
    assert report.counts()["matched"] >= 5
    assert report.pnl_difference == pytest.approx(0.0, abs=1e-6)
    assert report.by_cause == {}


def test_an_overlay_without_its_source_or_a_source_without_its_overlay_is_refused(registered):
    root, uri, name, version = registered
    raw = _raw(root, uri, name, version)
    without_model = {k: v for k, v in raw.items() if k != "regime_model"}
    with pytest.raises(ConfigError, match=r"\[regimes\] needs \[regime_model\] name and version"):
        parse_config(without_model, source="overlay-test.toml")
    without_overlay = {k: v for k, v in raw.items() if k != "sentiment"}
    with pytest.raises(ConfigError, match=r"\[news\] without \[sentiment\]: nothing reads it"):
        parse_config(without_overlay, source="overlay-test.toml")
    latest = dict(raw, regime_model=dict(raw["regime_model"], version="latest"))
    with pytest.raises(ConfigError, match="never 'latest'"):
        parse_config(latest, source="overlay-test.toml")
    missing = dict(raw, regime_model=dict(raw["regime_model"], version="7"))
    config = parse_config(missing, source="overlay-test.toml")
    with pytest.raises(ConfigError, match="version 7"):
        Runner(config, max_bars=1).run()
