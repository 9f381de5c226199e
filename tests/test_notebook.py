from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.slow
def test_explore_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    from tests.helpers import write_folder
    from cifarlab.ml.data import CIFAR10_CLASSES

    data = SHARED if SHARED.exists() else write_folder(tmp_path / "ds", CIFAR10_CLASSES, per_class=8)
    monkeypatch.setenv("EXPLORE_SUBSET", "300")
    monkeypatch.setenv("EXPLORE_DATA", str(data))
    nb = nbformat.read(ROOT / "notebooks" / "explore.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "accuracy" in outputs and "Traceback" not in outputs


def test_the_notebook_rerun_prints_a_line_per_code_cell(capsys):
    import importlib.util

    import nbformat

    spec = importlib.util.spec_from_file_location("run_notebook", ROOT / "tools" / "run_notebook.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cells = [nbformat.v4.new_markdown_cell("# title"), nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("2")]
    hooks = tool.progress_hooks(cells)
    for index in (1, 2):
        hooks["on_cell_start"](cells[index], index)
        hooks["on_cell_executed"](cells[index], index, {})
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["[cell 1/2] running", "[cell 2/2] running", "all 2 code cells ran in 0 s"]
