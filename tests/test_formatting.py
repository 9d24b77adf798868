"""quantshift.formatting: one way to show a number to a person."""

from __future__ import annotations

import math

import pytest

from quantshift.formatting import count, duration, elapsed, metric, money, number, percent, ratio
from quantshift.formatting import table as text_table


def test_regression_equity_reads_as_money_not_a_raw_float():
    """`live status` printed `equity 97687.49973035883`."""
    assert money(97_687.49973035883) == "97,687.50"
    assert money(-1_234.5) == "-1,234.50" and money(12, "USD") == "USD 12.00"


@pytest.mark.parametrize("missing", [None, math.nan])
def test_a_missing_value_reads_as_a_dash(missing):
    for show in (money, percent, ratio, count, number, duration, elapsed):
        assert show(missing) == "-"


def test_percent_ratio_count_and_number():
    assert percent(12.345) == "12.35%" and percent(3, sign=False) == "3.00"
    assert ratio(0.93661) == "0.937" and ratio(math.inf) == "inf"
    assert count(4263.0) == "4,263" and count(1_000_000) == "1,000,000"
    # Thresholds in their shortest form: the gate's "needs >= 0.95", never "0.950".
    assert [number(v) for v in (0.95, 20, 25.0, 0.2, 1250.5, -0.0001, True, False)] == [
        "0.95", "20", "25", "0.2", "1,250.5", "0", "yes", "no",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.4, "0 s"), (12.7, "12 s"), (59.9, "59 s"), (60, "1 min"), (200, "3 min"),
     (7_199, "119 min"), (7_200, "2 h"), (172_799, "47 h"), (172_800, "2 d"), (-5, "0 s")],
)  # fmt: skip
def test_ages_round_down_to_one_unit(seconds, shown):
    assert duration(seconds) == shown


def test_elapsed_wall_times():
    assert [elapsed(s) for s in (0.843, 12.34, 185)] == ["0.84 s", "12.3 s", "3 min 05 s"]


def test_a_metric_is_shown_by_what_its_name_says():
    assert metric("max_drawdown_pct", 36.214) == "36.21%"
    assert metric("mc_max_drawdown_pct_p95", 25.0) == "25.00%"
    assert metric("oos_trades", 57.0) == "57" and metric("wf_folds", 4) == "4"
    assert metric("final_equity", 1e5) == "100,000.00" and metric("largest_loss", -12) == "-12.00"
    assert metric("elapsed_s", 3.2) == "3.20 s" and metric("dsr", 0.9366) == "0.937"
    assert metric("best_params", "fast=10") == "fast=10"


def test_a_text_table_has_a_header_a_rule_and_aligned_columns():
    lines = text_table(["name", "n"], [["a", "1"], ["long name", "1,000"]], right=(1,))
    assert lines == [
        "name           n",
        "---------  -----",
        "a              1",
        "long name  1,000",
    ]
