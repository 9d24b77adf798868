"""News sentiment: the lexicon scorer on known sentences, the TTL cache, the causal per-bar
array, FinBERT's refusal without local weights, and Alpaca news through the real alpaca-py
against the fake Alpaca server."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from quantshift.errors import ConfigError, DataError
from quantshift.sentiment import (
    CachedScorer,
    FinBertScorer,
    LexiconScorer,
    NewsItem,
    load_news_file,
    make_scorer,
    sentiment_scores,
)
from tests.fakes.alpaca_server import FakeAlpaca

KEY_ENV, SECRET_ENV = "QS_TEST_NEWS_KEY", "QS_TEST_NEWS_SECRET"


def ns(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value)


@pytest.fixture(scope="module")
def lexicon():
    return LexiconScorer()


def test_lexicon_scores_known_sentences(lexicon):
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    good = "Company beats estimates and raises guidance; shares surge on strong growth"
    bad = "Company misses estimates, cuts guidance and warns of losses; shares plunge"
    assert lexicon.score(good) > 0.5
    assert lexicon.score(bad) < -0.5
    assert lexicon.score("The company will report results on Tuesday") == 0.0
    # the package's own analyser is the oracle: we pass its compound score through
    oracle = SentimentIntensityAnalyzer().polarity_scores(bad)["compound"]
    assert lexicon.score(bad) == oracle


class Counting:
    name = "counting"

    def __init__(self):
        self.calls = 0

    def score(self, text):
        self.calls += 1
        return 0.25


def test_cache_keeps_a_score_for_its_ttl_then_scores_again():
    now = [1000.0]
    inner = Counting()
    cached = CachedScorer(inner, clock=lambda: now[0])
    assert cached.ttl_s == 3600.0
    assert cached.score("a") == 0.25 and inner.calls == 1
    now[0] += 3599.0
    assert cached.score("a") == 0.25 and inner.calls == 1
    assert cached.score("b") == 0.25 and inner.calls == 2
    now[0] += 1.0
    cached.score("a")
    assert inner.calls == 3 and (cached.hits, cached.misses) == (1, 3)


def test_a_scorer_outside_minus_one_one_is_an_error():
    class Broken:
        name = "broken"

        def score(self, text):
            return 2.0

    with pytest.raises(DataError, match="outside"):
        CachedScorer(Broken()).score("x")


def test_per_bar_array_sees_only_news_published_before_the_close(lexicon):
    closes = np.array([ns("2024-01-02 21:00"), ns("2024-01-03 21:00"), ns("2024-01-04 21:00")])
    good = "Shares surge after record profit and strong growth"
    bad = "Shares plunge after fraud charges and heavy losses"
    news = [
        NewsItem(ns("2024-01-02 20:59:59"), ("AAPL",), good),
        NewsItem(ns("2024-01-03 21:00"), ("AAPL", "MSFT"), bad),  # at the close: next bar
        NewsItem(ns("2024-01-04 10:00"), ("MSFT",), good),
        NewsItem(ns("2024-01-04 11:00"), ("TSLA",), bad),  # not traded
    ]
    out = sentiment_scores(news, lexicon, closes, ["AAPL", "MSFT"], lookback="1D")
    g, b = lexicon.score(good), lexicon.score(bad)
    assert out[0, 0] == pytest.approx(g)
    assert np.isnan(out[0, 1])
    assert np.isnan(out[1, 0]) and np.isnan(out[1, 1])  # 1-day lookback; the 21:00 one waits
    assert out[2, 0] == pytest.approx(b)
    assert out[2, 1] == pytest.approx((b + g) / 2)
    # causality: news added after a bar's close never changes that bar's row
    later = [*news, NewsItem(ns("2024-01-03 21:00:01"), ("AAPL",), bad)]
    again = sentiment_scores(later, lexicon, closes, ["AAPL", "MSFT"], lookback="1D")
    np.testing.assert_array_equal(again[:2], out[:2])
    assert again[2, 0] == pytest.approx(b)


def test_per_bar_array_matches_a_plain_loop(lexicon):
    rng = np.random.default_rng(5)
    texts = ["great gains", "terrible loss", "neutral update", "strong beat", "weak outlook"]
    start = ns("2024-01-01")
    news = [
        NewsItem(
            start + int(rng.integers(0, 10 * 86_400)) * 10**9,
            tuple(rng.choice(["A", "B", "C"], size=int(rng.integers(1, 3)), replace=False)),
            str(rng.choice(texts)),
        )
        for _ in range(60)
    ]
    closes = start + np.arange(1, 11) * 86_400 * 10**9
    out = sentiment_scores(news, lexicon, closes, ["A", "B", "C"], lookback="36h")
    window = pd.Timedelta("36h").value
    for i, t in enumerate(closes):
        for j, sym in enumerate("ABC"):
            seen = [lexicon.score(n.headline) for n in news
                    if sym in n.symbols and t - window <= n.published_ns < t]  # fmt: skip
            if seen:
                assert out[i, j] == pytest.approx(np.mean(seen))
            else:
                assert np.isnan(out[i, j])


def test_news_files_csv_and_json(tmp_path):
    csv_file = tmp_path / "news.csv"
    csv_file.write_text(
        "published,symbols,headline\n"
        '2024-01-02T15:00:00Z,"AAPL,MSFT",Apple and Microsoft rally\n'
        "2024-01-03 09:00,TSLA,Tesla recalls cars\n"
    )
    items = load_news_file(csv_file)
    assert items[0] == NewsItem(
        ns("2024-01-02 15:00"), ("AAPL", "MSFT"), "Apple and Microsoft rally"
    )
    assert items[1].published_ns == ns("2024-01-03 09:00")
    json_file = tmp_path / "news.json"
    json_file.write_text(json.dumps([
        {"published": "2024-01-02T10:00:00-05:00", "symbols": ["SPY"], "headline": "Stocks up"}
    ]))  # fmt: skip
    assert load_news_file(json_file)[0].published_ns == ns("2024-01-02 15:00")
    bad = tmp_path / "bad.csv"
    bad.write_text("published,symbols,headline\nyesterday-ish,AAPL,x\n")
    with pytest.raises(DataError, match=r"bad.csv: row 2: published"):
        load_news_file(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("published,symbols,headline\n2024-01-02,,x\n")
    with pytest.raises(DataError, match="row 2: missing symbols"):
        load_news_file(empty)


def test_finbert_is_refused_without_local_weights(tmp_path):
    with pytest.raises(ConfigError) as info:
        make_scorer("finbert")
    message = str(info.value)
    assert "\n" not in message and "FinBERT needs its weights" in message
    with pytest.raises(ConfigError, match=r"has no config\.json"):
        FinBertScorer(tmp_path)
    with pytest.raises(ConfigError, match="scorers: lexicon, finbert"):
        make_scorer("bert")


@pytest.fixture
def fake(monkeypatch):
    venue = FakeAlpaca().start()
    monkeypatch.setenv(KEY_ENV, venue.key_id)
    monkeypatch.setenv(SECRET_ENV, venue.secret_key)
    yield venue
    venue.stop()


def _config(fake):
    from live.alpaca.config import AlpacaConfig

    return AlpacaConfig(mode="paper", key_id_env=KEY_ENV, secret_key_env=SECRET_ENV,
                        trading_url=fake.url, data_url=fake.url, stream_url=fake.stream_url,
                        timeout_s=2.0)  # fmt: skip


def test_alpaca_news_through_alpaca_py_pages_and_filters(fake, lexicon):
    from live.alpaca.news import AlpacaNews, NewsSentiment

    for i in range(60):  # more than one page of 50
        fake.add_news(
            f"Apple gains {i}", ["AAPL"], f"2024-01-02T{10 + i // 60:02d}:{i % 60:02d}:00Z"
        )
    fake.add_news("Microsoft slumps on weak cloud sales", ["MSFT"], "2024-01-02T12:00:00Z")
    fake.add_news("Apple soars after the close", ["AAPL"], "2024-01-02T21:00:00Z")
    news = AlpacaNews(_config(fake))
    items = news.fetch(["AAPL"], ns("2024-01-02"), ns("2024-01-02 20:00"))
    assert len(items) == 60 and all(i.symbols == ("AAPL",) for i in items)
    assert [i.published_ns for i in items] == sorted(i.published_ns for i in items)
    pages = [q for m, p, q in fake.requests if p == "/v1beta1/news"]
    assert len(pages) == 2 and pages[0]["symbols"] == ["AAPL"] and pages[0]["limit"] == ["50"]
    inner = Counting()
    live = NewsSentiment(news, inner)
    scores = live.scores_at(["AAPL", "MSFT", "IBM"], ns("2024-01-02 21:00"))
    assert scores["AAPL"] == pytest.approx(0.25) and scores["MSFT"] == pytest.approx(0.25)
    assert np.isnan(scores["IBM"])
    assert inner.calls == 61  # 60 Apple headlines + Microsoft; the 21:00 one is not seen
    live.scores_at(["AAPL", "MSFT", "IBM"], ns("2024-01-02 21:00"))
    assert inner.calls == 61  # cached for an hour
    real = NewsSentiment(news, lexicon).scores_at(["MSFT"], ns("2024-01-02 21:00"))
    assert real["MSFT"] < 0


def test_alpaca_news_refusal_is_a_broker_error(fake):
    from live.alpaca.news import AlpacaNews
    from live.broker import BrokerUnavailableError

    news = AlpacaNews(_config(fake))
    fake.fail("GET", "/v1beta1/news", 500, count=1)
    with pytest.raises(BrokerUnavailableError, match="news AAPL"):
        news.fetch(["AAPL"], ns("2024-01-02"), ns("2024-01-03"))
