"""Exceptions of the live store.

Each names what was refused and why; a store URL in a message always has its password masked.
"""

from __future__ import annotations

from quantshift.errors import ConfigError, QuantShiftError, UnknownNameError


class StoreError(QuantShiftError):
    """Base class of the errors the live store raises."""


class StaleEpochError(StoreError):
    """A write from a leader epoch lower than the highest the store has seen (the fence).

    The writer has lost leadership: it must stop submitting orders at once.
    """

    def __init__(self, epoch: int, fence_epoch: int, what: str):
        self.epoch = epoch
        self.fence_epoch = fence_epoch
        super().__init__(
            f"{what} refused: written with leader epoch {epoch}, but the store has already "
            f"seen epoch {fence_epoch} (another leader took over; stop submitting)"
        )


class IllegalTransitionError(StoreError, ValueError):
    """An order state change the state machine does not allow, or whose expected state is
    no longer current (another writer moved the order first)."""

    def __init__(self, client_order_id: str, from_state: str, to_state: str, why: str = ""):
        self.client_order_id = client_order_id
        self.from_state = from_state
        self.to_state = to_state
        super().__init__(
            f"order {client_order_id}: transition {from_state} -> {to_state} refused"
            + (f" ({why})" if why else "")
        )


class HaltedError(StoreError):
    """An order was about to be sent while a HALT is active (only a person clears it)."""


class UnknownOrderError(StoreError, UnknownNameError):
    """A client order id the store holds no intent for."""


class StoreVersionError(StoreError, ConfigError):
    """A database whose schema is newer than this code, or whose applied migrations differ."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached or stayed locked past the timeout.

    A write that fails this way may or may not have committed: re-read before acting.
    """


class RunnerLockedError(StoreError):
    """Another runner already holds the single-runner lock of this store."""


class StoreMissingError(StoreError):
    """A command that acts on an existing store (halt, resume, status, reconcile) found none."""


class StoreReplacedError(StoreError):
    """The store's database was deleted or replaced by another while it was in use.

    Whatever the holder wrote since went to the old database or nowhere: it must stop.
    """


class StoreCorruptError(StoreError):
    """The store's SQLite file is damaged: it cannot be read or written safely."""


class StoreOwnerError(StoreError):
    """A runner identity other than the store's owner tried to run on it."""
