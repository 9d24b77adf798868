"""Running under systemd: the ``sd_notify`` protocol (ready, watchdog, stopping) over a plain
AF_UNIX datagram socket, and the service units of ``live/deploy/systemd`` filled in for a host.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from quantshift.errors import ConfigError

log = logging.getLogger("quantshift.live")

UNITS_DIR = Path(__file__).resolve().parent / "deploy" / "systemd"
UNIT_NAMES = (
    "quantshift-live@.service",
    "quantshift-data-fetch.service",
    "quantshift-data-fetch.timer",
    "quantshift-research@.service",
    "quantshift-research@.timer",
)
"""The units shipped: the runner (one instance per config), nightly data, research jobs."""


class Notifier:
    """Tell systemd how the service is doing (``sd_notify``); silent when not under systemd.

    Parameters
    ----------
    address : str or None
        The ``$NOTIFY_SOCKET`` path (``@name`` for the abstract namespace); None sends nothing.
    watchdog_interval_s : float
        Least time between two watchdog pings (0: ping every time): a fast replay cycles far
        more often than the watchdog needs to hear.
    watchdog : bool
        Whether to send watchdog pings at all.
    """

    def __init__(
        self, address: str | None, *, watchdog_interval_s: float = 0.0, watchdog: bool = True
    ) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        self.watchdog_interval_s = watchdog_interval_s
        self._watchdog_on = watchdog
        self._status: str | None = None
        self._last_ping_s = -float("inf")
        self._warned = False
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for through ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``.

        Pings go out at a tenth of the watchdog timeout at most; none when ``$WATCHDOG_PID``
        names another process (the variables were inherited, not meant for us).
        """
        env = os.environ if environ is None else environ
        usec = env.get("WATCHDOG_USEC", "")
        interval_s = int(usec) / 1e6 / 10 if usec.isdigit() else 0.0
        pid = env.get("WATCHDOG_PID", "")
        return cls(
            env.get("NOTIFY_SOCKET"),
            watchdog_interval_s=interval_s,
            watchdog=not pid or pid == str(os.getpid()),
        )

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; return whether it went out."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:  # once: a missing socket must not flood the log every cycle
                log.warning("sd_notify to %r failed: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str = "running") -> bool:
        """Start-up is done (``READY=1``): systemd considers the service started."""
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def watchdog(self) -> bool:
        """The loop is alive (``WATCHDOG=1``); rate-limited to ``watchdog_interval_s``."""
        if not self._watchdog_on:
            return False
        with self._lock:
            now_s = time.monotonic()
            if now_s - self._last_ping_s < self.watchdog_interval_s:
                return False
            self._last_ping_s = now_s
        return self.send("WATCHDOG=1")

    def alive(self, status: str) -> bool:
        """A watchdog ping from the loop, with ``STATUS=`` (what ``systemctl status`` shows)
        whenever it changed, e.g. from ``standby`` to ``leader epoch 7``."""
        if status != self._status and self.send(f"STATUS={status}"):
            self._status = status
        return self.watchdog()

    def stopping(self) -> bool:
        """Shutdown began (``STOPPING=1``)."""
        return self.send("STOPPING=1", "STATUS=stopping")

    def watched(self, wait: Callable | None) -> Callable[[threading.Event, float], bool]:
        """A feed's wait between polls that pings the watchdog first: a venue feed waiting
        hours for the next bar is alive, not stuck."""
        inner = wait or (lambda stop, seconds: stop.wait(seconds))

        def wait_alive(stop: threading.Event, seconds: float) -> bool:
            self.watchdog()
            return inner(stop, seconds)

        return wait_alive


# --------------------------------------------------------------------------- unit files
@dataclass(frozen=True, kw_only=True)
class UnitSettings:
    """What the unit templates leave open: who runs what, from where, writing where."""

    root: Path
    """The project checkout (working directory; ``experiments/`` for research jobs)."""
    bin_dir: Path
    """Where the ``live`` and ``quantshift`` commands are (the venv's ``bin``)."""
    config_dir: Path
    """Runner configs ``NAME.toml`` and their ``NAME.env`` files with keys (mode 600)."""
    data_dir: Path
    """The one directory the services may write (stores, data, numba cache)."""
    user: str
    group: str

    def values(self) -> dict[str, str]:
        return {
            "root": str(self.root),
            "bin_dir": str(self.bin_dir),
            "config_dir": str(self.config_dir),
            "data_dir": str(self.data_dir),
            "user": self.user,
            "group": self.group,
        }


def default_settings(**changes) -> UnitSettings:
    """Settings for this checkout: its venv's commands, ``/etc/quantshift``,
    ``/var/lib/quantshift`` and the user ``quantshift``; ``changes`` override any field."""
    values = {
        "root": Path(__file__).resolve().parents[1],
        "bin_dir": Path(sys.executable).parent,
        "config_dir": Path("/etc/quantshift"),
        "data_dir": Path("/var/lib/quantshift"),
        "user": "quantshift",
        "group": None,
    }
    values.update({k: v for k, v in changes.items() if v is not None})
    values["group"] = values["group"] or values["user"]
    for key in ("root", "bin_dir", "config_dir", "data_dir"):
        path = Path(values[key])
        if not path.is_absolute():
            raise ConfigError(f"install-units: --{key.replace('_', '-')} must be absolute: {path}")
        values[key] = path
    for key in ("user", "group"):
        name = values[key]
        if not name or any(c.isspace() or c in "{}%/" for c in name):
            raise ConfigError(f"install-units: --{key} is not a valid name: {name!r}")
    return UnitSettings(**values)


def render_unit(name: str, settings: UnitSettings) -> str:
    """The text of the shipped unit ``name`` with ``settings`` filled in."""
    if name not in UNIT_NAMES:
        raise ConfigError(f"unknown unit {name!r}; shipped: {', '.join(UNIT_NAMES)}")
    text = (UNITS_DIR / name).read_text()
    for key, value in settings.values().items():
        text = text.replace("{" + key + "}", value)
    if "{" in text or "}" in text:
        raise ConfigError(f"unit {name}: a placeholder was left unfilled")
    return text


def install_units(target_dir: Path, settings: UnitSettings) -> list[Path]:
    """Write every shipped unit, filled in, into ``target_dir``; return the paths written."""
    target_dir = Path(target_dir)
    if not target_dir.is_dir():
        raise ConfigError(f"install-units: target directory does not exist: {target_dir}")
    written = []
    for name in UNIT_NAMES:
        path = target_dir / name
        path.write_text(render_unit(name, settings))
        path.chmod(0o644)
        written.append(path)
    return written


def user_exists(name: str) -> bool:
    """Whether the system knows the account ``name`` (the units refuse to start otherwise)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
