"""Market time against the NYSE calendar (exchange_calendars): sessions, holidays, minutes."""

from __future__ import annotations

import pandas as pd
import pytest

from live.clock import MarketClock
from live.guards import GuardLimits, OrderGuards
from quantshift.errors import ConfigError


def ns(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value


@pytest.mark.parametrize(
    ("bar", "now", "sessions"),
    [
        ("2024-07-05", "2024-07-08 14:00", 1.0),  # Friday's bar on Monday morning
        ("2024-07-03", "2024-07-05 15:00", 1.0),  # Independence Day is no session
        ("2024-07-03", "2024-07-03 21:00", 0.0),  # the same session
        ("2024-07-01", "2024-07-08 14:00", 4.0),  # Tue, Wed, Fri, Mon
        ("2024-12-24", "2024-12-26 15:00", 1.0),  # Christmas
    ],
)
def test_daily_equity_bars_age_in_sessions(bar, now, sessions):
    assert MarketClock("equities", 86_400).intervals_between(ns(bar), ns(now)) == sessions


def test_intraday_equity_bars_age_in_trading_minutes():
    clock = MarketClock("equities", 60)
    # Friday 15:58 New York to Monday 9:32: 15:58, 15:59, 9:30, 9:31, 9:32 are trading minutes.
    assert clock.intervals_between(ns("2024-07-05 19:58"), ns("2024-07-08 13:32")) == 4.0
    assert clock.is_open(ns("2024-07-05 15:00")) and not clock.is_open(ns("2024-07-04 15:00"))


def test_crypto_counts_wall_time():
    clock = MarketClock("crypto", 3_600)
    assert clock.intervals_between(ns("2024-07-06"), ns("2024-07-07")) == 24.0
    assert clock.is_open(ns("2024-07-06 03:00"))


def test_stale_guard_uses_sessions_not_days():
    class Order:
        sleeve, symbol, side, units, price, is_entry = "ma", "SPY", "buy", 1.0, 100.0, True
        ts_ns = ns("2024-07-05")

    now = ns("2024-07-08 14:00")  # three calendar days, one session
    day = 86_400 * 10**9
    by_wall = OrderGuards(GuardLimits(stale_after_intervals=2.0))
    by_sessions = OrderGuards(
        GuardLimits(stale_after_intervals=2.0), clock=MarketClock("equities", 86_400)
    )
    args = {"last_close": {"SPY": 100.0}, "positions": {}, "now_ns": now, "bar_interval_ns": day}
    assert by_wall.check([Order()], **args).blocked[0].guard == "stale_data"
    assert by_sessions.check([Order()], **args).accepted


def test_bad_settings():
    with pytest.raises(ConfigError, match="market"):
        MarketClock("forex", 60)
    with pytest.raises(ConfigError, match="calendar"):
        MarketClock("equities", 60, calendar="NOPE").is_open(0)


def test_sessions_older_than_the_calendars_twenty_year_default_are_counted():
    # exchange_calendars starts its calendars 20 years before today unless told otherwise.
    clock = MarketClock("equities", 86_400)
    assert clock.intervals_between(ns("2024-07-05"), ns("2024-07-08 14:00")) == 1.0
    assert clock.intervals_between(ns("1999-12-31"), ns("2000-01-04 15:00")) == 2.0
    assert clock.bar_close_ns(ns("1999-11-26")) == ns("1999-11-26 18:00")  # day after Thanksgiving
    assert not clock.is_open(ns("2000-01-01 15:00"))
