"""The code check for quantshift installed from a wheel: the core is pinned by the release when
its installed files match the RECORD the installer wrote, and a user's strategies by their own
repository; an edited installed file fails the check, naming it.

The RECORD logic runs first on a real installer's RECORD of a third-party package in this
venv (fast); the slow test builds our wheel, installs it with pip into a fresh venv outside
git, and runs `quantshift init`, a study and `quantshift promote` through it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from quantshift.promotion import PaperGate, evaluate_paper_gate
from quantshift.provenance import core_pin, installed_distribution, record_problems
from tests.test_promotion_record import GOOD
from tests.test_user_project import QUICK_SPEC, RELAXED_GATE, git

REPO = Path(__file__).resolve().parents[1]
CODE_CHECK = "code committed (git clean)"


def _code_check(evidence):
    result = evaluate_paper_gate(evidence, PaperGate())
    (check,) = [c for c in result.checks if c.name == CODE_CHECK]
    return check


# --------------------------------------------------------------------------- RECORD, fast
@pytest.fixture
def yaml_copy(tmp_path) -> importlib.metadata.Distribution:
    """A copy of the installed PyYAML (its files and the RECORD its installer wrote)."""
    dist = importlib.metadata.distribution("PyYAML")
    for path in dist.files:
        if ".." in path.parts:  # scripts outside site-packages: PyYAML has none
            continue
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(dist.locate_file(path)).is_file():
            shutil.copyfile(dist.locate_file(path), target)
    (info,) = tmp_path.glob("*.dist-info")
    return importlib.metadata.PathDistribution(info)


def test_a_copy_of_an_installed_package_matches_its_record_until_a_file_changes(yaml_copy):
    root = Path(yaml_copy.locate_file(""))
    assert record_problems(yaml_copy, ("yaml",)) == []

    (root / "yaml" / "composer.py").write_text("# edited\n", encoding="utf-8")
    (root / "yaml" / "extra.py").write_text("x = 1\n", encoding="utf-8")
    (root / "yaml" / "nodes.py").unlink()
    assert record_problems(yaml_copy, ("yaml",)) == [
        "yaml/composer.py is modified",
        "yaml/nodes.py is missing",
        "yaml/extra.py is not in RECORD",
    ]


def test_a_record_entry_without_a_hash_fails_unless_it_is_the_record_or_bytecode(yaml_copy):
    info = Path(yaml_copy._path)
    record = info / "RECORD"
    lines = record.read_text().splitlines()
    # What pip writes for the bytecode it compiles: the path and two empty fields.
    lines.append("yaml/__pycache__/nodes.cpython-311.pyc,,")
    record.write_text("\n".join(lines) + "\n")
    assert record_problems(yaml_copy, ("yaml",)) == []
    unhashed = ["yaml/nodes.py,," if line.startswith("yaml/nodes.py,") else line for line in lines]
    record.write_text("\n".join(unhashed) + "\n")
    assert record_problems(yaml_copy, ("yaml",)) == ["yaml/nodes.py has no hash in RECORD"]


def test_the_pin_of_a_release_names_at_most_ten_changed_files_and_counts_the_rest(yaml_copy):
    from quantshift.provenance import _core_state

    version = yaml_copy.version
    assert _core_state(yaml_copy) == (None, None, True, f"release {version}, files match RECORD")
    modules = sorted(Path(yaml_copy.locate_file("yaml")).glob("*.py"))
    assert len(modules) > 11
    for module in modules:
        module.write_text(module.read_text() + "# edited\n")
    commit, dirty, pinned, by = _core_state(yaml_copy)
    named = "; ".join(f"yaml/{m.name} is modified" for m in modules[:10])
    assert (commit, dirty, pinned) == (None, None, False)
    assert by == (
        f"release {version} does not match its RECORD: {named}; {len(modules) - 10} more "
        "(reinstall quantshift, or run it from a clean git checkout)"
    )


def test_this_developer_install_is_pinned_by_git_not_by_a_record():
    # uv installs this checkout editable: its RECORD lists no sources, so git applies.
    assert installed_distribution() is None
    pinned, by = core_pin()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert (pinned, by) == (
        (False, "git: tracked files differ from the commit (commit or revert them)")
        if dirty
        else (True, "git")
    )


# --------------------------------------------------------------------------- the gate, fast
RELEASE = dataclasses.replace(
    GOOD,
    code_dirty=None,  # a wheel in site-packages: no git checkout
    strategy_file="/home/quant/my-strategies/strategies/donchian_breakout.py",
    strategy_git_dirty=False,
    core_pinned=True,
    core_pinned_by="release 0.1.0, files match RECORD",
)


def test_a_release_matching_its_record_with_a_committed_strategy_passes_the_code_check():
    check = _code_check(RELEASE)
    assert check.passed and check.note == (
        f"strategy source {RELEASE.strategy_file} is committed; core pinned by release 0.1.0, "
        "files match RECORD"
    )


@pytest.mark.parametrize(
    ("changes", "note"),
    [
        (
            {
                "core_pinned": False,
                "core_pinned_by": "release 0.1.0 does not match its RECORD: "
                "quantshift/engine/fills.py is modified",
            },
            "quantshift's core is not pinned: release 0.1.0 does not match its RECORD: "
            "quantshift/engine/fills.py is modified",
        ),
        (
            {"core_pinned": None},  # a record claiming a pin without saying whether it holds
            "quantshift's core is not pinned: release 0.1.0, files match RECORD",
        ),
        (
            {"strategy_git_dirty": True},
            "tracked files in the repository of "
            f"{RELEASE.strategy_file} differ from its commit (commit them and rerun the study)",
        ),
        (
            {"strategy_git_dirty": None},
            f"the run does not say whether the repository of {RELEASE.strategy_file} is clean "
            "(rerun the study)",
        ),
        (
            {
                "strategy_file_git": "in the release",
                "core_pinned": False,
                "core_pinned_by": "release 0.1.0 does not match its RECORD: "
                "quantshift/strategies/ma_crossover.py is modified",
            },
            "quantshift's core is not pinned: release 0.1.0 does not match its RECORD: "
            "quantshift/strategies/ma_crossover.py is modified",
        ),
        (
            {"strategy_file_git": "outside git", "strategy_git_dirty": None},
            f"the strategy's source {RELEASE.strategy_file} is outside git",
        ),
    ],
)
def test_an_unpinned_core_or_strategy_fails_the_code_check_saying_why(changes, note):
    check = _code_check(dataclasses.replace(RELEASE, **changes))
    assert not check.passed and check.note == note


def test_a_strategy_shipped_in_a_release_matching_its_record_is_pinned_with_it():
    shipped = dataclasses.replace(
        RELEASE,
        strategy_file="quantshift/strategies/ma_crossover.py",
        strategy_file_git="in the release",
        strategy_git_dirty=None,
    )
    check = _code_check(shipped)
    assert check.passed and check.note == (
        "strategy source quantshift/strategies/ma_crossover.py is in the release; core pinned "
        "by release 0.1.0, files match RECORD"
    )
    # Only a record that says how its core is pinned can claim it.
    old = _code_check(dataclasses.replace(shipped, core_pinned=None, core_pinned_by=None))
    assert not old.passed


def test_a_record_made_before_core_pin_is_read_as_before():
    # No core_pinned_by: the checkout's git state alone decides, as it always did.
    old = dataclasses.replace(GOOD, strategy_git_dirty=None)
    assert _code_check(old).passed
    outside = _code_check(dataclasses.replace(old, code_dirty=None))
    assert not outside.passed and outside.note == "the run's code is not in a git checkout"


# --------------------------------------------------------------------------- a real wheel, slow
def _run(*args, cwd: Path, env: dict[str, str] | None = None, ok: bool = True):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
    environ.pop("QUANTSHIFT_STRATEGY_PATH", None)
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env={**environ, **(env or {})},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if ok:
        assert done.returncode == 0, f"{args}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A user's repository from `quantshift init`, committed, with a fresh venv inside it where
    pip installed the wheel of this checkout; the venv reaches this venv's packages for the
    dependencies through a .pth line, added after pip ran (pip saw no other quantshift)."""
    root = tmp_path_factory.mktemp("installed")
    assert not root.resolve().is_relative_to(REPO)
    wheels = root / "wheels"
    _run(shutil.which("uv") or "uv", "build", "--wheel", "--out-dir", wheels, cwd=REPO)
    (wheel,) = wheels.glob("quantshift-*.whl")

    # The project is laid out first (by this checkout's `quantshift init`: the same templates)
    # so that the venv can live in it, as uv puts one: git ignores .venv.
    project = root / "my-strategies"
    _run(Path(sys.executable).parent / "quantshift", "init", project, cwd=root)
    (project / "experiments" / "quick.toml").write_text(QUICK_SPEC)
    (project / "gate.toml").write_text(RELAXED_GATE)
    venv = project / ".venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run(base, "-m", "venv", venv, cwd=root)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=root)
    site = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=root
        ).stdout.strip()
    )
    (site / "_quantshift_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    git("init", "-q", cwd=project)
    git("add", "-A", cwd=project)
    git("commit", "-qm", "project", cwd=project)
    assert git("status", "--porcelain", cwd=project) == ""  # .venv is ignored
    return project, venv, site


def _study_and_promote(project: Path, venv: Path, name: str) -> dict:
    """Run the quick study and promote it with the installed commands; the outcome's JSON."""
    tracking = f"sqlite:///{project}/experiments/mlflow.db"
    study = _run(
        venv / "bin" / "quantshift", "research", "report", project / "experiments/quick.toml",
        "--json", "--tracking-uri", tracking, cwd=project.parent,
    )  # fmt: skip
    run_id = json.loads(study.stdout)["run_id"]
    promoted = _run(
        venv / "bin" / "quantshift", "promote", run_id, "--stage", "paper", "--store",
        f"sqlite:///{project}/data/live/paper.db", "--name", name, "--gate", "gate.toml",
        "--tracking-uri", tracking, "--json", cwd=project, ok=False,
    )  # fmt: skip
    return json.loads(promoted.stdout)


@pytest.mark.slow
def test_an_installed_release_passes_the_code_check_until_an_installed_file_is_edited(
    installed,
):
    project, venv, site = installed
    where = _run(venv / "bin" / "python", "-c", "import quantshift; print(quantshift.__file__)",
                 cwd=project).stdout.strip()  # fmt: skip
    assert Path(where) == site / "quantshift" / "__init__.py"  # the wheel, not this checkout

    outcome = _study_and_promote(project, venv, "donchian-release")
    (check,) = [c for c in outcome["gate"]["checks"] if c["name"] == CODE_CHECK]
    code = outcome["record"]["code"]
    assert code["git_commit"] is None and code["git_dirty"] is None  # no quantshift checkout
    assert code["core_pinned"] is True
    assert code["core_pinned_by"] == "release 0.1.0, files match RECORD"
    assert code["strategy_file_git"] == "committed" and code["strategy_git_dirty"] is False
    assert check["passed"], check
    assert outcome["promoted"], outcome["gate"]

    probe = (
        "import json, quantshift as qs; c = qs.code_fingerprint('ma_crossover'); print(json.dumps("
        "{k: c[k] for k in ('strategy_file', 'strategy_file_git', 'core_pinned')}))"
    )
    builtin = json.loads(_run(venv / "bin" / "python", "-c", probe, cwd=project).stdout)
    assert builtin == {
        "strategy_file": "quantshift/strategies/ma_crossover.py",
        "strategy_file_git": "in the release",  # not "untracked": .venv is ignored by git
        "core_pinned": True,
    }

    engine = site / "quantshift" / "engine" / "config.py"
    engine.write_text(engine.read_text() + "\n# edited after install\n")
    builtin = json.loads(_run(venv / "bin" / "python", "-c", probe, cwd=project).stdout)
    assert builtin["core_pinned"] is False
    outcome = _study_and_promote(project, venv, "donchian-edited")
    (check,) = [c for c in outcome["gate"]["checks"] if c["name"] == CODE_CHECK]
    assert not outcome["promoted"] and not check["passed"]
    assert check["note"] == (
        "quantshift's core is not pinned: release 0.1.0 does not match its RECORD: "
        "quantshift/engine/config.py is modified (reinstall quantshift, or run it from a "
        "clean git checkout)"
    )
