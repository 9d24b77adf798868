"""Experiment specs: the shipped examples load; every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantshift.errors import ConfigError
from research.spec import grid_values, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {
    "experiment": {"name": "t", "strategy": "ma_crossover"},
    "data": {"source": "builtin:sp500"},
}


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.toml")), ids=str)
def test_shipped_specs_load(path):
    if path.name.startswith("regime"):  # regime model and overlay specs: research.regime
        from research.regime.overlay import is_overlay_spec, load_overlay_spec
        from research.regime.spec import load_regime_spec

        loaded = (load_overlay_spec if is_overlay_spec(path) else load_regime_spec)(path)
        assert loaded.path == path
        return
    spec = load_spec(path)
    assert spec.path == path and spec.text.startswith("#")
    spec.get_strategy()


def test_defaults_of_a_minimal_spec():
    spec = parse_spec(MINIMAL)
    assert spec.seed == 0 and spec.search.method == "optuna" and spec.search.trials == 200
    assert spec.walk_forward is None and spec.monte_carlo is None and spec.pbo is None
    assert spec.params == {"fast": 5.0, "slow": 20.0}
    assert spec.experiment == "t"


def _with(section: str, **values):
    raw = {k: dict(v) for k, v in MINIMAL.items()}
    raw.setdefault(section, {}).update(values)
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**MINIMAL, "serch": {}}, r"serch: unknown section"),
        (_with("experiment", seeds=1), r"\[experiment\] seeds: unknown key"),
        (_with("experiment", strategy="nope"), r"\[experiment\] strategy: .*nope"),
        (_with("experiment", seed=-1), r"\[experiment\] seed: must be an integer >= 0"),
        ({"experiment": MINIMAL["experiment"]}, r"missing section \[data\]"),
        (_with("data", start="not a date"), r"\[data\] start: is not a date"),
        (_with("data", symbols=[]), r"\[data\] symbols: must be a non-empty list"),
        (_with("costs", fees=1), r"x.toml: \[costs\] fees: unknown key; allowed: cash"),
        (_with("costs", size=7), r"x.toml: \[costs\] size=7 must be between"),
        (_with("costs", kelly_min_trades=2.5), r"\[costs\] kelly_min_trades: must be an integer"),
        (_with("params", fast=50, slow=20), r"\[params\] .*constraint fast < slow"),
        (_with("params", speed=3), r"\[params\] .*no parameter 'speed'"),
        (_with("search", method="bayes"), r"\[search\] method: must be one of optuna, grid"),
        (_with("search", objectives=["alpha"]), r"unknown metric 'alpha'"),
        (_with("search", space={"speed": {"low": 1, "high": 2}}), r"\[search.space\] speed: strat"),
        (_with("search", space=[1]), r"\[search.space\] must be a table"),
        (_with("search", space={"fast": {"low": 9, "high": 2}}), r"low <= high"),
        (_with("search", space={"fast": {"low": 1}}), r"a range is \{low"),
        (_with("search", space={"fast": {"low": 1, "high": 5, "step": 0}}), r"step must"),
        (_with("search", trials=0), r"\[search\] trials: must be an integer >= 1"),
        (
            _with("search", method="grid", objectives=["sharpe", "max_drawdown_pct"]),
            r"grid search selects on one objective",
        ),
        (_with("walk_forward", train=0, test=10), r"\[walk_forward\] train: must be positive"),
        (_with("walk_forward", train="3 apples", test=10), r"time length"),
        (_with("walk_forward", test=10), r"\[walk_forward\] train: is required"),
        (_with("monte_carlo", method="jackknife"), r"\[monte_carlo\] method"),
        (_with("monte_carlo", confidence=1.5), r"confidence: must be in"),
        (_with("pbo", splits=5), r"\[pbo\] splits: must be even"),
    ],
)
def test_mistakes_name_the_section_and_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(raw, source="x.toml")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_spec(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment\nname = 1")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_spec(bad)


def test_grid_values():
    assert grid_values(3.0) == [3.0]
    assert grid_values([5.0, 1.0]) == [5.0, 1.0]
    assert list(grid_values((2.0, 6.0))) == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert list(grid_values((10.0, 20.0, 5))) == [10.0, 15.0, 20.0]
    assert list(grid_values((0.1, 0.3, 0.1))) == pytest.approx([0.1, 0.2, 0.3])
    assert len(grid_values((0.5, 4.0, 1e-9))) == 3_500_000_001  # counted, not built
