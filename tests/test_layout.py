"""Project rules that code review would otherwise have to remember.

The dependency rule of DESIGN.md, no private name imported from another package (what two
packages share is public), and lint (ruff) as part of the test command.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_roots(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("quantshift", {"research", "live", "mlflow", "optuna", "redis", "psycopg", "requests"}),
        ("research", {"live"}),
        ("live", {"research"}),
    ],
)
def test_dependency_rule(package, forbidden):
    imported = _imported_roots(package)
    broken = {name: sorted(files) for name, files in imported.items() if name in forbidden}
    assert not broken, f"{package} must not import {sorted(broken)}: {broken}"


def test_optuna_stays_behind_research_optimize():
    imported = _imported_roots("research").get("optuna", set())
    outside = sorted(f for f in imported if not f.startswith("research/optimize/"))
    assert imported and not outside, f"only research/optimize/ imports optuna: {outside}"


def test_dependency_rule_catches_a_violation(tmp_path, monkeypatch):
    (tmp_path / "quantshift").mkdir()
    (tmp_path / "quantshift" / "bad.py").write_text("from live import runner\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert "live" in _imported_roots("quantshift")


PACKAGES = ("quantshift", "research", "live")


def _private_imports(root: Path) -> list[str]:
    """Every ``from X import _name`` whose module X sits in another package than the importer
    (a package's own modules may share private helpers; other packages use public names)."""
    found = []
    for top in PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            package = ".".join(path.relative_to(root).parts[:-1])
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                    continue
                source = node.module.rpartition(".")[0] or node.module
                private = [
                    a.name
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
                if private and source != package and node.module != package:
                    where = f"{path.relative_to(root)}:{node.lineno}"
                    found.append(f"{where} imports {', '.join(private)} from {node.module}")
    return found


def test_no_private_name_is_imported_from_another_package():
    found = _private_imports(ROOT)
    assert not found, "make shared helpers public where they live:\n" + "\n".join(found)


def test_private_import_check_catches_one(tmp_path):
    for top in PACKAGES:
        (tmp_path / top / "sub").mkdir(parents=True)
    (tmp_path / "research" / "plots.py").write_text(
        "from quantshift.engine.plotting import _pyplot\n"
    )
    (tmp_path / "quantshift" / "sub" / "a.py").write_text("from quantshift.sub.b import _x\n")
    (tmp_path / "quantshift" / "sub" / "c.py").write_text("from quantshift.other import _y\n")
    found = _private_imports(tmp_path)
    assert len(found) == 2
    assert found[0].startswith("quantshift/sub/c.py:1 imports _y from quantshift.other")
    assert found[1].startswith("research/plots.py:1 imports _pyplot")


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "ruff"]


def test_ruff_lint_clean():
    done = subprocess.run([*_ruff(), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_clean():
    done = subprocess.run(
        [*_ruff(), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
