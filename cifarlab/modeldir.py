"""The MODEL_DIR layout, as TF Serving lays models out (the registry serves it, train.py models writes it):

    MODEL_DIR/<name>/<version>/<model file>.tflite|.h5 (+ its .json sidecar)
    MODEL_DIR/<name>/labels.json             optional: {"stable": 3, "canary": 4}
"""
import json
import os
import re

from . import modelfile

MODEL_SUFFIXES = (".tflite", ".h5")
LABELS_FILE = "labels.json"
STABLE, CANARY = "stable", "canary"  # the labels a canary rollout moves (train.py models)
VERSION_NAME = re.compile(r"[1-9][0-9]{0,17}", re.ASCII)  # 1, 2, ...: no Unicode digits, no leading zeros


def version_file(folder):
    """The model file in a version folder (the one .tflite or .h5 with a sidecar), or None."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return None
    models = [n for n in names if n.endswith(MODEL_SUFFIXES) and os.path.splitext(n)[0] + ".json" in names]
    return os.path.join(folder, models[0]) if len(models) == 1 else None


def stamp(folder):
    """What changes when a version folder's files do: names, sizes, modification times."""
    try:
        return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder)))
    except OSError:
        return ()


def version_folders(model_folder):
    """{version number: folder} of the whole-number folders under a model's folder."""
    try:
        entries = list(os.scandir(model_folder))
    except OSError:
        return {}
    return {int(e.name): e.path for e in entries if VERSION_NAME.fullmatch(e.name) and is_folder(e)}


def is_folder(entry):
    """A directory entry that is a folder (False when it vanished or cannot be looked at)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def read_labels(model_folder):
    """{label: version} from the model's labels.json ({} when there is none); ValueError when unreadable."""
    path = os.path.join(model_folder, LABELS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        labels = json.load(f)
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                               for k, v in labels.items()):
        raise ValueError(f'{path}: expected {{"label": version number, ...}}, e.g. {{"stable": 1, "canary": 2}}')
    return labels


def first_model_path(config):
    """The file the default model starts on: MODEL_PATH, or the highest version with a model file under MODEL_DIR."""
    if not config.get("MODEL_DIR"):
        return config["MODEL_PATH"]
    folder = os.path.join(config["MODEL_DIR"], default_name(config))
    for number, path in sorted(version_folders(folder).items(), reverse=True):
        if (found := version_file(path)) is not None:
            return found
    raise modelfile.ModelFileError(f"{folder}: no version folder (1, 2, ...) with a model file and its sidecar.")


def model_names(model_dir):
    """The model names under MODEL_DIR (folders, not hidden); ConfigError-worthy ValueError when none."""
    try:
        names = sorted(e.name for e in os.scandir(model_dir) if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise modelfile.ModelFileError(f"{model_dir}: cannot read the model folder ({exc.strerror or exc}).") from None
    if not names:
        raise modelfile.ModelFileError(f"{model_dir}: no model folders (MODEL_DIR/<name>/<version>/).")
    return names


def default_name(config):
    """SERVING_MODEL_NAME when MODEL_DIR has a folder of that name (or none at all), else its first model."""
    try:
        names = model_names(config["MODEL_DIR"])
    except modelfile.ModelFileError:
        return config["SERVING_MODEL_NAME"]
    return config["SERVING_MODEL_NAME"] if config["SERVING_MODEL_NAME"] in names else names[0]
