"""The status page (`live dashboard`) in a real browser: headless Chromium through Selenium over
a runner replaying the paper example. The page shows the store's numbers, refreshes by itself,
escapes store text, and its kill switch refuses a missing or wrong token."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from live_cluster import EXAMPLE, free_port, require, wait_until

from live.config import load_config
from live.runner import Runner
from live.store import Store

TOKEN = "test-token-0123456789abcdef"
LIVE = str(Path(sys.executable).parent / "live")
XSS = '<img src=x onerror="window.__xss=1">halted by <b>test</b>'


def _money(x: float) -> str:
    return f"{x:,.2f}"


def _qty(x: float) -> str:
    return f"{x:,.4f}".rstrip("0").rstrip(".")


def _write_config(directory: Path) -> Path:
    text = EXAMPLE.read_text()
    changes = {
        'url = "sqlite:///../../data/live/paper-sp500.db"': f'url = "sqlite:///{directory}/s.db"',
        "enabled = true": "enabled = false",
        'start = "2015-01-01"': 'start = "2015-01-01"\nend = "2016-06-01"',
    }
    for old, new in changes.items():
        assert old in text, f"the example no longer has {old!r}"
        text = text.replace(old, new)
    path = directory / "paper.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """A store written by the runner replaying the paper example (its first 150 bars)."""
    path = _write_config(tmp_path_factory.mktemp("dashboard"))
    config = load_config(path)
    summary = Runner(config, max_bars=150).run()
    assert summary.bars == 150 and summary.trades >= 3
    return path, config


class Dashboard:
    """A `live dashboard` process on a free loopback port."""

    def __init__(self, config_path: Path, token: str | None):
        self.log = config_path.with_suffix(f".{uuid.uuid4().hex[:6]}.log")
        env = {k: v for k, v in os.environ.items() if k != "QUANTSHIFT_DASHBOARD_TOKEN"}
        if token is not None:
            env["QUANTSHIFT_DASHBOARD_TOKEN"] = token
        command = [LIVE, "dashboard", "--config", str(config_path), "--port", "0"]
        command += ["--refresh-s", "1"]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, env=env
            )
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(self.process.stdout.readline()))
        reader.start()
        reader.join(30)
        if not first or "http://" not in first[0]:
            self.process.kill()
            raise AssertionError(f"live dashboard did not start: {self.log.read_text()}")
        self.url = first[0].split(" at ", 1)[1].split()[0]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _post_halt(url: str, headers: dict[str, str], body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url + "api/halt",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def page(replayed):
    path, _ = replayed
    dashboard = Dashboard(path, TOKEN)
    yield dashboard
    dashboard.close()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        require("chromium and chromedriver (apt-get install chromium chromium-driver)", "not found")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,2000"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    yield driver
    driver.quit()


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def _rows(driver, table_id: str) -> list[list[str]]:
    # Read in one script: the page replaces its tables at each refresh, so elements found one
    # call earlier may be gone.
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), "
        "(tr) => Array.from(tr.querySelectorAll('td'), (td) => td.innerText));",
        f"#{table_id} tr:not(:first-child)",
    )


def _max_drawdown_pct(equity: list[float]) -> float:
    peak, worst = equity[0], 0.0
    for value in equity:
        peak = max(peak, value)
        worst = max(worst, 100.0 * (1.0 - value / peak))
    return worst


def test_page_shows_the_store_numbers_and_a_screenshot(replayed, page, browser, tmp_path):
    _, config = replayed
    browser.get(page.url)
    wait_until(lambda: _text(browser, "equity") != "-", 20, "the page's first refresh")
    with Store.open(config.store_url, create=False) as store:
        status = store.status()
        trades = store.trades()
        curve = [s.equity for s in store.equity_curve()]
    assert _text(browser, "runner") == config.name
    assert _text(browser, "equity") == _money(status.equity.equity)
    assert _text(browser, "realized-pnl") == _money(status.realized_pnl)
    assert _text(browser, "day-pnl") == _money(status.day_pnl)
    assert _text(browser, "trades-total") == str(len(trades))
    assert _text(browser, "open-orders") == str(status.open_orders)
    assert _text(browser, "drawdown-max") == f"{_max_drawdown_pct(curve):,.2f} %"
    assert _text(browser, "halt-state") == "TRADING"
    assert _text(browser, "leader") == f"LEADER {status.leader.host} epoch {status.leader.epoch}"
    assert _text(browser, "epoch") == str(status.fence_epoch)
    # No Redis lease in this config: its badge stays hidden (not an empty pill).
    assert not browser.find_element("id", "lease").is_displayed()
    positions = [[p.sleeve, p.symbol, _qty(p.qty), _money(p.avg_price)] for p in status.positions]
    assert _rows(browser, "positions") == (positions or [["no open positions"]])
    shown_trades = _rows(browser, "trades")
    assert len(shown_trades) == min(20, len(trades))
    newest = trades[-1]
    assert shown_trades[0][1:4] == [newest.sleeve, newest.symbol, newest.direction]
    assert shown_trades[0][7] == _money(newest.pnl)
    sleeves = {row[0]: row for row in _rows(browser, "sleeves")}
    assert list(sleeves) == list(config.portfolio.sleeve_names)
    for perf in status.performance:
        assert sleeves[perf.sleeve][1] == str(perf.trades)
        assert sleeves[perf.sleeve][3] == _money(perf.pnl)
        assert sleeves[perf.sleeve][6] == "config parameters"
    assert len(browser.find_elements("css selector", "#chart polyline")) == 1
    screenshot = tmp_path / "status_page.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"status page screenshot: {screenshot}")


def test_page_refreshes_itself_when_the_store_changes(replayed, page, browser):
    _, config = replayed
    browser.get(page.url)
    wait_until(lambda: _text(browser, "equity") != "-", 20, "the page's first refresh")
    before = _text(browser, "equity")
    Runner(config, max_bars=40).run()  # the runner resumes where it stopped
    with Store.open(config.store_url, create=False) as store:
        equity = store.status().equity.equity
        n_trades = len(store.trades())
    assert _money(equity) != before
    wait_until(lambda: _text(browser, "equity") == _money(equity), 20, "the page to refresh")
    assert _text(browser, "trades-total") == str(n_trades)


def test_halt_button_refuses_missing_and_wrong_tokens_and_escapes_the_reason(
    replayed, page, browser, tmp_path
):
    from selenium.webdriver.common.by import By

    path, config = replayed
    browser.get(page.url)
    wait_until(lambda: _text(browser, "equity") != "-", 20, "the page's first refresh")
    assert browser.find_element(By.ID, "kill-switch").is_displayed()

    def press(token: str) -> str:
        field = browser.find_element(By.ID, "halt-token")
        field.clear()
        field.send_keys(token)
        reason = browser.find_element(By.ID, "halt-reason")
        reason.clear()
        reason.send_keys(XSS)
        browser.find_element(By.ID, "halt-button").click()
        return wait_until(
            lambda: (t := _text(browser, "halt-result")) != "sending..." and t, 10, "an answer"
        )

    def halted() -> bool:
        with Store.open(config.store_url, create=False) as store:
            return store.active_halt() is not None

    assert press("").startswith("refused (401)")
    assert not halted()
    assert press(TOKEN[:-1] + "X").startswith("refused (403): wrong token")
    assert not halted()
    assert press(TOKEN) == f"HALT active: {XSS}"
    assert halted()
    wait_until(lambda: _text(browser, "halt-state") == "HALT", 10, "the page to show the HALT")
    assert XSS in _text(browser, "halt-detail")  # shown as text, never parsed as markup
    assert browser.find_elements(By.CSS_SELECTOR, "img, #halt-detail *, #halt-result *") == []
    assert browser.execute_script("return window.__xss === undefined")
    screenshot = tmp_path / "status_page_halted.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"halted status page screenshot: {screenshot}")
    logged = [json.loads(line) for line in page.log.read_text().splitlines()]
    refusals = [r["message"].rsplit(": ", 1)[1] for r in logged if "refused" in r["message"]]
    assert refusals == ["no token", "wrong token"]
    assert any(r["message"].startswith("status page: HALT by ") for r in logged)
    assert TOKEN[:8] not in page.log.read_text()
    shown = subprocess.run(
        [LIVE, "status", "--config", str(path), "--json"], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["halt"]["reason"] == XSS


def test_read_only_page_has_no_kill_switch_and_refuses_a_halt(replayed, browser, tmp_path):
    from selenium.webdriver.common.by import By

    path, _ = replayed
    # The same store under a config with a Redis lease nobody serves: the page says so.
    leased = tmp_path / "leased.toml"
    leased.write_text(
        path.read_text().replace(
            "[lease]", f'[lease]\nredis_url = "redis://127.0.0.1:{free_port()}"'
        )
    )
    dashboard = Dashboard(leased, token=None)
    try:
        browser.get(dashboard.url)
        wait_until(lambda: _text(browser, "equity") != "-", 20, "the page's first refresh")
        assert not browser.find_element(By.ID, "kill-switch").is_displayed()
        assert browser.find_element(By.ID, "lease").is_displayed()
        assert _text(browser, "lease").startswith("lease unknown: ")
        status, body = _post_halt(dashboard.url, {"X-QuantShift-Token": TOKEN}, {})
        assert status == 403 and "kill switch is off" in body["error"]
    finally:
        dashboard.close()


def test_sleeves_show_the_promotion_record_they_trade(replayed, browser, tmp_path):
    _, config = replayed
    copy_path = _write_config(tmp_path)
    copy = load_config(copy_path)
    with Store.open(config.store_url, create=False) as source:
        bar_ts_ns = source.equity_curve()[-1].ts_ns
    # A copy of the replayed store, so the other tests keep their config-parameter sleeves.
    with sqlite3.connect(config.store_url.removeprefix("sqlite:///")) as source:
        with sqlite3.connect(copy.store_url.removeprefix("sqlite:///")) as target:
            source.backup(target)
    name = "trend-<i>x</i>"
    with Store.open(copy.store_url, create=False) as store:
        promotion = store.add_promotion(
            name=name, stage="paper", code_fingerprint="test", created_by="test",
            record={"params": {"fast": 12, "slow": 40}},
        )  # fmt: skip
        store.record_adoption(
            runner=config.name, sleeve="trend", promotion_id=promotion.promotion_id,
            record_id="rec-123", bar_ts_ns=bar_ts_ns, epoch=None,
        )  # fmt: skip
    dashboard = Dashboard(copy_path, token=None)
    try:
        browser.get(dashboard.url)
        wait_until(lambda: _text(browser, "equity") != "-", 20, "the page's first refresh")
        sleeves = {row[0]: row[-1] for row in _rows(browser, "sleeves")}
    finally:
        dashboard.close()
    day = str(np.datetime64(bar_ts_ns, "ns").astype("datetime64[D]"))
    assert sleeves == {
        "trend": f'rec-123 ({name}, paper, {{"fast":12,"slow":40}}) since {day}',
        "reversion": "config parameters",
        "breakout": "config parameters",
    }
    assert browser.find_elements("css selector", "#sleeves i") == []


def test_halt_api_answers_401_without_a_token_and_403_for_a_wrong_one(replayed, page):
    _, config = replayed
    with Store.open(config.store_url, create=False) as store:
        before = len(store.halts())
    assert _post_halt(page.url, {}, {})[0] == 401
    assert _post_halt(page.url, {"X-QuantShift-Token": "x" * 30}, {})[0] == 403
    assert _post_halt(page.url, {"X-QuantShift-Token": TOKEN}, [1])[0] == 400
    with Store.open(config.store_url, create=False) as store:
        assert len(store.halts()) == before


def test_status_api_refuses_a_foreign_host_header(page):
    request = urllib.request.Request(page.url + "api/status", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 403


@pytest.mark.parametrize(
    ("arguments", "token", "message"),
    [
        (["--host", "0.0.0.0"], None, "--host '0.0.0.0' is not a loopback address"),
        ([], "short", "QUANTSHIFT_DASHBOARD_TOKEN is set but has 5 characters"),
        (["--port", "70000"], None, "--port must be within 0 and 65535, got 70000"),
    ],
)
def test_dashboard_refuses_bad_options_in_one_line(replayed, arguments, token, message):
    path, _ = replayed
    env = {k: v for k, v in os.environ.items() if k != "QUANTSHIFT_DASHBOARD_TOKEN"}
    if token is not None:
        env["QUANTSHIFT_DASHBOARD_TOKEN"] = token
    done = subprocess.run(
        [LIVE, "dashboard", "--config", str(path), *arguments],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {message}") and done.stderr.count("\n") == 1
    assert "short" not in done.stderr  # the token itself is never printed


def test_dashboard_refuses_a_missing_store(tmp_path):
    path = _write_config(tmp_path)
    done = subprocess.run(
        [LIVE, "dashboard", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "no live store at" in done.stderr
    assert not (tmp_path / "s.db").exists()
