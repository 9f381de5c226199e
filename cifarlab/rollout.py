"""A new model as a canary beside the stable one under MODEL_DIR, then promoted or rolled back (train.py models).

Every change is a rename or an atomic rewrite of labels.json, so a server polling the folder never sees half of one.
"""
import os
import shutil
from pathlib import Path

from . import atomic, modelfile
from .errors import CifarlabError
from .modeldir import CANARY, LABELS_FILE, MODEL_SUFFIXES, STABLE, read_labels, version_file, version_folders


class RolloutError(CifarlabError, ValueError):
    """A rollout step that cannot be taken, in one line."""


def labels_of(model_folder):
    try:
        return read_labels(model_folder)
    except (OSError, ValueError) as exc:
        raise RolloutError(f"{model_folder}/{LABELS_FILE}: {exc}") from None


def without_canary(labels):
    return {label: number for label, number in labels.items() if label != CANARY}


def write_labels(model_folder, labels):
    atomic.write_json(Path(model_folder) / LABELS_FILE, labels)


def publish(model_path, model_dir, name):
    """Copy a model file and its sidecar in as the next version of `name`, labelled canary beside the version serving
    now (labelled stable); the first version of a name is stable at once. Returns (version, labels)."""
    model_path = Path(model_path)
    if model_path.suffix not in MODEL_SUFFIXES or not model_path.is_file():
        raise RolloutError(f"{model_path}: expected a {' or '.join(MODEL_SUFFIXES)} model file")
    try:
        meta = modelfile.read_meta(model_path)
    except modelfile.ModelFileError as exc:
        raise RolloutError(str(exc)) from None
    feedback = meta.get("feedback") or {}
    if feedback.get("publishable") is False:
        raise RolloutError(f"{model_path}: refused: worse than the model it was fine-tuned from "
                           f"({feedback.get('init')}) on {' and '.join(feedback.get('worse_on', []))} (see its card)")
    folder = Path(model_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    labels, versions = labels_of(folder), version_folders(folder)
    if CANARY in labels:
        raise RolloutError(f"{name} already has a canary (version {labels[CANARY]}): promote or roll it back first")
    number = max(versions, default=0) + 1
    staging = folder / f".publishing-{number}-{os.getpid()}"
    staging.mkdir()
    try:
        for source in (model_path, modelfile.sidecar_path(model_path)):
            shutil.copyfile(source, staging / source.name)
        if versions:  # the label first, so that no poll sees the new folder as just the highest version
            labels = {**labels, STABLE: labels.get(STABLE) or serving_version(versions, name), CANARY: number}
        else:
            labels = {**labels, STABLE: number}
        write_labels(folder, labels)
        os.rename(staging, folder / str(number))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return number, labels


def serving_version(versions, name):
    """The version a server answers with when no label says: the highest whose model file and sidecar look loadable
    (a server refuses the others). RolloutError when none does: a canary needs a stable version beside it."""
    for number in sorted(versions, reverse=True):
        path = version_file(versions[number])
        try:
            if path is not None and modelfile.preflight(path) is not None:
                return number
        except modelfile.ModelFileError:
            continue
    raise RolloutError(f"{name}: none of versions {', '.join(map(str, sorted(versions)))} holds a model a server "
                       "would load, so nothing could stay stable beside a canary: fix or remove them first")


def promote(model_dir, name):
    """The canary becomes stable: every client gets it. Returns the new labels."""
    folder = Path(model_dir) / name
    labels = labels_of(folder)
    if CANARY not in labels:
        raise RolloutError(f"{name} has no canary to promote")
    labels = {**without_canary(labels), STABLE: labels[CANARY]}
    write_labels(folder, labels)
    return labels


def rollback(model_dir, name):
    """Take the canary out: its label goes and its folder is renamed .<N>-rolled-back, so it never serves again."""
    folder = Path(model_dir) / name
    labels = labels_of(folder)
    if CANARY not in labels:
        raise RolloutError(f"{name} has no canary to roll back")
    number, labels = labels[CANARY], without_canary(labels)
    write_labels(folder, labels)
    if (folder / str(number)).is_dir():
        os.rename(folder / str(number), folder / f".{number}-rolled-back")
    return labels


def describe(model_dir, name):
    """One line: the versions on disk and what each label points at."""
    folder = Path(model_dir) / name
    versions, labels = sorted(version_folders(folder)), labels_of(folder)
    if not versions:
        raise RolloutError(f"{folder}: no versions")
    named = ", ".join(f"{label} -> {number}" for label, number in sorted(labels.items())) or "no labels"
    return f"{name}: versions {', '.join(map(str, versions))}; {named}"
