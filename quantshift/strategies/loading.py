"""Loading strategy modules from outside the package: files, directories, module references.

A reference is ``module.name:ATTRIBUTE``, ``path/to/file.py:ATTRIBUTE`` or ``path/to/file.py``
(the strategies that file defines). Files are imported under a name derived from their path, so
a second process (numba's cache, a study's worker) finds the same module again.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from quantshift.errors import ConfigError

ENTRY_POINT_GROUP = "quantshift.strategies"
"""Installed packages list their strategies (a module, or ``module:STRATEGY``) under this group."""
PATH_VARIABLE = "QUANTSHIFT_STRATEGY_PATH"
"""Files, directories and modules to load strategies from, separated like PATH."""


class StrategyLoadError(ConfigError):
    """A strategy module that cannot be imported, or a reference that names no strategy."""


def is_reference(text: str) -> bool:
    """Return True if ``text`` names a module or file rather than a registered strategy."""
    return ":" in text or "/" in text or "\\" in text or text.endswith(".py")


def split_reference(text: str) -> tuple[str, str | None]:
    """Split ``TARGET[:ATTRIBUTE]`` into the module or file and the attribute (None if absent)."""
    target, sep, attribute = text.rpartition(":")
    if not sep or not attribute.isidentifier():
        return text, None
    return target, attribute


def describe_error(exc: BaseException) -> str:
    """One line: the exception's type and message (a QuantShift error is its message)."""
    from quantshift.errors import QuantShiftError

    message = str(exc).strip().splitlines()
    text = message[0] if message else ""
    if isinstance(exc, QuantShiftError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def module_name_for(path: Path) -> str:
    """The module name a strategy file is imported under: its stem and a digest of its path."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"quantshift_user_{stem}_{digest}"


def import_file(path: Path) -> ModuleType:
    """Import the Python file ``path`` (once per process); raise StrategyLoadError naming the
    file and the error if it fails."""
    path = path.resolve()
    name = module_name_for(path)
    module = sys.modules.get(name)
    if module is not None:
        return module
    if not path.is_file():
        raise StrategyLoadError(f"strategy file {path} does not exist")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StrategyLoadError(f"strategy file {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise StrategyLoadError(
            f"strategy module {path} failed to import: {describe_error(exc)}"
        ) from exc
    return module


def import_module(name: str) -> ModuleType:
    """Import the module ``name``; raise StrategyLoadError naming it and the error if it fails."""
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise StrategyLoadError(
            f"strategy module '{name}' failed to import: {describe_error(exc)}"
        ) from exc


def resolve_path(text: str, base: Path | None) -> Path:
    """``text`` as a path, relative to ``base`` (the file naming it) or the working directory."""
    path = Path(text).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return path


def import_target(target: str, base: Path | None) -> tuple[ModuleType, str]:
    """Import a file (a path, or a ``.py`` name) or a module; return it and a label for errors."""
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = resolve_path(target, base)
        return import_file(path), str(path)
    return import_module(target), target


def path_entries(text: str) -> list[str]:
    """Split a strategy path (``QUANTSHIFT_STRATEGY_PATH``) into its non-empty entries."""
    import os

    return [entry for entry in text.split(os.pathsep) if entry.strip()]


def files_of(entry: str, base: Path | None) -> list[str] | None:
    """The strategy files of a directory entry (``*.py`` not starting with ``_``), the file of a
    file entry, or None if ``entry`` is no existing path (then it names a module)."""
    target, attribute = split_reference(entry)
    path = resolve_path(target, base)
    if path.is_dir():
        return [str(p) for p in sorted(path.glob("*.py")) if not p.name.startswith("_")]
    if path.is_file() or target.endswith(".py") or "/" in target:
        return [str(path) + (f":{attribute}" if attribute else "")]
    return None


def project_strategy_path(start: Path) -> list[str]:
    """The ``strategy-path`` entries of ``[tool.quantshift]`` in the nearest ``pyproject.toml``
    at or above ``start`` (a project made by ``quantshift init``), relative to that file."""
    import tomllib

    for folder in (start, *start.parents):
        file = folder / "pyproject.toml"
        if not file.is_file():
            continue
        try:
            tool = tomllib.loads(file.read_text(encoding="utf-8")).get("tool", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return []
        entries = tool.get("quantshift", {}).get("strategy-path", [])
        entries = [entries] if isinstance(entries, str) else entries
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise StrategyLoadError(
                f"{file}: [tool.quantshift] strategy-path must be a list of paths, got {entries!r}"
            )
        return [str(resolve_path(entry, folder)) for entry in entries]
    return []


def absolute_reference(text: str, base: Path | None) -> str:
    """``text`` (a path entry or reference) with a relative file or directory made absolute
    from ``base``; module names are left as they are."""
    target, attribute = split_reference(text)
    path = resolve_path(target, base)
    if target.endswith(".py") or "/" in target or "\\" in target or path.exists():
        target = str(path.resolve())
    return target + (f":{attribute}" if attribute else "")


def strategy_path_entries(value: object, base: Path | None) -> list[str]:
    """A spec's or config's ``strategy_path`` (a path or a list of them) with relative entries
    made absolute from ``base`` (the file's directory); raise ConfigError if malformed."""
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ConfigError("must be a path or a list of paths")
    return [absolute_reference(entry, base) for entry in entries]
