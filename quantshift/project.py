"""``quantshift init``: lay out a project of one's own (strategies, experiments, live configs,
data) from the templates shipped in ``quantshift/templates/project``.
"""

from __future__ import annotations

import re
from pathlib import Path

from quantshift.errors import ConfigError

TEMPLATE = Path(__file__).resolve().parent / "templates" / "project"
# A real .gitignore would hide files from the wheel, a pyproject.toml confuse linters.
_RENAMED = {"gitignore": ".gitignore", "pyproject.toml.in": "pyproject.toml"}


def init_project(directory: str | Path) -> list[str]:
    """Write the project template into ``directory`` (created; it must not hold any file) and
    return the paths written, relative to it.

    Raises
    ------
    ConfigError
        If ``directory`` is a file or a directory that is not empty.
    """
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"init {target}: is a file; give a new or empty directory")
    if target.is_dir() and any(target.iterdir()):
        raise ConfigError(f"init {target}: directory is not empty; give a new or empty directory")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", target.resolve().name).strip("-.") or "strategies"
    values = {"{{project}}": name, "{{requirement}}": _requirement()}
    written = []
    for source in sorted(TEMPLATE.rglob("*")):
        if source.is_dir() or "__pycache__" in source.parts:
            continue
        relative = source.relative_to(TEMPLATE)
        relative = relative.with_name(_RENAMED.get(relative.name, relative.name))
        text = source.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace(key, value)
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(text, encoding="utf-8")
        written.append(relative.as_posix())
    return written


def _requirement() -> str:
    from quantshift import __version__

    return f">={__version__}"
