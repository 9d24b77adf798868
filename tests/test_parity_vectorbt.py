"""Trade-by-trade parity with ``vectorbt.Portfolio.from_signals``, a peer we did not write.

QuantShift's own signals are fed to vectorbt; trades, equity curves and final equity must agree
to 1e-9 relative. How each rule is mapped:

* Next-open fills: vectorbt fills a signal on its own bar at ``price`` (an array per bar;
  ``np.inf`` would mean the close, ``-np.inf`` the open), so the signals are shifted one bar
  later and ``price=open``. Close fills: unshifted signals at the close. The equity curve is
  vectorbt's ``value()``: cash plus position marked at the close, as ours.
* ``fees=fees_bps / 1e4`` and ``slippage=slippage_bps / 1e4``: both charge the same fraction of
  notional and move the fill price the same way as ours.
* Sizing: ``size=np.inf`` (amount) buys with all the cash, fees included, which is our fraction
  sizing at size=1: units = cash / (price * (1 + slippage) * (1 + fee rate)). A short entry
  with infinite size is turned into "100% of free cash" by vectorbt, the same amount.
  ``size_type="percent"`` cannot be used: vectorbt refuses it for reversals.
* direction: long -> "longonly", short -> "shortonly", both -> "both" (vectorbt's exits become
  short entries). A reversal is one vectorbt order (sell the long and the new short together)
  sized from the cash after closing, which gives exactly our exit-then-enter units and fees;
  vectorbt splits its fees between the two trades by size, as we charge them.
* Trade returns: vectorbt divides P&L by the entry notional, we by notional plus entry fees;
  the test compares our ``return_pct`` with vectorbt's P&L over our denominator.
* Stops: ``sl_stop``/``tp_stop`` are fractions of the entry price, so our per-entry distances
  (read at the signal bar) become per-bar fractions at the bar the entry fills:
  distance / entry fill price, with ``stop_entry_price="fillprice"`` (the price after
  slippage) and ``stop_exit_price="stopmarket"`` (the stop price, then slippage, as ours).
  A level an open gaps through fills at the open in both engines, and a bar touching both
  levels fills the stop in both.

Documented differences of stop semantics (checked, not just stated):

1. vectorbt checks a stop from the bar after the entry; ours is live on the entry bar right
   after a next-open fill, so an exit on the entry bar happens one bar later in vectorbt.
   (With close fills neither engine checks the entry bar.)
2. vectorbt checks stops before the bar's signals; with next-open fills the shifted exit signal
   is an order at that bar's open, which in our model executes before the bar's range can
   touch a level. If the range then touches a level, vectorbt exits at the level, we at the open.
3. On a bar that opens beyond the take-profit and then trades through the stop, vectorbt fills
   the stop at the stop price; we fill the take-profit at the open.
4. A stop exit replaces the bar's signals in vectorbt, so with close fills an entry signal on
   the bar a stop closed the position waits for a later bar; we re-enter at that close.

``test_each_stopped_trade_matches_in_isolation`` replays every one of our trades alone (one
vectorbt column per trade, starting with our cash at its entry) and requires each to agree
exactly unless it is one of cases 1-3; case 4 is about sequences of trades and is checked by
``test_whole_run_first_differs_at_a_documented_case``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

from quantshift.data import load_bars
from quantshift.data.bars import Bars
from quantshift.engine import backtest
from quantshift.engine.fused import kernels_for
from quantshift.strategies import get_strategy

REL = 1e-9
CASH = 100_000.0
FIELDS = ("open", "high", "low", "close", "volume")
DIRECTIONS = {"long": "longonly", "short": "shortonly", "both": "both"}

DATASETS = {
    "sp500": "builtin:sp500",  # 5031 daily bars, 1999-2018
    "synthetic": "synthetic:symbols=1,bars=2000,seed=7",  # with missing bars
}


@pytest.fixture(scope="module", params=list(DATASETS))
def bars(request) -> Bars:
    return load_bars(DATASETS[request.param])


class Run:
    """Our backtest and the matching vectorbt portfolio, on one symbol."""

    def __init__(self, bars: Bars, strategy_name: str, params, cfg):
        self.cfg = {"fill": "next-open", "direction": "long", **cfg}
        strategy = get_strategy(strategy_name)
        self.frame = bars.to_frame()  # the symbol's own bars, as both engines see them
        arrays = [np.ascontiguousarray(self.frame[f].to_numpy(np.float64)) for f in FIELDS]
        sig = kernels_for(strategy).signals(*arrays, strategy.vector(params))
        self.entries, self.exits, self.stop_dist, self.take_profit_dist, _ = sig
        self.ours = backtest(strategy, bars, params, **cfg)
        self.own_equity = self.ours.equity.iloc[:, 0].to_numpy()[bars.valid[:, 0]]
        self.next_open = self.cfg["fill"] == "next-open"
        self.slippage_rate = self.cfg.get("slippage_bps", 0.0) / 1e4

    def shifted(self, a: np.ndarray, fill_value) -> np.ndarray:
        """Signal-bar values moved (along time) to the bar their orders fill at."""
        if not self.next_open:
            return a
        out = np.empty_like(a)
        out[0] = fill_value
        out[1:] = a[:-1]
        return out

    def portfolio(self, entries=None, init_cash=CASH, **extra) -> vbt.Portfolio:
        """vectorbt on our signals; ``entries`` may have one column per replayed trade."""
        f = self.frame
        price = f["open"] if self.next_open else f["close"]
        entries = self.shifted(self.entries if entries is None else entries, False)
        wrap = pd.DataFrame if entries.ndim == 2 else pd.Series
        return vbt.Portfolio.from_signals(
            f["close"],
            entries=wrap(entries, index=f.index),
            exits=pd.Series(self.shifted(self.exits, False), f.index),
            price=price,
            fees=self.cfg.get("fees_bps", 0.0) / 1e4,
            slippage=self.slippage_rate,
            size=np.inf,
            init_cash=init_cash,
            direction=DIRECTIONS[self.cfg["direction"]],
            **extra,
        )

    def stop_portfolio(self, entries=None, init_cash=CASH) -> vbt.Portfolio:
        """Long-only portfolio with our stop and take-profit distances as fractions."""
        f = self.frame
        price = (f["open"] if self.next_open else f["close"]).to_numpy()
        entry_fill = price * (1 + self.slippage_rate)
        stop = self.shifted(self.stop_dist, np.nan) / entry_fill
        target = self.shifted(self.take_profit_dist, np.nan) / entry_fill
        return self.portfolio(
            entries,
            init_cash,
            sl_stop=pd.Series(stop, f.index),
            tp_stop=pd.Series(target, f.index),
            stop_entry_price="fillprice",
            stop_exit_price="stopmarket",
            open=f["open"],
            high=f["high"],
            low=f["low"],
        )


def vbt_trades(pf: vbt.Portfolio, index: pd.DatetimeIndex) -> pd.DataFrame:
    rec = pf.trades.records
    out = pd.DataFrame(
        {
            "col": rec["col"].to_numpy(),
            "direction": np.where(rec["direction"].to_numpy() == 0, "long", "short"),
            "entry_time": index[rec["entry_idx"].to_numpy()],
            "exit_time": index[rec["exit_idx"].to_numpy()],
            "entry_price": rec["entry_price"].to_numpy(),
            "exit_price": rec["exit_price"].to_numpy(),
            "units": rec["size"].to_numpy(),
            "entry_fees": rec["entry_fees"].to_numpy(),
            "exit_fees": rec["exit_fees"].to_numpy(),
            "pnl": rec["pnl"].to_numpy(),
            "open": rec["status"].to_numpy() == 0,
        }
    )
    # Our return convention: P&L over the cash committed (notional plus entry fees).
    out["return_pct"] = 100 * out["pnl"] / (out["units"] * out["entry_price"] + out["entry_fees"])
    return out


NUMBERS = ("entry_price", "exit_price", "units", "entry_fees", "exit_fees", "pnl", "return_pct")


def same_trade(ours: pd.Series, theirs: pd.Series) -> bool:
    if (ours["exit_reason"] == "open") != theirs["open"]:
        return False
    for col in ("direction", "entry_time", "exit_time"):
        if ours[col] != theirs[col]:
            return False
    # abs: a P&L that is 0 one way can be 1e-12 the other way.
    return all(np.isclose(ours[c], theirs[c], rtol=REL, atol=1e-9) for c in NUMBERS)


def compare_trades(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    assert len(ours) == len(theirs), f"{len(ours)} trades vs vectorbt's {len(theirs)}"
    bad = [k for k in range(len(ours)) if not same_trade(ours.iloc[k], theirs.iloc[k])]
    assert not bad, f"trade {bad[0]} differs:\n{ours.iloc[bad[0]]}\n{theirs.iloc[bad[0]]}"


# ----------------------------------------------------------------- signals only

COSTS = {"costs": {"fees_bps": 10.0, "slippage_bps": 5.0}, "free": {}}
STRATEGIES = [
    ("ma_crossover", None),
    ("ma_crossover", {"fast": 10, "slow": 50}),
    ("rsi_reversion", None),
]


@pytest.mark.parametrize("direction", ["long", "both"])
@pytest.mark.parametrize("costs", list(COSTS))
@pytest.mark.parametrize(("strategy", "params"), STRATEGIES)
def test_signal_trades_and_equity_match(bars, strategy, params, costs, direction):
    cfg = {**COSTS[costs], "direction": direction, "use_stops": False}
    run = Run(bars, strategy, params, cfg)
    pf = run.portfolio()
    assert (run.ours.trades["exit_reason"] != "open").sum() >= 10, "too few trades to compare"
    if direction == "both":
        assert (run.ours.trades["exit_reason"] == "reverse").sum() >= 10
    compare_trades(run.ours.trades, vbt_trades(pf, run.frame.index))
    np.testing.assert_allclose(pf.value().to_numpy(), run.own_equity, rtol=REL)
    assert pf.final_value() == pytest.approx(run.ours.metrics["final_equity"], rel=REL)


@pytest.mark.parametrize(
    "settings", [{"fill": "close"}, {"fill": "close", "direction": "both"}, {"direction": "short"}]
)
def test_close_fills_and_shorts_match(bars, settings):
    run = Run(bars, "ma_crossover", None, {**COSTS["costs"], **settings})
    pf = run.portfolio()
    compare_trades(run.ours.trades, vbt_trades(pf, run.frame.index))
    np.testing.assert_allclose(pf.value().to_numpy(), run.own_equity, rtol=REL)


# ----------------------------------------------------------------- stops


def documented_case(run: Run, k: int) -> str | None:
    """Name the documented difference (see the module docstring) our trade ``k`` shows."""
    trades = run.ours.trades
    row = trades.iloc[k]
    f = run.frame
    entry_bar = f.index.get_loc(row["entry_time"])
    exit_bar = f.index.get_loc(row["exit_time"])
    signal_bar = entry_bar - 1 if run.next_open else entry_bar
    stop = row["entry_price"] - run.stop_dist[signal_bar]
    target = row["entry_price"] + run.take_profit_dist[signal_bar]
    bar = f.iloc[exit_bar]
    reason = row["exit_reason"]
    if run.next_open and row["bars_held"] == 0 and reason in ("stop_loss", "take_profit"):
        return "1: exit on the entry bar"
    touched = bar["low"] <= stop or bar["high"] >= target
    if run.next_open and reason == "signal" and touched:
        return "2: exit signal at an open, then a level touched"
    if reason == "take_profit" and bar["open"] >= target and bar["low"] <= stop:
        return "3: open beyond the target, then through the stop"
    if k > 0 and not run.next_open:
        before = trades.iloc[k - 1]
        if before["exit_time"] == row["entry_time"] and before["exit_reason"] != "signal":
            return "4: re-entry on a stop's bar"
    return None


STOP_CASES = {
    "next-open": {"fees_bps": 10.0, "slippage_bps": 5.0},
    "close": {"fees_bps": 10.0, "slippage_bps": 5.0, "fill": "close"},
    "next-open-tight": {"fees_bps": 10.0, "slippage_bps": 5.0},
}
TIGHT = {"stop_atr": 1.0, "take_profit_atr": 1.5}


@pytest.mark.parametrize("case", list(STOP_CASES))
def test_each_stopped_trade_matches_in_isolation(bars, case):
    params = TIGHT if case.endswith("tight") else None
    run = Run(bars, "rsi_reversion", params, {**STOP_CASES[case], "use_stops": True})
    ours = run.ours.trades
    reasons = ours["exit_reason"].value_counts()
    assert reasons.get("stop_loss", 0) >= 5 and reasons.get("take_profit", 0) >= 5
    # One column per trade: only that trade's entry signal, starting with the cash it had.
    index = run.frame.index
    signal_bars = index.get_indexer(ours["entry_time"]) - (1 if run.next_open else 0)
    entries = np.zeros((len(index), len(ours)), dtype=bool)
    entries[signal_bars, np.arange(len(ours))] = True
    cash = (ours["units"] * ours["entry_price"] + ours["entry_fees"]).to_numpy()
    theirs = vbt_trades(run.stop_portfolio(entries, cash), index)
    first = theirs.groupby("col").head(1).set_index("col")
    assert list(first.index) == list(range(len(ours))), "a trade did not enter in vectorbt"
    unexplained, explained = [], []
    for k in range(len(ours)):
        if same_trade(ours.iloc[k], first.loc[k]):
            continue
        # Entry side always agrees; only the exit may differ, and only for a documented reason.
        assert first.loc[k, "entry_time"] == ours.iloc[k]["entry_time"], k
        for col in ("entry_price", "units", "entry_fees"):
            assert first.loc[k, col] == pytest.approx(ours.iloc[k][col], rel=REL), (k, col)
        label = documented_case(run, k)
        (explained if label else unexplained).append((k, label))
    assert not unexplained, f"trades differ without a documented reason: {unexplained}"
    # The documented cases must stay exceptions, or the comparison would prove little.
    assert len(explained) <= len(ours) / 2, f"most trades differ: {explained}"
    if run.next_open and params is TIGHT:
        assert any(label.startswith("1") for _, label in explained), "case 1 not exercised"


@pytest.mark.parametrize("fill", ["next-open", "close"])
def test_whole_run_first_differs_at_a_documented_case(bars, fill):
    cfg = {"fees_bps": 10.0, "slippage_bps": 5.0, "fill": fill, "use_stops": True}
    run = Run(bars, "rsi_reversion", None, cfg)
    ours = run.ours.trades
    theirs = vbt_trades(run.stop_portfolio(), run.frame.index)
    n = min(len(ours), len(theirs))
    differ = [k for k in range(n) if not same_trade(ours.iloc[k], theirs.iloc[k])]
    if not differ and len(ours) == len(theirs):
        equity = run.stop_portfolio().value().to_numpy()
        np.testing.assert_allclose(equity, run.own_equity, rtol=REL)
        return
    first = differ[0] if differ else n
    assert first >= 1, "the runs differ from the first trade"
    assert documented_case(run, first) is not None, f"trade {first} differs for no known reason"
