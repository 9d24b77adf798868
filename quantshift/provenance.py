"""Code fingerprints: which code produced a result, so research and live can pin to it.

A fingerprint names the package version, a hash of the strategy's code and the git commit.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

from quantshift.engine.compile import function_bytes, package_digest, source_file
from quantshift.strategies import Strategy, get_strategy

_ROOT = Path(__file__).resolve().parents[1]


def strategy_hash(strategy: str | Strategy) -> str:
    """Return a SHA-256 over the strategy's signal function, the numba functions it calls and
    its source file, so any edit to what decides its trades changes the hash."""
    strat = get_strategy(strategy)
    func = getattr(strat.signal_nb, "py_func", strat.signal_nb)
    h = hashlib.sha256(function_bytes(func, set()))
    path = source_file(func)
    if path is not None:
        h.update(Path(path).read_bytes())
    h.update(repr([(p.name, p.low, p.high, p.integer) for p in strat.params]).encode())
    return h.hexdigest()


def git_state(path: Path = _ROOT) -> tuple[str | None, bool | None]:
    """Return (commit, dirty) of the git checkout holding ``path``; (None, None) outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def code_fingerprint(strategy: str | Strategy) -> dict[str, Any]:
    """Return the code fingerprint of ``strategy``.

    Returns
    -------
    dict
        ``version`` (quantshift package version), ``strategy_hash`` (see :func:`strategy_hash`),
        ``core_hash`` (SHA-256 over every source file of the ``quantshift`` package: the
        engine, the decision layer and the strategies, so a commit that changes only docs or
        drivers leaves it alone), ``git_commit`` and ``git_dirty`` (None when the code is not in
        a git checkout; dirty means tracked files differ from the commit, so the commit alone
        does not pin the code).
    """
    from quantshift import __version__

    commit, dirty = git_state()
    return {
        "version": __version__,
        "strategy_hash": strategy_hash(strategy),
        "core_hash": package_digest().hex(),
        "git_commit": commit,
        "git_dirty": dirty,
    }
