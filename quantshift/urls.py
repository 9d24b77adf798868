"""Database and service URLs: one rule that masks secrets in text for logs, errors and MLflow,
and one spelling of a PostgreSQL URL for each client (libpq, SQLAlchemy).
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
# user:password@ inside any scheme://... ; SQLAlchemy allows '/' in an unescaped password, so
# the password runs to the '@' (over-masking a rare 'host:port/path@x' is the safe side).
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*):[^\s@]*@")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&](?:password|pass|passwd|pwd|secret|token|api_key|apikey|access_token)=)"
    r"[^&\s]*",
    re.IGNORECASE,
)
_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
_POSTGRES_SPELLING = {"libpq": "postgresql://", "sqlalchemy": "postgresql+psycopg://"}


def mask_secrets(text: str, *secrets: str | None) -> str:
    """Return ``text`` with every secret replaced by ``***``.

    Parameters
    ----------
    text : str
        Any text: a URL, an error message, a log line, a JSON document.
    *secrets : str or None
        Known secrets to mask wherever they appear, such as the password a driver's error may
        print without its URL (None and empty strings are ignored).

    Returns
    -------
    str
        ``text`` with passwords in URLs (``scheme://user:pw@host``), secret query parameters
        (``?password=...``, ``&token=...``) and each of ``secrets`` masked.
    """
    text = _URI_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
    text = _QUERY_SECRET.sub(rf"\g<head>{MASK}", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def strip_password(url: str) -> str:
    """Return ``url`` without the password of its user (libpq then reads it from PGPASSWORD or
    ~/.pgpass), for a command line that must work rather than show ``***``."""
    return _URI_PASSWORD.sub(r"\g<head>@", url)


def url_password(url: str) -> str | None:
    """Return the password a URL carries (``user:pw@`` or ``?password=``), or None."""
    try:
        parts = urlsplit(url)
        found = parts.password or dict(parse_qsl(parts.query)).get("password")
    except ValueError:
        return None
    return found or None


def postgres_url(url: str, client: Literal["libpq", "sqlalchemy"]) -> str:
    """Return a PostgreSQL URL spelled for ``client``; any other URL unchanged.

    ``postgresql://``, ``postgres://`` and ``postgresql+psycopg://`` name the same database:
    libpq (psycopg's ``connect``) takes ``postgresql://``, SQLAlchemy (Optuna's storage)
    takes ``postgresql+psycopg://`` so that it loads psycopg 3 rather than psycopg2.
    """
    for scheme in _POSTGRES_SCHEMES:
        if url.startswith(scheme):
            return _POSTGRES_SPELLING[client] + url[len(scheme) :]
    return url
