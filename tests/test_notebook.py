from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.slow
def test_explore_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    from tests.test_data import write_folder
    from cifarlab.ml.data import CIFAR10_CLASSES

    data = SHARED if SHARED.exists() else write_folder(tmp_path / "ds", CIFAR10_CLASSES, per_class=8)
    monkeypatch.setenv("EXPLORE_SUBSET", "300")
    monkeypatch.setenv("EXPLORE_DATA", str(data))
    nb = nbformat.read(ROOT / "notebooks" / "explore.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "accuracy" in outputs and "Traceback" not in outputs
