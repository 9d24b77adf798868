"""Project rules that code review would otherwise have to remember.

The dependency rule of DESIGN.md, and lint (ruff) as part of the test command.
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


def test_dependency_rule_catches_a_violation(tmp_path, monkeypatch):
    (tmp_path / "quantshift").mkdir()
    (tmp_path / "quantshift" / "bad.py").write_text("from live import runner\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert "live" in _imported_roots("quantshift")


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
