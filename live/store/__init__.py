"""The live store: SQLite (embedded) or PostgreSQL, one schema, writes fenced by leader epoch.

``Store.open(url)`` applies migrations; see :class:`live.store.store.Store` for the write rules.
"""

from live.store.errors import (
    HaltedError,
    IllegalTransitionError,
    RunnerLockedError,
    StaleEpochError,
    StoreCorruptError,
    StoreError,
    StoreMissingError,
    StoreOwnerError,
    StoreReplacedError,
    StoreUnavailableError,
    StoreVersionError,
    UnknownOrderError,
)
from live.store.ids import client_order_id
from live.store.locks import RunnerLock
from live.store.migrate import LATEST_VERSION
from live.store.outbox import Notification
from live.store.records import (
    PORTFOLIO,
    TERMINAL_STATES,
    TRANSITIONS,
    BrokerOrder,
    EquitySnapshot,
    Fill,
    Halt,
    Heartbeat,
    Intent,
    OrderEvent,
    OrderState,
    Performance,
    Position,
    Promotion,
    StoreStatus,
    Trade,
    is_legal,
)
from live.store.store import Store

__all__ = [
    "LATEST_VERSION",
    "PORTFOLIO",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "BrokerOrder",
    "EquitySnapshot",
    "Fill",
    "Halt",
    "HaltedError",
    "Heartbeat",
    "IllegalTransitionError",
    "Intent",
    "Notification",
    "OrderEvent",
    "OrderState",
    "Performance",
    "Position",
    "Promotion",
    "RunnerLock",
    "RunnerLockedError",
    "StaleEpochError",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreMissingError",
    "StoreOwnerError",
    "StoreReplacedError",
    "StoreStatus",
    "StoreUnavailableError",
    "StoreVersionError",
    "Trade",
    "UnknownOrderError",
    "client_order_id",
    "is_legal",
]
