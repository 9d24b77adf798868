"""Does the regime overlay earn its place? The same portfolio with and without regime allocation
and the correlation / sector limits, on the bars the regime model predicted out of sample
(walk-forward), with each variant's deflated Sharpe ratio over all the variants tried.

Run by ``quantshift research report SPEC`` when the spec has an ``[overlay]`` section.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantshift.data import Bars
from quantshift.engine.metrics import equity_metrics
from quantshift.portfolio import PortfolioConfig, portfolio_backtest
from quantshift.portfolio.overlay import RegimeOverlay, SectorMap, SentimentFilter
from quantshift.regime_features import FEATURES, NO_REGIME
from quantshift.sentiment import DEFAULT_LOOKBACK, DEFAULT_TTL_S, SCORERS
from quantshift.tables import read_toml
from quantshift.urls import mask_secrets
from research.regime.evidence import measure_checks
from research.regime.spec import RegimeSpec, load_regime_spec
from research.regime.train import RegimeReport, load_regime_bars, train
from research.regime.trials import (
    deflate,
    record_variants,
    register_overlay,
)

VARIANTS = (
    ("base", False, False, None),
    ("limits", True, False, None),
    ("regime", False, True, "model"),
    ("regime-and-limits", True, True, "model"),
    ("persistence-regime-and-limits", True, True, "persistence"),
)
"""(name, correlation and sector limits on, regime allocation on, regime source)."""
SENTIMENT_VARIANT = "regime-limits-and-sentiment"
"""The full overlay with the news filter: run only when the spec has ``[news]``."""
PROMOTED_VARIANT = "regime-and-limits"
"""The variant a promoted sleeve's evidence comes from: the portfolio as a runner with
``[regimes]``, ``[regime_model]`` and the limits trades it (:data:`SENTIMENT_VARIANT` when the
spec has news: the runner then also has ``[news]`` and ``[sentiment]``)."""


@dataclass(frozen=True, kw_only=True)
class NewsSpec:
    """Historical headlines for the sentiment variant: a CSV/JSON ``file`` (``published,
    symbols, headline``), scored by ``scorer`` through a ``ttl_s`` cache, each symbol's mean
    over ``lookback`` before a bar's time stamp (a daily bar's stamp is its open: conservative,
    a runner deciding at the close sees the same day's news too)."""

    file: Path
    scorer: str = "lexicon"
    finbert_path: str | None = None
    ttl_s: float = DEFAULT_TTL_S
    lookback: str = DEFAULT_LOOKBACK


@dataclass(frozen=True, kw_only=True)
class OverlaySpec:
    """A validated overlay study: the regime spec, the portfolio, the limits and the rules."""

    name: str
    regime: RegimeSpec
    portfolio: PortfolioConfig
    max_position_correlation: float
    correlation_window_bars: int
    max_sector_exposure_pct: float
    sectors: SectorMap
    regimes: RegimeOverlay
    news: NewsSpec | None = None
    sentiment: SentimentFilter | None = None
    path: Path | None = None
    canonical: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """What the spec registers by content hash (``research.regime.trials``): every table but
    the study's name, with the regime spec's tables in place of its file name."""


def is_overlay_spec(path: str | Path) -> bool:
    """True when the TOML file at ``path`` is an overlay study (has an ``[overlay]`` table)."""
    top, _ = read_toml(path, "experiment spec")
    return "overlay" in top


def load_overlay_spec(path: str | Path) -> OverlaySpec:
    """Read and validate an overlay study; errors name the file, the table and the key."""
    path = Path(path)
    top, _ = read_toml(path, "overlay spec")
    top.refuse_unknown({"overlay", "portfolio", "limits", "sectors", "regimes", "news",
                        "sentiment"})  # fmt: skip
    head = top.table("overlay", required=True)
    head.refuse_unknown({"name", "regime_spec"})
    regime_file = path.parent / head.string("regime_spec", required=True)
    if not regime_file.is_file():
        raise head.error("regime_spec", f"{regime_file} not found")
    portfolio = top.table("portfolio", required=True)
    config = PortfolioConfig.from_dict(portfolio.raw, f"{path}: [portfolio]", path.parent)
    if config.regimes is not None or config.sentiment is not None:
        raise portfolio.table_error("regimes belong in [regimes] of the study, not the portfolio")
    limits = top.table("limits", required=True)
    limits.refuse_unknown({"max_position_correlation", "correlation_window_bars",
                           "max_sector_exposure_pct"})  # fmt: skip
    sectors = top.table("sectors", required=True)
    sectors.refuse_unknown({"map"})
    mapping = sectors.get("map")
    if not isinstance(mapping, Mapping) or not mapping:
        raise sectors.error("map", "must be a table of symbol = sector")
    missing = [s for s in config.symbols if s not in mapping]
    if missing:
        raise sectors.error("map", f"has no sector for {', '.join(missing)}")
    rules = top.table("regimes", required=True)
    if rules.raw.get("legacy") is True:
        rules.refuse_unknown({"legacy"})
        regimes = RegimeOverlay.legacy(*_legacy_roles(config))
    else:
        regimes = RegimeOverlay.from_table(rules)
    regimes.check_sleeves(config.sleeve_names)
    news, sentiment = _news(top, path)
    regime_top, _ = read_toml(regime_file, "regime spec")
    canonical = {
        **{k: v for k, v in top.raw.items() if k != "overlay"},
        "regime": {k: v for k, v in regime_top.raw.items() if k != "tracking"},
    }
    if news is not None:  # the headlines are data: other headlines, another spec
        canonical["news"] = {**canonical["news"], "sha256": _sha256(news.file)}
    return OverlaySpec(
        name=head.string("name", required=True),
        regime=load_regime_spec(regime_file),
        portfolio=config,
        max_position_correlation=limits.number("max_position_correlation", 0.7),
        correlation_window_bars=limits.integer("correlation_window_bars", 60, 2),
        max_sector_exposure_pct=limits.number("max_sector_exposure_pct", 30.0),
        sectors=SectorMap(dict(mapping), f"{path}: [sectors]"),
        regimes=regimes,
        news=news,
        sentiment=sentiment,
        path=path,
        canonical=canonical,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _news(top, path: Path) -> tuple[NewsSpec | None, SentimentFilter | None]:
    """``[news]`` and ``[sentiment]``: both or neither (one would have nothing to read)."""
    news_table, rules = top.table("news"), top.table("sentiment")
    if not news_table.raw and not rules.raw:
        return None, None
    if not (news_table.raw and rules.raw):
        raise top.error(
            "news" if rules.raw else "sentiment",
            "[news] (the headlines file) and [sentiment] (min_score, size_scaling) go together",
        )
    news_table.refuse_unknown({"file", "scorer", "finbert_path", "ttl_s", "lookback"})
    file = path.parent / news_table.string("file", required=True)
    if not file.is_file():
        raise news_table.error("file", f"{file} not found")
    weights = news_table.string("finbert_path")
    news = NewsSpec(
        file=file,
        scorer=news_table.choice("scorer", SCORERS, "lexicon"),
        finbert_path=None if weights is None else str(path.parent / weights),
        ttl_s=news_table.seconds("ttl_s", DEFAULT_TTL_S, "0: no cache"),
        lookback=news_table.string("lookback") or DEFAULT_LOOKBACK,
    )
    return news, rules.build(SentimentFilter)


def _legacy_roles(config: PortfolioConfig) -> tuple[str | None, str | None, str | None]:
    """Sleeve names of the legacy table's roles, by the strategy each sleeve runs."""
    by_strategy = {s.strategy_name: s.name for s in config.sleeves}
    return tuple(by_strategy.get(k) for k in ("breakout_momentum", "rsi_reversion",
                                                "bollinger_bounce"))  # fmt: skip


@dataclass(eq=False)
class OverlayReport:
    """Each variant's out-of-sample metrics and DSR, its equity, and the regime model's run."""

    spec: OverlaySpec
    regime_report: RegimeReport
    table: pd.DataFrame
    equity: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict, repr=False)


def variant_config(
    spec: OverlaySpec, limits: bool, regimes: bool, sentiment: bool = False
) -> PortfolioConfig:
    """The study's portfolio with the limits, the regime rules and/or the news filter on."""
    config = spec.portfolio
    if sentiment:
        config = dataclasses.replace(config, sentiment=spec.sentiment)
    if limits:
        config = dataclasses.replace(
            config,
            limits=dataclasses.replace(
                config.limits,
                max_position_correlation=spec.max_position_correlation,
                correlation_window_bars=spec.correlation_window_bars,
                max_sector_exposure_pct=spec.max_sector_exposure_pct,
            ),
            sectors=spec.sectors,
        )
    if regimes:
        config = dataclasses.replace(config, regimes=spec.regimes)
    return config


def run_overlay(
    spec: OverlaySpec,
    *,
    regime_report: RegimeReport | None = None,
    tracker=None,
    track: bool = False,
    progress=None,
) -> OverlayReport:
    """Train (or take) the regime model's walk-forward predictions, then backtest every
    variant over the out-of-sample bars, record the variants in the trial registry under the
    spec's lineage, and deflate each Sharpe ratio over every variant that lineage ever ran
    on these bars."""
    bars = load_regime_bars(spec.regime)
    if track and tracker is None:
        from research.tracking import Tracker

        tracker = Tracker(spec.regime.tracking_uri, experiment=spec.name)
    if regime_report is None:
        regime_report = train(spec.regime, tracker=tracker, track=track, progress=progress,
                              bars=bars)  # fmt: skip
    tested = regime_report.evaluation.tested
    first = int(np.flatnonzero(tested.any(axis=1))[0])
    start = max(0, first - spec.portfolio.warmup_bars())
    window = bars[start:]
    sources = {
        "model": regime_report.predictions().to_numpy(dtype=np.int64),
        "persistence": _persistence(regime_report),
    }
    symbols = list(spec.portfolio.symbols)
    columns = [bars.symbols.index(s) for s in symbols]
    oos = bars[first:].select(symbols)
    sleeves = spec.portfolio.sleeves
    # Registered before the first variant runs, like a study's spec.
    registration = register_overlay(dict(spec.canonical), [s.strategy_name for s in sleeves], oos)
    variants = [(*v, False) for v in VARIANTS]
    scores = None
    if spec.news is not None:
        variants.append((SENTIMENT_VARIANT, True, True, "model", True))
        scores = news_scores(spec.news, window, symbols)
    rows, curves, returns_of = [], {}, []
    for name, limits, regimes, source, sentiment in variants:
        config = variant_config(spec, limits, regimes, sentiment)
        regime = None
        if regimes:
            labels = sources[source][:, columns].copy()
            labels[~tested[:, columns]] = NO_REGIME
            regime = labels[start:]
        result = portfolio_backtest(config, window, regime=regime,
                                    sentiment=scores if sentiment else None)  # fmt: skip
        equity = result.equity.to_numpy()[first - start :]
        initial = float(result.equity.to_numpy()[first - start - 1]) if first > start else (
            config.sim.cash)  # fmt: skip
        metrics = equity_metrics(equity, initial, result.periods_per_year)
        periods_per_year = result.periods_per_year
        returns_of.append(equity / np.concatenate(([initial], equity[:-1])) - 1.0)
        trades = result.trades
        oos_trades = int((trades["entry_time"] >= bars.index[first]).sum()) if len(trades) else 0
        vetoes = result.vetoes
        rows.append({
            "variant": name,
            "sharpe": metrics["sharpe"],
            "cagr_pct": metrics["cagr_pct"],
            "max_drawdown_pct": metrics["max_drawdown_pct"],
            "trades": oos_trades,
            "vetoes": int((vetoes["time"] >= bars.index[first]).sum()) if len(vetoes) else 0,
        })  # fmt: skip
        curves[name] = pd.Series(equity, index=bars.index[first:])
    flags = [(lim, reg, src == "persistence", sen) for _, lim, reg, src, sen in variants]
    record_variants(registration, [s.strategy_object for s in sleeves], oos, flags, returns_of,
                    [row["trades"] for row in rows], spec.name)  # fmt: skip
    table, deflation = deflate(pd.DataFrame(rows).set_index("variant"), returns_of,
                               registration.spec.lineage, oos)  # fmt: skip
    report = OverlayReport(spec, regime_report, table, pd.DataFrame(curves))
    report.summary = _overlay_summary(report, bars, first, deflation["registry_trials"])
    report.summary.update(
        dsr_trial_variance=deflation["registry_sharpe_variance"],
        preregistration=registration.lineage_summary(),
        **_promotable(spec, regime_report, bars),
    )
    promoted = [v[0] for v in variants].index(report.summary["promoted_variant"])
    report.summary.update(
        measure_checks(sleeves, bars, returns_of[promoted], periods_per_year, spec.regime.seed)
    )
    report.figures["overlay_equity"] = _plot(report)
    if track:
        _track(report, tracker)
    return report


def news_scores(news: NewsSpec, bars: Bars, symbols: list[str]) -> np.ndarray:
    """Each bar's mean headline score per symbol over ``news.lookback`` before the bar's stamp
    (NaN: no news), as ``[news]`` gives a runner its scores."""
    from quantshift.sentiment import CachedScorer, load_news_file, make_scorer, sentiment_scores

    scorer = CachedScorer(make_scorer(news.scorer, finbert_path=news.finbert_path), news.ttl_s)
    return sentiment_scores(load_news_file(news.file), scorer, bars.ts_ns, symbols,
                            lookback=news.lookback)  # fmt: skip


def _promotable(spec: OverlaySpec, regime_report: RegimeReport, bars: Bars) -> dict[str, Any]:
    """What ``quantshift promote RUN --sleeve NAME`` makes a record of: each sleeve (strategy,
    parameters, symbols, allocation, sizing and costs, code), the data, the walk-forward folds,
    and the overlay the full variant ran with (the registered regime model's version)."""
    from quantshift.provenance import code_fingerprint

    config = spec.portfolio
    overlay: dict[str, Any] = {}
    if regime_report.model_version is not None:
        uri = regime_report.tracking_uri
        overlay["regime_model"] = {
            "name": spec.regime.model_name,
            "version": str(regime_report.model_version),
            # A store URL with a password is not written into a record: the runner then uses
            # its own [regime_model] tracking_uri or MLFLOW_TRACKING_URI.
            "tracking_uri": uri if uri is not None and mask_secrets(uri) == uri else None,
            # the file itself: a rebuilt registry's "version 1" is not the model studied
            "model_sha256": regime_report.model_sha256,
        }
    if spec.news is not None:
        overlay["sentiment"] = {
            "scorer": spec.news.scorer,
            "ttl_s": spec.news.ttl_s,
            "lookback": spec.news.lookback,
            **spec.sentiment.to_dict(),
            "news_file": spec.news.file.name,
            "news_sha256": _sha256(spec.news.file),
        }
    return {
        "sleeves": [
            {
                "name": s.name,
                "strategy": s.strategy_name,
                "params": {k: float(v) for k, v in s.params.items()},
                "symbols": list(s.symbols),
                "allocation": s.allocation,
                "research_settings": s.sim_config(config.sim).to_dict(),
                "code": code_fingerprint(s.strategy_name),
            }
            for s in config.sleeves
        ],
        "promoted_variant": PROMOTED_VARIANT if spec.news is None else SENTIMENT_VARIANT,
        "overlay": overlay,
        "data_source": spec.regime.data.source,
        "data_first_bar": str(bars.index[0]),
        "data_last_bar": str(bars.index[-1]),
        "data_bars": bars.n_bars,
        "data_fingerprint": bars.fingerprint(),
        "wf_folds": len(regime_report.evaluation.folds),
    }


def _track(report: OverlayReport, tracker) -> None:
    spec = report.spec
    if tracker is None:
        from research.tracking import Tracker

        tracker = Tracker(spec.regime.tracking_uri, experiment=spec.name)
    params = {
        "regime_spec": spec.regime.name,
        "regime_model": f"{spec.regime.model_name}/{report.regime_report.model_version}",
        "limits": {
            "max_position_correlation": spec.max_position_correlation,
            "correlation_window_bars": spec.correlation_window_bars,
            "max_sector_exposure_pct": spec.max_sector_exposure_pct,
        },
        "regimes": spec.regimes.to_dict(),
    }
    with tracker.run(f"{spec.name}:report", kind="overlay-report", params=params) as run:
        numbers = {
            k: v for k, v in report.summary.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }  # fmt: skip
        run.log_metrics(numbers)
        run.log_dict(report.summary, "summary.json")
        run.log_frame(report.table.reset_index(), "variants")
        for name, fig in report.figures.items():
            run.log_figure(fig, f"plots/{name}.png")
        if spec.path is not None:
            run.log_file(spec.path, artifact_path="spec")
        report.summary["run_id"] = run.run_id


def _persistence(regime_report: RegimeReport) -> np.ndarray:
    current = regime_report.panel.features[..., FEATURES.index("current_regime")]
    out = np.where(np.isfinite(current), current, NO_REGIME).astype(np.int64)
    return out


def _overlay_summary(report: OverlayReport, bars: Bars, first: int, trials: int) -> dict[str, Any]:
    table = report.table
    base, full = table.loc["base"], table.loc["regime-and-limits"]
    regime_summary = report.regime_report.summary
    out: dict[str, Any] = {
        "spec": report.spec.name,
        "oos_start": str(bars.index[first].date()),
        "oos_end": str(bars.index[-1].date()),
        "oos_bars": len(bars.index) - first,
        "variants": len(table),
        "trials": trials,
        "regime_model_accuracy": regime_summary[f"{report.spec.regime.register}_accuracy"],
        "persistence_accuracy": regime_summary["persistence_accuracy"],
        "best_variant": str(table["sharpe"].idxmax()),
    }
    for name, row in table.iterrows():
        for key in ("sharpe", "cagr_pct", "max_drawdown_pct", "trades", "psr", "dsr"):
            out[f"{name}_{key}"] = float(row[key])
    out["overlay_sharpe_change"] = float(full["sharpe"] - base["sharpe"])
    out["verdict"] = (
        f"out of sample ({out['oos_start']}..{out['oos_end']}), the full overlay has Sharpe "
        f"{full['sharpe']:.2f} vs {base['sharpe']:.2f} without it, max drawdown "
        f"{full['max_drawdown_pct']:.1f}% vs {base['max_drawdown_pct']:.1f}%; the best of "
        f"{len(table)} variants ({out['best_variant']}) has DSR "
        f"{table['dsr'].max():.2f}, deflated over the {trials} variants this spec's lineage "
        "has run on these bars"
    )
    if SENTIMENT_VARIANT in table.index:
        news = table.loc[SENTIMENT_VARIANT]
        out["sentiment_sharpe_change"] = float(news["sharpe"] - full["sharpe"])
        out["news"] = (
            f"with the news filter ({report.spec.news.file.name}) the full overlay has Sharpe "
            f"{news['sharpe']:.2f} vs {full['sharpe']:.2f} without it"
        )
    else:
        out["news"] = (
            "no historical news: the spec has no [news] file, so the sentiment filter is not "
            "measured out of sample here"
        )
    out["verdict"] += "; " + out["news"]
    if not math.isfinite(out["overlay_sharpe_change"]):
        out["overlay_sharpe_change"] = None
    return out


def _plot(report: OverlayReport):
    from quantshift.engine.plotting import pyplot

    fig, ax = pyplot().subplots(figsize=(8, 4))
    for name in report.equity.columns:
        ax.plot(report.equity.index, report.equity[name], label=name, lw=1)
    ax.set_title(f"{report.spec.name}: out-of-sample equity by variant")
    ax.set_ylabel("equity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
