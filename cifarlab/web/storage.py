"""Upload storage: re-encoded images under random names, atomic writes, a retention cap."""
import hashlib
import os
import re
import secrets
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from .settings import ConfigError

DISPLAY_MAX_SIDE = 512  # pixels; stored copies are downscaled to this for display
CLIENT_TAG = 8  # leading hex digits of a stored name that say which client sent it (the other 24 are random)
NAME_PATTERN = re.compile(r"[0-9a-f]{32}(_input)?\.png")  # display copy, and the model input beside it


def is_valid_name(name):
    """True only for names this module generates (no paths, no client-chosen names)."""
    return bool(NAME_PATTERN.fullmatch(name))


def display_copy(image):
    """An RGB copy no larger than DISPLAY_MAX_SIDE on either side (metadata is never copied)."""
    copy = image.copy()
    copy.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE))
    return copy


def input_name(name):
    """The file holding the model input of a stored upload: abc.png -> abc_input.png."""
    return name[:-4] + "_input.png"


def content_name(data):
    """The stored name of fixed content (a bundled example): the same bytes, the same name, written once."""
    return hashlib.sha256(b"cifarlab-example:" + data).hexdigest()[:32] + ".png"


def client_tag(client):
    """The first hex digits of every name stored for one client, so retention can tell one client's files apart."""
    return hashlib.sha256(b"cifarlab-client:" + str(client).encode()).hexdigest()[:CLIENT_TAG]


def save_image(image, folder, model_input=None, name=None, client=None):
    """Write a PNG re-encoding of a decoded image (and its model input) atomically under a random name (tagged with
    its client, when given), or under `name` unless it is already there; the name."""
    folder = Path(folder)
    if name is not None and (folder / name).exists() and (model_input is None or (folder / input_name(name)).exists()):
        return name
    if name is None:
        random_hex = secrets.token_hex(16)
        name = (random_hex if client is None else client_tag(client) + random_hex[CLIENT_TAG:]) + ".png"
    files = [(name, display_copy(image))]
    if model_input is not None:
        files.append((input_name(name), Image.fromarray(model_input, "RGB")))
    for filename, picture in reversed(files):  # the input first: a display copy never lacks its input
        tmp = folder / f".{filename}.tmp"
        try:
            picture.save(tmp, format="PNG")
            os.replace(tmp, folder / filename)
        finally:
            tmp.unlink(missing_ok=True)
    return name


def load_input(folder, name):
    """The stored model input of an upload as a uint8 array, or None when there is none."""
    if not is_valid_name(name) or name.endswith("_input.png"):
        return None
    try:
        with Image.open(Path(folder) / input_name(name), formats=("PNG",)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except OSError:  # missing or unreadable: no explanation for this upload
        return None


def enforce_retention(folder, max_files, max_bytes, keep_seconds=0.0, now=None, client_share=1.0):
    """Delete the oldest stored uploads until at most max_files files and max_bytes bytes remain, but none younger
    than keep_seconds (a page may have just linked it) unless its client holds more than client_share of either cap
    (one client's burst cannot take everyone's room). True when the folder is within both caps afterwards."""
    now = time.time() if now is None else now
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
    files_of, bytes_of = Counter(), Counter()  # by client tag
    for _, name, size in entries:
        files_of[name[:CLIENT_TAG]] += 1
        bytes_of[name[:CLIENT_TAG]] += size

    def may_go(entry):
        mtime_ns, name, _ = entry
        tag = name[:CLIENT_TAG]
        over_share = client_share < 1.0 and (files_of[tag] > client_share * max_files
                                             or bytes_of[tag] > client_share * max_bytes)
        return now - mtime_ns / 1e9 >= keep_seconds or over_share

    while entries and (len(entries) > max_files or total > max_bytes):
        index = next((i for i, entry in enumerate(entries) if may_go(entry)), None)
        if index is None:
            return False  # what is left is too young to go, and no client holds more than its share
        _, name, size = entries.pop(index)
        Path(folder, name).unlink(missing_ok=True)
        files_of[name[:CLIENT_TAG]] -= 1
        bytes_of[name[:CLIENT_TAG]] -= size
        total -= size
    return True


def remove(folder, name):
    """Delete a stored upload and its model input."""
    for filename in (name, input_name(name)):
        Path(folder, filename).unlink(missing_ok=True)


def init_app(app):
    """Check UPLOAD_FOLDER takes files before the first request needs it."""
    check_upload_folder(app.config["UPLOAD_FOLDER"])


def check_upload_folder(folder):
    """Create the upload folder if needed and check it takes files; settings.ConfigError in one line if not."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"setting UPLOAD_FOLDER={folder!r}: cannot create or write files there "
                                   f"({exc.strerror or exc}).") from None
