"""What processes a command left behind (Linux /proc), for the tests of interrupted and killed commands."""
import signal
import time
from pathlib import Path


def interruptible():
    """In a child before exec: SIGINT raises KeyboardInterrupt again, as at a terminal (a pytest-xdist worker ignores
    SIGINT, and a process that starts with SIGINT ignored never installs Python's handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def running(pids):
    """Those of pids still running (a zombie has ended: it only waits for its parent to read its status)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def wait_gone(pids, timeout=10.0):
    """Those of pids still running after up to timeout seconds (polled)."""
    deadline = time.monotonic() + timeout
    while running(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running(pids)
