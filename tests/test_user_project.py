"""A user's own project, outside this repository: `quantshift init`, then the strategy it ships
through every command a quant runs (check, backtest, sweep, a study, promotion, a paper replay),
all through the installed `quantshift` and `live` commands in fresh processes.

Also: declaration errors are one line and exit 2, a broken module breaks only its strategies,
installed packages are found through the ``quantshift.strategies`` entry point group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
# Small enough to keep the flow near a minute: 2009-2016, 4 grid sets, 4 folds, 300 paths.
QUICK_SPEC = """
[experiment]
name = "quick-donchian"
strategy = "../strategies/donchian_breakout.py:STRATEGY"
seed = 3

[data]
source = "builtin:sp500"
start = "2009-01-01"
end = "2016-01-01"

[costs]
fees_bps = 1.0

[params]
entry = 20
exit = 10

[search]
method = "grid"
min_trades = 3

[search.space]
entry = [20, 40]
exit = [5, 10]

[walk_forward]
train = 504
test = 252

[monte_carlo]
paths = 300

[pbo]
splits = 4
"""
# The flow tests the mechanics, not this channel's edge (as tests/test_promotion_flow.py does).
RELAXED_GATE = """
[paper]
min_oos_sharpe = -5.0
min_oos_psr = 0.0
min_dsr = 0.0
max_pbo = 1.0
max_mc_drawdown_pct_p95 = 100.0
require_block_bootstrap = false
min_lockbox_sharpe = -5.0
min_oos_trades = 1
"""


def cli(*args: str, cwd: Path, ok: bool = True, command: str = "quantshift", **env: str):
    """Run an installed command in ``cwd``; check its exit code is 0 when ``ok``."""
    environ = {**os.environ, **env}
    environ.pop("QUANTSHIFT_STRATEGY_PATH", None)
    environ.update(env)
    done = subprocess.run(
        [str(BIN / command), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if ok:
        assert done.returncode == 0, f"{command} {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("user") / "my-strategies"
    assert not root.resolve().is_relative_to(REPO)
    done = cli("init", str(root), cwd=root.parent)
    assert "created project" in done.stdout
    (root / "experiments" / "quick.toml").write_text(QUICK_SPEC)
    (root / "gate.toml").write_text(RELAXED_GATE)
    git("init", "-q", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "project", cwd=root)
    return root


def test_init_lays_out_a_project_and_refuses_a_non_empty_directory(project):
    for path in (
        "strategies/donchian_breakout.py",
        "experiments/donchian_sp500.toml",
        "live/paper.toml",
        "data/README.md",
        "pyproject.toml",
        "README.md",
        ".gitignore",
    ):
        assert (project / path).is_file(), path
    assert 'dependencies = ["quantshift>=' in (project / "pyproject.toml").read_text()
    again = cli("init", str(project), cwd=project.parent, ok=False)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: init {project}: directory is not empty; give a new or empty directory"
    ]


def test_a_user_project_runs_end_to_end_through_the_cli(project):
    check = cli("strategies", "check", "donchian_breakout", "--data", "builtin:sp500", cwd=project)
    assert "donchian_breakout: causal (" in check.stdout

    backtest = json.loads(
        cli(
            "backtest", "donchian_breakout", "--data", "builtin:sp500", "--json", cwd=project
        ).stdout
    )
    assert backtest["strategy"] == "donchian_breakout" and backtest["trades"] > 10

    sweep = json.loads(
        cli(
            "sweep", "donchian_breakout", "--grid", "entry=10,20,40", "--grid", "exit=5,10",
            "--json", cwd=project,
        ).stdout
    )  # fmt: skip
    assert sweep["evaluated"] == 6 and sweep["strategy"] == "donchian_breakout"

    # The study runs from another directory: the spec's reference is relative to the spec.
    study = json.loads(
        cli(
            "research",
            "report",
            str(project / "experiments/quick.toml"),
            "--json",
            "--tracking-uri",
            f"sqlite:///{project}/experiments/mlflow.db",
            cwd=project.parent,
        ).stdout
    )
    assert study["trials"] == 4 and study["run_id"]

    store = f"sqlite:///{project}/data/live/paper.db"
    promoted = cli(
        "promote", study["run_id"], "--stage", "paper", "--store", store, "--name",
        "donchian-sp500", "--gate", "gate.toml", "--tracking-uri",
        f"sqlite:///{project}/experiments/mlflow.db", "--json", cwd=project,
    )  # fmt: skip
    outcome = json.loads(promoted.stdout)
    assert outcome["promoted"], outcome["gate"]
    code = outcome["record"]["code"]
    # The fingerprint covers the user's own file and its state in the user's repository.
    assert code["strategy_file"] == str(project.resolve() / "strategies/donchian_breakout.py")
    assert code["strategy_file_git"] == "committed"
    assert code["strategy_git_commit"] == git("rev-parse", "HEAD", cwd=project)
    assert code["strategy_git_dirty"] is False

    # The shipped paper config, switched to the promoted record, replays a few bars.
    config = project / "live" / "paper.toml"
    config.write_text(
        config.read_text().replace('# promotion = "donchian-sp500"', 'promotion = "donchian-sp500"')
    )
    replay = cli("run", "--config", str(config), "--max-bars", "30", "--json", cwd=project.parent,
                 command="live")  # fmt: skip
    summary = json.loads(replay.stdout.strip().splitlines()[-1])
    assert summary["bars"] == 30, summary
    # It traded the promoted record: the runner's fingerprint check matched the user's code.
    status = cli("status", "--config", str(config), "--json", cwd=project, command="live")
    adopted = json.loads(status.stdout)["promotions"]["breakout"]
    assert adopted["verified"] and adopted["record_id"] == outcome["record"]["record_id"]
    assert adopted["params"] == outcome["record"]["params"]


def test_fingerprint_marks_an_edited_user_strategy_dirty(project, tmp_path):
    clone = tmp_path / "clone"
    git("clone", "-q", str(project), str(clone), cwd=tmp_path)
    source = clone / "strategies" / "donchian_breakout.py"
    probe = (
        "import json, quantshift as qs\n"
        f"code = qs.code_fingerprint(qs.get_strategy({str(source) + ':STRATEGY'!r}))\n"
        "print(json.dumps({k: code[k] for k in ('strategy_file_git', 'strategy_git_dirty')}))"
    )
    clean = json.loads(cli("-c", probe, cwd=tmp_path, command="python").stdout)
    assert clean == {"strategy_file_git": "committed", "strategy_git_dirty": False}
    source.write_text(source.read_text() + "\n# tuned\n")
    edited = json.loads(cli("-c", probe, cwd=tmp_path, command="python").stdout)
    assert edited == {"strategy_file_git": "modified", "strategy_git_dirty": True}
    (clone / "strategies" / "donchian_breakout.py").rename(clone / "strategies" / "mine.py")
    moved = probe.replace("donchian_breakout.py", "mine.py")
    untracked = json.loads(cli("-c", moved, cwd=tmp_path, command="python").stdout)
    assert untracked == {"strategy_file_git": "untracked", "strategy_git_dirty": True}


SIGNATURE = "open_, high, low, close, volume, params, entries, exits, stop, take_profit, trail"
BAD_SIGNATURE = """
from numba import njit
from quantshift import Param, Strategy


@njit
def signal_nb(close, params, entries, exits):
    for t in range(close.shape[0]):
        entries[t] = close[t] > params[0]


STRATEGY = Strategy(
    name="bad_signature",
    description="four arguments instead of eleven",
    params=(Param(name="level", default=1.0, low=0.0, high=10.0),),
    signal_nb=signal_nb,
    warmup=0,
)
"""


def test_a_wrong_signature_is_one_line_and_exit_2_and_breaks_no_other_command(tmp_path):
    folder = tmp_path / "strategies"
    folder.mkdir()
    (folder / "bad_signature.py").write_text(BAD_SIGNATURE)
    (folder / "needs_missing.py").write_text("import package_that_is_not_installed\n")
    env = {"QUANTSHIFT_STRATEGY_PATH": str(folder)}

    used = cli(
        "backtest", "bad_signature", "--data", "builtin:sp500", cwd=tmp_path, ok=False, **env
    )
    assert used.returncode == 2
    error = [line for line in used.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in used.stderr, used.stderr
    assert f"{folder / 'bad_signature.py'}" in error[0] or "bad_signature.py:" in error[0]
    assert (
        "function signal_nb): takes 4 arguments (close, params, entries, exits), needs 11"
        in (error[0])
    )

    broken = cli("backtest", "needs_missing", "--data", "builtin:sp500", cwd=tmp_path, ok=False,
                 **env)  # fmt: skip
    assert broken.returncode == 2
    assert broken.stderr.strip().splitlines()[-1] == (
        f"error: strategy module {folder / 'needs_missing.py'} failed to import: "
        "ModuleNotFoundError: No module named 'package_that_is_not_installed'"
    )

    # A typing error inside a well-declared function is one line naming the user's file too.
    (folder / "typo.py").write_text(
        BAD_SIGNATURE.replace("close, params, entries, exits", SIGNATURE)
        .replace("close[t] > params[0]", "close[t].level > params[0]")
        .replace("bad_signature", "typo")
    )
    typo = cli("backtest", "typo", "--data", "builtin:sp500", cwd=tmp_path, ok=False, **env)
    assert typo.returncode == 2 and "Traceback" not in typo.stderr, typo.stderr
    assert (
        typo.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: the strategy code does not compile with numba: Unknown attribute 'level'"
        )
    )
    assert '(File "strategies/typo.py", line 9)' in typo.stderr  # numba shows it from the cwd

    # A command not using them runs, with one warning line per broken module.
    other = cli(
        "backtest", "ma_crossover", "--data", "builtin:sp500", "--json", cwd=tmp_path, **env
    )
    assert json.loads(other.stdout)["strategy"] == "ma_crossover"
    warnings = other.stderr.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("warning: strategy module ") for w in warnings)
    assert "needs_missing.py failed to import: ModuleNotFoundError" in warnings[1]


def test_an_installed_package_is_found_through_the_entry_point_group(tmp_path, project):
    """A package installed the way ``pip install --target`` leaves it (the module and its
    ``.dist-info`` with ``entry_points.txt``) declaring ``quantshift.strategies``: its strategy
    runs by name with no path or reference; importlib.metadata finds it as any installed one."""
    site = tmp_path / "site"
    (site / "house_signals").mkdir(parents=True)
    strategy = (project / "strategies" / "donchian_breakout.py").read_text()
    (site / "house_signals" / "__init__.py").write_text(
        strategy.replace('name="donchian_breakout"', 'name="house_breakout"')
    )
    info = site / "house_signals-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: house-signals\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[quantshift.strategies]\nhouse_breakout = house_signals:STRATEGY\n"
    )
    env = {"PYTHONPATH": str(site)}
    listed = json.loads(cli("strategies", "list", "--json", cwd=tmp_path, **env).stdout)
    assert "house_breakout" in {row["name"] for row in listed}
    ran = cli(
        "backtest", "house_breakout", "--data", "builtin:sp500", "--json", cwd=tmp_path, **env
    )
    assert json.loads(ran.stdout)["trades"] > 10
    # Without the package on the path the name is unknown: the entry point is what found it.
    gone = cli("backtest", "house_breakout", "--data", "builtin:sp500", cwd=tmp_path, ok=False)
    assert gone.returncode == 2 and "unknown strategy 'house_breakout'" in gone.stderr


def test_specs_and_live_configs_name_strategies_relative_to_their_file(project, tmp_path):
    from live.config import load_config
    from quantshift.errors import ConfigError
    from research.spec import load_spec

    folder = tmp_path / "elsewhere" / "experiments"
    folder.mkdir(parents=True)
    spec_text = QUICK_SPEC.replace(
        'strategy = "../strategies/donchian_breakout.py:STRATEGY"',
        f'strategy = "donchian_breakout"\nstrategy_path = ["{project}/strategies"]',
    )
    (folder / "by_path.toml").write_text(spec_text)
    spec = load_spec(folder / "by_path.toml")
    assert spec.get_strategy().name == "donchian_breakout"
    assert spec.strategy_path == (str(project.resolve() / "strategies"),)

    (folder / "missing.toml").write_text(
        QUICK_SPEC.replace("../strategies/donchian_breakout.py", "../strategies/nowhere.py")
    )
    with pytest.raises(ConfigError) as caught:
        load_spec(folder / "missing.toml")
    assert str(caught.value) == (
        f"{folder / 'missing.toml'}: [experiment] strategy: strategy file "
        f"{tmp_path / 'elsewhere' / 'strategies' / 'nowhere.py'} does not exist"
    )

    live = tmp_path / "elsewhere" / "live"
    live.mkdir()
    config = (project / "live" / "paper.toml").read_text()
    config = config.replace('strategy_path = ["../strategies"]', "").replace(
        'strategy = "donchian_breakout"',
        f'strategy = "{project}/strategies/donchian_breakout.py:STRATEGY"',
    )
    (live / "by_reference.toml").write_text(config)
    loaded = load_config(live / "by_reference.toml")
    assert loaded.portfolio.sleeves[0].strategy_name == "donchian_breakout"
    (live / "bad.toml").write_text(config.replace(":STRATEGY", ":NOT_THERE"))
    with pytest.raises(ConfigError) as caught:
        load_config(live / "bad.toml")
    assert "[sleeves[0]] strategy: " in str(caught.value)
    assert "NOT_THERE in " in str(caught.value) and "is nothing, not a Strategy" in str(
        caught.value
    )
