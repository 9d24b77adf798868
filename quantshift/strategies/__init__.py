"""Strategy registry: every module in this package that defines ``STRATEGY`` is found by name.

Adding a strategy is adding one module here (or calling :func:`register` from your own code).
"""

from __future__ import annotations

import importlib
import pkgutil

from quantshift.errors import ConfigError, UnknownNameError
from quantshift.strategies.base import Constraint, Param, Strategy

__all__ = ["Constraint", "Param", "Strategy", "get_strategy", "list_strategies", "register"]

_REGISTRY: dict[str, Strategy] = {}
_DISCOVERED = False


def register(strategy: Strategy) -> Strategy:
    """Add ``strategy`` to the registry under its name and return it."""
    existing = _REGISTRY.get(strategy.name)
    if existing is not None and existing is not strategy:
        raise ConfigError(f"a different strategy named '{strategy.name}' is already registered")
    _REGISTRY[strategy.name] = strategy
    return strategy


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        strategy = getattr(module, "STRATEGY", None)
        if isinstance(strategy, Strategy):
            register(strategy)
    _DISCOVERED = True


def list_strategies() -> list[Strategy]:
    """Return all registered strategies, sorted by name."""
    _discover()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_strategy(name: str | Strategy) -> Strategy:
    """Return the strategy registered as ``name`` (a Strategy passes through unchanged)."""
    if isinstance(name, Strategy):
        return name
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown strategy '{name}'; available: {', '.join(sorted(_REGISTRY))}"
        ) from None
