"""Helper processes die with the command that started them."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifarlab.children import descendants
from tests.processes import running, wait_gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")


def start_parent(tmp_path, guarded):
    """A Python process whose spawned child sleeps a minute, calling die_with_parent first when guarded."""
    code = ("import multiprocessing, os, sys, time\n"
            "from cifarlab import children\n"
            "def sleep(parent):\n"
            "    children.die_with_parent(parent) if sys.argv[1] == 'guarded' else None\n"
            "    print('ready', flush=True)\n"
            "    time.sleep(60)\n"
            "if __name__ == '__main__':\n"
            "    multiprocessing.get_context('spawn').Process(target=sleep, args=(os.getpid(),)).start()\n"
            "    time.sleep(60)\n")
    script = tmp_path / "parent.py"  # a file, not -c: a spawned child finds its target in the parent's script
    script.write_text(code)
    parent = subprocess.Popen([sys.executable, str(script), "guarded" if guarded else "plain"],
                              stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert parent.stdout.readline() == "ready\n"
    return parent


def test_a_guarded_child_dies_with_its_parent_even_on_kill_9(tmp_path):
    parent = start_parent(tmp_path, guarded=True)
    helpers = descendants(parent.pid)
    assert helpers
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert wait_gone(helpers) == []


def test_without_the_guard_a_child_outlives_a_killed_parent(tmp_path):  # what the guard is for
    parent = start_parent(tmp_path, guarded=False)
    helpers = descendants(parent.pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    time.sleep(0.5)
    left = running(helpers)
    for pid in left:
        subprocess.run(["kill", "-9", str(pid)], check=False)
    assert left
