"""A real Prometheus on loopback scrapes a running runner (the paper S&P 500 example) and loads
the shipped alert rules; through its HTTP API, every metric the rules and dashboards use exists
with the labels they rely on, and the rules evaluate without error."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest
from live_cluster import free_port, require, wait_until
from live_threads import RunnerThread, example_config
from test_live_alerts import PROMETHEUS_OWN, RULES, rule_expressions

from live.deploy import grafana
from live.deploy.promql import grouping_labels, metric_names, selector_labels

JOB = "quantshift-paper-sp500"
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


class Prometheus:
    """``prometheus`` on 127.0.0.1 with a temporary data dir, scraping ``target`` every second."""

    def __init__(self, workdir, target: str) -> None:
        if shutil.which("prometheus") is None:
            require("prometheus", "not on PATH (apt-get install prometheus)")
        self.port = free_port()
        shutil.copy(RULES, workdir / "alerts.yml")
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yml]\n"
            f"scrape_configs:\n  - job_name: {JOB}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.log = open(workdir / "prometheus.log", "w")  # closed in stop()
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(self._ready, 60, "prometheus to be ready", step_s=0.2)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, **params) -> object:
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def series(self, name: str) -> list[dict[str, str]]:
        return self.api("series", **{"match[]": name})

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def scraped(tmp_path):
    runner = RunnerThread(example_config(tmp_path, speed=10.0), "host-a")
    prometheus = None
    try:
        (tmp_path / "prom").mkdir()
        prometheus = Prometheus(tmp_path / "prom", f"127.0.0.1:{runner.port}")
        yield runner, prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        runner.stop()


def test_prometheus_scrapes_every_metric_the_rules_and_dashboards_use(scraped):
    runner, prometheus = scraped
    exprs = [*rule_expressions().values(), *grafana.expressions()]
    used = set().union(*(metric_names(e) for e in exprs))

    def all_present() -> bool:
        return all(prometheus.series(name) for name in used)

    # A few scrapes after the runner has decided on bars (the position and sleeve series are
    # written by the first cycle).
    wait_until(all_present, 90, "every used metric in Prometheus", step_s=1.0)
    labels_of = {
        name: set().union(*(s.keys() for s in prometheus.series(name))) - {"__name__"}
        for name in used
    }
    for name in used - PROMETHEUS_OWN:
        assert TARGET_LABELS <= labels_of[name], (name, labels_of[name])
    for expr in exprs:
        for name, labels in selector_labels(expr).items():
            assert labels <= labels_of[name], (expr, name, labels_of[name])
        # Each label an expression groups or matches on is carried by a metric it selects.
        carried = set().union(*(labels_of[n] for n in metric_names(expr))) | {"le"}
        assert grouping_labels(expr) <= carried, (expr, carried)
    assert {"sleeve", "outcome"} <= labels_of["quantshift_live_orders_total"]
    assert {"sleeve", "symbol"} <= labels_of["quantshift_live_position_units"]
    assert {"breaker"} <= labels_of["quantshift_live_breaker_limit_pct"]
    assert {"sleeve", "symbol"} <= labels_of["quantshift_live_drift_pct"]
    assert {"sleeve", "symbol", "le"} <= labels_of["quantshift_live_fill_slippage_bps_bucket"]
    sleeves = {s["sleeve"] for s in prometheus.series("quantshift_live_sleeve_equity")}
    assert sleeves == {"trend", "reversion", "breakout"}
    # The runner leads alone: what Prometheus holds is its leadership, and the rules load and
    # evaluate (no rule in error) against the real series.
    leader = prometheus.api("query", query="quantshift_live_leader")["result"]
    assert [r["value"][1] for r in leader] == ["1"]
    assert runner.get("/leader")[0] == 200

    def evaluated() -> list:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        return rules if all(r.get("lastEvaluation", "").startswith("2") for r in rules) else []

    rules = wait_until(evaluated, 30, "the rules to be evaluated", step_s=0.5)
    assert {r["name"] for r in rules} == set(rule_expressions())
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
