"""Alpaca news through alpaca-py's NewsClient, scored per symbol at a bar's close: only the
headlines published before the close count, and each text's score is cached for a TTL.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from alpaca.common.exceptions import APIError
from alpaca.data.historical.news import NewsClient
from alpaca.data.requests import NewsRequest

from live.alpaca.client import _our_policy, _venue_message
from live.alpaca.config import KEY_ID_NAME, SECRET_KEY_NAME, AlpacaConfig
from live.alpaca.parse import VENUE, to_datetime
from live.broker import BrokerUnavailableError, venue_answer
from live.secrets import load_secrets
from quantshift.sentiment import (
    DEFAULT_LOOKBACK,
    CachedScorer,
    NewsItem,
    SentimentScorer,
    sentiment_scores,
)


class AlpacaNews:
    """Headlines from Alpaca's news API (``GET /v1beta1/news``) as :class:`NewsItem`."""

    def __init__(self, config: AlpacaConfig) -> None:
        self.config = config
        key_id, secret = load_secrets(
            config,
            ((KEY_ID_NAME, "key_id_env"), (SECRET_KEY_NAME, "secret_key_env")),
            f"alpaca news ({config.mode})",
        )
        self._client = _our_policy(
            NewsClient(
                api_key=key_id.reveal(), secret_key=secret.reveal(), url_override=config.data_url
            ),
            config.timeout_s,
        )

    def fetch(self, symbols: Sequence[str], start_ns: int, end_ns: int) -> list[NewsItem]:
        """Articles about any of ``symbols`` created in ``[start_ns, end_ns]`` (every page),
        oldest first."""
        request = NewsRequest(
            symbols=",".join(symbols),
            start=to_datetime(start_ns),
            end=to_datetime(end_ns),
            sort="asc",
        )
        what = f"news {','.join(symbols)}"
        try:
            answer = self._client.get_news(request)
        except APIError as exc:
            raise BrokerUnavailableError(VENUE, f"{what}: {_venue_message(exc)}") from None
        with venue_answer(VENUE, what):
            articles = answer.data.get("news", [])
            return [
                NewsItem(int(pd.Timestamp(a.created_at).value), tuple(a.symbols), str(a.headline))
                for a in articles
            ]


class NewsSentiment:
    """The live sentiment input: each symbol's mean headline score over ``lookback`` before a
    bar's close, from Alpaca news, scored through a TTL cache (one hour by default)."""

    def __init__(
        self,
        news: AlpacaNews,
        scorer: SentimentScorer,
        *,
        ttl_s: float = 3600.0,
        lookback: str = DEFAULT_LOOKBACK,
    ) -> None:
        self.news = news
        self.scorer = scorer if isinstance(scorer, CachedScorer) else CachedScorer(scorer, ttl_s)
        self.lookback = pd.Timedelta(lookback)

    def scores_at(self, symbols: Sequence[str], close_ns: int) -> dict[str, float]:
        """Score per symbol at the bar closing at ``close_ns`` (NaN: no news); a headline
        published at or after the close is not counted."""
        fetched = self.news.fetch(symbols, close_ns - self.lookback.value, close_ns)
        items = [item for item in fetched if item.published_ns < close_ns]  # end is inclusive
        row = sentiment_scores(items, self.scorer, [close_ns], symbols, lookback=self.lookback)
        return dict(zip(symbols, map(float, row[0]), strict=True))
