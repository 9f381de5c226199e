"""Train a CIFAR-10 CNN and save runs/<arch>.h5 with a JSON sidecar, model card and training curves.

    python train.py --data ../shared/data/cifar10-jpeg.tar.gz --arch fast     # writes runs/fast.h5
    python train.py                      # official CIFAR-10 download, baseline recipe
Subcommands (each has its own --help):
    python train.py evaluate --model runs/fast.h5 --data ../shared/data/cifar10-jpeg.tar.gz
    python train.py export --model runs/fast.h5 --data ../shared/data/cifar10-jpeg.tar.gz   # beside the .h5
    python train.py predict my_photos/ --out predictions.csv        # a folder, archive or list of paths
    python train.py feedback export --out feedback_data/            # what users flagged, as an image folder
    python train.py --data ../shared/data/cifar10-jpeg.tar.gz --arch fast_oe --init model/cifar10_cnn.h5 \
        --feedback feedback_data/ --epochs 1 --out runs/feedback1     # fine-tune on it, judged against --init
    python train.py models publish runs/new.tflite --name cifar10   # MODEL_DIR: a canary beside the stable one
"""
import argparse
import collections
import functools
import os
import shlex
import sys
from pathlib import Path

from cifarlab.errors import CifarlabError  # imports nothing: option mistakes still answer before TensorFlow loads

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the console


def parse_args(argv=None):
    """Command-line options; preset values fill whatever is not given."""
    from cifarlab.ml.architectures import PRESETS  # with the presets of every registered architecture
    from cifarlab.ml.distribute import STRATEGIES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="image-folder dataset (folder, .tar.gz or .zip); default: official CIFAR-10 download")
    p.add_argument("--arch", choices=sorted(PRESETS), default="baseline", help="architecture and recipe preset")
    p.add_argument("--epochs", type=int, help="passes over the training set (default: preset)")
    p.add_argument("--batch-size", type=int, help="images per step (default: preset)")
    p.add_argument("--val-size", type=int, help="training images held out for validation (default: preset)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one preset hyperparameter, e.g. --set whiten_eps=5e-3 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="random seed for split, init, shuffling, augmentation")
    p.add_argument("--precision", choices=["auto", "float32"], default="auto",
                   help="auto: bfloat16/float16 mixed precision where the hardware computes it natively")
    p.add_argument("--strategy", choices=STRATEGIES, default="auto",
                   help="tf.distribute: mirrored = all local GPUs, multiworker = the cluster in TF_CONFIG, "
                        "auto = multiworker if TF_CONFIG is set, mirrored on 2+ GPUs, else one device")
    p.add_argument("--out", help="output path without extension (.h5/.json/.png); default: runs/ARCH")
    p.add_argument("--force", action="store_true", help="overwrite a finished model at --out")
    p.add_argument("--logdir", help="TensorBoard event files and metrics.csv (default: OUT_logs)")
    p.add_argument("--early-stop", type=int, metavar="PATIENCE",
                   help="stop when validation loss has not improved for PATIENCE epochs and keep the best weights "
                        "(recipes with a constant step size: baseline, transfer)")
    p.add_argument("--pretrained", action="store_true",
                   help="transfer preset: start from ImageNet weights (downloaded once by Keras)")
    p.add_argument("--init", metavar="MODEL.h5",
                   help="start from the weights of a model trained with the same net (fine-tuning, e.g. --arch fast_oe)")
    p.add_argument("--teacher", metavar="MODEL.h5",
                   help="distil: train on this model's soft targets for the very views the net sees, mixed with the "
                        "labels (recipe keys distill_weight, distill_temperature), e.g. --teacher model/best.h5")
    p.add_argument("--feedback", metavar="EXPORT",
                   help="fine-tune --init on the dataset plus users' flags (a `train.py feedback export` folder): "
                        "corrections weighted, \"none\" images as outliers, a share held out to judge the result")
    p.add_argument("--feedback-weight", type=int, default=4,
                   help="times each correction counts against a dataset image (default 4)")
    p.add_argument("--feedback-holdout", type=float, default=0.2,
                   help="share of the corrections held out to compare the new model with --init (default 0.2)")
    p.add_argument("--resume", metavar="RUN",
                   help="continue the interrupted run whose --out was RUN, from its last finished epoch, with its "
                        "own options (give no others)")
    args = p.parse_args(argv)
    if args.out is None and args.resume is None:
        args.out = f"runs/{args.arch}"
    return args


def set_up_tensorflow():
    """Import TensorFlow once, its start-up lines filtered, before a module of cifarlab.ml imports Keras."""
    from cifarlab import quiet

    quiet.tensorflow()


def fail(message, code=2):
    """Print one error line; the exit code train.py returns."""
    print(f"error: {message}", file=sys.stderr)
    return code


def one_line_errors(command):
    """The one handler of train.py's commands: an error of the package is one line and its exit code."""
    @functools.wraps(command)
    def run_command(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CifarlabError as exc:
            return fail(exc.message, exc.exit_code)
    return run_command


@one_line_errors
def main(argv=None):
    """python train.py [options]: train (or --resume) a run; 0 when its model is saved, else the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        hp = recipe_for(args)  # option mistakes stop here, in a second, before TensorFlow loads
    except ValueError as exc:
        return fail(exc)
    set_up_tensorflow()
    from cifarlab.ml import resume

    state = None
    if args.resume:
        if vars(args) != vars(parse_args(["--resume", args.resume])):
            return fail("--resume takes every option from the interrupted run; give it alone.")
        state = resume.RunState.read(args.resume)
        argv = state.config["argv"]
        args = parse_args(argv)
        try:
            hp = recipe_for(args)
        except ValueError as exc:
            return fail(f"the interrupted run's options no longer fit the code: {exc}")
    elif os.path.exists(f"{args.out}.h5") and not args.force:
        return fail(f"{args.out}.h5 is a finished model: it is never overwritten; give another --out, or --force.")
    elif resume.checkpoint_path(args.out).exists():
        return fail(f"{resume.checkpoint_path(args.out)} holds an interrupted run: continue it with "
                    f"--resume {args.out}, or delete that file to start over.")
    from cifarlab.ml import run

    try:
        run.train_run(args, argv, hp, command_line([], argv), state)
    except KeyboardInterrupt:
        if resume.checkpoint_path(args.out).exists():
            return fail(f"interrupted: continue where the last finished epoch left off with "
                        f"python train.py --resume {args.out}", 130)
        return fail("interrupted before the first epoch finished: nothing to resume; run the same command again",
                    130)
    return 0


def recipe_for(args):
    """The preset with --set, --epochs, --batch-size and --val-size applied; ValueError names an option mistake."""
    from cifarlab.ml import architectures
    from cifarlab.ml.architectures import PRESETS

    hp = PRESETS[args.arch].with_overrides(args.overrides)
    hp = hp.replace(**{key: getattr(args, key) for key in ("epochs", "batch_size", "val_size")
                       if getattr(args, key) is not None})
    if args.pretrained and not architectures.of_recipe(hp).pretrained:
        takes = [name for name, recipe in PRESETS.items() if architectures.of_recipe(recipe).pretrained]
        raise ValueError(f"--pretrained needs a preset with ImageNet weights: --arch {' or '.join(takes)}.")
    if args.feedback and not args.init:
        raise ValueError("--feedback fine-tunes a model: give --init with the served model's .h5 "
                         "(e.g. --init model/cifar10_cnn.h5), so the result can be compared with it.")
    if args.feedback_weight < 1 or not 0 < args.feedback_holdout < 1:
        raise ValueError("--feedback-weight takes 1 or more, --feedback-holdout a share between 0 and 1.")
    if args.early_stop is not None and args.early_stop < 1:
        raise ValueError("--early-stop takes a patience of 1 or more epochs.")
    if args.early_stop is not None and hp.optimizer != "adam":
        raise ValueError(f"--early-stop is for recipes with a constant step size (baseline, transfer); {args.arch} "
                         f"decays its step size to 0 at its last epoch.")
    return hp


def command_line(subcommand, argv):
    """The shell command that reproduces this run, recorded in sidecars."""
    return " ".join(["python", "train.py", *subcommand, *(shlex.quote(a) for a in argv)])


@one_line_errors
def evaluate_main(argv):
    """python train.py evaluate --model M.h5 [--data D]: report, plots (curves from the sidecar), card, sidecar."""
    p = argparse.ArgumentParser(prog="train.py evaluate", description=evaluate_main.__doc__)
    p.add_argument("--model", default="model/cifar10_cnn.h5", help=".h5 model with its .json sidecar")
    p.add_argument("--data", help="dataset the model was trained on (default: official download)")
    args = p.parse_args(argv)
    set_up_tensorflow()
    from cifarlab.ml.data import load_dataset
    from cifarlab.report import card

    try:
        meta = card.evaluate(args.model, load_dataset(args.data))
    except ValueError as exc:
        return fail(exc)
    card.save_curves(args.model, meta)
    card.print_summary(meta)
    return 0


@one_line_errors
def export_main(argv):
    """python train.py export --model M.h5 [--data D] [--out DIR]: SavedModel + TFLite float16/int8 (each .tflite
    with a sidecar, servable by the app via MODEL_PATH), with a table."""
    p = argparse.ArgumentParser(prog="train.py export", description=export_main.__doc__)
    p.add_argument("--model", default="model/cifar10_cnn.h5", help=".h5 model with its .json sidecar")
    p.add_argument("--data", help="dataset for int8 calibration (training images) and test accuracy")
    p.add_argument("--out", help="output folder (default: the model's own, beside it under new names)")
    p.add_argument("--formats", default="h5,savedmodel,float16,int8",
                   help="comma-separated formats to measure (and write; the SavedModel is always written)")
    p.add_argument("--force", action="store_true", help="overwrite exports already in --out")
    args = p.parse_args(argv)
    args.out = args.out or os.path.dirname(args.model) or "."
    formats = set(args.formats.split(","))
    if not formats or formats - {"h5", "savedmodel", "float16", "int8"}:
        return fail("--formats takes h5, savedmodel, float16 and int8, comma-separated")
    set_up_tensorflow()
    from cifarlab.ml import export

    existing = [path for path in export.output_paths(args.model, args.out, formats) if os.path.exists(path)]
    if existing and not args.force:
        return fail(f"{existing[0]} exists: exports are never overwritten; give another --out, or --force.")
    from cifarlab.ml.data import load_dataset

    rows = export.export_all(args.model, args.out, load_dataset(args.data), command_line(["export"], argv),
                             formats=formats)
    print(f"Exports of {args.model}: test accuracy on the whole test split; latency = median of 50 one-image calls")
    print("| format | file | size MB | 1-image latency ms | test accuracy |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['path']} | {r['mb']:.1f} | {r['latency_ms']:.2f} | {r['accuracy']:.4f} |")
    return 0


@one_line_errors
def predict_main(argv):
    """python train.py predict INPUT --out preds.csv|preds.jsonl: classify a folder (recursive), an archive (.tar.gz,
    .tar, .zip) or a text file of paths with any model the app serves; interrupted runs continue with --resume."""
    from cifarlab import batch

    p = argparse.ArgumentParser(prog="train.py predict", description=predict_main.__doc__)
    p.add_argument("input", help="folder, archive or text file with one image path per line")
    p.add_argument("--out", required=True, help="output file: .csv or .jsonl (JSON Lines)")
    p.add_argument("--model", default="model/cifar10_cnn_int8.tflite", help=".tflite or .h5 with its sidecar")
    p.add_argument("--workers", type=int, help="decoding processes (default: cores - 1, at least 1)")
    p.add_argument("--batch", type=int, default=batch.BATCH, help="images per model call")
    p.add_argument("--part-size", type=int, default=batch.PART_SIZE, help="images per atomically written part")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run writing --out")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    args = p.parse_args(argv)
    if min(args.batch, args.part_size, args.workers or 1) < 1:
        return fail("--batch, --part-size and --workers take whole numbers from 1")
    from cifarlab.inference import Classifier

    try:
        source = batch.open_source(args.input)
        classifier = Classifier.from_path(args.model, chunk_images=args.batch)
        summary = batch.predict_folder(source, args.out, classifier, args.workers, args.part_size, args.resume,
                                       args.force, args.batch)
    except KeyboardInterrupt:
        if batch.parts_folder(Path(args.out)).exists():
            again = command_line(["predict"], [a for a in argv if a != "--resume"] + ["--resume"])
            return fail(f"interrupted: the finished parts are kept; continue with {again}", 130)
        return fail("interrupted before anything was written: run the same command again", 130)
    print(f"Wrote {args.out}: " + "\n  ".join(summary.lines()))
    return 0


@one_line_errors
def feedback_main(argv):
    """python train.py feedback export --out DIR [--reviewed]: what users flagged (and review kept) as an image-folder
    dataset, DIR/train/<class>/*.png and DIR/outliers/*.png for "none of these", with DIR/manifest.json."""
    from cifarlab.feedback.store import Store
    from cifarlab.web import settings

    p = argparse.ArgumentParser(prog="train.py feedback", description=feedback_main.__doc__)
    actions = p.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", help="write the flagged answers as an image-folder dataset")
    export.add_argument("--out", required=True, help="output folder (must not exist yet)")
    export.add_argument("--reviewed", action="store_true", help="only what review accepted or relabelled")
    export.add_argument("--database", help="DATABASE_URL (default: the app's setting)")
    args = p.parse_args(argv)
    if os.path.exists(args.out):
        return fail(f"{args.out} exists: give a new folder.")
    config = settings.current()
    try:
        url = settings.database_url(args.database) if args.database else config["DATABASE_URL"]
    except ValueError as exc:
        return fail(exc)
    manifest = Store.open(url, config["FEEDBACK_FOLDER"]).export(args.out, args.reviewed)
    labels = collections.Counter(item["label"] for item in manifest["items"])
    print(f"Wrote {len(manifest['items'])} images to {args.out}: " +
          (", ".join(f"{label} {count}" for label, count in sorted(labels.items())) or "nothing flagged yet"))
    return 0


@one_line_errors
def models_main(argv):
    """python train.py models publish|promote|rollback|show: a canary rollout under MODEL_DIR. publish copies a model
    in as the next version labelled canary (CANARY_SHARE of clients get it, or it shadows); promote makes it stable;
    rollback takes it out."""
    from cifarlab import rollout
    from cifarlab.web import settings

    p = argparse.ArgumentParser(prog="train.py models", description=models_main.__doc__)
    p.add_argument("--model-dir", help="the served folder (default: the MODEL_DIR setting)")
    p.add_argument("--name", help="the model's name (default: SERVING_MODEL_NAME)")
    actions = p.add_subparsers(dest="action", required=True)
    publish = actions.add_parser("publish", help="copy MODEL (and its sidecar) in as the canary")
    publish.add_argument("model", help="a .tflite or .h5 model file with its .json sidecar beside it")
    actions.add_parser("promote", help="the canary becomes stable")
    actions.add_parser("rollback", help="the canary is taken out (renamed .N-rolled-back)")
    actions.add_parser("show", help="versions and labels")
    args = p.parse_args(argv)
    config = settings.current()
    model_dir, name = args.model_dir or config["MODEL_DIR"], args.name or config["SERVING_MODEL_NAME"]
    if not model_dir:
        return fail("give --model-dir or set MODEL_DIR: the folder the server serves versions from")
    try:
        if args.action == "publish":
            number, labels = rollout.publish(args.model, model_dir, name)
            print(f"Published {args.model} as {name} version {number}; labels now {labels}")
        elif args.action in ("promote", "rollback"):
            labels = getattr(rollout, args.action)(model_dir, name)
            print(f"{name}: labels now {labels}")
        else:
            print(rollout.describe(model_dir, name))
    except OSError as exc:
        return fail(exc)
    return 0


SUBCOMMANDS = {"evaluate": evaluate_main, "export": export_main, "predict": predict_main, "feedback": feedback_main,
               "models": models_main}

if __name__ == "__main__":
    sys.exit(SUBCOMMANDS[sys.argv[1]](sys.argv[2:]) if sys.argv[1:2] and sys.argv[1] in SUBCOMMANDS else main())
