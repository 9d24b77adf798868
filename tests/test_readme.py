"""Every Python example in the README runs, and every CLI example names a real command.

A README that lies is worse than none.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.main import get_command

from quantshift.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("code", [c for lang, c in BLOCKS if lang == "python"])
def test_python_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, str(README), "exec"), namespace)
    strategy = namespace.get("STRATEGY")
    if strategy is not None:
        import quantshift as qs

        result = qs.backtest(strategy, "synthetic:symbols=1,bars=500,seed=2")
        assert result.metrics["trades"] > 0


def _cli_examples(program: str = "quantshift") -> list[list[str]]:
    commands = []
    for lang, code in BLOCKS:
        if lang != "bash":
            continue
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].strip()
            if line.startswith(f"uv run {program} "):
                commands.append(shlex.split(line)[3:])
    return commands


@pytest.mark.parametrize(("program", "at_least"), [("quantshift", 8), ("live", 5)])
def test_cli_examples_parse(program, at_least):
    from live.cli import app as live_app

    group = get_command(app if program == "quantshift" else live_app)
    examples = _cli_examples(program)
    assert len(examples) >= at_least
    for args in examples:
        ctx = group.make_context(program, list(args), resilient_parsing=True)
        name, sub, rest = group.resolve_command(ctx, args)
        assert sub is not None, args
        if hasattr(sub, "resolve_command"):
            sub_ctx = sub.make_context(name, rest, resilient_parsing=True)
            _, leaf, leaf_args = sub.resolve_command(sub_ctx, rest)
            assert leaf is not None, args
            leaf.make_context(name, leaf_args)  # raises on an unknown option
        else:
            sub.make_context(name, rest)
