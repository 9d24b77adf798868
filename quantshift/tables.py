"""Config tables read one way: typed values, unknown keys refused, and every error naming the
file, the table, the key and what is allowed. The portfolio, live and experiment files use it.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from quantshift.errors import ConfigError

T = TypeVar("T")


def read_toml(path: str | Path, what: str) -> tuple[Table, str]:
    """Read a TOML file into its top-level :class:`Table` and its text.

    Parameters
    ----------
    path : str or Path
        The file.
    what : str
        What the file is ("live config", "experiment spec"), for the error when it is missing.

    Raises
    ------
    ConfigError
        Naming the file when it is missing or is not valid TOML.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return Table(raw, str(path)), text


class Table:
    """One table of a config file with typed getters whose errors say where the value sits.

    Parameters
    ----------
    raw : mapping
        The table's keys and values, as parsed.
    source : str
        The file (or another label) every error starts with.
    name : str
        The table as errors show it (``runner``, ``search.space``, ``sleeves[0]``); empty for
        the file's top level, whose keys are its sections.
    """

    def __init__(self, raw: Mapping[str, Any], source: str, name: str = "") -> None:
        self.raw = dict(raw)
        self.source = source
        self.name = name

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def __repr__(self) -> str:
        return f"Table({self.source!r}, {self.name!r})"

    # ------------------------------------------------------------------ errors
    def error(self, key: str, problem: str) -> ConfigError:
        """Return an error about ``key`` of this table: ``file: [table] key: problem``."""
        place = f"[{self.name}] {key}" if self.name else key
        return ConfigError(f"{self.source}: {place}: {problem}")

    def table_error(self, problem: str) -> ConfigError:
        """Return an error about the table as a whole: ``file: [table] problem``."""
        place = f"[{self.name}] " if self.name else ""
        return ConfigError(f"{self.source}: {place}{problem}")

    def refuse_unknown(self, allowed: Iterable[str]) -> None:
        """Raise on the first key not in ``allowed``, listing the allowed keys."""
        allowed = sorted(allowed)
        for key in self.raw:
            if key not in allowed:
                kind = "key" if self.name else "section"
                raise self.error(key, f"unknown {kind}; allowed: {', '.join(allowed)}")

    # ------------------------------------------------------------------ tables
    def _child(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def table(self, key: str, required: bool = False) -> Table:
        """Return the sub-table ``key`` (empty when absent and not ``required``)."""
        value = self.raw.get(key)
        name = self._child(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.source}: missing section [{name}]")
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.source}: [{name}] must be a table")
        return Table(value, self.source, name)

    def tables(self, key: str) -> list[Table]:
        """Return the non-empty list of tables ``key`` (``[[key]]`` in TOML), named ``key[i]``."""
        value = self.raw.get(key)
        if not isinstance(value, list | tuple) or not value:
            raise self.error(key, "must be a non-empty list of tables")
        found = []
        for i, item in enumerate(value):
            name = f"{self._child(key)}[{i}]"
            if not isinstance(item, Mapping):
                raise ConfigError(f"{self.source}: [{name}] must be a table")
            found.append(Table(item, self.source, name))
        return found

    def without(self, *keys: str) -> Table:
        """Return this table without ``keys`` (read separately), under the same name."""
        return Table({k: v for k, v in self.raw.items() if k not in keys}, self.source, self.name)

    # ------------------------------------------------------------------ values
    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    def string(self, key: str, required: bool = False) -> str | None:
        """Return a non-empty string, or None when absent and not ``required``."""
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value

    def integer(self, key: str, default: int | None, minimum: int) -> int | None:
        """Return an integer >= ``minimum`` (``default`` when absent; None stays None)."""
        value = self.raw.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def number(self, key: str, default: float) -> float:
        """Return a finite number as a float (``default`` when absent)."""
        value = self.raw.get(key, default)
        if not is_number(value, finite=True):
            raise self.error(key, f"must be a number, got {value!r}")
        return float(value)

    def seconds(self, key: str, default: float, zero_means: str) -> float:
        """Return a duration in seconds: a finite number >= 0 (``default`` when absent);
        ``zero_means`` says what 0 does, in the error."""
        value = self.number(key, default)
        if value < 0:
            raise self.error(key, f"must be seconds >= 0 ({zero_means}), got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """Return true or false (``default`` when absent)."""
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def choice(self, key: str, allowed: Iterable[Any], default: Any) -> Any:
        """Return one of ``allowed`` (``default`` when absent)."""
        allowed = tuple(allowed)
        value = self.raw.get(key, default)
        if value not in allowed:
            shown = ", ".join(map(str, allowed))
            raise self.error(key, f"must be one of {shown}, got {value!r}")
        return value

    def build(self, cls: type[T], **given: Any) -> T:
        """Return the frozen dataclass ``cls`` built from this table.

        Keys must be ``cls``'s fields and its fields without a default must be present;
        values of a plain type (bool, int, float, str, a Literal, each optionally None) are
        checked against the field's annotation; ``cls``'s own checks then run, and their errors
        are placed in this table. ``given`` adds or replaces values the caller read itself.
        """
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        self.refuse_unknown(fields)
        hints = typing.get_type_hints(cls)
        values = {**self.raw, **given}
        for name, f in fields.items():
            if name in values:
                self._check_type(name, values[name], hints[name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise self.error(name, "is required")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise self.table_error(str(exc)) from None

    def _check_type(self, key: str, value: Any, hint: Any) -> None:
        options = typing.get_args(hint) if _is_union(hint) else (hint,)
        if value is None and type(None) in options:
            return
        kinds = [o for o in options if o is not type(None)]
        if len(kinds) != 1:
            return  # several kinds (``str | Strategy``): the class checks its own
        kind = kinds[0]
        if typing.get_origin(kind) is Literal:
            self.choice(key, typing.get_args(kind), None)
            return
        wanted = {
            bool: ("true or false", isinstance(value, bool)),
            int: ("an integer", isinstance(value, int) and not isinstance(value, bool)),
            float: ("a number", is_number(value)),
            str: ("a string", isinstance(value, str)),
        }.get(kind)
        if wanted is not None and not wanted[1]:
            raise self.error(key, f"must be {wanted[0]}, got {value!r}")


def is_number(value: Any, finite: bool = False) -> bool:
    """Return whether ``value`` is an int or float (a bool is not a number here), and finite
    if asked."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and (not finite or math.isfinite(value))


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
