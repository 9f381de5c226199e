"""Upload storage: re-encoded images under random names, atomic writes, a retention cap."""
import os
import re
import secrets
from pathlib import Path

DISPLAY_MAX_SIDE = 512  # pixels; stored copies are downscaled to this for display
NAME_PATTERN = re.compile(r"[0-9a-f]{32}\.png")


def is_valid_name(name):
    """True only for names this module generates (no paths, no client-chosen names)."""
    return bool(NAME_PATTERN.fullmatch(name))


def display_copy(image):
    """An RGB copy no larger than DISPLAY_MAX_SIDE on either side (metadata is never copied)."""
    copy = image.copy()
    copy.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE))
    return copy


def save_image(image, folder):
    """Write a PNG re-encoding of a decoded image atomically under a random name; return the name."""
    name = f"{secrets.token_hex(16)}.png"
    folder = Path(folder)
    tmp = folder / f".{name}.tmp"
    try:
        display_copy(image).save(tmp, format="PNG")
        os.replace(tmp, folder / name)
    finally:
        tmp.unlink(missing_ok=True)
    return name


def enforce_retention(folder, max_files, max_bytes):
    """Delete the oldest stored uploads until at most max_files files and max_bytes bytes remain."""
    entries = []
    for entry in os.scandir(folder):
        if is_valid_name(entry.name):
            try:
                stat = entry.stat()
            except FileNotFoundError:  # removed by another worker meanwhile
                continue
            entries.append((stat.st_mtime_ns, entry.name, stat.st_size))
    entries.sort()
    total = sum(size for _, _, size in entries)
    while entries and (len(entries) > max_files or total > max_bytes):
        _, name, size = entries.pop(0)
        Path(folder, name).unlink(missing_ok=True)
        total -= size
