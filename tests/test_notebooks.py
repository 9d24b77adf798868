"""Execute every notebook under notebooks/ on small data, and keep them committed without outputs.

Each runs in a fresh kernel of this interpreter, in a temporary folder, so nothing lands in the
repository.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "python3"


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """Kernel specs holding one python3 kernel that runs this very interpreter.

    The python3 spec Jupyter would find first may launch another Python (a user-wide or system
    kernel), which lacks the project's packages. ipykernel writes a spec whose argv[0] is
    ``sys.executable``; a manager that looks only in that folder cannot pick anything else.
    """
    folder = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(folder / KERNEL_NAME)
    return KernelSpecManager(kernel_dirs=[str(folder)])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path, kernel_specs: KernelSpecManager) -> None:
    nb = nbformat.read(path, as_version=4)
    manager = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        nb,
        km=manager,
        timeout=600,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    env = {
        **os.environ,
        "QUANTSHIFT_NOTEBOOK_SMALL": "1",
        "MPLBACKEND": "Agg",
        # Belt and braces: anything that would still write data or runs goes to the temp folder.
        "QUANTSHIFT_DATA_DIR": str(tmp_path / "data"),
        "QUANTSHIFT_EXPERIMENTS_DIR": str(tmp_path / "experiments"),
    }
    env.pop("QUANTSHIFT_NOTEBOOK_TRACK", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    # Raises CellExecutionError at the first failing cell. nbclient shuts down only kernels
    # whose manager it created itself, so ask it to shut down ours too.
    client.execute(env=env, cleanup_kc=True)
    seconds = time.perf_counter() - started
    errors = [
        (index, output.get("ename"), output.get("evalue"))
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert errors == []
    unexecuted = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None
    ]
    assert unexecuted == [], f"{path.name}: code cells {unexecuted} did not run"
    print(f"{path.name}: {seconds:.1f} s")


def test_notebooks_are_committed_without_outputs() -> None:
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL_NAME, path.name
        dirty = [
            index
            for index, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
        ]
        assert dirty == [], (
            f"{path.name}: code cells {dirty} carry outputs or execution counts; clear them "
            "(Jupyter: Edit > Clear Outputs of All Cells) before committing"
        )
