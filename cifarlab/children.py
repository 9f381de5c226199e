"""Helper processes that never outlive the command that started them and leave Ctrl-C to it."""
import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid=None):
    """In a child: ignore Ctrl-C (the parent reports it, once) and be killed when the parent dies, even by kill -9.

    parent_pid, where the caller knows it, closes the window between the child's start and this call. The kernel's
    parent-death signal is Linux-only; elsewhere a child still ends when its pipes close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before the request above was made
        os._exit(1)


def descendants(pid):
    """The pids of every process under pid, children and theirs (Linux /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # the process ended while /proc was read
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found
