"""Layouts of the decision layer's kernel arrays: book, limits, orders, vetoes, fills, trade ids.

Numba kernels index float64 rows with these constants; the Python side maps codes to names.
"""

from __future__ import annotations

from quantshift.engine.simulate import EXIT_REASONS

DAY_NS = 86_400_000_000_000

# Portfolio-wide book (float64 vector).
B_RESERVE = 0  # cash no sleeve was allocated
B_DAY = 1  # UTC day number of the last decision (NaN before the first)
B_DAY_START_EQUITY = 2  # equity at the last decision of the previous day
B_PEAK_EQUITY = 3
B_LAST_EQUITY = 4  # equity at the last decision
B_HALT = 5  # HALT_* code
B_LEN = 6

HALT_NONE = 0
HALT_DAILY_LOSS = 1
HALT_DRAWDOWN = 2
HALT_EXTERNAL = 3  # set by the caller (an order guard, a person)
HALT_REASONS = ("", "daily_loss_limit", "max_drawdown")

# Risk limits (float64 vector): fractions of equity, inf = no limit.
L_HEAT = 0
L_POSITION = 1
L_GROSS = 2
L_DAILY_LOSS = 3
L_DRAWDOWN = 4
L_POLICY = 5
L_LEN = 6

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
VETO_REASONS = ("", "max_heat", "max_position", "max_gross_exposure", "halted", "conflict")

# Exit reasons: the fill model's, then the decision layer's own.
REASON_CONFLICT = len(EXIT_REASONS)
REASON_FLATTEN = REASON_CONFLICT + 1
PORTFOLIO_EXIT_REASONS = (*EXIT_REASONS, "conflict", "flatten")
REASON_ENTRY = -1

# Order rows (float64).
O_SLEEVE = 0
O_SYMBOL = 1
O_ACTION = 2  # ACTION_*
O_SIDE = 3  # +1 buy, -1 sell
O_REASON = 4  # exit reason code, REASON_ENTRY for entries
O_UNITS = 5  # at the reference price
O_MAX_UNITS = 6  # cap from the risk limits (inf: none); entries only
O_PRICE = 7  # reference price: the close decided on
O_STOP = 8  # distances from the entry fill price, read at the signal bar
O_TAKE_PROFIT = 9
O_TRAIL = 10
O_CAPPED_BY = 11  # LIMIT_* that reduced the entry
O_LEN = 12
ACTION_EXIT = 0
ACTION_ENTRY = 1

# Veto rows (float64).
V_SLEEVE = 0
V_SYMBOL = 1
V_SIDE = 2
V_REASON = 3
V_LEN = 4

# Fill rows (float64), one per order.
F_STATUS = 0
F_UNITS = 1
F_PRICE = 2  # after slippage
F_FEES = 3
F_BAR = 4  # row it filled on
F_LEN = 5
FILL_PENDING = 0  # the symbol had no bar: the order waits for its next one
FILL_DONE = 1
FILL_NOTHING = 2  # nothing to exit, already in a position, or sized to zero units

# Trade identity rows (int64), beside the fill model's float64 trade rows.
T_SLEEVE = 0
T_SYMBOL = 1
T_ENTRY_TS = 2
T_EXIT_TS = 3
T_LEN = 4
