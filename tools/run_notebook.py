"""Run notebooks/explore.ipynb headless, top to bottom, and save it with its outputs.

    .venv/bin/python tools/run_notebook.py                           # full test split -> runs/explore.ipynb
    .venv/bin/python tools/run_notebook.py --subset 500              # a quick look on 500 test images
    .venv/bin/python tools/run_notebook.py --out notebooks/explore.ipynb   # refresh the committed outputs

TensorFlow's C++ start-up logging goes to this terminal, not into the notebook's outputs.
"""
import argparse
import os
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=NOTEBOOK.parents[1] / "runs" / "explore.ipynb",
                   help="where the run notebook is saved (default: runs/explore.ipynb; the tracked one is untouched)")
    p.add_argument("--subset", type=int, help="test images to use (EXPLORE_SUBSET; default: all 10,000)")
    p.add_argument("--data", help="dataset (EXPLORE_DATA; default: ../shared/data/cifar10-jpeg.tar.gz)")
    args = p.parse_args(argv)
    if args.subset is not None and args.subset < 1:
        p.error("--subset must be at least 1")
    data = args.data and Path(args.data).resolve()  # the kernel runs in notebooks/
    for name, value in (("EXPLORE_SUBSET", args.subset), ("EXPLORE_DATA", data)):
        if value is not None:
            os.environ[name] = str(value)  # the kernel inherits this process's environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}},
                   extra_arguments=["--IPKernelApp.capture_fd_output=False"], **progress_hooks(nb.cells)).execute()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, args.out)
    print(f"ran {NOTEBOOK.name}; saved with its outputs as {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
