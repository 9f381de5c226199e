"""Re-run notebooks/explore.ipynb in place on the full data, so its committed outputs are current.

    .venv/bin/python tools/run_notebook.py

TensorFlow's C++ start-up logging goes to this terminal, not into the notebook's outputs.
"""
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"


def main():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}},
                   extra_arguments=["--IPKernelApp.capture_fd_output=False"]).execute()
    nbformat.write(nb, NOTEBOOK)
    print(f"re-ran {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
