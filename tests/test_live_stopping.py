"""The runner's signals: SIGTERM sets the stop event from a pipe-reading thread (never from the
handler, which would take the lock ``Event.wait`` may hold), SIGUSR1 prints every thread's stack
and the process goes on."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

from live.stopping import StopSignals

# Waits on the event as the runner does between bars, as often as it can.
SCRIPT = """
import sys, threading
from live.stopping import StopSignals
stop = threading.Event()
with StopSignals(stop):
    print("ready", flush=True)
    waits = 0
    while not stop.is_set():
        stop.wait(0.0005)
        waits += 1
print("stopped after", waits, "waits", flush=True)
"""


def test_sigusr1_dumps_stacks_and_sigterm_stops_a_waiting_loop():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        assert proc.poll() is None, "SIGUSR1 ended the process"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.startswith("stopped after")
    # faulthandler's dump: the main thread in the loop and the thread reading the pipe.
    assert "Current thread" in err and "_watch" in err and "<string>" in err, err


def test_outside_the_main_thread_nothing_is_installed():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def body():
        with StopSignals(threading.Event()):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before] and signal.getsignal(signal.SIGTERM) is before


def test_handlers_are_restored_after_the_block():
    before = signal.getsignal(signal.SIGTERM)
    stop = threading.Event()
    with StopSignals(stop):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before and not stop.is_set()
