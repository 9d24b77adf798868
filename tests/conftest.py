"""Suite-wide fixtures."""

from __future__ import annotations

import os

import pytest

# pytest-xdist's workers inherit COLUMNS=80 from their controller; a user's command writing to a
# pipe has none (quantshift.report.console then lays out 160 columns). Test what a user gets.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="module", autouse=True)
def _trial_registry_per_module(tmp_path_factory):
    """Every sweep is recorded in the trial registry: each test module's go to a fresh
    temporary file (never experiments/registry.db), so counts do not depend on other modules."""
    path = tmp_path_factory.mktemp("registry") / "registry.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANTSHIFT_REGISTRY_URL", f"sqlite:///{path}")
        yield


@pytest.fixture(autouse=True)
def _close_figures():
    """pyplot keeps every figure a test opened (reports, studies, Monte Carlo) until closed; a
    worker running many test files would hold hundreds. Close them after each test."""
    yield
    import sys

    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")
