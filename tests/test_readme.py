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


def test_the_promotion_walk_through_ends_in_a_config_that_trades_the_promoted_record():
    """The walk-through promoted into data/live/paper.db, and the live example it pointed to
    read data/live/paper-sp500.db with fixed parameters: the promoted record never traded."""
    from live.config import load_config
    from research.spec import load_spec

    root = README.parent
    lines = [" ".join(args) for args in _cli_examples("quantshift")]
    (report,) = {a for a in lines if a.startswith("research report") and "ma_crossover" in a}
    (promote,) = [a for a in lines if a.startswith("promote ") and "--stage paper" in a]
    (config_path,) = [
        args[args.index("--config") + 1]
        for args in _cli_examples("live")
        if args[:1] == ["run"] and "promoted" in " ".join(args)
    ]
    spec = load_spec(root / report.split()[2])
    cfg = load_config(root / config_path)
    store = promote.split("--store ")[1].split()[0]
    # The promote command runs in the repository root; the config's store is relative to it.
    assert store.startswith("sqlite:///") and not store.startswith("sqlite:////")
    assert cfg.store_url == f"sqlite:///{(root / store[len('sqlite:///') :]).resolve()}"
    # Its sleeve trades the record named after the study, on the study's universe and costs.
    assert list(cfg.promotions.values()) == [spec.name]
    (sleeve,) = cfg.portfolio.sleeves
    assert sleeve.strategy_name == spec.strategy and list(sleeve.symbols) == ["SP500"]
    assert spec.data.source == "builtin:sp500" and cfg.mode == "paper"
    assert cfg.portfolio.sim.fees_bps == spec.costs.fees_bps
    assert cfg.portfolio.sim.slippage_bps == spec.costs.slippage_bps
