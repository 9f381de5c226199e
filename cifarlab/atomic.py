"""Atomic file writes: readers see the old file or the new one, never half of one (model files, sidecars, data
caches, resume states, plots, batch outputs)."""
import json
import os
from pathlib import Path


def replace_atomically(path, write):
    """Call write(temporary path) beside `path`, then rename it over `path`: readers see the old file or the new one,
    never half of one; a failed write leaves no temporary file behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # same suffix: savers choose format by it
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, data):
    """Write JSON atomically (temp file + rename)."""
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))
