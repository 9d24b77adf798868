"""The ``quantshift`` command: backtest, sweep, data, strategies and demo.

Human output by default, ``--json`` for scripts; errors name what is wrong and exit with code 2.
Other packages add command groups through the ``quantshift.commands`` entry point group (the
``research`` group comes that way, so the core never imports the drivers built on it).

``apps`` holds the Typer app, its groups, the plugin commands and :func:`main` (the console
script); ``options`` the option types and checks the commands share; ``commands`` the top-level
commands; ``strategy_commands`` and ``data_commands`` the ``strategies`` and ``data`` groups.
"""

# Importing the command modules adds their commands to the apps (after the plugins' commands,
# which the apps add as they are created).
from quantshift.cli import commands, data_commands, strategy_commands  # noqa: F401
from quantshift.cli.apps import app, data_app, main, strategies_app
from quantshift.cli.options import (
    check_output_dir,
    check_output_file,
    parse_assignments,
    parse_grid_axis,
    plot_paths,
    require_at_least,
)

__all__ = [
    "app",
    "check_output_dir",
    "check_output_file",
    "data_app",
    "main",
    "parse_assignments",
    "parse_grid_axis",
    "plot_paths",
    "require_at_least",
    "strategies_app",
]
