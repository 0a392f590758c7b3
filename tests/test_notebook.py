"""notebooks/fer_workflow.ipynb runs top to bottom on the bundled sample.

The kernel is this interpreter (``sys.executable``): the test writes a
kernelspec named ``python3`` into a temporary directory and puts it first on
``JUPYTER_PATH``, so no ``ipykernel install`` is needed and no other Python
on the machine is picked up.
"""

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "fer_workflow.ipynb"
PARAMETERS = 'DATA = None\nEPOCHS = 1\nBATCH_SIZE = 128\nSEED = 0\n'


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (fer tests)",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter") + os.pathsep + os.environ.get("JUPYTER_PATH", ""))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("RAYON_NUM_THREADS", os.environ.get("RAYON_NUM_THREADS", "2"))
    # keep the kernel's runtime files out of the user's home
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    return tmp_path


def parameter_cell(nb):
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    source = parameter_cell(nb).source
    assert "DATA = None" in source and "EPOCHS =" in source


def test_notebook_runs_on_the_sample(kernel_env):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameter_cell(nb).source = PARAMETERS
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(kernel_env)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert all(c.execution_count for c in code)

    # it ran in this interpreter (the kernelspec above)
    assert code[-1].outputs[0]["text"].strip() == sys.executable

    def text(cell):
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream") + "".join(
            o.get("data", {}).get("text/plain", "") for o in cell.outputs if "data" in o
        )

    all_text = "\n".join(text(c) for c in code)
    # plots were drawn: class bars, faces, learning curves, confusion matrices, gallery
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5
    for name in ("seed3x3", "seed4x4", "fer_vgg"):
        assert name in all_text
    assert "best on the test rows" in all_text
    assert "pretrained model on the test rows: accuracy" in all_text
