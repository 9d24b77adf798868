"""The status page's HTTP server: the page, ``/api/status`` for it to poll, and the kill switch.

Read-only unless a token is configured: ``POST /api/halt`` then needs that token in the
``X-QuantShift-Token`` header (a header, not a cookie, so another site cannot forge the request).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from quantshift.errors import ConfigError, QuantShiftError

TOKEN_ENV = "QUANTSHIFT_DASHBOARD_TOKEN"
TOKEN_HEADER = "X-QuantShift-Token"
MIN_TOKEN_CHARS = 16
_MAX_BODY_BYTES = 4096
_ASSETS = {
    "/": ("page.html", "text/html; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
}
# Scripts and styles come from files of our own only: text from the store can never run.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

log = logging.getLogger("quantshift.live.dashboard")


def token_from_environment() -> str | None:
    """Return the kill switch's token from :data:`TOKEN_ENV` (None: unset or empty, read-only).

    Raises
    ------
    ConfigError
        When the token is shorter than :data:`MIN_TOKEN_CHARS` (a guessable kill switch).
    """
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{TOKEN_ENV} is set but has {len(token)} characters; use at least "
            f"{MIN_TOKEN_CHARS} (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
        )
    return token


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as exc:
        raise ConfigError(f"--host {host!r} does not resolve: {exc}") from None
    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def make_server(
    cfg, *, host: str, port: int, token: str | None, refresh_s: float, allow_remote: bool
) -> ThreadingHTTPServer:
    """Return the status page's server, bound and ready for ``serve_forever()``.

    Parameters
    ----------
    cfg : live.config.LiveConfig
        The runner's config; its store must exist (the page never creates one).
    host, port : str, int
        Where to listen (port 0: any free port; read it from ``server.server_address``).
    token : str or None
        The kill switch's token; None leaves the page read-only.
    refresh_s : float
        How often the page polls ``/api/status``.
    allow_remote : bool
        Allow a non-loopback ``host``. The page has no login and speaks plain HTTP, so on a
        network anyone who reaches it reads positions and P&L, and the token travels in clear:
        put it behind a TLS proxy with authentication.

    Raises
    ------
    ConfigError
        On a non-loopback ``host`` without ``allow_remote``, or a port that cannot be bound.
    """
    if not allow_remote and not is_loopback(host):
        raise ConfigError(
            f"--host {host!r} is not a loopback address: the status page has no login and "
            "serves plain HTTP, so anyone on the network could read positions and P&L and "
            "sniff the kill-switch token; pass --allow-remote to bind it anyway (behind a "
            "TLS proxy with authentication)"
        )
    handler = type(
        "Handler",
        (_Handler,),
        {"cfg": cfg, "token": token, "refresh_s": refresh_s, "check_host": not allow_remote},
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family})
    try:
        return server_class((host, port), handler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class _Handler(BaseHTTPRequestHandler):
    cfg: Any
    token: str | None
    refresh_s: float
    check_host: bool
    server_version = "QuantShift-status"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        body = json.dumps(value, default=str, allow_nan=False).encode()
        self._send(status, body, "application/json")

    def _host_ok(self) -> bool:
        """Refuse a foreign Host header on a loopback bind: a web page on another site could
        otherwise resolve its own name to 127.0.0.1 (DNS rebinding) and read the status."""
        if not self.check_host:
            return True
        name = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if name == "localhost" or name.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def do_GET(self) -> None:
        if not self._host_ok():
            self._json(HTTPStatus.FORBIDDEN, {"error": "unexpected Host header"})
            return
        path = self.path.split("?", 1)[0]
        if path == "/api/status":
            self._status()
        elif path in _ASSETS:
            name, content_type = _ASSETS[path]
            body = resources.files("live.dashboard").joinpath(name).read_bytes()
            self._send(HTTPStatus.OK, body, content_type)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {path}"})

    def do_POST(self) -> None:
        if not self._host_ok():
            self._json(HTTPStatus.FORBIDDEN, {"error": "unexpected Host header"})
            return
        if self.path.split("?", 1)[0] != "/api/halt":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}"})
            return
        self._halt()

    def _status(self) -> None:
        from live.dashboard.view import dashboard_status
        from live.store import Store

        try:
            with Store.open(self.cfg.store_url, create=False) as store:
                info = dashboard_status(self.cfg, store)
        except QuantShiftError as exc:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
            return
        info["page"] = {"refresh_s": self.refresh_s, "halt_enabled": self.token is not None}
        self._json(HTTPStatus.OK, info)

    def _halt(self) -> None:
        from live.status import halt_trading
        from live.store import Store

        who = self.address_string()
        if self.token is None:
            self._json(
                HTTPStatus.FORBIDDEN,
                {"error": f"the kill switch is off: start the page with {TOKEN_ENV} set"},
            )
            return
        given = self.headers.get(TOKEN_HEADER)
        if not given:
            log.warning("status page: HALT refused from %s: no token", who)
            self._json(HTTPStatus.UNAUTHORIZED, {"error": f"no token: send {TOKEN_HEADER}"})
            return
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            log.warning("status page: HALT refused from %s: wrong token", who)
            self._json(HTTPStatus.FORBIDDEN, {"error": "wrong token"})
            return
        try:
            request = self._body()
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        reason = str(request.get("reason") or "").strip() or "halted from the status page"
        try:
            with Store.open(self.cfg.store_url, create=False) as store:
                active = halt_trading(
                    store, reason, flatten=request.get("flatten") is True, by=f"status page {who}"
                )
        except QuantShiftError as exc:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
            return
        log.warning("status page: HALT by %s: %s", who, active.reason)
        self._json(HTTPStatus.OK, {"halt": active.to_dict()})

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ValueError("Content-Length is not a number") from None
        if length > _MAX_BODY_BYTES:
            raise ValueError(f"request body over {_MAX_BODY_BYTES} bytes")
        if length == 0:
            return {}
        try:
            value = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError("the request body is not JSON") from None
        if not isinstance(value, dict):
            raise ValueError('the body must be a JSON object: {"reason": ..., "flatten": ...}')
        return value
