"""How a runner process is told to stop, and asked where it is.

SIGTERM (systemd's stop, ``kill PID``) sets the runner's stop event; the cycle in flight is
finished first. The signal handler only writes a byte to a pipe, and a thread reading the pipe
sets the event: a Python signal handler runs in the main thread between two bytecodes, and
``Event.set`` takes the lock the main thread may be holding right then inside ``Event.wait``
(the runner waits on the same event between bars), which would hang the process for good.

SIGUSR1 prints the stack of every thread to stderr (the journal under systemd) and the runner
goes on: what an operator needs when a runner looks stuck (``kill -USR1 PID``).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading


class StopSignals:
    """``with StopSignals(event): ...`` routes SIGTERM to ``event`` and SIGUSR1 to a stack dump
    for the block, then restores the previous handlers. Outside the main thread (a runner in a
    test's thread) it does nothing: only the main thread can take signals."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event
        self._active = False

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._watcher = threading.Thread(target=self._watch, name="sigterm", daemon=True)
        self._watcher.start()
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._dumps = _stderr_fd() is not None
        if self._dumps:
            faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        if not self._active:
            return
        self._active = False
        signal.signal(signal.SIGTERM, self._previous)
        if self._dumps:
            faulthandler.unregister(signal.SIGUSR1)
        os.close(self._write)  # the watcher reads end-of-file and returns
        self._watcher.join(timeout=5.0)
        os.close(self._read)

    def _on_sigterm(self, signum, frame) -> None:
        try:
            os.write(self._write, b"\0")  # no lock taken: see the module's docstring
        except OSError:
            pass  # the pipe is full: a stop is already on its way

    def _watch(self) -> None:
        while os.read(self._read, 64):
            self._event.set()


def _stderr_fd() -> int | None:
    """The file descriptor faulthandler writes to (None where stderr has none, e.g. captured)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None
