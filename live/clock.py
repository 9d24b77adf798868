"""Market time: how many bar intervals lie between two instants, on the venue's own clock.

Equities trade in exchange sessions (an exchange calendar: weekends, holidays, early closes);
crypto trades around the clock. The stale-data guard counts age in these intervals, so Friday's
daily bar is one session old on Monday morning, not three days.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import pandas as pd

from quantshift.errors import ConfigError

DAY_S = 86_400


class MarketClock:
    """Bar intervals of ``market`` ("equities" on ``calendar``, or "crypto").

    Parameters
    ----------
    market : {"equities", "crypto"}
    bar_interval_s : int
        The runner's bar interval in seconds.
    calendar : str
        Exchange calendar of an equities market (exchange_calendars code, e.g. "XNYS").
    """

    def __init__(self, market: str, bar_interval_s: int, calendar: str = "XNYS") -> None:
        if market not in ("equities", "crypto"):
            raise ConfigError(f"market must be equities or crypto, got {market!r}")
        if bar_interval_s <= 0:
            raise ConfigError(f"bar_interval_s must be positive, got {bar_interval_s}")
        self.market = market
        self.bar_interval_s = int(bar_interval_s)
        self.calendar_name = calendar
        self._built = None

    def _calendar(self, earliest_ns: int):
        """The exchange calendar, from before ``earliest_ns`` on. exchange_calendars builds
        calendars from 20 years before today by default, a cutoff that moves with the date; a
        replay of older data needs an earlier start (rebuilt once, from a year before)."""
        import exchange_calendars as xcals

        day = pd.Timestamp(earliest_ns, unit="ns", tz="UTC").tz_convert(None).normalize()
        calendar = self._built
        if calendar is not None and calendar.first_session + pd.Timedelta(days=7) <= day:
            return calendar
        try:
            calendar = xcals.get_calendar(self.calendar_name)
            if calendar.first_session + pd.Timedelta(days=7) > day:
                calendar = xcals.get_calendar(self.calendar_name, start=f"{day.year - 1}-01-01")
        except xcals.errors.InvalidCalendarName:
            raise ConfigError(f"unknown exchange calendar {self.calendar_name!r}") from None
        except ValueError as exc:
            raise ConfigError(
                f"exchange calendar {self.calendar_name} does not reach back to {day.date()}: {exc}"
            ) from None
        self._built = calendar
        return calendar

    def intervals_between(self, earlier_ns: int, later_ns: int) -> float:
        """Bar intervals from ``earlier_ns`` to ``later_ns`` that the market traded.

        Crypto and the time outside sessions aside, this is elapsed time over the interval;
        for daily equity bars (labelled with their session's date) it is the number of
        sessions that opened after the bar's session, up to the later instant; for intraday
        equity bars, the trading minutes between the two over the interval's minutes.
        """
        if later_ns <= earlier_ns:
            return 0.0
        if self.market == "crypto":
            return (later_ns - earlier_ns) / (self.bar_interval_s * 1e9)
        with _quiet():
            return self._equity_intervals(earlier_ns, later_ns)

    def _equity_intervals(self, earlier_ns: int, later_ns: int) -> float:
        cal = self._calendar(earlier_ns)
        start = pd.Timestamp(earlier_ns, unit="ns", tz="UTC")
        end = pd.Timestamp(later_ns, unit="ns", tz="UTC")
        if self.bar_interval_s >= DAY_S:
            # A daily bar is labelled with its session's date; "now" belongs to the latest
            # session that has opened.
            first = cal.date_to_session(start.tz_localize(None).normalize(), direction="previous")
            last = cal.minute_to_session(end, direction="previous")
            if last < first:
                return 0.0
            return float(len(cal.sessions_in_range(first, last)) - 1)
        minutes = cal.minutes_in_range(start.floor("min"), end.floor("min"))
        return max(len(minutes) - 1, 0) * 60.0 / self.bar_interval_s

    def bar_close_ns(self, open_ns: int) -> int:
        """When the bar opening at ``open_ns`` is complete: one interval later, or for a daily
        equity bar (labelled with its session's date) the close of that session."""
        if self.market == "crypto" or self.bar_interval_s < DAY_S:
            return int(open_ns) + self.bar_interval_s * 1_000_000_000
        with _quiet():
            day = pd.Timestamp(open_ns, unit="ns", tz="UTC").tz_convert(None).normalize()
            calendar = self._calendar(open_ns)
            session = calendar.date_to_session(day, direction="next")
            return int(calendar.session_close(session).value)

    def is_open(self, ts_ns: int) -> bool:
        """Whether the market trades at ``ts_ns`` (crypto always does)."""
        if self.market == "crypto":
            return True
        with _quiet():
            minute = pd.Timestamp(ts_ns, unit="ns", tz="UTC")
            return bool(self._calendar(ts_ns).is_open_on_minute(minute))


@contextmanager
def _quiet():
    """exchange_calendars still reads tz-aware ``.values``, which pandas 3 deprecates."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*drops timezone information")
        yield
