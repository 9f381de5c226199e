"""Process memory: give freed heap back to the operating system (glibc keeps it in its arenas otherwise), and cap a
process's address space (decoders, the explain worker)."""
import ctypes
import ctypes.util
import functools
import os

try:
    import resource
except ImportError:  # not a POSIX system: no address-space limit
    resource = None


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None on a C library without it."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release():
    """Return free pages at the top of every arena to the OS; True when glibc did."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def limit_address_space(limit_bytes):
    """Cap this process's address space at what it maps now plus limit_bytes: past it, allocations fail."""
    if resource is None or not limit_bytes or not os.path.exists("/proc/self/statm"):  # Linux only
        return
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = mapped + limit_bytes
    resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
