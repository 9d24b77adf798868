"""Kernel compilation: templates compiled per strategy under names that carry a digest.

numba's cache keys a kernel by its qualified name and watches only the file defining it, so
the engine and the portfolio compile templates under names carrying a digest of everything the
machine code depends on: the core's sources and, for strategy kernels, the strategy's own.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import sys
import types

from numba import njit

from quantshift.provenance import function_bytes, package_digest, strategy_sources


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


@functools.cache
def entry_point(template):
    """Return ``template`` (a plain function of ours that calls numba kernels) compiled into a
    cached entry point for Python callers, named with :func:`package_digest`.

    A kernel called straight from Python (a metric of an equity curve, the fill model's
    price of one market order) would otherwise be compiled again in every process, the kernels
    it calls included: seconds in the middle of a live runner's first cycle that trades. Its
    own ``cache=True`` would serve stale machine code when a kernel it calls, in another file,
    changes; the digest in the name makes the cache miss then.
    """
    name = f"{template.__name__}__{package_digest().hex()[:12]}"
    return compile_template(template, template.__globals__, name, cache=True)


def importable(func) -> bool:
    """Return True if numba can find the module ``func`` lives in (what its cache needs)."""
    module = inspect.getmodule(func)
    return module is not None and getattr(module, "__name__", "") in sys.modules


def function_digest(signal) -> str:
    """Return a digest of everything a kernel calling ``signal`` is compiled from: the core
    (engine, indicators, ...; not the other strategies), the function's identity and bytecode
    and those of the numba functions it calls, and their source files outside the core (the
    strategy's module, a user's helpers); numba's own cache only sees the template."""
    func = getattr(signal, "py_func", signal)
    h = hashlib.sha256(package_digest())
    h.update(function_bytes(func, set()))
    for path in strategy_sources(func):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]
