"""Alert rules and dashboards shipped with the project: promtool checks and unit-tests the rules,
the dashboards are what their generator writes, and every metric they use is one a runner
exports (a renamed metric fails here)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from live_cluster import require

from live.deploy import grafana
from live.deploy.promql import exported_series, grouping_labels, metric_names, selector_labels
from live.metrics import LiveMetrics

PROMETHEUS_DIR = Path(grafana.__file__).resolve().parent / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
PROMETHEUS_OWN = {"up"}  # series Prometheus records itself


def rule_expressions() -> dict[str, str]:
    """Alert name -> PromQL of every shipped rule."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def used_metrics() -> set[str]:
    """Every series name the rules and the dashboards select."""
    exprs = [*rule_expressions().values(), *grafana.expressions()]
    return set().union(*(metric_names(e) for e in exprs))


def _promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        require("promtool", "not on PATH (apt-get install prometheus)")
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules_and_config():
    done = _promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 15 rules found" in done.stdout
    done = _promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_every_alert_pass():
    done = _promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set()
    for case in yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]:
        tested.update(t["alertname"] for t in case["alert_rule_test"] if t["exp_alerts"])
    assert tested == set(rule_expressions())  # every alert is seen firing at least once


def test_promtool_unit_tests_catch_a_changed_threshold(tmp_path):
    for name in ("alerts.yml", "alerts.test.yml"):
        shutil.copy(PROMETHEUS_DIR / name, tmp_path / name)
    rules = tmp_path / "alerts.yml"
    rules.write_text(
        rules.read_text().replace('breaker="max_drawdown"} > 0.8', 'breaker="max_drawdown"} > 0.9')
    )
    done = _promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert done.returncode != 0
    assert "QuantShiftDrawdownNearBreaker" in done.stdout + done.stderr


def test_every_metric_of_the_rules_and_dashboards_is_one_the_runner_exports():
    exported = exported_series(LiveMetrics().registry.collect()) | PROMETHEUS_OWN
    used = used_metrics()
    assert used - exported == set()
    # The check has teeth: the names it finds include every kind of series it must cover.
    assert {"quantshift_live_orders_total", "quantshift_live_cycle_duration_seconds_bucket",
            "quantshift_live_leader", "up"} <= used  # fmt: skip
    # Drift from the backtest and realised slippage: each has a rule and a panel.
    drift = {"quantshift_live_drift_pct", "quantshift_live_fill_slippage_bps_bucket",
             "quantshift_live_assumed_slippage_bps"}  # fmt: skip
    assert drift <= set().union(*(metric_names(e) for e in rule_expressions().values()))
    assert drift <= set().union(*(metric_names(e) for e in grafana.expressions()))
    renamed = "sum by (job) (increase(quantshift_live_order_total[5m]))"
    assert metric_names(renamed) - exported == {"quantshift_live_order_total"}


def test_metric_names_leave_out_functions_keywords_labels_and_durations():
    expr = (
        'histogram_quantile(0.95, sum by (job, le) (rate(a_bucket{job=~"q.*"}[5m] offset 1h)))'
        ' > on (job, instance) group_left 2 * b and c == 1e3 or label_replace(d, "x", "$1",'
        ' "y", "(.*)") unless sum without (instance) (e[$__rate_interval])'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "d", "e"}
    assert selector_labels(expr) == {"a_bucket": {"job"}}
    assert grouping_labels(expr) == {"job", "le", "instance"}


def test_dashboard_files_are_what_the_generator_writes(tmp_path):
    written = grafana.write(tmp_path)
    assert [p.name for p in written] == [f"{uid}.json" for uid in grafana.DASHBOARDS]
    for path in written:
        shipped = grafana.DASHBOARDS_DIR / path.name
        assert shipped.read_text() == path.read_text(), (
            f"{shipped.name} is out of date: run python -m live.deploy.grafana"
        )


@pytest.mark.parametrize("uid", list(grafana.DASHBOARDS))
def test_dashboards_are_valid_provisioning_json_covering_the_asked_panels(uid):
    board = json.loads((grafana.DASHBOARDS_DIR / f"{uid}.json").read_text())
    assert board["uid"] == uid and board["panels"]
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    titles = " ".join(p["title"].lower() for p in board["panels"])
    wanted = {
        "quantshift-trading": (
            "equity",
            "p&l",
            "sleeve",
            "positions",
            "orders",
            "fills",
            "drift",
            "slippage",
        ),
        "quantshift-operations": ("leader", "epoch", "failovers", "latency", "halt"),
    }[uid]
    assert all(word in titles for word in wanted), titles
