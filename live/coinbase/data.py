"""Historical Coinbase candles, page by page: windows of at most 350 candles (the venue's cap per
request), 429 backoff, bars as DataFrames for the data cache.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from live.broker import venue_answer
from live.coinbase import parse
from live.coinbase.client import CoinbaseBroker
from live.coinbase.config import CoinbaseConfig
from live.coinbase.transport import VENUE, call_venue, rest_client
from quantshift.errors import ConfigError

NS = 1_000_000_000


def bar_pages(
    source: CoinbaseBroker | CoinbaseConfig,
    symbol: str,
    start_ns: int,
    end_ns: int,
    timeframe: str = "1m",
) -> Iterator[pd.DataFrame]:
    """Yield the bars of ``symbol`` with open time in ``[start_ns, end_ns)``, one page per
    request window.

    Parameters
    ----------
    source : CoinbaseBroker or CoinbaseConfig
        A broker reads the authenticated ``get_candles``; a config reads the public
        ``get_public_candles`` (no keys needed).
    symbol : str
        A product id such as ``"BTC-USD"``.
    start_ns, end_ns : int
        UTC nanoseconds; the first bar opens at or after ``start_ns`` on the timeframe grid.
    timeframe : {"1m", "5m", "15m", "1h", "1d"}

    Yields
    ------
    pandas.DataFrame
        Columns ``ts_ns`` (int64, bar open time), ``open``, ``high``, ``low``, ``close``,
        ``volume`` (float64), ascending; each page strictly after the previous one. Windows
        without trades yield nothing.

    Raises
    ------
    ConfigError
        On an unknown timeframe.
    BrokerRateLimitedError, BrokerUnavailableError, BrokerAuthError
        When a window cannot be read (pages already yielded stay valid: resume from there).
    """
    if timeframe not in parse.GRANULARITIES:
        raise ConfigError(
            f"coinbase bar_pages: timeframe must be one of {', '.join(parse.GRANULARITIES)}, "
            f"got {timeframe!r}"
        )
    granularity, step_s = parse.GRANULARITIES[timeframe]
    if isinstance(source, CoinbaseBroker):
        config, rest, hint = source.config, source.rest, source.credentials.hint
        fetch = rest.get_candles
    else:
        config, rest, hint = source, rest_client(source, None), ""
        fetch = rest.get_public_candles
    step_ns = step_s * NS
    window_ns = config.candles_per_request * step_ns
    window_start = -(-int(start_ns) // step_ns) * step_ns
    last_ns: int | None = None
    while window_start < end_ns:
        window_end = min(window_start + window_ns, -(-int(end_ns) // step_ns) * step_ns)
        first_s, last_s = window_start // NS, window_end // NS - 1  # end inclusive at the venue
        answer = call_venue(
            config,
            f"candles {symbol} {timeframe} from {first_s}",
            lambda a=first_s, b=last_s: fetch(
                product_id=symbol, start=str(a), end=str(b), granularity=granularity
            ),
            auth_hint=hint,
        )
        with venue_answer(VENUE, f"candles {symbol} {timeframe} from {first_s}"):
            frame = parse.candles_frame(answer.to_dict().get("candles") or [])
        keep = (frame["ts_ns"] >= window_start) & (frame["ts_ns"] < min(window_end, end_ns))
        if last_ns is not None:
            keep &= frame["ts_ns"] > last_ns
        frame = frame[keep].reset_index(drop=True)
        if len(frame):
            last_ns = int(frame["ts_ns"].iloc[-1])
            yield frame
        window_start = window_end
