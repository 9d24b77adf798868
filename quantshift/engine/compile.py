"""Kernel compilation: templates compiled per strategy under names that carry a digest.

numba's cache keys a kernel by its qualified name and watches only the file defining it, so
the engine and the portfolio compile templates under names carrying a digest of everything the
machine code depends on: the package's sources and, for strategy kernels, the signal function.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import types
from functools import cache
from pathlib import Path

from numba import njit


def compile_template(template, namespace: dict, name: str, **options):
    """Return ``njit(**options)`` of ``template``'s code run with the globals ``namespace``
    under the name ``name``.

    numba's cache keys kernels by qualified name and watches only the template's file, so a
    name carrying a digest of everything the kernel is compiled from (:func:`package_digest`,
    a strategy's signal function) makes the cache miss whenever any of it changes.
    """
    fn = types.FunctionType(template.__code__, namespace, name)
    fn.__qualname__ = name
    return njit(**options)(fn)


def importable(func) -> bool:
    """Return True if numba can find the module ``func`` lives in (what its cache needs)."""
    module = inspect.getmodule(func)
    return module is not None and getattr(module, "__name__", "") in sys.modules


@cache
def package_digest() -> bytes:
    """Return a digest of every source file of the ``quantshift`` package."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.digest()


def function_digest(signal) -> str:
    """Return a digest of everything a kernel calling ``signal`` is compiled from: the
    package, the function's identity and bytecode and those of the numba functions it calls,
    and its source file (numba's own cache only sees the template)."""
    func = getattr(signal, "py_func", signal)
    h = hashlib.sha256(package_digest())
    h.update(function_bytes(func, set()))
    path = source_file(func)
    if path is not None:
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:12]


def function_bytes(func, seen: set[int]) -> bytes:
    """Return the name and code of ``func`` and of the numba functions it calls (a helper
    defined without a file, as in a notebook cell, changes no file digest)."""
    if id(func) in seen:
        return b""
    seen.add(id(func))
    parts = [f"{func.__module__}.{func.__qualname__}".encode(), _code_bytes(func.__code__)]
    for name in func.__code__.co_names:
        called = getattr(func.__globals__.get(name), "py_func", None)
        if called is not None:
            parts.append(function_bytes(called, seen))
    return b"\x1f".join(parts)


def _code_bytes(code: types.CodeType) -> bytes:
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        parts.append(
            _code_bytes(const) if isinstance(const, types.CodeType) else repr(const).encode()
        )
    return b"\x1f".join(parts)


def source_file(func) -> str | None:
    """Return the file ``func`` was defined in, or None (exec'd code, a notebook cell)."""
    try:
        path = inspect.getsourcefile(func)
    except TypeError:
        path = None
    if path is None:
        module = sys.modules.get(getattr(func, "__module__", ""), None)
        path = getattr(module, "__file__", None)
    return path if path and Path(path).is_file() else None
