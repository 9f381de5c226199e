"""Give freed heap memory back to the operating system (glibc keeps it in its arenas otherwise)."""
import ctypes
import ctypes.util
import functools


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
