"""Train a CIFAR-10 CNN and save runs/<arch>.h5 with a JSON sidecar, model card and training curves.

    python train.py --data ../shared/data/cifar10-jpeg.tar.gz --arch fast     # writes runs/fast.h5
    python train.py                      # official CIFAR-10 download, baseline recipe
Commands (each has its own --help; without one, the command is train: `python train.py train --help`):
    python train.py evaluate --model runs/fast.h5 --data ../shared/data/cifar10-jpeg.tar.gz
    python train.py export --model runs/fast.h5 --data ../shared/data/cifar10-jpeg.tar.gz   # beside the .h5
    python train.py predict my_photos/ --out predictions.csv        # a folder, archive or list of paths
    python train.py feedback export --out feedback_data/            # what users flagged, as an image folder
    python train.py --data ../shared/data/cifar10-jpeg.tar.gz --arch fast_oe --init model/cifar10_cnn.h5
        --feedback feedback_data/ --epochs 1 --out runs/feedback1     # (one line) fine-tune on it, judged against --init
    python train.py models publish runs/new.tflite --name cifar10   # MODEL_DIR: a canary beside the stable one
"""
import collections
import os
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple

from cifarlab import cli  # imports no TensorFlow: option mistakes still answer before it loads
from cifarlab.batch import BATCH, PART_SIZE
from cifarlab.cli import OptionError, option, positional
from cifarlab.errors import CifarlabError
from cifarlab.ml.distribute import STRATEGIES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the console


def preset_names():
    """The presets of every architecture, the plugins' too, for --arch."""
    from cifarlab.ml import architectures

    return sorted(architectures.catalog().presets)


@dataclass(frozen=True)
class TrainOptions:
    """python train.py [train] [options]: train (or --resume) a run; preset values fill whatever is not given."""

    data: str | None = option("image-folder dataset (folder, .tar.gz or .zip); default: official CIFAR-10 download")
    arch: str = option("architecture and recipe preset", "baseline", choices=preset_names)
    epochs: int | None = option("passes over the training set (default: preset)")
    batch_size: int | None = option("images per step (default: preset)")
    val_size: int | None = option("training images held out for validation (default: preset)")
    overrides: tuple[str, ...] = option("override one preset hyperparameter, e.g. --set whiten_eps=5e-3 (repeatable)",
                                        (), flag="--set", metavar="KEY=VALUE")
    seed: int = option("random seed for split, init, shuffling, augmentation", 0)
    precision: str = option("auto: bfloat16/float16 mixed precision where the hardware computes it natively", "auto",
                            choices=("auto", "float32"))
    strategy: str = option("tf.distribute: mirrored = all local GPUs, multiworker = the cluster in TF_CONFIG, auto = "
                           "multiworker if TF_CONFIG is set, mirrored on 2+ GPUs, else one device", "auto",
                           choices=STRATEGIES)
    out: str | None = option("output path without extension (.h5/.json/.png); default: runs/ARCH")
    force: bool = option("overwrite a finished model at --out", False)
    logdir: str | None = option("TensorBoard event files and metrics.csv (default: OUT_logs)")
    early_stop: int | None = option("stop when validation loss has not improved for PATIENCE epochs and keep the best "
                                    "weights (recipes with a constant step size: baseline, transfer)",
                                    metavar="PATIENCE")
    pretrained: bool = option("transfer preset: start from ImageNet weights (downloaded once by Keras)", False)
    init: str | None = option("start from the weights of a model trained with the same net (fine-tuning, e.g. "
                              "--arch fast_oe)", metavar="MODEL.h5")
    teacher: str | None = option("distil: train on this model's soft targets for the very views the net sees, mixed "
                                 "with the labels (recipe keys distill_weight, distill_temperature), e.g. --teacher "
                                 "model/best.h5", metavar="MODEL.h5")
    feedback: str | None = option("fine-tune --init on the dataset plus users' flags (a `train.py feedback export` "
                                  "folder): corrections weighted, \"none\" images as outliers, a share held out to "
                                  "judge the result", metavar="EXPORT")
    feedback_weight: int = option("times each correction counts against a dataset image (default 4)", 4)
    feedback_holdout: float = option("share of the corrections held out to compare the new model with --init "
                                     "(default 0.2)", 0.2)
    resume: str | None = option("continue the interrupted run whose --out was RUN, from its last finished epoch, "
                                "with its own options (give no others)", metavar="RUN")


@dataclass(frozen=True)
class EvaluateOptions:
    """python train.py evaluate --model M.h5 [--data D]: report, plots (curves from the sidecar), card, sidecar."""

    model: str = option(".h5 model with its .json sidecar", "model/cifar10_cnn.h5")
    data: str | None = option("dataset the model was trained on (default: official download)")


@dataclass(frozen=True)
class ExportOptions:
    """python train.py export --model M.h5 [--data D] [--out DIR]: SavedModel + TFLite float16/int8 (each .tflite
    with a sidecar, servable by the app via MODEL_PATH), with a table."""

    model: str = option(".h5 model with its .json sidecar", "model/cifar10_cnn.h5")
    data: str | None = option("dataset for int8 calibration (training images) and test accuracy")
    out: str | None = option("output folder (default: the model's own, beside it under new names)")
    formats: str = option("comma-separated formats to measure (and write; the SavedModel is always written)",
                          "h5,savedmodel,float16,int8")
    force: bool = option("overwrite exports already in --out", False)


@dataclass(frozen=True)
class PredictOptions:
    """python train.py predict INPUT --out preds.csv|preds.jsonl: classify a folder (recursive), an archive (.tar.gz,
    .tar, .zip) or a text file of paths with any model the app serves; interrupted runs continue with --resume."""

    input: str = positional("folder, archive or text file with one image path per line")
    out: str | None = option("output file: .csv or .jsonl (JSON Lines)", required=True)
    model: str = option(".tflite or .h5 with its sidecar", "model/cifar10_cnn_int8.tflite")
    workers: int | None = option("decoding processes (default: cores - 1, at least 1)")
    batch: int = option("images per model call", BATCH)
    part_size: int = option("images per atomically written part", PART_SIZE)
    resume: bool = option("continue the interrupted run writing --out", False)
    force: bool = option("overwrite an existing --out", False)


@dataclass(frozen=True)
class FeedbackOptions:
    """python train.py feedback export --out DIR [--reviewed]: what users flagged (and review kept) as an image-folder
    dataset, DIR/train/<class>/*.png and DIR/outliers/*.png for "none of these", with DIR/manifest.json."""

    action: str = positional("export: write the flagged answers as an image-folder dataset", choices=("export",))
    out: str | None = option("output folder (must not exist yet)", required=True)
    reviewed: bool = option("only what review accepted or relabelled", False)
    database: str | None = option("DATABASE_URL (default: the app's setting)")


@dataclass(frozen=True)
class ModelsOptions:
    """python train.py models publish MODEL|promote|rollback|show: a canary rollout under MODEL_DIR. publish copies a
    model in as the next version labelled canary (CANARY_SHARE of clients get it, or it shadows); promote makes it
    stable; rollback takes it out (renamed .N-rolled-back); show prints versions and labels."""

    action: str = positional("publish, promote, rollback or show", choices=("publish", "promote", "rollback", "show"))
    model: str | None = positional("publish: a .tflite or .h5 model file with its .json sidecar beside it", None,
                                   nargs="?")
    model_dir: str | None = option("the served folder (default: the MODEL_DIR setting)")
    name: str | None = option("the model's name (default: SERVING_MODEL_NAME)")


def set_up_tensorflow():
    """Import TensorFlow once, its start-up lines filtered, before a module of cifarlab.ml imports Keras."""
    from cifarlab import quiet

    quiet.tensorflow()


def main(argv=None):
    """python train.py [COMMAND] [options]: run the command; its exit code (an error of the package: one line, its
    own code, 2 for a usage mistake)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        name, options = parse(argv)
        return COMMANDS[name].run(options, argv)
    except CifarlabError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code


def parse(argv):
    """(command name, its options) from train.py's argv; without a command name first it is `train`."""
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["train", *argv]
    parser = cli.subcommand_parser("train.py", __doc__, [(name, command.options, command.run.__doc__)
                                                         for name, command in COMMANDS.items()])
    namespace = parser.parse_args(argv)
    return namespace.command, cli.from_namespace(COMMANDS[namespace.command].options, namespace)


def train(options, argv):
    """Train a run (saving its model, sidecar, card and curves), or continue the interrupted one at --resume."""
    if options.resume and options != TrainOptions(resume=options.resume):
        raise OptionError("--resume takes every option from the interrupted run; give it alone.")
    options = options if options.out or options.resume else replace(options, out=f"runs/{options.arch}")
    hp = recipe_for(options)  # option mistakes stop here, in a second, before TensorFlow loads
    set_up_tensorflow()
    from cifarlab.ml import resume

    state = None
    if options.resume:
        state = resume.RunState.read(options.resume)
        argv = state.config["argv"]
        try:
            options = cli.from_dict(TrainOptions, state.config["options"])
            hp = recipe_for(options)
        except OptionError as exc:
            raise OptionError(f"the interrupted run's options no longer fit the code: {exc}") from None
    elif os.path.exists(f"{options.out}.h5") and not options.force:
        raise OptionError(f"{options.out}.h5 is a finished model: it is never overwritten; give another --out, or "
                          f"--force.")
    elif resume.checkpoint_path(options.out).exists():
        raise OptionError(f"{resume.checkpoint_path(options.out)} holds an interrupted run: continue it with "
                          f"--resume {options.out}, or delete that file to start over.")
    from cifarlab.ml import run

    try:
        run.train_run(options, argv, hp, command_line(argv), state)
    except KeyboardInterrupt:
        if resume.checkpoint_path(options.out).exists():
            raise CifarlabError(f"interrupted: continue where the last finished epoch left off with "
                                f"python train.py --resume {options.out}", exit_code=130) from None
        raise CifarlabError("interrupted before the first epoch finished: nothing to resume; run the same command "
                            "again", exit_code=130) from None
    return 0


def recipe_for(options):
    """The preset with --set, --epochs, --batch-size and --val-size applied; OptionError names an option mistake."""
    from cifarlab.ml import architectures

    catalog = architectures.catalog()
    try:
        hp = catalog.presets[options.arch].with_overrides(options.overrides)
        hp = hp.replace(**{key: getattr(options, key) for key in ("epochs", "batch_size", "val_size")
                           if getattr(options, key) is not None})
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    if options.pretrained and not catalog.of_recipe(hp).pretrained:
        takes = [name for name, recipe in catalog.presets.items() if catalog.of_recipe(recipe).pretrained]
        raise OptionError(f"--pretrained needs a preset with ImageNet weights: --arch {' or '.join(takes)}.")
    if options.feedback and not options.init:
        raise OptionError("--feedback fine-tunes a model: give --init with the served model's .h5 "
                          "(e.g. --init model/cifar10_cnn.h5), so the result can be compared with it.")
    if options.feedback_weight < 1 or not 0 < options.feedback_holdout < 1:
        raise OptionError("--feedback-weight takes 1 or more, --feedback-holdout a share between 0 and 1.")
    if options.early_stop is not None and options.early_stop < 1:
        raise OptionError("--early-stop takes a patience of 1 or more epochs.")
    if options.early_stop is not None and hp.optimizer != "adam":
        raise OptionError(f"--early-stop is for recipes with a constant step size (baseline, transfer); "
                          f"{options.arch} decays its step size to 0 at its last epoch.")
    return hp


def command_line(argv):
    """The shell command that reproduces this run, recorded in sidecars."""
    return " ".join(["python", "train.py", *(shlex.quote(a) for a in argv)])


def evaluate(options, argv):
    """Evaluate a model: report, plots, card, sidecar rewritten beside it."""
    set_up_tensorflow()
    from cifarlab.ml.data import load_dataset
    from cifarlab.report import card

    try:
        meta = card.evaluate(options.model, load_dataset(options.data))
    except ValueError as exc:  # the dataset's classes are not the model's
        raise OptionError(str(exc)) from None
    card.save_curves(options.model, meta)
    card.print_summary(meta)
    return 0


def export(options, argv):
    """Export a model to the formats asked for and print their table."""
    out = options.out or os.path.dirname(options.model) or "."
    formats = set(options.formats.split(","))
    if not formats or formats - {"h5", "savedmodel", "float16", "int8"}:
        raise OptionError("--formats takes h5, savedmodel, float16 and int8, comma-separated")
    set_up_tensorflow()
    from cifarlab.ml import export

    existing = [path for path in export.output_paths(options.model, out, formats) if os.path.exists(path)]
    if existing and not options.force:
        raise OptionError(f"{existing[0]} exists: exports are never overwritten; give another --out, or --force.")
    from cifarlab.ml.data import load_dataset

    rows = export.export_all(options.model, out, load_dataset(options.data), command_line(argv), formats=formats)
    print(f"Exports of {options.model}: test accuracy on the whole test split; latency = median of 50 one-image calls")
    print("| format | file | size MB | 1-image latency ms | test accuracy |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['path']} | {r['mb']:.1f} | {r['latency_ms']:.2f} | {r['accuracy']:.4f} |")
    return 0


def predict(options, argv):
    """Classify every image of the input into a CSV or JSON Lines file, written in parts."""
    from cifarlab import batch
    from cifarlab.inference import Classifier

    if min(options.batch, options.part_size, options.workers or 1) < 1:
        raise OptionError("--batch, --part-size and --workers take whole numbers from 1")
    try:
        source = batch.open_source(options.input)
        classifier = Classifier.from_path(options.model, chunk_images=options.batch)
        summary = batch.predict_folder(source, options.out, classifier, options.workers, options.part_size,
                                       options.resume, options.force, options.batch)
    except KeyboardInterrupt:
        if batch.parts_folder(Path(options.out)).exists():
            again = command_line([a for a in argv if a != "--resume"] + ["--resume"])
            raise CifarlabError(f"interrupted: the finished parts are kept; continue with {again}",
                                exit_code=130) from None
        raise CifarlabError("interrupted before anything was written: run the same command again",
                            exit_code=130) from None
    print(f"Wrote {options.out}: " + "\n  ".join(summary.lines()))
    return 0


def feedback(options, argv):
    """Export what users flagged as an image-folder dataset."""
    from cifarlab.feedback.store import Store
    from cifarlab.web import settings

    if os.path.exists(options.out):
        raise OptionError(f"{options.out} exists: give a new folder.")
    config = settings.current()
    try:
        url = settings.database_url(options.database) if options.database else config["DATABASE_URL"]
    except ValueError as exc:
        raise OptionError(f"--database: {exc}") from None
    manifest = Store.open(url, config["FEEDBACK_FOLDER"]).export(options.out, options.reviewed)
    labels = collections.Counter(item["label"] for item in manifest["items"])
    print(f"Wrote {len(manifest['items'])} images to {options.out}: " +
          (", ".join(f"{label} {count}" for label, count in sorted(labels.items())) or "nothing flagged yet"))
    return 0


def models(options, argv):
    """Publish, promote, roll back or show the versions of a model under MODEL_DIR."""
    from cifarlab import rollout
    from cifarlab.web import settings

    if (options.action == "publish") != (options.model is not None):
        raise OptionError("publish takes one model file (train.py models publish MODEL); the other actions none")
    config = settings.current()
    model_dir, name = options.model_dir or config["MODEL_DIR"], options.name or config["SERVING_MODEL_NAME"]
    if not model_dir:
        raise OptionError("give --model-dir or set MODEL_DIR: the folder the server serves versions from")
    try:
        if options.action == "publish":
            number, labels = rollout.publish(options.model, model_dir, name)
            print(f"Published {options.model} as {name} version {number}; labels now {labels}")
        elif options.action in ("promote", "rollback"):
            labels = getattr(rollout, options.action)(model_dir, name)
            print(f"{name}: labels now {labels}")
        else:
            print(rollout.describe(model_dir, name))
    except OSError as exc:
        raise CifarlabError(str(exc)) from None
    return 0


class Command(NamedTuple):
    """A subcommand: the dataclass its options parse into, and the function that runs it."""

    options: type
    run: Callable


COMMANDS = {"train": Command(TrainOptions, train), "evaluate": Command(EvaluateOptions, evaluate),
            "export": Command(ExportOptions, export), "predict": Command(PredictOptions, predict),
            "feedback": Command(FeedbackOptions, feedback), "models": Command(ModelsOptions, models)}

if __name__ == "__main__":
    sys.exit(main())
