"""The causality check: a strategy's signals on any prefix of the bars equal its signals on the
full history, computed on copies of each prefix so that a read past the end cannot see the future.

Numba does no bounds checking: on a view ``a[:cut]`` a strategy reading ``close[t + 1]`` reads
the real next bar and looks causal. Each prefix here is copied into a buffer whose memory past
the end holds poison values (NaN, then a huge number); a strategy whose prefix signals change
with the poison read past the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantshift.strategies.base import Strategy

OUTPUTS = ("entries", "exits", "stop_dist", "take_profit_dist", "trail_dist")
_PAD_BARS = 64
"""Poisoned bars after each copied prefix: more than any plausible look-ahead offset."""
_POISONS = (np.nan, 1e300)


@dataclass(frozen=True, kw_only=True)
class CausalityVerdict:
    """The outcome of :func:`check_causality`.

    ``causal`` is False at the first prefix (``cut`` bars) whose signals differ from the
    full-history ones (``output`` at ``bar``) for the parameter set ``params``; ``reason`` says
    whether they differ from the full history or only with what lies past the prefix's end.
    """

    strategy: str
    causal: bool
    bars: int
    cuts_checked: int
    param_sets_checked: int
    cut: int | None = None
    bar: int | None = None
    output: str | None = None
    params: dict[str, float] | None = None
    reason: str = ""

    def summary(self) -> str:
        """One readable line."""
        if self.causal:
            return (
                f"{self.strategy}: causal ({self.cuts_checked} prefixes x "
                f"{self.param_sets_checked} parameter sets on {self.bars} bars, each prefix a copy)"
            )
        return (
            f"{self.strategy}: LOOKS AHEAD: {self.output} at bar {self.bar} computed on the first "
            f"{self.cut} bars {self.reason} (params {self.params})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def run_signals(strategy: Strategy, bars: Sequence[np.ndarray], params: np.ndarray):
    """Call the strategy's signal function on fresh output buffers; return the five outputs
    (``bars`` are the open, high, low, close and volume arrays)."""
    n = bars[0].shape[0]
    outputs = (
        np.zeros(n, np.bool_),
        np.zeros(n, np.bool_),
        *(np.full(n, np.nan) for _ in range(3)),
    )
    strategy.signal_nb(*bars, np.ascontiguousarray(params, dtype=np.float64), *outputs)
    return outputs


def poisoned_prefix(bars: Sequence[np.ndarray], cut: int, poison: float) -> tuple[np.ndarray, ...]:
    """Copy ``bars[:cut]`` into fresh buffers followed by poisoned bars; return the prefixes
    (views of the buffers' first ``cut`` values, so a read past their end finds ``poison``)."""
    out = []
    for a in bars:
        buffer = np.full(cut + _PAD_BARS, poison, dtype=np.float64)
        buffer[:cut] = a[:cut]
        out.append(buffer[:cut])
    return tuple(out)


def default_cuts(n_bars: int, count: int = 48) -> list[int]:
    """Prefix lengths to check: ``count`` spread evenly over 1..n_bars, plus the first few."""
    spread = np.linspace(1, n_bars, num=min(count, n_bars)).round().astype(int)
    return sorted({*range(1, min(4, n_bars) + 1), *spread.tolist()})


def check_causality(
    strategy: Strategy,
    bars: Sequence[np.ndarray],
    params: np.ndarray,
    *,
    cuts: Sequence[int] | None = None,
) -> CausalityVerdict:
    """Check that ``strategy``'s signals depend on past bars only.

    Parameters
    ----------
    strategy
        The strategy to check.
    bars
        Open, high, low, close and volume of one symbol, 1-D float arrays of equal length.
    params
        One parameter vector, or a 2-D array with one parameter set per row.
    cuts
        Prefix lengths to check (default :func:`default_cuts`).

    Returns
    -------
    CausalityVerdict
        Causal, or the first prefix, bar, output and parameter set that looks ahead.
    """
    grid = np.atleast_2d(np.asarray(params, dtype=np.float64))
    n_bars = int(bars[0].shape[0])
    cuts = default_cuts(n_bars) if cuts is None else sorted({int(c) for c in cuts})
    checked = {
        "strategy": strategy.name,
        "bars": n_bars,
        "cuts_checked": len(cuts),
        "param_sets_checked": grid.shape[0],
    }
    for row in grid:
        looked_ahead = {
            "causal": False,
            "params": dict(zip(strategy.param_names, row.tolist(), strict=True)),
        }
        cut = n_bars
        try:
            full = run_signals(strategy, poisoned_prefix(bars, n_bars, np.nan), row)
            for cut in cuts:
                runs = [run_signals(strategy, poisoned_prefix(bars, cut, p), row) for p in _POISONS]
                for output, whole, first, second in zip(OUTPUTS, full, *runs, strict=True):
                    bar, reason = _first_difference(whole[:cut], first, second)
                    if bar is not None:
                        return CausalityVerdict(
                            **checked, **looked_ahead, cut=cut, bar=bar, output=output,
                            reason=reason,
                        )  # fmt: skip
        except IndexError:
            # Run as plain Python (NUMBA_DISABLE_JIT=1), a read past the end raises.
            return CausalityVerdict(
                **checked, **looked_ahead, cut=cut, bar=cut - 1, output="signals",
                reason="raise IndexError: it reads beyond bar t",
            )  # fmt: skip
    return CausalityVerdict(**checked, causal=True)


def check_bars(strategy: Strategy, bars, params: np.ndarray) -> tuple[str, CausalityVerdict]:
    """Run :func:`check_causality` on each symbol of ``bars`` (a ``quantshift.data.Bars``; the
    bars a symbol lacks are removed first); return the first symbol that looks ahead and its
    verdict, or the last symbol and its verdict when all are causal."""
    columns = (bars.open, bars.high, bars.low, bars.close, bars.volume)
    for j, symbol in enumerate(bars.symbols):
        rows = bars.valid[:, j]
        verdict = check_causality(strategy, tuple(c[rows, j] for c in columns), params)
        if not verdict.causal:
            return symbol, verdict
    return symbol, verdict


def _first_difference(whole: np.ndarray, first: np.ndarray, second: np.ndarray):
    """The first bar where the prefix's signals differ (and why), or (None, "")."""
    for other, reason in (
        (second, "changes with the values past the prefix's end (it reads beyond bar t)"),
        (whole, "differs from the same bar computed on the full history"),
    ):
        differs = first != other
        if first.dtype.kind == "f":
            differs &= ~(np.isnan(first) & np.isnan(other))
        if differs.any():
            return int(np.flatnonzero(differs)[0]), reason
    return None, ""
