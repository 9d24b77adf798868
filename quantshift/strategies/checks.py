"""Checks a strategy's declaration before anything compiles it, so a mistake is one line naming
the file, the function and what is wrong instead of a numba typing error at the first backtest.
"""

from __future__ import annotations

import dis
import inspect
import numbers
from pathlib import Path

from numba import config as numba_config
from numba.core.registry import CPUDispatcher

from quantshift.errors import ConfigError

SIGNAL_ARGUMENTS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "params",
    "entries",
    "exits",
    "stop_dist",
    "take_profit_dist",
    "trail_dist",
)
"""The signal function's positional arguments; the five outputs may be named as one likes."""
_INPUTS = 6


def where(strategy_name: str, signal) -> str:
    """``strategy 'NAME' (FILE:LINE, function FUNC)``: the prefix of every declaration error."""
    func = getattr(signal, "py_func", signal)
    code = getattr(func, "__code__", None)
    name = getattr(func, "__qualname__", repr(func))
    if code is None:
        return f"strategy '{strategy_name}' (function {name})"
    file = Path(code.co_filename)
    try:
        shown = file.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        shown = str(file)
    return f"strategy '{strategy_name}' ({shown}:{code.co_firstlineno}, function {name})"


def check_signal(strategy_name: str, signal, param_names: tuple[str, ...]) -> None:
    """Raise ConfigError unless ``signal`` is a numba function with the signal signature
    reading only declared parameters (``params[k]`` with k below their count)."""
    if isinstance(signal, CPUDispatcher):
        func = signal.py_func
    elif numba_config.DISABLE_JIT and inspect.isfunction(signal):
        func = signal  # NUMBA_DISABLE_JIT=1: @njit returns the plain function
    else:
        raise ConfigError(
            f"{where(strategy_name, signal)}: signal_nb must be decorated with @numba.njit, got "
            f"{type(signal).__name__}"
        )
    prefix = where(strategy_name, signal)
    spec = inspect.getfullargspec(func)
    if spec.varargs or spec.varkw or spec.kwonlyargs:
        raise ConfigError(
            f"{prefix}: takes *args, **kwargs or keyword-only arguments; it needs exactly "
            f"{len(SIGNAL_ARGUMENTS)} positional arguments ({', '.join(SIGNAL_ARGUMENTS)})"
        )
    args = spec.args
    if len(args) != len(SIGNAL_ARGUMENTS):
        raise ConfigError(
            f"{prefix}: takes {len(args)} arguments ({', '.join(args)}), needs "
            f"{len(SIGNAL_ARGUMENTS)}: {', '.join(SIGNAL_ARGUMENTS)}"
        )
    if spec.defaults:
        raise ConfigError(f"{prefix}: arguments must not have default values")
    for position, (given, expected) in enumerate(
        zip(args[:_INPUTS], SIGNAL_ARGUMENTS[:_INPUTS], strict=True)
    ):
        if given.rstrip("_") != expected:
            raise ConfigError(
                f"{prefix}: argument {position + 1} is '{given}', expected '{expected}' (the "
                f"arguments are {', '.join(SIGNAL_ARGUMENTS)})"
            )
    for index in sorted(_constant_param_indexes(func.__code__, args[_INPUTS - 1])):
        if index >= len(param_names) or index < -len(param_names):
            declared = ", ".join(param_names) or "none"
            raise ConfigError(
                f"{prefix}: reads params[{index}] but declares {len(param_names)} "
                f"parameter(s) ({declared}); params[k] is the k-th declared parameter"
            )


def _constant_param_indexes(code, params_name: str) -> set[int]:
    """The constant indexes ``k`` of ``params[k]`` read in ``code``."""
    found: set[int] = set()
    instructions = list(dis.get_instructions(code))
    for first, second, third in zip(instructions, instructions[1:], instructions[2:], strict=False):
        if (
            first.opname == "LOAD_FAST"
            and first.argval == params_name
            and second.opname == "LOAD_CONST"
            and isinstance(second.argval, int)
            and not isinstance(second.argval, bool)
            and third.opname == "BINARY_SUBSCR"
        ):
            found.add(second.argval)
    return found


def warmup_function(strategy_name: str, warmup, defaults: dict[str, float]):
    """Return the warm-up rule as a function of the parameter values (an int is a constant);
    raise ConfigError unless it gives a whole number of bars >= 0 at the defaults."""
    if isinstance(warmup, bool):
        raise ConfigError(f"strategy '{strategy_name}': warmup must be bars, got {warmup!r}")
    if isinstance(warmup, int):
        bars = warmup

        def constant(values, bars=bars):
            return bars

        rule = constant
    elif callable(warmup):
        rule = warmup
    else:
        raise ConfigError(
            f"strategy '{strategy_name}': warmup must be a whole number of bars or a function "
            f"of the parameter values, got {type(warmup).__name__}"
        )
    try:
        value = rule(dict(defaults))
    except Exception as exc:
        raise ConfigError(
            f"strategy '{strategy_name}': warmup at the default parameters raised "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(
            f"strategy '{strategy_name}': warmup must return a whole number of bars >= 0, got "
            f"{value!r} at the default parameters"
        )
    return rule


def typing_error_line(exc: BaseException) -> str | None:
    """One line for a numba compile error (what failed and the first user file and line it
    names), or None if ``exc`` is not one; the CLI prints it instead of numba's report."""
    from numba.core.errors import NumbaError

    if not isinstance(exc, NumbaError):
        return None
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    problem = next(
        (
            line
            for line in lines
            if not line.startswith(("Failed in", "During:", "File ", "<source", "- ", "^"))
        ),
        type(exc).__name__,
    )
    place = [line.rstrip(":") for line in lines if line.startswith('File "')]
    user = [p for p in place if "/quantshift/" not in p and "/numba/" not in p]
    shown = f" ({(user or place)[0]})" if place else ""
    return f"the strategy code does not compile with numba: {problem[:300]}{shown}"


def one_line_warnings() -> None:
    """Show a StrategyImportWarning as one ``warning: ...`` line (the CLI's habit)."""
    import sys
    import warnings

    from quantshift.strategies import StrategyImportWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, StrategyImportWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
