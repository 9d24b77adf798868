"""Run a Python snippet in a fresh interpreter, for checks that depend on process start-up.

Numba's cache and NUMBA_DISABLE_JIT only show their effect in a new process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_python(code: str, timeout: float = 600, **env: str | None) -> subprocess.CompletedProcess:
    """Run ``code`` with this interpreter; ``env`` sets variables (None removes one)."""
    environ = dict(os.environ)
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return subprocess.run(
        [sys.executable, "-c", code],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_json(code: str, **env: str | None) -> dict:
    """Run ``code``, which prints one JSON object last, and return that object."""
    done = run_python(code, **env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
