"""The lockbox: the most recent part of a study's data, cut off before research reads it, and the
record of every look at it (``quantshift promote`` takes one, on the chosen parameters).

A look is kept in the tracking database (table ``quantshift_lockbox_looks``) by strategy lineage,
data source and symbols, and window: a look at a window that overlaps an earlier one is a second
look at the same lockbox.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantshift.data import Bars
from quantshift.data.validate import iso_utc
from quantshift.engine.config import SimConfig

LOOK_TABLE = "quantshift_lockbox_looks"


def split_lockbox(bars: Bars, fraction: float) -> tuple[Bars, Bars | None]:
    """The research bars and the lockbox: the last ``round(fraction * n_bars)`` bars (None for
    no lockbox). Research must never see the second part."""
    n_locked = round(fraction * bars.n_bars)
    if n_locked == 0:
        return bars, None
    return bars[: bars.n_bars - n_locked], bars[bars.n_bars - n_locked :]


def lockbox_window(lockbox: Bars | None, fraction: float) -> dict[str, Any]:
    """What a study's summary says about its lockbox (without reading a value in it)."""
    if lockbox is None:
        return {"fraction": fraction, "bars": 0}
    return {
        "fraction": fraction,
        "bars": int(lockbox.n_bars),
        "first_bar": iso_utc(int(lockbox.ts_ns[0])),
        "last_bar": iso_utc(int(lockbox.ts_ns[-1])),
        "first_ns": int(lockbox.ts_ns[0]),
        "last_ns": int(lockbox.ts_ns[-1]),
    }


def evaluate_lockbox(
    strategy: str, bars: Bars, params: Mapping[str, float], config: SimConfig, first_ns: int
) -> dict[str, Any]:
    """Trade ``params`` over all of ``bars`` and measure the lockbox (bars from ``first_ns``):
    the signals may use the history before it, the numbers count only its bars.

    Returns the lockbox's annualised Sharpe ratio, total return and maximum drawdown (%) of all
    symbols' sleeves together, its per-bar PSR against zero and the trades closed in it.
    """
    from quantshift.engine.backtest import backtest
    from quantshift.engine.metrics import equity_metrics, infer_periods_per_year
    from research.stats import probabilistic_sharpe_ratio, return_moments, sharpe_ratio

    result = backtest(strategy, bars, dict(params), config=config)
    equity = result.equity.sum(axis=1).to_numpy()
    start = int(np.searchsorted(bars.ts_ns, first_ns, side="left"))
    if start >= len(equity):
        raise ValueError("the lockbox starts after the last bar")
    initial = equity[start - 1] if start > 0 else config.cash * bars.n_symbols
    window = equity[start:]
    ppy = config.periods_per_year or infer_periods_per_year(bars.ts_ns)
    metrics = equity_metrics(window, initial, ppy)
    returns = window / np.concatenate(([initial], window[:-1])) - 1.0
    psr = math.nan
    if len(returns) > 2 and np.std(returns) > 0:
        skew, kurt = return_moments(returns)
        psr = probabilistic_sharpe_ratio(sharpe_ratio(returns), 0.0, len(returns), skew, kurt)
    trades = result.trades
    closed = trades[(trades["exit_reason"] != "open") & (trades["exit_time"] >= bars.index[start])]
    return {
        "sharpe": _finite(metrics["sharpe"]),
        "total_return_pct": _finite(metrics["total_return_pct"]),
        "max_drawdown_pct": _finite(metrics["max_drawdown_pct"]),
        "psr": _finite(psr),
        "trades_closed": len(closed),
        "bars": len(window),
    }


@dataclass(frozen=True, kw_only=True)
class Looks:
    """The looks at one lockbox, this one included: how many, by how many distinct choices
    (spec and parameters), and how many earlier looks were by another choice."""

    looks: int
    choices: int
    other_choices_before: int
    first_look_at: str

    def note(self) -> str:
        times = "once" if self.looks == 1 else f"{self.looks} times"
        text = f"lockbox looked at {times}"
        if self.choices > 1:
            text += f" by {self.choices} different choices (spec and parameters)"
        return text + f", first on {self.first_look_at}"


class LookRegistry:
    """Every look at a lockbox, in a SQL database (SQLite or PostgreSQL, via SQLAlchemy)."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        from research.preregistration import sql_engine

        self.engine = sql_engine(url)
        meta = sa.MetaData()
        self.table = sa.Table(
            LOOK_TABLE,
            meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("lineage", sa.String(200), nullable=False),
            sa.Column("data_source", sa.String(500), nullable=False),
            sa.Column("first_ns", sa.BigInteger, nullable=False),
            sa.Column("last_ns", sa.BigInteger, nullable=False),
            sa.Column("choice", sa.Text, nullable=False),
            sa.Column("run_id", sa.String(100), nullable=False),
            sa.Column("created_ns", sa.BigInteger, nullable=False),
            sa.Column("result_json", sa.Text, nullable=False),
        )
        meta.create_all(self.engine, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    def record(
        self,
        *,
        lineage: str,
        data_source: str,
        first_ns: int,
        last_ns: int,
        spec_hash: str,
        params: Mapping[str, float],
        run_id: str,
        result: Mapping[str, Any],
    ) -> Looks:
        """Append a look and count the looks at every overlapping window of the same lineage
        and data (this one included)."""
        import sqlalchemy as sa

        choice = json.dumps(
            {"spec_hash": spec_hash, "params": {k: float(v) for k, v in params.items()}},
            sort_keys=True,
        )
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(
                t.insert().values(
                    lineage=lineage,
                    data_source=data_source,
                    first_ns=int(first_ns),
                    last_ns=int(last_ns),
                    choice=choice,
                    run_id=run_id,
                    created_ns=time.time_ns(),
                    result_json=json.dumps(dict(result), default=str),
                )
            )
            rows = (
                conn.execute(
                    sa.select(t.c.choice, t.c.created_ns)
                    .where(
                        (t.c.lineage == lineage)
                        & (t.c.data_source == data_source)
                        & (t.c.first_ns <= int(last_ns))
                        & (t.c.last_ns >= int(first_ns))
                    )
                    .order_by(t.c.id)
                )
                .mappings()
                .all()
            )
        choices = [r["choice"] for r in rows]
        return Looks(
            looks=len(rows),
            choices=len(set(choices)),
            other_choices_before=sum(c != choice for c in choices[:-1]),
            first_look_at=iso_utc(int(rows[0]["created_ns"]))[:19] + "Z",
        )


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
