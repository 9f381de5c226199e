"""Model files: saving and loading one with its JSON sidecar (labels, recipe, metrics), checking it, and its contract.

The contract, in one place (inference, export, Grad-CAM and training read models through the functions below): every
model maps raw 0..255 RGB pixels (N, H, W, 3) to class probabilities. A model with test-time views makes views VIEW0,
VIEW1, ... of its input (view0 the identity), runs its backbone (a nested model, logits out) on each, and ends in the
softmax PROBABILITIES over the MEAN of their logits. Any other model (the baseline, the transfer net) is its own
single-view network ending in a softmax: its logits are its log-probabilities, up to a constant. Each training run
records describe(model) in the sidecar as `model_file`. Imports no TensorFlow until a model is loaded.
"""
import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np

from . import quiet, sidecar
from .atomic import replace_atomically, write_json
from .errors import CifarlabError

PROBABILITIES = "probabilities"  # the final softmax of a model with test-time views
MEAN = "tta_mean"  # the weighted mean of its views' logits (the softmax's input)
VIEW = "view{}"  # its view layers, in view order


def log_probabilities(probs, dtype=np.float32):
    """log(p), clipped at 1e-12: logits up to a constant, for files that output probabilities."""
    return np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)).astype(dtype)


def views(model):
    """[(mirror, dx, dy, weight)] of a model's test-time views in view order; [] for a single-view model."""
    names = {layer.name for layer in model.layers}
    view_layers = [model.get_layer(VIEW.format(i)) for i in range(len(names)) if VIEW.format(i) in names]
    if not view_layers:
        return []
    weights = model.get_layer(MEAN).view_weights if len(view_layers) > 1 else [1.0]
    return [(view.mirror, view.dx, view.dy, weight) for view, weight in zip(view_layers, weights)]


def backbone(model):
    """The single-view network of a model: the nested one of a model with views (logits out), else the model."""
    if not views(model):
        return model
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def ends_in_softmax(network):
    """True when the network's last layer applies a softmax (the baseline, any full model), False for logits."""
    activation = getattr(network.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def logits_model(model):
    """(network, to_logits): the model up to its logits, and what turns that network's output into logits."""
    if not views(model):
        return model, log_probabilities
    import keras

    return keras.Model(model.inputs[0], model.get_layer(PROBABILITIES).input), np.asarray


def symbolic_logits(model, inputs):
    """The model's logits on symbolic Keras inputs (to build a model on top of them, e.g. a calibrated softmax)."""
    import keras

    network, _ = logits_model(model)
    outputs = network(inputs)
    return outputs if network is not model else keras.ops.log(keras.ops.maximum(outputs, 1e-12))


def describe(model):
    """The sidecar's `model_file` record: what the file outputs, where its logits are, its backbone and views."""
    parts = views(model)
    return {"output": "probabilities (softmax), from raw 0..255 RGB pixels",
            "logits": f"input of layer '{PROBABILITIES}' (mean of the views' logits)" if parts
                      else "log of the output, up to a constant",
            "backbone": backbone(model).name if parts else None,
            "views": len(parts) or 1}


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
