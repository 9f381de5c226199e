"""The sidecar schema: the JSON beside every model file (labels, recipe, provenance, metrics), one builder per writer.

Training writes it (for_training), evaluation adds its report (with_evaluation), export derives one per exported
file (for_export); every reader goes through check(). Version 1 is the unversioned sidecar written before this
module existed: it still loads, with git_commit unknown (None).
"""
import math
import subprocess

from . import REPO
from .errors import CifarlabError

SCHEMA_VERSION = 3  # 2: schema_version and git_commit added; 3: tta_views (an export whose reader makes the views)
REQUIRED = {"class_names": list, "input_size": int}  # what serving needs to use a model file at all
CIFAR10_CLASSES = (  # keras.datasets.cifar10's labels in its order: the class names of a model trained on it
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)


class SidecarError(CifarlabError, ValueError):
    """A sidecar that cannot describe a model file; the message says what is wrong."""


def git_commit(repo=REPO):
    """The commit the code runs from, '+dirty' when tracked files differ from it; None outside a git clone."""
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):  # no git, or not a clone
        return None
    return f"{commit}+dirty" if dirty else commit


def check(meta):
    """meta upgraded to the current schema's fields; SidecarError when it cannot describe a model."""
    if not isinstance(meta, dict):
        raise SidecarError("sidecar is not a JSON object.")
    version = meta.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SidecarError(f"sidecar schema_version {version!r} is newer than this code reads ({SCHEMA_VERSION}); "
                           f"update the code.")
    for key, kind in REQUIRED.items():
        if not isinstance(meta.get(key), kind) or not meta[key]:
            raise SidecarError(f"sidecar lacks {key} (a {kind.__name__}).")
    check_serving_fields(meta)
    return {**meta, "schema_version": version, "git_commit": meta.get("git_commit")}


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_serving_fields(meta):
    """SidecarError unless the fields inference reads make sense: distinct class names, a sane input size, a positive
    temperature, thresholds in range, test-time views of [mirror, dx, dy, weight] with a positive total weight."""
    names = meta["class_names"]
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise SidecarError("sidecar class_names must be distinct non-empty strings.")
    if not 8 <= meta["input_size"] <= 1024:
        raise SidecarError(f"sidecar input_size {meta['input_size']} is not a model input size (8 to 1024).")
    calibration = meta.get("calibration") or {}
    if not isinstance(calibration, dict):
        raise SidecarError("sidecar calibration must be an object.")
    if "temperature" in calibration and not (_number(calibration["temperature"]) and calibration["temperature"] > 0):
        raise SidecarError(f"sidecar calibration.temperature {calibration['temperature']!r} must be a positive number.")
    if "unsure_threshold" in calibration and not (_number(calibration["unsure_threshold"])
                                                  and 0 <= calibration["unsure_threshold"] <= 1):
        raise SidecarError("sidecar calibration.unsure_threshold must be a number from 0 to 1.")
    check_detector(meta.get("ood"))
    views = meta.get("tta_views")
    if views is None:
        return
    limit = meta["input_size"]
    if not isinstance(views, list) or not views or not all(
            isinstance(v, list) and len(v) == 4 and isinstance(v[0], bool)
            and all(isinstance(d, int) and not isinstance(d, bool) and abs(d) < limit for d in v[1:3])
            and _number(v[3]) and v[3] >= 0 for v in views) or sum(v[3] for v in views) <= 0:
        raise SidecarError("sidecar tta_views must be a list of [mirror, dx, dy, weight] (weights >= 0, not all 0).")


def check_detector(fitted):
    """SidecarError unless the ood section names a known score and a finite threshold (or none: never unknown)."""
    from .ood import SCORES

    if fitted is None:
        return
    if not isinstance(fitted, dict):
        raise SidecarError("sidecar ood must be an object.")
    if fitted.get("score", "msp") not in SCORES:
        raise SidecarError(f"sidecar ood.score {fitted.get('score')!r} is not one of {', '.join(sorted(SCORES))}.")
    if fitted.get("threshold") is not None and not _number(fitted["threshold"]):
        raise SidecarError(f"sidecar ood.threshold {fitted['threshold']!r} must be a finite number.")


def for_training(**fields):
    """A new sidecar for a model train.py has just trained."""
    return check({"schema_version": SCHEMA_VERSION, "git_commit": git_commit(), **fields})


def with_evaluation(meta, calibration, report):
    """meta with an evaluation's calibration and test report (train.py evaluate and the end of training)."""
    return {**check(meta), "calibration": calibration, "evaluation": report, "test_accuracy": report["accuracy"],
            "test_loss": report["nll_before"]}  # the model's own (uncalibrated) output


def display_name(meta):
    """The model as a user would call it: what kind of net it is and, for an export, its file format."""
    from .ml import architectures

    title = architectures.catalog().titles.get(meta.get("arch"), meta.get("name") or "model")
    title = title[:1].upper() + title[1:]
    return f"{title}, {meta['format']}" if meta.get("format") else title


def lineage(init_path, init_meta):
    """What a fine-tuned model started from (train.py --init): the file, its run and all of its own training."""
    return {"path": str(init_path), "name": init_meta.get("name"), "epochs": init_meta.get("epochs"),
            "train_seconds": total_train_seconds(init_meta)}


def total_train_seconds(meta):
    """Training time of a model and of every model it was fine-tuned from; None where a stage went unrecorded."""
    own, init = meta.get("train_seconds"), meta.get("init")
    if own is None:
        return None
    if init:
        return None if init.get("train_seconds") is None else own + init["train_seconds"]
    return None if has_init_option(meta) else own  # an older sidecar: started from a model it did not record


def has_init_option(meta):
    """Whether the command that trained the model started it from another model's weights."""
    return " --init " in f" {meta.get('command', '')} "


def training_time(meta):
    """How the model was trained and for how long, in one phrase: 'trained for 16 epochs in 28.5 min', or a fine-tune's stages."""
    seconds = meta.get("train_seconds")
    own = f"{meta.get('epochs', '?')} epochs" + (f" in {seconds / 60:.1f} min" if seconds is not None else "")
    init = meta.get("init")
    if not init and not has_init_option(meta):
        return f"trained for {own}"
    total = total_train_seconds(meta)
    start = f" from {init.get('name') or init['path']}" if init else " from an earlier model"
    whole = f"{total / 60:.1f} min of training in all" if total is not None else "its earlier training not recorded"
    return f"fine-tuned for {own}{start} ({whole})"


def for_export(meta, format_name, model_path, accuracy, command, commit, views=None):
    """Sidecar of an exported file: the source's, with this format's own test accuracy and the export's code commit.

    Without views the file outputs probabilities with the calibration inside. With views, [(mirror, dx, dy, weight)],
    it is the backbone alone: the reader feeds it every test-time view (images.tta_view) and averages their logits.
    """
    meta = check(meta)
    exported = {**meta, "schema_version": SCHEMA_VERSION, "name": f"{meta.get('name')} ({format_name})",
                "format": format_name, "exported_from": str(model_path), "export_command": command,
                "export_git_commit": commit, "test_accuracy": accuracy}
    if views is not None:
        return {**exported, "tta_views": [[bool(m), int(dx), int(dy), float(w)] for m, dx, dy, w in views],
                "output": "logits of one image view per row; the probabilities are softmax(mean / "
                          "calibration.temperature), mean = the tta_views-weighted mean of the logits of each "
                          "image's views [mirror, dx, dy, weight] (cifarlab.images.tta_view)"}
    calibration = meta.get("calibration", {})
    return {**exported, "output": "temperature-calibrated softmax probabilities over class_names",
            "calibration": {**calibration, "temperature": 1.0,
                            "applied_inside_model": calibration.get("temperature", 1.0)}}
