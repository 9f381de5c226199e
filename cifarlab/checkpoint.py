"""Saving and loading a model file together with its JSON sidecar (labels, recipe, metrics)."""
import json
import os
from pathlib import Path

from . import models  # noqa: F401  (registers the custom layers before any load)


class ModelFileError(RuntimeError):
    """A model file that is missing, corrupt or incompatible; the message names the path."""


def sidecar_path(model_path):
    """model/cifar10_cnn.h5 -> model/cifar10_cnn.json"""
    return Path(model_path).with_suffix(".json")


def write_json(path, data):
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def save(model, model_path, meta):
    """Save model (.h5, without optimizer state) and its sidecar, each atomically."""
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_path.with_name(f".{model_path.stem}.{os.getpid()}.tmp.h5")
    model.save(tmp, include_optimizer=False)
    os.replace(tmp, model_path)
    write_json(sidecar_path(model_path), meta)


def read_meta(model_path):
    """The sidecar of a model file as a dict."""
    path = sidecar_path(model_path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{path}: sidecar not found (it must sit beside {model_path}).") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: sidecar is not valid JSON ({exc}).") from None


def load(model_path):
    """Load (model, meta) and check they agree; raise ModelFileError with a one-line reason."""
    import keras

    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelFileError(f"{model_path}: model file not found.")
    meta = read_meta(model_path)
    try:
        model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:  # h5py/keras raise many types for corrupt or foreign files
        raise ModelFileError(f"{model_path}: cannot load model ({type(exc).__name__}: {str(exc)[:200]}).") from None
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
