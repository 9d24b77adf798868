"""What the venue did against what the backtest of the same bars says, trade by trade.

The portfolio backtest is rebuilt on exactly the bars the runner stored (its warm-up history
and every bar it decided on), with the runner's configuration, trading from the first bar it
decided. Closed trades are paired by sleeve, symbol, direction and entry bar (then by the
nearest entry within ``timing_bars``), and the P&L difference of each pair is split exactly:

    live pnl - backtest pnl = entry price + exit price (or exit timing) + size + fees

with, per unit and direction ``d`` (+1 long, -1 short), ``entry = -d * q_live * (p_in_live -
p_in_bt)``, ``exit = d * q_live * (p_out_live - p_out_bt)``, ``size = d * (q_live - q_bt) *
(p_out_bt - p_in_bt)`` and ``fees = -(fees_live - fees_bt)``. A backtest trade the venue never
made is "missing" (its P&L, with the reason the store gives: rejected, not filled, unresolved,
or not decided live); a venue trade the backtest does not have is "extra".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from live.adoption import traded_portfolios
from live.config import LiveConfig
from quantshift.errors import DataError
from quantshift.portfolio import portfolio_backtest

CAUSES = ("entry price", "exit price", "exit timing", "entry timing", "size", "partial fill",
          "fees", "missing trade", "extra trade", "unexplained")  # fmt: skip


@dataclass
class Divergence:
    """The comparison: per-trade rows, P&L by cause, equity curves and the drift."""

    runner: str
    since_ns: int | None
    first_decided_ns: int
    bars: int
    rows: list[dict[str, Any]]
    by_cause: dict[str, float]
    live_pnl: float
    backtest_pnl: float
    initial_cash: float
    assumed_slippage_bps: float
    equity: pd.DataFrame = field(repr=False)

    @property
    def pnl_difference(self) -> float:
        return self.live_pnl - self.backtest_pnl

    @property
    def drift_pct(self) -> float:
        """The P&L difference as a share of the starting cash (percent)."""
        return 100.0 * self.pnl_difference / self.initial_cash

    def slippage_bps(self, leg: str) -> float:
        """Median realised slippage of matched ``leg`` ("entry"/"exit") fills against the
        model's price, in basis points (positive: worse than the backtest)."""
        values = [r[f"{leg}_slippage_bps"] for r in self.rows if r["kind"] == "matched"]
        values = [v for v in values if math.isfinite(v)]
        return float(np.median(values)) if values else float("nan")

    def pnl_difference_by_position(self) -> dict[tuple[str, str], float]:
        """Live minus backtest P&L of the compared trades per (sleeve, symbol); the values add
        up to :attr:`pnl_difference`."""
        out: dict[tuple[str, str], float] = {}
        for row in self.rows:
            key = (row["sleeve"], row["symbol"])
            out[key] = out.get(key, 0.0) + row["pnl_difference"]
        return out

    @property
    def equity_drift_pct(self) -> float:
        """Live against backtest portfolio equity at the last bar both have, in percent of the
        backtest's (open positions marked at that close); NaN before a live snapshot."""
        both = self.equity.dropna()
        if both.empty:
            return float("nan")
        live, tested = float(both["live"].iloc[-1]), float(both["backtest"].iloc[-1])
        return 100.0 * (live / tested - 1.0)

    def counts(self) -> dict[str, int]:
        kinds = [r["kind"] for r in self.rows]
        return {k: kinds.count(k) for k in ("matched", "missing", "extra")}

    def lines(self) -> list[str]:
        """A readable report: the totals, P&L by cause, and every trade that differs."""
        counts = self.counts()
        out = [
            f"runner {self.runner}: {self.bars:,} bars from {_day(self.first_decided_ns)}; "
            f"{counts['matched']:,} trades matched, {counts['missing']:,} missing live, "
            f"{counts['extra']:,} extra live",
            f"P&L live {self.live_pnl:,.2f}, backtest {self.backtest_pnl:,.2f}, difference "
            f"{self.pnl_difference:+,.2f} ({self.drift_pct:+.3f}% of {self.initial_cash:,.0f})",
            f"slippage against the model's price (which assumes {self.assumed_slippage_bps:g} "
            f"bps): entries {_bps(self.slippage_bps('entry'))}, exits "
            f"{_bps(self.slippage_bps('exit'))} (median; positive is worse)",
        ]
        if self.by_cause:
            out.append("by cause:")
            out += [f"  {cause:<14} {amount:+14,.2f}" for cause, amount in self.by_cause.items()]
        differing = [
            r for r in self.rows if abs(r["pnl_difference"]) > 1e-9 or r["kind"] != "matched"
        ]
        if differing:
            out.append(f"{'kind':<8} {'sleeve':<12} {'symbol':<10} {'entry':<17} {'qty live':>10} "
                       f"{'qty bt':>10} {'P&L diff':>12}  cause / reason")  # fmt: skip
            for r in differing:
                why = r["reason"] or ", ".join(
                    f"{c} {v:+,.2f}" for c, v in r["causes"].items() if v != 0.0
                )
                out.append(
                    f"{r['kind']:<8} {r['sleeve']:<12} {r['symbol']:<10} "
                    f"{_day(r['entry_ns']):<17} {r['live_qty']:>10,.4g} "
                    f"{r['backtest_qty']:>10,.4g} {r['pnl_difference']:>+12,.2f}  {why}"
                )
        else:
            out.append("every trade matches the backtest")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "runner": self.runner,
            "since_ns": self.since_ns,
            "first_decided_ns": self.first_decided_ns,
            "bars": self.bars,
            "trades": self.counts(),
            "live_pnl": self.live_pnl,
            "backtest_pnl": self.backtest_pnl,
            "pnl_difference": self.pnl_difference,
            "drift_pct": self.drift_pct,
            "assumed_slippage_bps": self.assumed_slippage_bps,
            "entry_slippage_bps": _finite(self.slippage_bps("entry")),
            "exit_slippage_bps": _finite(self.slippage_bps("exit")),
            "by_cause": self.by_cause,
            "rows": [{k: _finite(v) for k, v in r.items()} for r in self.rows],
        }


def divergence(config: LiveConfig, store, *, since_ns: int | None = None,
               timing_bars: int = 3) -> Divergence:  # fmt: skip
    """Compare the runner of ``config`` (its store) with the backtest of the bars it saw.

    Raises
    ------
    DataError
        When the store holds no decided bars for the runner (it never ran a cycle there), or,
        for a config with an overlay, a decided bar without the inputs it was decided with.
    """
    first = store.decided_from(config.name)
    symbols = list(config.portfolio.symbols)
    if first is None:
        raise DataError(f"{config.path or config.name}: the store has no decided bars of runner "
                        f"{config.name!r} (it has not run a cycle against this store)")  # fmt: skip
    bars = store.decided_bars(symbols, source=f"store of {config.name}")
    # The sleeves on the parameters they traded (the records they adopted, from the bar of
    # each adoption on), with the overlay inputs each bar was decided with.
    traded, switches = traded_portfolios(config, store, first)
    overlay = _overlay_inputs(config, store, bars, first)
    result = portfolio_backtest(traded, bars, trade_from_ns=first, switches=switches, **overlay)
    start = first if since_ns is None else max(first, int(since_ns))
    ts = bars.ts_ns
    tested = result.trades
    # Compared as timestamps: mapping an empty column to ints keeps its datetime dtype.
    tested = tested[(tested["exit_reason"] != "open")
                    & (tested["entry_time"] >= pd.Timestamp(start, tz="UTC"))]  # fmt: skip
    live = [t for t in store.trades() if t.entry_ts_ns >= start]
    intents = store.intents()
    interval = _interval(ts)
    rows = _pair(live, tested, intents, ts, interval * timing_bars)
    by_cause = dict.fromkeys(CAUSES, 0.0)
    for row in rows:
        for cause, amount in row["causes"].items():
            by_cause[cause] += amount
    return Divergence(
        runner=config.name,
        since_ns=since_ns,
        first_decided_ns=first,
        bars=int(np.count_nonzero(ts >= start)),
        rows=rows,
        by_cause={k: v for k, v in by_cause.items() if v != 0.0},
        live_pnl=float(sum(t.pnl for t in live)),
        backtest_pnl=float(tested["pnl"].sum()),
        initial_cash=float(config.portfolio.sim.cash),
        assumed_slippage_bps=float(config.portfolio.sim.slippage_bps),
        equity=_equity(store, result, start),
    )


def _overlay_inputs(config: LiveConfig, store, bars, first: int) -> dict[str, np.ndarray]:
    """``regime`` / ``sentiment`` of ``portfolio_backtest`` from the inputs the runner stored
    with each bar it decided (the warm-up bars before ``first`` decide nothing).

    The newest bar may lack them: the runner stores a bar before deciding on it, so a cycle
    running now (or cut short) has not written them yet; unknown labels and no news there
    change no closed trade (overlays act on entries, and an entry decided on the newest bar is
    still open where the data ends).
    """
    wanted = {"regime": config.portfolio.regimes, "sentiment": config.portfolio.sentiment}
    if all(table is None for table in wanted.values()):
        return {}
    stored = store.decided_inputs(config.name, bars.ts_ns, list(bars.symbols))
    lacking = np.flatnonzero(~stored.stored[:-1] & (bars.ts_ns[:-1] >= first))
    if len(lacking):
        raise DataError(
            f"{config.path or config.name}: runner {config.name!r} decided the bar of "
            f"{_day(int(bars.ts_ns[lacking[0]]))} (ts_ns {int(bars.ts_ns[lacking[0]])}) without "
            f"the overlay inputs it used ({len(lacking):,} such bars, decided before the store "
            "kept them): the backtest of its regime / sentiment overlay cannot be rebuilt"
        )
    return {name: getattr(stored, name) for name, table in wanted.items() if table is not None}


# ----------------------------------------------------------------------------- pairing
def _pair(live, tested: pd.DataFrame, intents, ts: np.ndarray, window_ns: int) -> list[dict]:
    free = {i: r for i, r in enumerate(tested.itertuples())}
    rows = []
    unmatched = []
    keyed = {(r.sleeve, r.symbol, r.direction, _ns(r.entry_time)): i for i, r in free.items()}
    for trade in sorted(live, key=lambda t: (t.entry_ts_ns, t.sleeve, t.symbol)):
        i = keyed.pop((trade.sleeve, trade.symbol, trade.direction, trade.entry_ts_ns), None)
        if i is None:
            unmatched.append(trade)
        else:
            rows.append(_matched(trade, free.pop(i), intents, timing=False))
    for trade in unmatched:
        near = [(abs(_ns(r.entry_time) - trade.entry_ts_ns), i) for i, r in free.items()
                if (r.sleeve, r.symbol, r.direction) == (trade.sleeve, trade.symbol,
                                                         trade.direction)
                and abs(_ns(r.entry_time) - trade.entry_ts_ns) <= window_ns]  # fmt: skip
        if near:
            rows.append(_matched(trade, free.pop(min(near)[1]), intents, timing=True))
        else:
            rows.append(_extra(trade))
    rows += [_missing(r, intents, ts) for r in free.values()]
    return sorted(rows, key=lambda r: (r["entry_ns"], r["sleeve"], r["symbol"]))


def _matched(trade, tested, intents, *, timing: bool) -> dict:
    d = 1.0 if trade.direction == "long" else -1.0
    q_live, q_bt = float(trade.qty), float(tested.units)
    in_live, in_bt = float(trade.entry_price), float(tested.entry_price)
    out_live, out_bt = float(trade.exit_price), float(tested.exit_price)
    fees_bt = float(tested.entry_fees + tested.exit_fees)
    exit_moved = trade.exit_ts_ns != _ns(tested.exit_time)
    causes = {
        "entry timing" if timing else "entry price": -d * q_live * (in_live - in_bt),
        "exit timing" if exit_moved else "exit price": d * q_live * (out_live - out_bt),
        "partial fill" if _partly_filled(trade, intents) else "size":
            d * (q_live - q_bt) * (out_bt - in_bt),
        "fees": -(float(trade.fees) - fees_bt),
    }  # fmt: skip
    # Zero when both sides book P&L as direction x units x price move - fees; kept visible.
    rest = float(trade.pnl) - float(tested.pnl) - sum(causes.values())
    causes["unexplained"] = rest if abs(rest) > 1e-9 * max(abs(float(tested.pnl)), 1.0) else 0.0
    return _row("matched", trade.sleeve, trade.symbol, trade.direction, trade.entry_ts_ns,
                trade.exit_ts_ns, q_live, q_bt, float(trade.pnl), float(tested.pnl),
                {k: v for k, v in causes.items() if v != 0.0},
                entry_slippage_bps=slippage_bps(in_live, in_bt, buying=d > 0),
                exit_slippage_bps=slippage_bps(out_live, out_bt, buying=d < 0),
                live_entry_price=in_live, backtest_entry_price=in_bt,
                live_exit_price=out_live, backtest_exit_price=out_bt)  # fmt: skip


def slippage_bps(price: float, reference: float, *, buying: bool) -> float:
    """How much worse ``price`` is than ``reference`` for a buy (``buying``) or a sell, in
    basis points of ``reference`` (negative: better)."""
    return (1.0 if buying else -1.0) * (price / reference - 1.0) * 1e4


def _extra(trade) -> dict:
    return _row("extra", trade.sleeve, trade.symbol, trade.direction, trade.entry_ts_ns,
                trade.exit_ts_ns, float(trade.qty), 0.0, float(trade.pnl), 0.0,
                {"extra trade": float(trade.pnl)}, reason="not in the backtest",
                live_entry_price=float(trade.entry_price))  # fmt: skip


def _missing(tested, intents, ts: np.ndarray) -> dict:
    entry_ns = _ns(tested.entry_time)
    at = int(np.searchsorted(ts, entry_ns, "left"))
    decided_ns = int(ts[at - 1]) if at > 0 else entry_ns
    side = "buy" if tested.direction == "long" else "sell"
    mine = [i for i in intents
            if (i.sleeve, i.symbol, i.side, i.bar_ts_ns) == (tested.sleeve, tested.symbol,
                                                             side, decided_ns)]  # fmt: skip
    reason = _why_missing(mine)
    return _row("missing", tested.sleeve, tested.symbol, tested.direction, entry_ns,
                _ns(tested.exit_time), 0.0, float(tested.units), 0.0, float(tested.pnl),
                {"missing trade": -float(tested.pnl)}, reason=reason,
                backtest_entry_price=float(tested.entry_price))  # fmt: skip


def _why_missing(intents) -> str:
    if not intents:
        return "not decided live (no order for that bar: a HALT, a guard, or other signals)"
    states = {i.state for i in intents}
    for state, why in (
        ("REJECTED", "rejected by the venue"),
        ("UNKNOWN", "unresolved at the venue"),
        ("CANCELLED", "cancelled before it filled"),
    ):
        if state in states:
            return why
    if all(i.filled_qty <= 0 for i in intents):
        return "sent, never filled"
    return "filled, but no closed trade recorded"


def _partly_filled(trade, intents) -> bool:
    """Whether the entry order of ``trade`` filled less than it asked (a venue's partial fill)."""
    side = "buy" if trade.direction == "long" else "sell"
    for intent in intents:
        if (intent.sleeve, intent.symbol, intent.side) == (trade.sleeve, trade.symbol, side) \
                and 0 < intent.filled_qty < intent.qty * (1 - 1e-9) \
                and intent.bar_ts_ns < trade.entry_ts_ns:  # fmt: skip
            return abs(intent.filled_qty - trade.qty) <= 1e-9 * max(trade.qty, 1.0)
    return False


def _row(kind, sleeve, symbol, direction, entry_ns, exit_ns, q_live, q_bt, pnl_live, pnl_bt,
         causes, **extra) -> dict:  # fmt: skip
    base = {
        "kind": kind, "sleeve": str(sleeve), "symbol": str(symbol), "direction": str(direction),
        "entry_ns": int(entry_ns), "exit_ns": int(exit_ns), "live_qty": q_live,
        "backtest_qty": q_bt, "live_pnl": pnl_live, "backtest_pnl": pnl_bt,
        "pnl_difference": pnl_live - pnl_bt, "causes": causes, "reason": "",
        "entry_slippage_bps": float("nan"), "exit_slippage_bps": float("nan"),
    }  # fmt: skip
    base.update(extra)
    return base


# ----------------------------------------------------------------------------- curves
def _equity(store, result, start: int) -> pd.DataFrame:
    """Backtest and live portfolio equity at the times the runner saved a snapshot."""
    tested = result.equity
    tested = tested[tested.index >= pd.Timestamp(start, tz="UTC")]
    snaps = [(s.ts_ns, s.equity) for s in store.equity_curve() if s.ts_ns >= start]
    live = pd.Series([e for _, e in snaps], index=pd.to_datetime([t for t, _ in snaps], utc=True),
                     name="live", dtype=float)  # fmt: skip
    frame = pd.DataFrame({"backtest": tested}).join(live, how="left")
    return frame


def plot(report: Divergence, path) -> None:
    """Backtest against live equity, and the P&L difference by cause, in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), height_ratios=[3, 2])
    report.equity["backtest"].plot(ax=top, label="backtest of the same bars", color="tab:blue")
    live = report.equity["live"].dropna()
    if len(live):
        live.plot(ax=top, label="live (store)", color="tab:orange")
    top.set_title(f"{report.runner}: live against the backtest, drift {report.drift_pct:+.3f}%")
    top.set_ylabel("equity")
    top.legend()
    causes = report.by_cause or {"no difference": 0.0}
    colors = ["tab:green" if v >= 0 else "tab:red" for v in causes.values()]
    bottom.barh(list(causes), list(causes.values()), color=colors)
    bottom.axvline(0.0, color="black", linewidth=0.8)
    bottom.set_xlabel("live minus backtest P&L by cause")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _day(ts_ns: int) -> str:
    return pd.Timestamp(int(ts_ns), tz="UTC").strftime("%Y-%m-%d %H:%M")


def _bps(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.2f} bps"


def _interval(ts: np.ndarray) -> int:
    return int(np.median(np.diff(ts))) if len(ts) > 1 else 0


def _ns(stamp) -> int:
    return int(pd.Timestamp(stamp).value)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
