"""Historical Alpaca stock bars, one page at a time (``next_page_token``), for the data cache;
requests go through alpaca-py's StockHistoricalDataClient under the adapter's 429 backoff.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from live.alpaca.client import AlpacaBroker
from live.alpaca.config import AlpacaConfig
from live.alpaca.parse import VENUE, bars_frame, to_datetime
from live.broker import venue_answer
from quantshift.errors import ConfigError

TIMEFRAMES = {
    "1m": TimeFrame(1, TimeFrameUnit.Minute),
    "5m": TimeFrame(5, TimeFrameUnit.Minute),
    "15m": TimeFrame(15, TimeFrameUnit.Minute),
    "1h": TimeFrame(1, TimeFrameUnit.Hour),
    "1d": TimeFrame(1, TimeFrameUnit.Day),
}


def bar_pages(
    client_or_config: AlpacaBroker | AlpacaConfig,
    symbol: str,
    start_ns: int,
    end_ns: int,
    timeframe: str = "1d",
) -> Iterator[pd.DataFrame]:
    """Yield the bars of ``symbol`` with open time in ``[start_ns, end_ns)``, page by page.

    Parameters
    ----------
    client_or_config : AlpacaBroker or AlpacaConfig
        An adapter (its data client and retry policy are used) or a config to build one.
    symbol : str
        Ticker, e.g. ``"AAPL"``.
    start_ns, end_ns : int
        UTC nanoseconds; the window is half-open (Alpaca's ``end`` is inclusive, so a bar
        opening exactly at ``end_ns`` is dropped).
    timeframe : {"1m", "5m", "15m", "1h", "1d"}
        Bar length.

    Yields
    ------
    pandas.DataFrame
        Columns ``ts_ns`` (int64, bar open time), ``open, high, low, close, volume`` (float64),
        ascending; every page strictly after the previous one. Empty pages are skipped.

    Raises
    ------
    ConfigError
        On an unknown timeframe or an empty window.
    BrokerRateLimitedError, BrokerUnavailableError, BrokerAuthError
        When the venue keeps refusing (after the configured backoff).
    """
    if timeframe not in TIMEFRAMES:
        raise ConfigError(
            f"alpaca bars: timeframe {timeframe!r} is not supported; use one of "
            f"{', '.join(TIMEFRAMES)}"
        )
    if not end_ns > start_ns:
        raise ConfigError(
            f"alpaca bars {symbol}: end_ns {end_ns} must be after start_ns {start_ns}"
        )
    broker = client_or_config
    if isinstance(client_or_config, AlpacaConfig):
        broker = AlpacaBroker(client_or_config)
    config = broker.config
    request = StockBarsRequest(
        symbol_or_symbols=symbol,
        timeframe=TIMEFRAMES[timeframe],
        start=to_datetime(start_ns),
        end=to_datetime(end_ns),
        limit=config.bars_page_limit,
        feed=DataFeed(config.data_feed),
        adjustment=Adjustment.RAW,
    )
    params = request.to_request_fields()
    # One request per page (the SDK's get_stock_bars would fetch every page into memory and
    # retry 429s itself); the data client's get() keeps the SDK's URLs and auth.
    token: str | None = None
    last_ns = start_ns - 1
    page = 0
    while True:
        page += 1
        query = dict(params, **({"page_token": token} if token else {}))
        what = f"bars {symbol} {timeframe} page {page}"
        answer = broker._call(what, lambda q=query: broker._data.get("/stocks/bars", q)) or {}
        with venue_answer(VENUE, what):
            bars = answer.get("bars") or {}
            rows = bars.get(symbol, []) if isinstance(bars, dict) else bars
            frame = bars_frame(rows)
            token = answer.get("next_page_token")
        frame = frame[(frame["ts_ns"] > last_ns) & (frame["ts_ns"] < end_ns)]
        if len(frame):
            last_ns = int(frame["ts_ns"].iloc[-1])
            yield frame.reset_index(drop=True)
        if not token:
            return
