"""The decision layer's correlation and sector limits, and its regime and sentiment inputs.

Each rule is pinned by hand-computed cases through ``decide``; the rolling correlation is checked
against pandas, and the limits in the portfolio backtest against an oracle built from its own
tables with pandas.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from probe import run_json
from test_live_runner import assert_same_trades

import quantshift as qs
from live.config import parse_config
from live.runner import Runner
from live.store import Store
from quantshift.data import load_bars
from quantshift.errors import ConfigError
from quantshift.portfolio import (
    REGIMES,
    BarSignals,
    PortfolioConfig,
    PortfolioState,
    RegimeOverlay,
    RegimeRule,
    RiskLimits,
    SectorMap,
    SentimentFilter,
    Sleeve,
    decide,
    fill_orders,
    portfolio_backtest,
)
from quantshift.portfolio.limit_kernels import pair_correlation_nb, window_returns_nb
from quantshift.tables import Table

SYMBOLS = ("AAA", "BBB", "CCC")
NO_LIMITS = dict.fromkeys(
    (
        "max_heat_pct",
        "max_position_pct",
        "max_gross_exposure_pct",
        "daily_loss_limit_pct",
        "max_drawdown_pct",
    )
)
DAY = 86_400 * 10**9
SYNTHETIC = qs.load_bars("synthetic:symbols=5,bars=500,seed=7")
BEAR = REGIMES.index("bear_trending")


def config(limits=None, **overlay) -> PortfolioConfig:
    """One sleeve "a" on three symbols, a quarter of its equity per entry, filled at the close,
    and no limits but ``limits``."""
    return PortfolioConfig(
        sleeves=(
            Sleeve(
                strategy="ma_crossover",
                symbols=SYMBOLS,
                allocation=1.0,
                name="a",
                settings={"size": 0.25, "direction": "both"},
            ),
        ),
        sim=qs.SimConfig(fill="close"),
        limits=RiskLimits(**(NO_LIMITS | (limits or {}))),
        **overlay,
    )


def bar(t, close, longs=(), shorts=(), stop=math.nan, recent=None) -> BarSignals:
    """Bar ``t``'s signals: entries for ``longs``, short entries for ``shorts``."""
    shape = (1, len(SYMBOLS))
    entries, exits = np.zeros(shape, bool), np.zeros(shape, bool)
    for symbol in longs:
        entries[0, SYMBOLS.index(symbol)] = True
    for symbol in shorts:
        exits[0, SYMBOLS.index(symbol)] = True  # direction "both": a flat sleeve goes short
    close = np.asarray(close, dtype=float)
    return BarSignals(
        ts_ns=t * DAY,
        close=close,
        entries=entries,
        exits=exits,
        stop_distance=np.full(shape, stop),
        take_profit_distance=np.full(shape, math.nan),
        trail_distance=np.full(shape, math.nan),
        recent_close=None if recent is None else np.asarray(recent, dtype=float),
    )


def neutral_inputs(cfg) -> dict:
    out = {}
    if cfg.regimes is not None:
        out["regime"] = -1
    if cfg.sentiment is not None:
        out["sentiment"] = {}
    return out


def holding(cfg, close, longs=(), shorts=()) -> PortfolioState:
    """The state after entries in ``longs``/``shorts`` filled at ``close`` on day 0."""
    state = PortfolioState.initial(cfg)
    first = bar(0, close, longs, shorts, recent=np.asarray(close, dtype=float)[None, :])
    decision = decide(state, first, cfg, **neutral_inputs(cfg))
    return fill_orders(decision.state, decision.orders, close, 0, cfg).state


def entries(decision) -> dict:
    return {o.symbol: o for o in decision.orders if o.action == "entry"}


def vetoed(decision) -> dict:
    return {v.symbol: v.reason for v in decision.vetoes}


# ---------------------------------------------------------------------- correlation
# BBB moves as AAA does (correlation 1); CCC's returns are AAA's negated (correlation -1).
_A = np.array([100.0, 101.0, 99.0, 102.0, 100.0])
_RETURNS = _A[1:] / _A[:-1] - 1.0
_C = 20.0 * np.concatenate([[1.0], np.cumprod(1.0 - _RETURNS)])
RECENT = np.column_stack([_A, _A / 2.0, _C])
CLOSE = RECENT[-1]


def correlation_config(limit=0.7, window=4):
    return config({"max_position_correlation": limit, "correlation_window_bars": window})


def test_the_hand_series_have_the_correlations_they_are_built_for():
    returns = RECENT[1:] / RECENT[:-1] - 1.0
    assert np.corrcoef(returns.T)[0, 1] == pytest.approx(1.0, abs=1e-12)
    assert np.corrcoef(returns.T)[0, 2] == pytest.approx(-1.0, abs=1e-12)


def test_a_long_beside_a_correlated_long_is_skipped_and_an_anticorrelated_one_passes():
    cfg = correlation_config()
    state = holding(cfg, CLOSE, longs=["AAA"])
    decision = decide(state, bar(1, CLOSE, longs=["BBB", "CCC"], recent=RECENT), cfg)
    assert vetoed(decision) == {"BBB": "max_position_correlation"}
    assert set(entries(decision)) == {"CCC"}


def test_sides_count_a_short_against_a_correlated_long_is_a_hedge():
    cfg = correlation_config()
    state = holding(cfg, CLOSE, longs=["AAA"])
    decision = decide(state, bar(1, CLOSE, shorts=["BBB", "CCC"], recent=RECENT), cfg)
    # Short BBB: -1 x +1 x 1 = -1 passes; short CCC: -1 x +1 x -1 = +1 is the same bet again.
    assert vetoed(decision) == {"CCC": "max_position_correlation"}
    assert entries(decision)["BBB"].side == "sell"


def test_entries_earlier_in_the_same_decision_count_as_held():
    cfg = correlation_config()
    decision = decide(
        PortfolioState.initial(cfg), bar(1, CLOSE, longs=["AAA", "BBB"], recent=RECENT), cfg
    )
    assert set(entries(decision)) == {"AAA"}
    assert vetoed(decision) == {"BBB": "max_position_correlation"}


def test_a_position_exiting_on_the_bar_no_longer_counts():
    cfg = correlation_config()
    state = holding(cfg, CLOSE, longs=["AAA"])
    signals = bar(1, CLOSE, longs=["BBB"], shorts=["AAA"], recent=RECENT)
    decision = decide(state, signals, cfg)  # AAA reverses to short; BBB long hedges it
    assert [(o.symbol, o.action) for o in decision.orders] == [
        ("AAA", "exit"),
        ("AAA", "entry"),
        ("BBB", "entry"),
    ]


def test_the_limit_is_strict_and_an_unknown_correlation_never_skips():
    state = holding(correlation_config(limit=1.0), CLOSE, longs=["AAA"])
    decision = decide(state, bar(1, CLOSE, longs=["BBB"], recent=RECENT), correlation_config(1.0))
    assert set(entries(decision)) == {"BBB"}  # a correlation of 1 does not exceed 1
    cfg = correlation_config()
    state = holding(cfg, CLOSE, longs=["AAA"])
    one_return = bar(1, CLOSE, longs=["BBB"], recent=RECENT[-2:])  # needs 2 of 4 returns
    assert set(entries(decide(state, one_return, cfg))) == {"BBB"}
    two_returns = bar(1, CLOSE, longs=["BBB"], recent=RECENT[-3:])
    assert vetoed(decide(state, two_returns, cfg)) == {"BBB": "max_position_correlation"}


def test_the_correlation_limit_refuses_signals_without_recent_closes():
    cfg = correlation_config()
    with pytest.raises(ConfigError, match=r"give BarSignals\.recent_close"):
        decide(PortfolioState.initial(cfg), bar(1, CLOSE, longs=["BBB"]), cfg)
    with pytest.raises(ConfigError, match="closes ending with this bar's"):
        decide(PortfolioState.initial(cfg), bar(1, CLOSE, recent=RECENT[:-1]), cfg)


def test_only_the_window_counts():
    cfg = correlation_config(window=4)
    state = holding(cfg, CLOSE, longs=["AAA"])
    # Older rows where BBB moved against AAA are outside the 4 returns read.
    older = np.array([[100.0, 50.0, 20.0], [90.0, 60.0, 20.0], [100.0, 50.0, 20.0]])
    recent = np.vstack([older, RECENT])
    decision = decide(state, bar(1, CLOSE, longs=["BBB"], recent=recent), cfg)
    assert vetoed(decision) == {"BBB": "max_position_correlation"}
    wide = correlation_config(window=7)
    state = holding(wide, CLOSE, longs=["AAA"])
    assert set(entries(decide(state, bar(1, CLOSE, longs=["BBB"], recent=recent), wide))) == {"BBB"}


@pytest.mark.parametrize("window", [5, 20])
def test_rolling_correlation_equals_pandas(window):
    rng = np.random.default_rng(3)
    n = 120
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, (n, 2)), axis=0))
    close[:, 1] = 0.6 * close[:, 0] + 0.4 * close[:, 1]
    close[rng.random((n, 2)) < 0.08] = np.nan  # missing bars break the returns around them
    min_returns = max(2, (window + 1) // 2)
    returns = pd.DataFrame(close).pct_change(fill_method=None)
    expected = returns[0].rolling(window, min_periods=min_returns).corr(returns[1]).to_numpy()
    got = np.array(
        [
            pair_correlation_nb(window_returns_nb(close[: t + 1], window), 0, 1, min_returns)
            for t in range(n)
        ]
    )
    assert np.isfinite(expected).sum() > n // 2
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, equal_nan=True)


# ---------------------------------------------------------------------- sectors
def sector_config(tmp_path, cap=30.0, symbols=SYMBOLS):
    path = tmp_path / "sectors.csv"
    path.write_text("symbol,sector\nAAA,tech\nBBB,tech\nCCC,energy\n")
    return config({"max_sector_exposure_pct": cap}, sectors=SectorMap.from_csv(path))


def test_the_sector_cap_reduces_an_entry_to_the_room_left(tmp_path):
    cfg = sector_config(tmp_path)
    close = np.array([100.0, 50.0, 20.0])
    state = holding(cfg, close, longs=["AAA"])  # 250 units: 25,000 of tech
    decision = decide(state, bar(1, close, longs=["BBB", "CCC"]), cfg)
    bbb, ccc = entries(decision)["BBB"], entries(decision)["CCC"]
    # Tech has 30,000 - 25,000 = 5,000 left: 100 BBB instead of 25,000 / 50 = 500.
    assert bbb.units == pytest.approx(100.0) and bbb.max_units == pytest.approx(100.0)
    assert bbb.capped_by == "max_sector_exposure"
    assert ccc.units == pytest.approx(1250.0) and ccc.capped_by is None


def test_a_short_counts_toward_its_sector_and_a_full_sector_vetoes(tmp_path):
    cfg = sector_config(tmp_path, cap=25.0)
    close = np.array([100.0, 50.0, 20.0])
    state = holding(cfg, close, shorts=["AAA"])  # -250 units: 25,000 of tech, the cap
    decision = decide(state, bar(1, close, longs=["BBB"], shorts=["CCC"]), cfg)
    assert vetoed(decision) == {"BBB": "max_sector_exposure"}
    assert entries(decision)["CCC"].units == pytest.approx(1250.0)


def test_a_symbol_missing_from_the_sector_file_is_an_error_naming_it_and_the_file(tmp_path):
    path = tmp_path / "sectors.csv"
    path.write_text("symbol,sector\nAAA,tech\nCCC,energy\n")
    with pytest.raises(ConfigError, match=r"sectors\.csv: no sector for symbol 'BBB'"):
        config({"max_sector_exposure_pct": 30.0}, sectors=SectorMap.from_csv(path))
    with pytest.raises(ConfigError, match="needs a sector map"):
        config({"max_sector_exposure_pct": 30.0})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ticker,sector\nAAA,tech\n", "needs columns symbol and sector"),
        ("symbol,sector\nAAA,tech\nAAA,energy\n", "line 3: symbol 'AAA' listed twice"),
        ("symbol,sector\nAAA,\n", "line 2: empty symbol or sector"),
    ],
)
def test_a_bad_sector_file_is_refused_with_its_line(tmp_path, text, message):
    path = tmp_path / "sectors.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        SectorMap.from_csv(path)


def test_a_config_file_reads_its_sector_file_relative_to_itself(tmp_path):
    (tmp_path / "sectors.csv").write_text("symbol,sector\nAAA,tech\nBBB,tech\n")
    raw = config().to_dict()
    raw["limits"]["max_sector_exposure_pct"] = 30.0
    raw["sectors"] = {"file": "sectors.csv", "map": {"CCC": "energy"}}
    built = PortfolioConfig.from_dict(raw, "portfolio.toml", base_dir=tmp_path)
    assert built.sectors.sectors == {"AAA": "tech", "BBB": "tech", "CCC": "energy"}
    assert PortfolioConfig.from_dict(built.to_dict()) == built
    raw["sectors"] = {"file": "sectors.csv"}
    with pytest.raises(ConfigError, match=r"portfolio.toml: .*sectors\.csv: no sector.*'CCC'"):
        PortfolioConfig.from_dict(raw, "portfolio.toml", base_dir=tmp_path)
    raw["sectors"] = {"file": "sectors.csv", "map": {"BBB": "energy", "CCC": "energy"}}
    with pytest.raises(ConfigError, match=r"\[sectors.map\] BBB: is 'energy' here but 'tech'"):
        PortfolioConfig.from_dict(raw, "portfolio.toml", base_dir=tmp_path)


LIVE_EXAMPLE = Path(__file__).resolve().parents[1] / "live" / "examples" / "paper_sp500.toml"


def test_a_live_config_reads_the_overlay_tables_and_its_sector_file_beside_it(tmp_path):
    raw = tomllib.loads(LIVE_EXAMPLE.read_text())
    symbols = PortfolioConfig.from_dict(
        {"sleeves": raw["sleeves"]}
    ).symbols  # the example's symbols
    (tmp_path / "sectors.csv").write_text(
        "symbol,sector\n" + "".join(f"{s},index\n" for s in symbols[1:])
    )
    raw["risk"] |= {"max_position_correlation": 0.7, "max_sector_exposure_pct": 30.0}
    raw["sectors"] = {"file": "sectors.csv", "map": {symbols[0]: "other"}}
    raw["regimes"] = {"bear_trending": {"exposure_scale": 0.5, "stop_scale": 0.75}}
    raw["sentiment"] = {"min_score": -0.3}
    # Where the overlay's inputs come from (read by the runner at start, not here).
    raw["regime_model"] = {"name": "quantshift.regime.example", "version": 2}
    raw["news"] = {"file": "news.csv"}
    path = tmp_path / "live.toml"
    loaded = parse_config(raw, source=str(path), path=path)
    portfolio = loaded.portfolio
    assert portfolio.limits.max_position_correlation == 0.7
    assert portfolio.sectors.sectors[symbols[-1]] == "index"
    assert portfolio.regimes.rules["bear_trending"].stop_scale == 0.75
    assert portfolio.sentiment == SentimentFilter(min_score=-0.3)
    assert portfolio.warmup_bars() >= 61
    assert loaded.regime_model.version == "2" and loaded.news.file == str(tmp_path / "news.csv")
    raw["sectors"] = {"file": "sectors.csv"}
    with pytest.raises(ConfigError, match=rf"sectors\.csv: no sector for symbol '{symbols[0]}'"):
        parse_config(raw, source=str(path), path=path)
    raw["sectors"] = {"file": "sectors.csv", "map": {symbols[0]: "other"}}
    raw["runner"]["warmup_bars"] = 30
    with pytest.raises(
        ConfigError, match=r"\[runner\] warmup_bars: the correlation limit reads 61"
    ):
        parse_config(raw, source=str(path), path=path)


def test_the_live_runner_applies_the_limits_as_the_backtest_does(tmp_path):
    """`live run` on the paper broker, unchanged, with the correlation and sector limits in its
    config: the same trades as the portfolio backtest, correlation vetoes included."""
    raw = tomllib.loads(LIVE_EXAMPLE.read_text())
    raw["store"]["url"] = f"sqlite:///{tmp_path}/state.db"
    raw["metrics"]["enabled"] = False
    raw["feed"].update(start="2016-03-01", end="2016-12-01")
    raw["risk"] |= {
        "max_position_correlation": 0.7,
        "correlation_window_bars": 30,
        "max_sector_exposure_pct": 60.0,
    }
    raw["sectors"] = {"map": {"SP500": "us", "NASDAQ": "us"}}
    raw["costs"]["size"] = 0.5  # see tests/test_live_runner.py, assert_same_trades
    config = parse_config(raw, source="live.toml")
    summary = Runner(config).run()
    assert summary.ended == "replay finished"
    with Store.open(config.store_url) as store:
        live = sorted(
            (t.sleeve, t.symbol, t.direction, t.entry_ts_ns, t.exit_ts_ns, t.entry_price,
             t.exit_price, t.qty, t.pnl, t.exit_reason)
            for t in store.trades()
        )  # fmt: skip
    bars = load_bars(
        config.feed.source, symbols=list(config.portfolio.symbols), start="2016-03-01",
        end="2016-12-01",
    )  # fmt: skip
    result = portfolio_backtest(config.portfolio, bars)
    closed = result.trades[result.trades["exit_reason"] != "open"]
    backtest = sorted(
        (r.sleeve, r.symbol, r.direction, r.entry_time.value, r.exit_time.value, r.entry_price,
         r.exit_price, r.units, r.pnl, r.exit_reason)
        for r in closed.itertuples()
    )  # fmt: skip
    assert len(live) > 0
    assert_same_trades(live, backtest)
    assert (result.vetoes["reason"] == "max_position_correlation").any()


# ---------------------------------------------------------------------- regimes
def regime_config(**rule) -> PortfolioConfig:
    rules = {"bear_trending": RegimeRule(**rule)}
    return config({"max_gross_exposure_pct": 100.0}, regimes=RegimeOverlay(rules))


def test_a_regime_scales_its_sleeve_and_tightens_the_stop():
    cfg = regime_config(allocation={"a": 0.5}, stop_scale=0.75)
    state = PortfolioState.initial(cfg)
    close = np.array([100.0, 50.0, 20.0])
    signals = bar(1, close, longs=["AAA"], stop=4.0)
    bear = entries(decide(state, signals, cfg, regime=BEAR))["AAA"]
    assert bear.units == pytest.approx(125.0) and bear.max_units == pytest.approx(125.0)
    assert bear.capped_by == "regime" and bear.stop_distance == pytest.approx(3.0)
    for other in (REGIMES.index("bull_trending"), -1, math.nan):
        plain = entries(decide(state, signals, cfg, regime=other))["AAA"]
        assert plain.units == pytest.approx(250.0) and plain.stop_distance == 4.0
        assert plain.capped_by is None and plain.max_units == pytest.approx(1000.0)
    by_name = entries(decide(state, signals, cfg, regime="bear_trending"))["AAA"]
    assert by_name.units == pytest.approx(125.0)


def test_a_regime_scales_the_gross_exposure_cap():
    cfg = regime_config(exposure_scale=0.3)
    close = np.array([100.0, 50.0, 20.0])
    state = holding(cfg, close, longs=["AAA"])  # 25,000 gross
    order = entries(decide(state, bar(1, close, longs=["BBB"]), cfg, regime=BEAR))["BBB"]
    assert order.units == pytest.approx(100.0)  # (0.3 x 100,000 - 25,000) / 50
    assert order.capped_by == "regime"
    order = entries(decide(state, bar(1, close, longs=["BBB"]), cfg, regime=0))["BBB"]
    assert order.units == pytest.approx(500.0) and order.capped_by is None


def test_a_zero_allocation_vetoes_and_per_symbol_labels_apply_to_their_symbol():
    cfg = regime_config(allocation={"a": 0.0})
    close = np.array([100.0, 50.0, 20.0])
    signals = bar(1, close, longs=["AAA", "BBB"])
    decision = decide(PortfolioState.initial(cfg), signals, cfg, regime={"AAA": BEAR})
    assert vetoed(decision) == {"AAA": "regime"}
    assert set(entries(decision)) == {"BBB"}
    decision = decide(PortfolioState.initial(cfg), signals, cfg, regime=[0, BEAR, -1])
    assert vetoed(decision) == {"BBB": "regime"}


def test_the_legacy_table_favours_what_it_says():
    legacy = RegimeOverlay.legacy()
    alloc = {name: rule.allocation for name, rule in legacy.rules.items()}
    assert max(alloc["bull_trending"], key=alloc["bull_trending"].get) == "breakout_momentum"
    assert max(alloc["low_volatility"], key=alloc["low_volatility"].get) == "breakout_momentum"
    assert max(alloc["high_volatility"], key=alloc["high_volatility"].get) == "rsi_reversion"
    assert max(alloc["range_bound"], key=alloc["range_bound"].get) == "bollinger_bounce"
    bear = legacy.rules["bear_trending"]
    assert max(bear.allocation.values()) < 1 and bear.exposure_scale < 1 and bear.stop_scale < 1
    assert RegimeOverlay.from_table(Table(legacy.to_dict(), "x")) == legacy


# ---------------------------------------------------------------------- sentiment
SENTIMENT = SentimentFilter(min_score=-0.5, size_scaling=0.5)


@pytest.mark.parametrize(
    ("side", "score", "units", "capped_by"),
    [
        ("long", -0.6, None, "sentiment"),  # below the threshold: vetoed
        ("long", -0.4, 200.0, "sentiment"),  # 250 x (1 - 0.5 x 0.4)
        ("long", 0.9, 250.0, None),  # good news never enlarges
        ("long", math.nan, 250.0, None),  # no news
        ("short", 0.4, 200.0, "sentiment"),  # good news is adverse to a short
        ("short", 0.6, None, "sentiment"),
        ("short", -0.9, 250.0, None),
    ],
)
def test_sentiment_vetoes_and_scales_by_the_side_aligned_score(side, score, units, capped_by):
    cfg = config(sentiment=SENTIMENT)
    close = np.array([100.0, 50.0, 20.0])
    signals = bar(1, close, **{"longs" if side == "long" else "shorts": ["AAA"]})
    decision = decide(PortfolioState.initial(cfg), signals, cfg, sentiment={"AAA": score})
    if units is None:
        assert vetoed(decision) == {"AAA": "sentiment"} and not decision.orders
    else:
        order = entries(decision)["AAA"]
        assert order.units == pytest.approx(units) and order.capped_by == capped_by


def test_regime_and_sentiment_multiply_and_the_regime_is_named():
    cfg = config(
        {"max_gross_exposure_pct": 100.0},
        regimes=RegimeOverlay({"bear_trending": RegimeRule(allocation={"a": 0.5})}),
        sentiment=SENTIMENT,
    )
    close = np.array([100.0, 50.0, 20.0])
    decision = decide(
        PortfolioState.initial(cfg),
        bar(1, close, longs=["AAA"]),
        cfg,
        regime=BEAR,
        sentiment=[-0.4, math.nan, math.nan],
    )
    order = entries(decision)["AAA"]
    assert order.units == pytest.approx(100.0) and order.capped_by == "regime"


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"regimes": {"crash": {}}}, "unknown key; allowed: bear_trending, bull_trending"),
        ({"regimes": {"bull_trending": {"scale": 1}}}, r"\[regimes.bull_trending\] scale"),
        (
            {"regimes": {"bull_trending": {"allocation": {"a": 1.5}}}},
            r"allocation.a=1.5 must be a number in \[0, 1\]",
        ),
        (
            {"regimes": {"bull_trending": {"allocation": {"zz": 0.5}}}},
            "no sleeve named 'zz'; sleeves: a",
        ),
        ({"regimes": {"bear_trending": {"stop_scale": 0}}}, r"stop_scale=0 must be"),
        ({"sentiment": {"min_score": -2}}, r"min_score=-2 must be a number in \[-1, 1\]"),
        ({"sentiment": {"threshold": 0.1}}, r"\[sentiment\] threshold: unknown key"),
        ({"limits": {"max_position_correlation": 1.5}}, "max_position_correlation=1.5"),
        ({"limits": {"correlation_window_bars": 1}}, "correlation_window_bars=1 must be"),
        ({"sectors": {"path": "x.csv"}}, r"\[sectors\] path: unknown key; allowed: file, map"),
        ({"sectors": {"file": "missing.csv"}}, "missing.csv: sector map file not found"),
        ({"overlay": {}}, "overlay: unknown section"),
    ],
)
def test_bad_overlay_config_is_refused_naming_the_key(raw, message):
    base = config().to_dict()
    for key, value in raw.items():
        base[key] = base[key] | value if key == "limits" else value
    with pytest.raises(ConfigError, match=message):
        PortfolioConfig.from_dict(base, "portfolio.toml")


def test_exposure_scale_needs_a_gross_limit():
    with pytest.raises(ConfigError, match="exposure_scale scales max_gross_exposure_pct"):
        config(regimes=RegimeOverlay({"bear_trending": RegimeRule(exposure_scale=0.5)}))


def test_inputs_and_config_must_agree():
    plain, with_regimes = config(), regime_config(allocation={"a": 0.5})
    signals = bar(1, [100.0, 50.0, 20.0])
    with pytest.raises(ConfigError, match="a regime input was given but the config has no"):
        decide(PortfolioState.initial(plain), signals, plain, regime=0)
    with pytest.raises(ConfigError, match=r"the config has \[regimes\] but no regime input"):
        decide(PortfolioState.initial(with_regimes), signals, with_regimes)
    with pytest.raises(ConfigError, match="regime 7 is not a label"):
        decide(PortfolioState.initial(with_regimes), signals, with_regimes, regime=7)
    sentiment = config(sentiment=SENTIMENT)
    with pytest.raises(ConfigError, match="scores must be in"):
        decide(PortfolioState.initial(sentiment), signals, sentiment, sentiment={"AAA": 1.5})
    with pytest.raises(ConfigError, match=r"symbol\(s\) ZZZ not in the config"):
        decide(PortfolioState.initial(sentiment), signals, sentiment, sentiment={"ZZZ": 0.1})


# ---------------------------------------------------------------------- the backtest
def overlay_sleeves(symbols):
    return (
        Sleeve(strategy="breakout_momentum", symbols=symbols, allocation=0.3),
        Sleeve(strategy="rsi_reversion", symbols=symbols, allocation=0.3),
        Sleeve(
            strategy="bollinger_bounce",
            symbols=symbols,
            allocation=0.3,
            settings={"direction": "both", "size": 0.2},
        ),
    )


def random_inputs(bars, seed=0):
    rng = np.random.default_rng(seed)
    regime = pd.Series(rng.integers(0, len(REGIMES), bars.n_bars), index=bars.index)
    scores = rng.uniform(-1.0, 1.0, (bars.n_bars, bars.n_symbols))
    scores[rng.random(scores.shape) < 0.7] = np.nan
    return regime, pd.DataFrame(scores, index=bars.index, columns=list(bars.symbols))


def test_neutral_inputs_and_limits_that_cannot_bind_change_nothing():
    symbols = SYNTHETIC.symbols
    plain = PortfolioConfig(sleeves=overlay_sleeves(symbols))
    inert = PortfolioConfig(
        sleeves=plain.sleeves,
        limits=RiskLimits(max_position_correlation=1.0, max_sector_exposure_pct=10_000.0),
        sectors=SectorMap(dict.fromkeys(symbols, "one")),
        regimes=RegimeOverlay.legacy(),
        sentiment=SENTIMENT,
    )
    unknown = pd.Series(np.nan, index=SYNTHETIC.index)
    no_news = pd.DataFrame(index=SYNTHETIC.index, columns=[])
    a = portfolio_backtest(plain, SYNTHETIC)
    b = portfolio_backtest(inert, SYNTHETIC, regime=unknown, sentiment=no_news)
    assert len(a.orders) > 50
    pd.testing.assert_frame_equal(a.orders, b.orders)
    pd.testing.assert_frame_equal(a.vetoes, b.vetoes)
    pd.testing.assert_series_equal(a.equity, b.equity)


def test_backtest_limits_hold_against_an_oracle_from_its_own_tables():
    """Every correlation veto has a holding pandas finds too correlated, no accepted entry
    has one, and no entry takes its sector's notional past the cap."""
    bars = SYNTHETIC
    symbols = list(bars.symbols)
    limit, window, cap = 0.3, 30, 45.0
    sectors = {s: ("x" if i < 3 else "y") for i, s in enumerate(symbols)}
    cfg = PortfolioConfig(
        sleeves=(
            Sleeve(
                strategy="rsi_reversion",
                symbols=bars.symbols,
                allocation=1.0,
                settings={"direction": "both", "size": 0.2},
            ),
        ),
        limits=RiskLimits(
            max_heat_pct=None,
            max_position_correlation=limit,
            correlation_window_bars=window,
            max_sector_exposure_pct=cap,
        ),
        sectors=SectorMap(sectors),
    )
    result = portfolio_backtest(cfg, bars)
    returns = pd.DataFrame(bars.close, index=bars.index, columns=symbols).pct_change(
        fill_method=None
    )
    corr = {
        (a, b): returns[a].rolling(window, min_periods=(window + 1) // 2).corr(returns[b])
        for a in symbols
        for b in symbols
        if a != b
    }
    held = np.sign(result.positions)  # after the bar's fills and stops: what the decision saw
    orders, vetoes = result.orders, result.vetoes
    assert (vetoes["reason"] == "max_position_correlation").sum() >= 5
    assert (orders["capped_by"] == "max_sector_exposure").sum() + (
        vetoes["reason"] == "max_sector_exposure"
    ).sum() >= 3
    for time, rows in orders.groupby("time"):
        exits = set(rows.loc[rows["action"] == "exit", "symbol"])
        kept = {s: held.at[time, s] for s in symbols if held.at[time, s] and s not in exits}
        notional = {
            sector: sum(
                abs(result.positions.at[time, s]) * bars.close[bars.index.get_loc(time), i]
                for i, s in enumerate(symbols)
                if s in kept and sectors[s] == sector
            )
            for sector in ("x", "y")
        }
        for order in rows[rows["action"] == "entry"].itertuples():
            side = 1 if order.side == "buy" else -1
            for other, other_side in kept.items():
                if other != order.symbol:
                    rho = corr[(order.symbol, other)].at[time]
                    assert not side * other_side * rho > limit + 1e-9, (time, order.symbol)
            # Prices may carry a sector past its cap; an entry never does.
            sector = sectors[order.symbol]
            notional[sector] += order.units * order.reference_price
            assert notional[sector] <= cap / 100 * result.equity.at[time] * (1 + 1e-9), time
            kept[order.symbol] = side
    for veto in vetoes[vetoes["reason"] == "max_position_correlation"].itertuples():
        side = 1 if veto.side == "buy" else -1
        at = orders[orders["time"] == veto.time]
        candidates = {s: held.at[veto.time, s] for s in symbols if held.at[veto.time, s]}
        for entry in at[at["action"] == "entry"].itertuples():
            candidates[entry.symbol] = 1 if entry.side == "buy" else -1
        assert any(
            side * s_side * corr[(veto.symbol, s)].at[veto.time] > limit
            for s, s_side in candidates.items()
            if s != veto.symbol
        ), veto


def test_the_backtest_reads_only_what_is_known_at_each_bar():
    """A run cut at bar T decides exactly as the full run up to T: the correlation, the
    regime and the sentiment at t never read past t."""
    bars = SYNTHETIC
    cfg = PortfolioConfig(
        sleeves=overlay_sleeves(bars.symbols),
        limits=RiskLimits(max_position_correlation=0.3, correlation_window_bars=20),
        regimes=RegimeOverlay.legacy(),
        sentiment=SENTIMENT,
    )
    regime, sentiment = random_inputs(bars)
    full = portfolio_backtest(cfg, bars, regime=regime, sentiment=sentiment)
    cut = 300
    part = portfolio_backtest(cfg, bars[:cut], regime=regime, sentiment=sentiment)
    before = full.orders[full.orders["time"] < bars.index[cut]].reset_index(drop=True)
    columns = ["time", "sleeve", "symbol", "action", "side", "units", "max_units", "capped_by"]
    pd.testing.assert_frame_equal(part.orders[columns], before[columns])
    reasons = set(full.vetoes["reason"]) | set(full.orders["capped_by"].dropna())
    assert reasons >= {"max_position_correlation", "regime", "sentiment"}


def test_inputs_align_by_time_and_arrays_by_row():
    bars = SYNTHETIC
    cfg = PortfolioConfig(
        sleeves=overlay_sleeves(bars.symbols),
        regimes=RegimeOverlay.legacy(),
        sentiment=SENTIMENT,
    )
    regime, sentiment = random_inputs(bars, seed=4)
    framed = portfolio_backtest(cfg, bars, regime=regime, sentiment=sentiment)
    shuffled = regime.sample(frac=1.0, random_state=1)
    arrays = portfolio_backtest(cfg, bars, regime=regime.to_numpy(), sentiment=sentiment.to_numpy())
    again = portfolio_backtest(cfg, bars, regime=shuffled, sentiment=sentiment)
    pd.testing.assert_frame_equal(framed.orders, arrays.orders)
    pd.testing.assert_frame_equal(framed.orders, again.orders)
    with pytest.raises(ConfigError, match="one row per bar of the bars given"):
        portfolio_backtest(cfg, bars, regime=regime.to_numpy()[:-1], sentiment=sentiment)
    with pytest.raises(ConfigError, match="regime 9 is not a label"):
        portfolio_backtest(cfg, bars, regime=regime.replace(4, 9), sentiment=sentiment)


# ---------------------------------------------------------------------- plain Python
PROBE = """
import json
import numpy as np
import quantshift as qs
from quantshift.portfolio import *
bars = qs.load_bars("synthetic:symbols=3,bars=120,seed=2")
config = PortfolioConfig(
    sleeves=(
        Sleeve(strategy="rsi_reversion", symbols=bars.symbols, allocation=0.5),
        Sleeve(strategy="bollinger_bounce", symbols=bars.symbols, allocation=0.5),
    ),
    limits=RiskLimits(max_position_correlation=0.2, correlation_window_bars=20,
                      max_sector_exposure_pct=40.0),
    sectors=SectorMap({"SYN000": "a", "SYN001": "a", "SYN002": "b"}),
    regimes=RegimeOverlay.legacy(breakout=None),
    sentiment=SentimentFilter(),
)
rng = np.random.default_rng(1)
regime = rng.integers(-1, 5, bars.n_bars)
sentiment = np.where(rng.random((bars.n_bars, 3)) < 0.5, rng.uniform(-1, 1, (bars.n_bars, 3)),
                     np.nan)
r = portfolio_backtest(config, bars, regime=regime, sentiment=sentiment)
out = {"equity": r.equity.tolist(), "units": r.orders["units"].tolist(),
       "vetoes": r.vetoes["reason"].tolist()}
print(json.dumps(out))
"""


def test_plain_python_path_matches_compiled():
    namespace: dict = {}
    exec(PROBE, namespace)  # compiled, in this process
    compiled = namespace["out"]
    interpreted = run_json(PROBE, NUMBA_DISABLE_JIT="1")
    assert interpreted["vetoes"] == compiled["vetoes"] and len(compiled["vetoes"]) > 0
    for key in ("equity", "units"):
        np.testing.assert_allclose(interpreted[key], compiled[key], rtol=1e-12, err_msg=key)
