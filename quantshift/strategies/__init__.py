"""Strategy registry: strategies are found by name, from this package, installed packages and the
user's own files.

Sources, in order: every module here that defines ``STRATEGY``; the ``quantshift.strategies``
entry point group; ``QUANTSHIFT_STRATEGY_PATH`` (files, directories, modules); the
``[tool.quantshift] strategy-path`` of the project's ``pyproject.toml``; references
(``module:STRATEGY``, ``path/file.py[:STRATEGY]``) given where a name is expected; and
:func:`register`. A module that fails to import is reported once (a warning, and in
:func:`broken_modules`) and breaks only the strategies it defines.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import pkgutil
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from quantshift.errors import ConfigError, QuantShiftError, UnknownNameError
from quantshift.strategies.base import Constraint, Param, Strategy
from quantshift.strategies.loading import (
    ENTRY_POINT_GROUP,
    PATH_VARIABLE,
    StrategyLoadError,
    describe_error,
    files_of,
    import_target,
    is_reference,
    path_entries,
    project_strategy_path,
    split_reference,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "FRAMEWORK_MODULES",
    "PATH_VARIABLE",
    "Constraint",
    "Param",
    "Strategy",
    "StrategyImportWarning",
    "StrategyLoadError",
    "add_strategy_path",
    "broken_modules",
    "get_strategy",
    "list_strategies",
    "register",
    "resolve_reference",
]

FRAMEWORK_MODULES = frozenset({"base", "causality", "checks", "grid", "loading"})
"""Modules of this package that are the strategy framework, not strategies."""

_REGISTRY: dict[str, Strategy] = {}
_BROKEN: dict[str, str] = {}
_MODULE_STRATEGIES: dict[str, list[Strategy]] = {}
_DISCOVERED = False


class StrategyImportWarning(UserWarning):
    """A strategy module failed to import; commands not using its strategies still run."""


def register(strategy: Strategy) -> Strategy:
    """Add ``strategy`` to the registry under its name and return it."""
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"register() takes a Strategy, got {type(strategy).__name__}")
    existing = _REGISTRY.get(strategy.name)
    if existing is not None and existing is not strategy:
        raise ConfigError(
            f"a different strategy named '{strategy.name}' is already registered (from "
            f"{_origin(existing)}; this one from {_origin(strategy)}); rename one"
        )
    _REGISTRY[strategy.name] = strategy
    return strategy


def _origin(strategy: Strategy) -> str:
    func = getattr(strategy.signal_nb, "py_func", strategy.signal_nb)
    try:
        return inspect.getsourcefile(func) or func.__module__
    except TypeError:
        return getattr(func, "__module__", "?")


def broken_modules() -> dict[str, str]:
    """Return the strategy modules that failed to import, each with its one-line error."""
    _discover()
    return dict(_BROKEN)


def _record_broken(label: str, exc: QuantShiftError) -> None:
    if label not in _BROKEN:
        _BROKEN[label] = str(exc)
        warnings.warn(
            f"{exc} (its strategies are unavailable)", StrategyImportWarning, stacklevel=3
        )


def _load_module(target: str, base: Path | None) -> tuple[ModuleType, str, list[Strategy]]:
    """Import a module or file and register the strategies it defines (``STRATEGY``, a
    ``STRATEGIES`` sequence, or :func:`register` calls while it imports)."""
    before = set(_REGISTRY)
    module, label = import_target(target, base)
    found = _MODULE_STRATEGIES.get(module.__name__)
    if found is None:
        found = [_REGISTRY[name] for name in _REGISTRY if name not in before]
        declared = [getattr(module, "STRATEGY", None), *getattr(module, "STRATEGIES", ())]
        for strategy in declared:
            if isinstance(strategy, Strategy) and strategy not in found:
                found.append(strategy)
        for strategy in found:
            try:
                register(strategy)
            except ConfigError as exc:
                raise StrategyLoadError(f"strategy module {label}: {exc}") from None
        _MODULE_STRATEGIES[module.__name__] = found
    return module, label, found


def resolve_reference(reference: str, base: Path | None = None) -> Strategy:
    """Load and register the strategy named by ``reference``: ``module:ATTRIBUTE``,
    ``path/file.py:ATTRIBUTE`` or ``path/file.py`` (a file defining one strategy); a relative
    path is relative to ``base`` (the spec or config naming it) or the working directory.

    Raises StrategyLoadError naming the module and the error if it fails to import, or what the
    reference names instead of a strategy.
    """
    target, attribute = split_reference(reference)
    module, label, found = _load_module(target, base)
    if attribute is not None:
        value = getattr(module, attribute, None)
        if not isinstance(value, Strategy):
            what = "nothing" if value is None else f"a {type(value).__name__}"
            names = [k for k, v in vars(module).items() if isinstance(v, Strategy)]
            raise StrategyLoadError(
                f"{reference}: {attribute} in {label} is {what}, not a Strategy"
                + (f"; strategies there: {', '.join(names)}" if names else "")
            )
        return register(value)
    if len(found) != 1:
        names = ", ".join(s.name for s in found)
        raise StrategyLoadError(
            f"{reference}: {label} defines {len(found)} strategies ({names or 'none'}); "
            + ("name one as FILE:ATTRIBUTE" if found else "define STRATEGY = Strategy(...)")
        )
    return found[0]


def add_strategy_path(entries: str | Iterable[str], base: Path | None = None) -> list[Strategy]:
    """Load the strategies of each entry (a file, a directory's ``*.py``, a module or a
    reference; a string is split like PATH); return them.

    A module that fails to import is reported as a :class:`StrategyImportWarning` and in
    :func:`broken_modules`, and skipped: only using one of its strategies fails.
    """
    _discover()
    loaded: list[Strategy] = []
    for entry in path_entries(entries) if isinstance(entries, str) else entries:
        files = files_of(entry, base)
        for target in files if files is not None else [entry]:
            try:
                if split_reference(target)[1] is not None:
                    loaded.append(resolve_reference(target))
                else:
                    loaded.extend(_load_module(target, None)[2])
            except QuantShiftError as exc:
                _record_broken(split_reference(target)[0], exc)
    return loaded


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True  # first: a module being loaded may itself ask for strategies
    for info in pkgutil.iter_modules(__path__):
        if info.name in FRAMEWORK_MODULES or info.name.startswith("_"):
            continue
        target = f"{__name__}.{info.name}"
        try:
            _load_module(target, None)
        except QuantShiftError as exc:
            _record_broken(target, exc)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        label = f"entry point '{entry.name}' ({entry.value})"
        try:
            if split_reference(entry.value)[1] is not None:
                resolve_reference(entry.value)
            else:
                _load_module(entry.value, None)
        except QuantShiftError as exc:
            _record_broken(label, StrategyLoadError(f"{label}: {exc}"))
        except Exception as exc:  # a broken distribution's metadata
            _record_broken(label, StrategyLoadError(f"{label}: {describe_error(exc)}"))
    path = os.environ.get(PATH_VARIABLE, "")
    if path.strip():
        add_strategy_path(path)
    try:
        add_strategy_path(project_strategy_path(Path.cwd()))
    except StrategyLoadError as exc:
        _record_broken("pyproject.toml", exc)
    except FileNotFoundError:  # the working directory was removed
        pass


def list_strategies() -> list[Strategy]:
    """Return all registered strategies, sorted by name."""
    _discover()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_strategy(name: str | Strategy, base: Path | None = None) -> Strategy:
    """Return the strategy registered as ``name``, or the one a reference names (see
    :func:`resolve_reference`; ``base`` is the directory relative paths start from). A
    Strategy passes through unchanged."""
    if isinstance(name, Strategy):
        return name
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a strategy is a name or a reference, got {name!r}")
    _discover()
    found = _REGISTRY.get(name)
    if found is not None:
        return found
    if is_reference(name):
        return resolve_reference(name, base)
    for label, error in _BROKEN.items():
        if name in (Path(label).stem, label.rpartition(".")[2]):
            raise StrategyLoadError(error)
    broken = f"; failed to import: {', '.join(_BROKEN)}" if _BROKEN else ""
    raise UnknownNameError(
        f"unknown strategy '{name}'; available: {', '.join(sorted(_REGISTRY))}{broken}"
    )
