"""Secrets for venue adapters: read from an environment variable or a secrets file, held in a
wrapper that never prints its value (repr, str, logs, exceptions, MLflow all see a mask).

Every secret loaded is also remembered so that ``scrub`` can remove it from text we did not
write: a venue's error body that echoes a key is scrubbed before it is logged or printed.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
from pathlib import Path

from quantshift.errors import ConfigError

MASK = "****"
_MIN_SCRUBBED = 8  # shorter fragments (a PEM's last line, a header) are not worth a mask
_KNOWN: set[str] = set()
"""The forms of every secret loaded in this process, longest first when scrubbed."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


class Secret:
    """A secret value; ``reveal()`` is the only way to read it."""

    __slots__ = ("_source", "_value")

    def __init__(self, value: str, source: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"secret from {source} is empty")
        self._value = value.strip()
        self._source = source
        _remember(self._value)

    def reveal(self) -> str:
        return self._value

    @property
    def source(self) -> str:
        """Where it came from (an environment variable or file name), safe to print."""
        return self._source

    def __repr__(self) -> str:
        return f"Secret(from {self._source}, ****)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):
        raise TypeError("a Secret cannot be pickled")


def load_secret(
    name: str,
    *,
    env: str | None = None,
    secrets_file: str | os.PathLike | None = None,
    where: str = "broker",
    env_key: str = "env",
) -> Secret:
    """Return secret ``name`` from the environment variable ``env`` or, failing that, from key
    ``name`` of the TOML ``secrets_file``.

    ``env_key`` is the config key that named the variable, for errors.

    Raises
    ------
    ConfigError
        Naming the variable and the file that were tried (never a value), a secrets file that
        other users can read or cannot parse, or an ``env`` that is not a variable name (a
        secret pasted into ``env_key``: the error never repeats it).
    """
    if env is not None and not _ENV_NAME.match(env):
        raise ConfigError(
            f"{where}: {env_key} must name an environment variable (letters, digits and _); "
            "its value is not shown in case it is a secret pasted there"
        )
    if env and os.environ.get(env, "").strip():
        return Secret(os.environ[env], f"${env}")
    tried = [f"environment variable {env}"] if env else []
    if secrets_file is not None:
        path = Path(secrets_file).expanduser()
        tried.append(f"key {name!r} of {path}")
        if path.exists():
            if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"{where}: secrets file {path} is readable by other users; "
                    f"run `chmod 600 {path}`"
                )
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                why = getattr(exc, "strerror", None) or "not UTF-8 text"
                raise ConfigError(f"{where}: secrets file {path} cannot be read ({why})") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(
                    f"{where}: secrets file {path} is not valid TOML{_toml_position(exc)}"
                ) from None
            if env and env in {v.strip() for v in data.values() if isinstance(v, str)}:
                raise ConfigError(
                    f"{where}: {env_key} holds a value of secrets file {path}, not the name of "
                    "an environment variable; put the variable's name there (value not shown)"
                )
            value = data.get(name)
            if isinstance(value, str) and value.strip():
                return Secret(value, f"{path}:{name}")
    tried_text = " and ".join(tried) or "nothing"
    raise ConfigError(f"{where}: secret {name!r} not found; tried {tried_text}")


def _toml_position(exc: tomllib.TOMLDecodeError) -> str:
    """Where the parser stopped, never its message (which may quote a secret). Python 3.11's
    TOMLDecodeError has no ``lineno``: the position is read from the end of its text."""
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    if line is None and (found := _TOML_POSITION.search(str(exc))):
        line, column = found.groups()
    return f" (line {line}, column {column})" if line is not None else ""


def load_secrets(
    settings, keys: tuple[tuple[str, str], ...], where: str = "broker"
) -> tuple[Secret, ...]:
    """Return the secrets a venue adapter's ``settings`` point at: for each ``(name,
    env_key)``, :func:`load_secret` of ``name`` from the variable ``settings.<env_key>`` names
    or from ``settings.secrets_file``."""
    return tuple(
        load_secret(
            name,
            env=getattr(settings, env_key),
            secrets_file=settings.secrets_file,
            where=where,
            env_key=env_key,
        )
        for name, env_key in keys
    )


def _remember(value: str) -> None:
    """Keep the forms in which ``value`` may come back in a venue's answer: as it is, JSON
    escaped, and (a PEM key) line by line."""
    try:  # a PEM key given with "\\n" escapes (the Coinbase SDK unescapes it before use)
        unescaped = value.encode().decode("unicode_escape") if "\\n" in value else value
    except UnicodeDecodeError:
        unescaped = value
    forms = {value, unescaped, json.dumps(value)[1:-1], json.dumps(unescaped)[1:-1]}
    forms.update(unescaped.splitlines())
    _KNOWN.update(f for f in forms if len(f.strip()) >= _MIN_SCRUBBED)


def scrub(text: str) -> str:
    """Return ``text`` with every secret loaded in this process replaced by ``****``."""
    for form in sorted(_KNOWN, key=len, reverse=True):
        if form in text:
            text = text.replace(form, MASK)
    return text
