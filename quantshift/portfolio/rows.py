"""Records of the decision layer's kernels: book, limits, orders, vetoes, fills, halts, state.

Numba kernels read and write these fields by name; the Python side maps codes to names.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from quantshift.engine.records import record_dtype
from quantshift.engine.simulate import EXIT_REASONS

DAY_NS = 86_400_000_000_000

book_dt = record_dtype(
    [
        ("reserve", np.float64),  # cash no sleeve was allocated
        ("day", np.float64),  # UTC day number of the last decision (NaN before the first)
        ("day_start_equity", np.float64),  # equity at the last decision of the previous day
        ("peak_equity", np.float64),
        ("last_equity", np.float64),  # equity at the last decision
        ("halt", np.int64),  # HALT_* code
    ]
)
"""The portfolio-wide book."""

HALT_NONE = 0
HALT_DAILY_LOSS = 1
HALT_DRAWDOWN = 2
HALT_EXTERNAL = 3  # set by the caller (an order guard, a person)
HALT_REASONS = ("", "daily_loss_limit", "max_drawdown")

limits_dt = record_dtype(
    [
        ("max_heat", np.float64),  # fractions of equity, inf: no limit
        ("max_position", np.float64),
        ("max_gross", np.float64),
        ("daily_loss", np.float64),
        ("max_drawdown", np.float64),
        ("policy", np.int64),  # POLICY_* code
        ("whole_units", np.bool_),  # round capped entries down to whole units
        ("max_correlation", np.float64),  # inf: no limit
        ("correlation_window", np.int64),  # returns in the rolling correlation
        ("correlation_min_returns", np.int64),  # fewer paired returns: correlation unknown
        ("history_rows", np.int64),  # closes up to the decision bar the decision reads
        ("max_sector", np.float64),  # fraction of equity per sector, inf: no limit
        ("min_sentiment", np.float64),  # side-aligned score below it vetoes, -inf: no filter
        ("sentiment_scaling", np.float64),  # size cut per unit of adverse score, 0: none
    ]
)
"""The portfolio's risk limits, overlay filters and conflict policy."""

POLICY_NET = 0
POLICY_PRIORITY = 1
POLICY_FLAT = 2
POLICIES = ("net", "priority", "flat")

# Why an entry was skipped or reduced (vetoes and TargetOrder.capped_by).
LIMIT_NONE = 0
LIMIT_HEAT = 1
LIMIT_POSITION = 2
LIMIT_GROSS = 3
VETO_HALTED = 4
VETO_CONFLICT = 5
LIMIT_CORRELATION = 6
LIMIT_SECTOR = 7
LIMIT_REGIME = 8  # a regime's allocation multiplier or exposure scale
LIMIT_SENTIMENT = 9  # a veto below the threshold, or the size cut
VETO_SENTIMENT = LIMIT_SENTIMENT
VETO_REASONS = (
    "",
    "max_heat",
    "max_position",
    "max_gross_exposure",
    "halted",
    "conflict",
    "max_position_correlation",
    "max_sector_exposure",
    "regime",
    "sentiment",
)

# Exit reasons: the fill model's, then the decision layer's own.
REASON_CONFLICT = len(EXIT_REASONS)
REASON_FLATTEN = REASON_CONFLICT + 1
PORTFOLIO_EXIT_REASONS = (*EXIT_REASONS, "conflict", "flatten")
REASON_ENTRY = -1

order_dt = record_dtype(
    [
        ("sleeve", np.int64),
        ("symbol", np.int64),
        ("action", np.int64),  # ACTION_*
        ("side", np.float64),  # +1 buy, -1 sell
        ("reason", np.int64),  # exit reason code, REASON_ENTRY for entries
        ("units", np.float64),  # at the reference price
        ("max_units", np.float64),  # cap from the risk limits (inf: none); entries only
        ("price", np.float64),  # reference price: the close decided on
        ("stop", np.float64),  # distances from the entry fill price, read at the signal bar
        ("take_profit", np.float64),
        ("trail", np.float64),
        ("capped_by", np.int64),  # LIMIT_* that reduced the entry
        ("ts_ns", np.int64),  # decision time
    ]
)
"""An order the decision layer wants sent."""
ACTION_EXIT = 0
ACTION_ENTRY = 1

veto_dt = record_dtype(
    [
        ("sleeve", np.int64),
        ("symbol", np.int64),
        ("side", np.float64),
        ("reason", np.int64),  # LIMIT_* or VETO_*
        ("ts_ns", np.int64),
    ]
)
"""An entry the decision skipped, and why."""

fill_dt = record_dtype(
    [
        ("status", np.int64),  # FILL_*
        ("units", np.float64),
        ("price", np.float64),  # after slippage
        ("fees", np.float64),
        ("bar", np.int64),  # row it filled on
        ("ts_ns", np.int64),
    ]
)
"""How one order filled."""
FILL_PENDING = 0  # the symbol had no bar: the order waits for its next one
FILL_DONE = 1
FILL_NOTHING = 2  # nothing to exit, already in a position, or sized to zero units

halt_dt = record_dtype([("ts_ns", np.int64), ("reason", np.int64)])
"""A circuit breaker tripping: when, and which (HALT_*)."""


class PortfolioArrays(NamedTuple):
    """The decision layer's state as the kernels update it in place."""

    slots: np.ndarray  # position_dt (n_sleeves, n_symbols): each sleeve's position per symbol
    cash: np.ndarray  # per sleeve
    stats: np.ndarray  # stats_dt per sleeve (closed trades drive Kelly sizing)
    marks: np.ndarray  # last close per symbol, NaN before its first bar
    book: np.ndarray  # book_dt, one element


class PortfolioSetup(NamedTuple):
    """What the decision layer is configured with (read-only in the kernels)."""

    member: np.ndarray  # bool (n_sleeves, n_symbols): the sleeve trades the symbol
    sleeve_cfg: np.ndarray  # config_dt per sleeve
    limits: np.ndarray  # limits_dt, one element
    fill_close: bool  # orders fill at the decision's close (else the next open)
    sector: np.ndarray  # int64 per symbol: its sector's code (0..n_sectors-1), -1: no map
    regime_allocation: np.ndarray  # (n_regimes, n_sleeves): entry size multiplier in [0, 1]
    regime_exposure: np.ndarray  # per regime: multiplier of the gross exposure cap, in [0, 1]
    regime_stop: np.ndarray  # per regime: multiplier of entries' stop and trail distances


class BarInputs(NamedTuple):
    """What the decision reads at one bar besides the signals (``quantshift.portfolio.overlay``).

    All causal: the caller supplies values known at the decision bar's close.
    """

    recent_close: np.ndarray  # (rows, n_symbols): closes up to and including the decision bar
    regime: np.ndarray  # int64 per symbol: index into REGIMES, -1 unknown (neutral)
    sentiment: np.ndarray  # float per symbol in [-1, 1], NaN: no news (neutral)
