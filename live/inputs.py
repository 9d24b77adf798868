"""The per-bar inputs of the decision layer's overlay, produced at each bar's close: a regime
label per symbol from the pinned registered model, and news scores per symbol.

The same functions make them for a backtest (``quantshift.regime_model``, ``quantshift.sentiment``),
so a runner and ``portfolio_backtest`` given the same bars, model and news decide alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from live.config import LiveConfig
from live.regime import load_pinned
from quantshift.data import Bars
from quantshift.errors import ConfigError
from quantshift.sentiment import CachedScorer, load_news_file, make_scorer, sentiment_scores

log = logging.getLogger("quantshift.live")


class OverlayInputs:
    """What ``decide`` needs besides the signals when the config has ``[regimes]`` or
    ``[sentiment]`` (nothing otherwise).

    Raises
    ------
    ConfigError
        At start: the model version cannot be loaded, the news file cannot be read, FinBERT
        weights are missing, or Alpaca news is asked of another venue.
    """

    def __init__(self, config: LiveConfig, broker) -> None:
        where = config.path or config.name
        self._model = None
        self._scores: Callable[[Sequence[str], int], dict[str, float]] | None = None
        if config.regime_model is not None:
            pin = config.regime_model
            try:
                self._model = load_pinned(pin.name, pin.version, pin.tracking_uri, pin.cache_dir)
            except ConfigError as exc:
                raise ConfigError(f"{where}: [regime_model] {exc}") from None
            log.info("regime labels from %s version %s", pin.name, pin.version)
        if config.news is not None:
            self._scores = _news_scores(config, broker, where)

    def at(self, window: Bars, close_ns: int) -> dict[str, Any]:
        """Keyword arguments of ``decide`` for the bar closing at ``close_ns`` (the window's
        last bar): ``regime`` per symbol, ``sentiment`` per symbol (NaN: no news)."""
        out: dict[str, Any] = {}
        symbols = list(window.symbols)
        if self._model is not None:
            out["regime"] = dict(zip(symbols, self._model.predict_last(window).tolist(),
                                     strict=True))  # fmt: skip
        if self._scores is not None:
            out["sentiment"] = self._scores(symbols, close_ns)
        return out


def running_overlay(config: LiveConfig) -> dict[str, Any]:
    """The runner's overlay as a promotion record pins one (``PromotionRecord.overlay``): the
    ``[regime_model]`` name and version, and the ``[news]`` scorer and window with the
    ``[sentiment]`` thresholds; empty parts are left out."""
    out: dict[str, Any] = {}
    if config.regime_model is not None:
        out["regime_model"] = {"name": config.regime_model.name,
                               "version": config.regime_model.version}  # fmt: skip
    news, rules = config.news, config.portfolio.sentiment
    if news is not None and rules is not None:
        out["sentiment"] = {"scorer": news.scorer, "ttl_s": news.ttl_s,
                            "lookback": news.lookback, **rules.to_dict()}  # fmt: skip
    return out


def _news_scores(config: LiveConfig, broker, where: str):
    news = config.news
    scorer = CachedScorer(make_scorer(news.scorer, finbert_path=news.finbert_path), news.ttl_s)
    if news.source == "file":
        items = load_news_file(news.file)

        def from_file(symbols: Sequence[str], close_ns: int) -> dict[str, float]:
            row = sentiment_scores(items, scorer, [close_ns], symbols, lookback=news.lookback)[0]
            return dict(zip(symbols, row.tolist(), strict=True))

        return from_file
    if broker is None or broker.venue != "alpaca":
        raise ConfigError(
            f"{where}: [news] source 'alpaca' reads Alpaca's news API with the broker's keys: "
            "set [broker] kind 'alpaca', or use a headlines file"
        )
    from live.alpaca.news import AlpacaNews, NewsSentiment

    feed = NewsSentiment(AlpacaNews(broker.config), scorer, ttl_s=news.ttl_s,
                         lookback=news.lookback)  # fmt: skip
    return feed.scores_at
