"""Code fingerprints: which code produced a result, so research and live can pin to it.

A fingerprint names the package version, a hash of the strategy's code, the git commit and how
the core is pinned (a clean checkout, or an installed release whose files match its RECORD);
the same digests key the caches of compiled kernels (``engine.fused``, ``portfolio.loop``).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import inspect
import subprocess
import sys
import types
from functools import cache
from pathlib import Path
from typing import Any

from quantshift.strategies import FRAMEWORK_MODULES, Strategy, get_strategy

_ROOT = Path(__file__).resolve().parents[1]


def strategy_hash(strategy: str | Strategy) -> str:
    """Return a SHA-256 over the strategy's signal function, the numba functions it calls and
    their source files outside the core, so any edit to what decides its trades changes it."""
    strat = get_strategy(strategy)
    func = getattr(strat.signal_nb, "py_func", strat.signal_nb)
    h = hashlib.sha256(function_bytes(func, set()))
    for path in strategy_sources(func):
        h.update(path.read_bytes())
    h.update(repr([(p.name, p.low, p.high, p.integer) for p in strat.params]).encode())
    return h.hexdigest()


def _git(path: Path, *args: str) -> str:
    """The output of ``git -C path ARGS`` (OSError or SubprocessError when it fails)."""
    return subprocess.run(
        ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=5, check=True
    ).stdout


def git_state(path: Path = _ROOT) -> tuple[str | None, bool | None]:
    """Return (commit, dirty) of the git checkout holding ``path``; (None, None) outside git."""
    try:
        commit = _git(path, "rev-parse", "HEAD").strip()
        status = _git(path, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def strategy_source(strategy: str | Strategy) -> dict[str, Any]:
    """Return the strategy's own source file, its SHA-256 and its state in git.

    Returns
    -------
    dict
        ``strategy_file`` (path, None for a strategy defined without a file, as in a notebook),
        ``strategy_file_sha256`` and ``strategy_file_git``: ``committed`` (tracked and equal
        to the commit), ``untracked`` (unknown to git, or ignored), ``modified`` (differs from
        the commit, staged or not), ``outside git`` or ``no file``; ``strategy_git_commit``,
        the commit of the repository holding the file (the user's own for their strategy),
        and ``strategy_git_dirty``: the file is not committed or tracked files there differ
        (both None outside git).
    """
    strat = get_strategy(strategy)
    path = source_file(getattr(strat.signal_nb, "py_func", strat.signal_nb))
    if path is None:
        return {
            "strategy_file": None,
            "strategy_file_sha256": None,
            "strategy_file_git": "no file",
            "strategy_git_commit": None,
            "strategy_git_dirty": None,
        }
    file = Path(path).resolve()
    state = _file_git_state(file)
    commit, dirty = git_state(file.parent)
    return {
        "strategy_file": (
            file.relative_to(_ROOT).as_posix() if file.is_relative_to(_ROOT) else str(file)
        ),
        "strategy_file_sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
        "strategy_file_git": state,
        "strategy_git_commit": commit,
        "strategy_git_dirty": None if commit is None else bool(dirty or state != "committed"),
    }


def _file_git_state(file: Path) -> str:
    # Untracked and ignored files are listed too: the run's commit does not contain them.
    try:
        status = _git(
            file.parent, "status", "--porcelain", "--untracked-files=all", "--ignored", "--",
            file.name,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "outside git"
    if not status.strip():
        return "committed"
    return "untracked" if status[:2] in ("??", "!!") else "modified"


def code_fingerprint(strategy: str | Strategy) -> dict[str, Any]:
    """Return the code fingerprint of ``strategy``.

    Returns
    -------
    dict
        ``version`` (quantshift package version), ``strategy_hash`` (see :func:`strategy_hash`),
        ``core_hash`` (SHA-256 over the core's source files, :func:`core_files`: the engine,
        the decision layer and the strategy framework, so a commit that changes only docs,
        drivers or another strategy leaves it alone), ``git_commit`` and ``git_dirty`` of
        quantshift's checkout (None when the code is not in a git checkout, or is an installed
        release: a venv inside the user's repository is not quantshift's checkout; dirty means
        tracked files differ from the commit, so the commit alone does not pin the code),
        ``core_pinned`` and ``core_pinned_by`` (see :func:`core_pin`), and the strategy's own
        source and the state of the repository holding it, which is the user's own for a
        strategy of theirs (see :func:`strategy_source`).
    """
    from quantshift import __version__

    release, state = _installed_release()
    commit, dirty, pinned, pinned_by = state or _core_state(None)
    source = strategy_source(strategy)
    file = source["strategy_file"]
    shipped = file is not None and (_ROOT / file).resolve().is_relative_to(_PACKAGE)
    if release is not None and shipped:
        # A strategy shipped in the release: its RECORD pins it with the core, not git (a
        # venv inside the user's repository would show it as ignored there).
        source.update(
            strategy_file_git=IN_RELEASE, strategy_git_commit=None, strategy_git_dirty=None
        )
    return {
        "version": __version__,
        "strategy_hash": strategy_hash(strategy),
        "core_hash": package_digest().hex(),
        "git_commit": commit,
        "git_dirty": dirty,
        "core_pinned": pinned,
        "core_pinned_by": pinned_by,
        **source,
    }


IN_RELEASE = "in the release"
"""``strategy_file_git`` of a strategy shipped in an installed release (pinned by its RECORD)."""


def core_pin() -> tuple[bool, str]:
    """Return whether quantshift's own code is pinned, and by what (or why it is not).

    An installed release (a wheel in site-packages) is pinned by its version when every file
    its RECORD lists still has the hash the installer wrote and no module was added beside
    them: ``(True, "release 0.1.0, files match RECORD")``. Without one (a developer's editable
    install, whose RECORD lists no sources), a clean git checkout pins it: ``(True, "git")``.
    Otherwise ``(False, why)``, naming the files that differ or what to do.
    """
    state = _installed_release()[1]
    return (state or _core_state(None))[2:]


@cache
def _installed_release():
    """(the installed release or None, its ``_core_state`` or None), found and hashed once per
    process: like :func:`package_digest`, the code as first loaded (a fingerprint per sleeve
    rehashed every installed file). A git checkout's state is read afresh each time."""
    dist = installed_distribution()
    return dist, None if dist is None else _core_state(dist)


def _core_state(dist) -> tuple[str | None, bool | None, bool, str]:
    """(git commit, git dirty, pinned, pinned by) of quantshift's own code, installed as
    ``dist`` (None: not an installed release)."""
    if dist is not None:
        problems = record_problems(dist, _PACKAGE_ROOTS)
        if len(problems) > _MAX_NAMED:  # a tag holds the text: name a few, count the rest
            problems = [*problems[:_MAX_NAMED], f"{len(problems) - _MAX_NAMED} more"]
        by = f"release {dist.version}, files match RECORD"
        if problems:
            by = (
                f"release {dist.version} does not match its RECORD: {'; '.join(problems)} "
                "(reinstall quantshift, or run it from a clean git checkout)"
            )
        return None, None, not problems, by
    commit, dirty = git_state()
    if commit is None:
        by = (
            "neither a git checkout nor an installed release with a RECORD (install quantshift "
            "from a wheel, or run it from a clean git checkout)"
        )
    elif dirty:
        by = "git: tracked files differ from the commit (commit or revert them)"
    else:
        by = "git"
    return commit, dirty, commit is not None and not dirty, by


_MAX_NAMED = 10
_PACKAGE_ROOTS = ("quantshift", "research", "live")
"""The top-level packages a quantshift distribution installs (pyproject's wheel packages)."""


def installed_distribution(name: str = "quantshift") -> importlib.metadata.Distribution | None:
    """Return the installed distribution whose RECORD lists this very ``quantshift`` package's
    sources (None for an editable install or a plain checkout: their RECORD lists none)."""
    here = (_PACKAGE / "__init__.py").resolve()
    for dist in importlib.metadata.distributions(name=name):
        for path in dist.files or ():
            if path.as_posix() == "quantshift/__init__.py":
                if Path(dist.locate_file(path)).resolve() == here:
                    return dist
                break
    return None


def record_problems(dist: importlib.metadata.Distribution, packages: tuple[str, ...]) -> list[str]:
    """Return how the installed files of ``dist`` differ from its RECORD (empty: they match).

    Every file the RECORD lists with a hash must exist with that SHA-256; a listed file
    without a hash may only be the RECORD itself or compiled bytecode; and every ``*.py``
    under the top-level ``packages`` must be listed (an added module changes the code too).
    """
    problems, listed = [], set()
    for path in dist.files or ():
        file = Path(dist.locate_file(path)).resolve()
        listed.add(file)
        name = path.as_posix()
        if path.hash is None:
            if path.name != "RECORD" and path.suffix != ".pyc":
                problems.append(f"{name} has no hash in RECORD")
        elif path.hash.mode != "sha256":
            problems.append(f"{name} has a {path.hash.mode} hash in RECORD, not sha256")
        elif not file.is_file():
            problems.append(f"{name} is missing")
        elif _record_digest(file) != path.hash.value:
            problems.append(f"{name} is modified")
    for package in packages:
        root = Path(dist.locate_file(package)).resolve()
        for file in sorted(root.rglob("*.py")) if root.is_dir() else ():
            if file not in listed:
                problems.append(f"{package}/{file.relative_to(root).as_posix()} is not in RECORD")
    return problems


def _record_digest(file: Path) -> str:
    # RECORD's form (PEP 376 / the wheel spec): urlsafe base64 of the digest, no padding.
    digest = hashlib.sha256(file.read_bytes()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


_PACKAGE = Path(__file__).resolve().parent


def core_files() -> list[Path]:
    """Return the core's source files: every module of the ``quantshift`` package except the
    strategies (each keyed by its own sources) and the ``quantshift init`` templates."""
    strategies = _PACKAGE / "strategies"
    return [
        path
        for path in sorted(_PACKAGE.rglob("*.py"))
        if not path.is_relative_to(_PACKAGE / "templates")
        and not (path.parent == strategies and path.stem not in FRAMEWORK_MODULES | {"__init__"})
    ]


@cache
def package_digest() -> bytes:
    """Return a SHA-256 over the core's source files (:func:`core_files`, paths and contents):
    the key of compiled kernels' caches, with a strategy's own sources for its kernels, and
    the ``core_hash`` of a fingerprint."""
    h = hashlib.sha256()
    for path in core_files():
        h.update(path.relative_to(_PACKAGE).as_posix().encode())
        h.update(path.read_bytes())
    return h.digest()


def strategy_sources(func) -> list[Path]:
    """Return the source files of ``func`` and of the numba functions it calls, outside the
    core (:func:`core_files`): a strategy's module and the user's helper modules."""
    core = set(core_files())
    files = set()
    for each in _called(func, set()):
        path = source_file(each)
        if path is not None and Path(path).resolve() not in core:
            files.add(Path(path).resolve())
    return sorted(files)


def _called(func, seen: set[int]) -> list:
    """``func`` and the numba functions it calls, directly or not."""
    if id(func) in seen:
        return []
    seen.add(id(func))
    out = [func]
    for name in func.__code__.co_names:
        called = getattr(func.__globals__.get(name), "py_func", None)
        if called is not None:
            out.extend(_called(called, seen))
    return out


def function_bytes(func, seen: set[int]) -> bytes:
    """Return the name and code of ``func`` and of the numba functions it calls (a helper
    defined without a file, as in a notebook cell, changes no file digest)."""
    parts = []
    for each in _called(func, seen):
        parts += [f"{each.__module__}.{each.__qualname__}".encode(), _code_bytes(each.__code__)]
    return b"\x1f".join(parts)


def _code_bytes(code: types.CodeType) -> bytes:
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        parts.append(
            _code_bytes(const) if isinstance(const, types.CodeType) else repr(const).encode()
        )
    return b"\x1f".join(parts)


def source_file(func) -> str | None:
    """Return the file ``func`` was defined in (or its module's), or None without one."""
    try:
        path = inspect.getsourcefile(func)
    except TypeError:
        path = None
    if path is None:
        module = sys.modules.get(getattr(func, "__module__", ""), None)
        path = getattr(module, "__file__", None)
    return path if path and Path(path).is_file() else None
