"""The runner's feeds: a replayed data set must be at the interval the config trades on."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from live.cli import app
from live.clock import MarketClock
from live.config import load_config
from live.feeds import open_feed
from quantshift.errors import ConfigError, QuantShiftError

EXAMPLE = Path(__file__).resolve().parents[1] / "live" / "examples" / "paper_sp500.toml"


def _write_config(tmp_path: Path, interval: str, source: str = "builtin:sp500,nasdaq") -> Path:
    text = (
        EXAMPLE.read_text()
        .replace('bar_interval = "1d"', f'bar_interval = "{interval}"')
        .replace('source = "builtin:sp500,nasdaq"', f'source = "{source}"')
        .replace("sqlite:///data/live/paper-sp500.db", f"sqlite:///{tmp_path}/state.db")
        .replace("enabled = true", "enabled = false")
    )
    path = tmp_path / "runner.toml"
    path.write_text(text)
    return path


def _live(*args: str) -> tuple[int, str]:
    # live.cli.main maps QuantShiftError to one line and exit 2; mirror it in process.
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, QuantShiftError):
        return 2, f"error: {result.exception}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_regression_hourly_config_on_daily_bars_is_refused_naming_file_key_and_intervals(
    tmp_path,
):
    path = _write_config(tmp_path, "1h")
    code, out = _live("run", "-c", str(path), "--max-bars", "3", "--json")
    assert code == 2, out
    assert out.count("\n") == 0
    assert str(path) in out and "[runner] bar_interval is '1h'" in out
    assert "are 1d apart" in out and 'set bar_interval = "1d"' in out


@pytest.mark.parametrize(("interval", "accepted"), [("1h", True), ("15m", False)])
def test_replay_interval_is_compared_with_the_bars_spacing(tmp_path, interval, accepted):
    path = _write_config(
        tmp_path, interval, "synthetic:symbols=2,bars=300,seed=4,start=2015-01-05,freq=1h,gaps=0"
    ).read_text()
    path = path.replace('["SP500", "NASDAQ"]', '["SYN000", "SYN001"]')
    (tmp_path / "runner.toml").write_text(path)
    config = load_config(tmp_path / "runner.toml")
    clock = MarketClock(config.market, config.bar_interval_s)
    if accepted:
        assert open_feed(config, config.portfolio, clock).bars.bar_spacing_s() == 3600
    else:
        with pytest.raises(ConfigError, match=r"bar_interval is '15m' but .* are 1h apart"):
            open_feed(config, config.portfolio, clock)


def test_regression_negative_max_bars_is_refused(tmp_path):
    code, out = _live("run", "-c", str(_write_config(tmp_path, "1d")), "--max-bars", "-5")
    assert code == 2 and out == "error: --max-bars must be at least 1, got -5"
    assert not (tmp_path / "state.db").exists()  # refused before anything was opened
