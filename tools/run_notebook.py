"""Re-run notebooks/explore.ipynb in place on the full data, so its committed outputs are current.

    .venv/bin/python tools/run_notebook.py

TensorFlow's C++ start-up logging goes to this terminal, not into the notebook's outputs.
"""
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"


def progress_hooks(cells, started=None):
    """nbclient's on_cell_start / on_cell_executed hooks: a line per code cell with the time taken so far."""
    started = time.monotonic() if started is None else started
    code = [i for i, cell in enumerate(cells) if cell.cell_type == "code"]

    def start(cell, cell_index):
        print(f"[cell {code.index(cell_index) + 1}/{len(code)}] running ({time.monotonic() - started:,.0f} s so far)",
              file=sys.stderr, flush=True)

    def executed(cell, cell_index, execute_reply):
        if code.index(cell_index) + 1 == len(code):
            print(f"all {len(code)} code cells ran in {time.monotonic() - started:,.0f} s", file=sys.stderr, flush=True)

    return {"on_cell_start": start, "on_cell_executed": executed}


def main():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}},
                   extra_arguments=["--IPKernelApp.capture_fd_output=False"], **progress_hooks(nb.cells)).execute()
    nbformat.write(nb, NOTEBOOK)
    print(f"re-ran {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
