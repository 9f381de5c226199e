"""Saving and loading a model file together with its JSON sidecar (labels, recipe, metrics)."""
import hashlib
import json
import os
import stat
from pathlib import Path

from . import quiet, sidecar
from .errors import CifarlabError
from .atomic import replace_atomically, write_json


class ModelFileError(CifarlabError, RuntimeError):
    """A model file that is missing, corrupt or incompatible; the message names the path."""


def sidecar_path(model_path):
    """model/cifar10_cnn.h5 -> model/cifar10_cnn.json"""
    return Path(model_path).with_suffix(".json")


def artefact_paths(model_path):
    """PNG and Markdown files written beside a model file."""
    stem = Path(model_path).with_suffix("")
    return {"confusion": f"{stem}_confusion.png", "reliability": f"{stem}_reliability.png",
            "mistakes": f"{stem}_mistakes.png", "curves": f"{stem}_curves.png", "card": f"{stem}_card.md"}


def source_model_path(model_path, meta):
    """The .h5 an export was made from: beside the export, else where the export read it (None when the file is not an
    export or the .h5 is gone)."""
    source = meta.get("exported_from")
    if not source:
        return None
    return next((path for path in (Path(model_path).parent / Path(source).name, Path(source)) if path.is_file()), None)


def save(model, model_path, meta):
    """Save model (.h5, without optimizer state) and its sidecar, each atomically."""
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(model_path, lambda tmp: model.save(tmp, include_optimizer=False))
    write_json(sidecar_path(model_path), meta)


def read_meta(model_path):
    """The sidecar of a model file as a dict, checked and upgraded to the current schema (cifarlab.sidecar)."""
    path = sidecar_path(model_path)
    try:
        return sidecar.check(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: sidecar not found (it must sit beside {model_path}).") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: sidecar is not valid JSON ({exc}).") from None
    except sidecar.SidecarError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


MAX_MODEL_BYTES = 1 << 30  # a model file larger than this is refused unread (the shipped ones are 2-51 MB)


def read_model_bytes(model_path):
    """The whole model file in memory, so replacing or truncating it later cannot reach a reader (TFLite would map
    it); ModelFileError for anything but a regular file of at most MAX_MODEL_BYTES."""
    return _read_model_file(model_path, lambda f: f.read(MAX_MODEL_BYTES + 1))


def model_digest(model_path):
    """SHA-256 hex digest of a model file, read in chunks (a large or sparse file is never held in memory); the
    same checks as read_model_bytes."""
    return _read_model_file(model_path, lambda f: hashlib.file_digest(f, "sha256").hexdigest())


def _read_model_file(model_path, read):
    """read(file) of a model file that is a regular file of at most MAX_MODEL_BYTES; ModelFileError otherwise."""
    try:
        with open(model_path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ModelFileError(f"{model_path}: not a regular file.")
            if info.st_size > MAX_MODEL_BYTES:
                raise ModelFileError(f"{model_path}: {info.st_size / 2**20:,.0f} MiB is larger than a model file "
                                     f"may be ({MAX_MODEL_BYTES >> 20} MiB).")
            result = read(f)
            grown = f.tell() > MAX_MODEL_BYTES
    except OSError as exc:
        raise ModelFileError(f"{model_path}: cannot read the model file ({exc.strerror or exc}).") from None
    if grown:
        raise ModelFileError(f"{model_path}: grew past {MAX_MODEL_BYTES >> 20} MiB while being read.")
    return result


def preflight(model_path):
    """Check without TensorFlow that a model file and its sidecar look loadable; ModelFileError if not."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelFileError(f"{model_path}: model file not found.")
    meta = read_meta(model_path)
    with open(model_path, "rb") as f:
        head = f.read(8)
    if model_path.suffix == ".tflite" and head[4:8] != b"TFL3":
        raise ModelFileError(f"{model_path}: not a TFLite model file.")
    if model_path.suffix == ".h5" and head != b"\x89HDF\r\n\x1a\n":
        raise ModelFileError(f"{model_path}: not an HDF5 (.h5) model file.")
    if model_path.suffix not in (".h5", ".tflite"):
        raise ModelFileError(f"{model_path}: expected a .h5 or .tflite model file.")
    return meta


def load(model_path):
    """Load (model, meta) and check they agree; raise ModelFileError with a one-line reason."""
    quiet.tensorflow()
    import keras

    from . import layers  # noqa: F401  (registers the custom layers before the load)

    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelFileError(f"{model_path}: model file not found.")
    meta = read_meta(model_path)
    try:
        model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:  # h5py/keras raise many types for corrupt or foreign files
        raise ModelFileError(f"{model_path}: cannot load model ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}).") from None
    check_shapes(model_path, model.input_shape, model.output_shape, meta)
    return model, meta


def check_shapes(model_path, input_shape, output_shape, meta):
    """Raise ModelFileError unless the model takes (N, size, size, 3) and has one output per sidecar class."""
    classes = meta.get("class_names")
    size = meta.get("input_size")
    if not classes or output_shape[-1] != len(classes):
        raise ModelFileError(f"{model_path}: model has {output_shape[-1]} outputs but the sidecar lists {classes}.")
    if tuple(input_shape[1:]) != (size, size, 3):
        raise ModelFileError(f"{model_path}: model input {tuple(input_shape[1:])} does not match input_size {size}.")
