"""Validation of values written to the live store, and their JSON encoding.

Each check raises ConfigError naming the argument and the value it refused.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Mapping
from typing import Any

from quantshift.errors import ConfigError


def epoch_of(epoch: int | None) -> int:
    """Return a leader epoch as an int; None means 0 (single host, no lease)."""
    if epoch is None:
        return 0
    value = integer("epoch", epoch)
    if value < 0:
        raise ConfigError(f"epoch must be >= 0 (0: single host without a lease), got {epoch!r}")
    return value


def integer(name: str, value: Any) -> int:
    """Return ``value`` as an int (numpy integers accepted; bool and float refused)."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def text(name: str, value: Any) -> str:
    """Return ``value`` if it is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    return value


def finite(name: str, value: Any, *, positive: bool = False, optional: bool = False) -> Any:
    """Return ``value`` as a finite float (> 0 with ``positive``; None passes if ``optional``)."""
    if value is None and optional:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or (positive and number <= 0.0):
        kind = "a finite number > 0" if positive else "a finite number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    return number


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Return ``value`` lower-cased if it is one of ``allowed``."""
    lowered = value.lower() if isinstance(value, str) else value
    if lowered not in allowed:
        raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")
    return lowered


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def dumps(name: str, value: Mapping | None) -> str | None:
    """Return ``value`` as canonical JSON text (keys sorted; None stays None)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping (JSON object), got {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} cannot be stored as JSON: {exc}") from None
