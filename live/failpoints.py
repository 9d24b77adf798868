"""Failpoints: named places in the cycle where a test can make the process die on purpose.

``QUANTSHIFT_FAILPOINTS="after_intent=3,after_submit=1"`` kills the process with SIGKILL on the
3rd pass through ``after_intent`` (and the 1st through ``after_submit``); unset, a failpoint
costs one dictionary lookup. The failover tests use them to crash between intent and submit;
in-process tests attach an action instead (``set_hook``), e.g. a HALT written at that point.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

ENV = "QUANTSHIFT_FAILPOINTS"
NAMES = (
    "after_intent",
    "after_submit",
    "after_fill",
    "after_entry_fill",
    "after_cancel",
    "after_state",
)


def _parse(text: str) -> dict[str, int]:
    plan = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition("=")
        if name not in NAMES or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{ENV}: {item!r} is not NAME=N with NAME in {', '.join(NAMES)}")
        plan[name] = int(count)
    return plan


_PLAN = _parse(os.environ.get(ENV, ""))
_SEEN: dict[str, int] = {}
_HOOKS: dict[str, tuple[Callable[[int], object], list[int]]] = {}


def set_hook(name: str, action: Callable[[int], object] | None) -> None:
    """Call ``action(n)`` on the n-th pass (from 1) through failpoint ``name`` in this process,
    from now on; None removes it. Tests use it to make something happen at exactly that point."""
    if name not in NAMES:
        raise ValueError(f"no failpoint {name!r}; known: {', '.join(NAMES)}")
    if action is None:
        _HOOKS.pop(name, None)
    else:
        _HOOKS[name] = (action, [0])


def failpoint(name: str) -> None:
    """Pass through failpoint ``name``: run its hook, and die here (SIGKILL) if the plan says
    so."""
    hook = _HOOKS.get(name)
    if hook is not None:
        action, passes = hook
        passes[0] += 1
        action(passes[0])
    if not _PLAN:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if _PLAN.get(name) == _SEEN[name]:
        os.kill(os.getpid(), signal.SIGKILL)
