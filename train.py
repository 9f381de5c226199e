"""Train a CIFAR-10 CNN and save runs/<arch>.h5 with a JSON sidecar, model card and training curves.

    python train.py --data ../shared/data/cifar10-jpeg.tar.gz --arch fast     # writes runs/fast.h5
    python train.py                      # official CIFAR-10 download, baseline recipe
Subcommands (each has its own --help):
    python train.py evaluate --model runs/fast.h5 --data ../shared/data/cifar10-jpeg.tar.gz
    python train.py export --model runs/fast.h5 --data ../shared/data/cifar10-jpeg.tar.gz   # beside the .h5
    python train.py predict my_photos/ --out predictions.csv        # a folder, archive or list of paths
"""
import argparse
import datetime
import json
import os
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the console


def parse_args(argv=None):
    """Command-line options; preset values fill whatever is not given."""
    from cifarlab.ml.distribute import STRATEGIES
    from cifarlab.ml.presets import PRESETS

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
    p.add_argument("--resume", metavar="RUN",
                   help="continue the interrupted run whose --out was RUN, from its last finished epoch, with its "
                        "own options (give no others)")
    args = p.parse_args(argv)
    if args.out is None and args.resume is None:
        args.out = f"runs/{args.arch}"
    return args


def fail(message, code=2):
    """Print one error line; the exit code train.py returns."""
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        hp = recipe_for(args)  # option mistakes stop here, in a second, before TensorFlow loads
    except ValueError as exc:
        return fail(exc)
    from cifarlab.ml import resume

    state = None
    if args.resume:
        if vars(args) != vars(parse_args(["--resume", args.resume])):
            return fail("--resume takes every option from the interrupted run; give it alone.")
        try:
            state = resume.RunState.read(args.resume)
        except resume.ResumeError as exc:
            return fail(exc)
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

    import keras
    import numpy as np

    from cifarlab import checkpoint, sidecar
    from cifarlab.images import INPUT_SIZE
    from cifarlab.ml import distribute, training
    from cifarlab.ml.data import DataError, load_dataset
    from cifarlab.ml.models import WeightsDownloadError
    from cifarlab.report import card

    # --- device -------------------------------------------------------------------------------
    try:
        strategy = distribute.make_strategy(args.strategy)  # first: collective ops are set up at start-up
    except distribute.StrategyError as exc:
        return fail(exc)
    replicas, chief = distribute.replicas(strategy), distribute.is_chief(strategy)
    keras.utils.set_random_seed(args.seed)
    device_kind, device_name = training.describe_device()
    policy = "float32" if args.precision == "float32" else training.mixed_precision_policy(device_kind)
    print(f"Device: {device_kind} ({device_name}); Keras {keras.__version__} on {keras.backend.backend()}; "
          f"precision {policy}; {distribute.describe(strategy)}, {replicas} replica(s)"
          f"{'' if chief else ', not the chief: writes no files'}", flush=True)

    hp = scaled_for_replicas(hp, replicas)
    if state is not None and state.config["hyperparameters"] != json.loads(json.dumps(hp.to_dict())):
        return fail("the preset changed since the interrupted run started (or it ran on another number of "
                    "replicas); its hyperparameters are in its checkpoint.")

    # --- data ---------------------------------------------------------------------------------
    started = time.perf_counter()
    try:
        data = load_dataset(args.data)
    except DataError as exc:
        return fail(exc)
    (x_train, y_train), val = data.split_validation(hp.val_size, seed=args.seed)
    if args.early_stop and val is None:
        return fail("--early-stop watches the validation loss: give --val-size 1 or more.")
    num_classes = len(data.class_names)
    one_hot = lambda y: np.eye(num_classes, dtype=np.float32)[y]  # noqa: E731
    eval_sets = {"test": (data.x_test, one_hot(data.y_test))}
    if val is not None:
        eval_sets = {"val": (val[0], one_hot(val[1])), **eval_sets}
    print(f"Data: {data.source}: {len(x_train)} train, {0 if val is None else len(val[0])} val, "
          f"{len(data.x_test)} test images, classes {', '.join(data.class_names)} "
          f"({time.perf_counter() - started:.1f} s)", flush=True)

    # --- model --------------------------------------------------------------------------------
    keras.mixed_precision.set_global_policy(policy)
    bank = None
    if hp.outlier_fraction:
        print(f"Outliers: generating {hp.outlier_bank:,} for outlier exposure", flush=True)
        bank = training.outlier_bank(x_train, hp.outlier_bank, args.seed)
    batches = training.Batches(x_train, one_hot(y_train), hp.batch_size, args.seed,
                               augment=hp.augment, translate=hp.translate, cutout=hp.cutout, outliers=bank,
                               outlier_fraction=hp.outlier_fraction, outlier_weight=hp.outlier_weight)
    with distribute.scope(strategy):  # variables mirrored on every replica, updates all-reduced
        try:
            net, from_logits = training.build_training_model(args.arch, hp, num_classes, x_train, replicas,
                                                             args.pretrained)
        except WeightsDownloadError as exc:
            return fail(exc)
        if args.init and state is None:
            try:
                training.load_initial_weights(net, args.init)
            except (checkpoint.ModelFileError, ValueError) as exc:
                return fail(f"--init {args.init}: {exc}")
    loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=hp.label_smoothing)
    print(f"Model: {args.arch}, {net.count_params():,} parameters. Per-epoch val/test metrics: the net as it "
          "trains (its precision, one view); the final test line: the saved .h5 as the app serves it", flush=True)

    # --- train --------------------------------------------------------------------------------
    resumes = [] if state is None else [*state.config.get("resumes", []), {
        "at_epoch": state.config["epochs_done"], "checkpoint_saved_at": state.config["saved_at"],
        "resumed_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}]
    done = 0 if state is None else state.config["epochs_done"]
    log = training.EpochLog(eval_sets) if state is None else training.EpochLog(
        eval_sets, history=state.config["history"], train_seconds=state.config["train_seconds"])
    logdir = args.logdir or f"{args.out}_logs"
    if state is not None:
        print(f"Resuming {args.out} after epoch {done} ({log.train_seconds / 60:.1f} min trained)", flush=True)
    early_stop, phases = None, training.phases(hp)
    for index, phase in enumerate(phases):
        if phase.end <= done:
            continue
        first_epoch = max(done, phase.first)  # of this fit: a resumed run starts after its last finished epoch
        with distribute.scope(strategy):
            optimizer = training.start_phase(net, hp, phase, len(batches))
            net.compile(optimizer=optimizer, loss=loss,
                        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
        lookahead = training.Lookahead(hp.epochs * len(batches), hp.lookahead_every) \
            if hp.lookahead_every else None
        last_phase = phase.end == hp.epochs
        early_stop = resume.EarlyStopping(args.early_stop) if args.early_stop and last_phase else None
        if state is not None:
            try:
                resume.restore(state, net, lookahead, early_stop, index)
            except resume.ResumeError as exc:
                return fail(exc)
            state = None
        callbacks = [log, training.EpochData(batches), keras.callbacks.TerminateOnNaN()]  # log first: times the
        callbacks += [lookahead] if lookahead else []  # epoch's shuffling and augmentation too
        callbacks += [early_stop] if early_stop else []  # after the log, which puts val_loss into the epoch's logs
        if chief:  # other workers write nothing
            callbacks += training.logging_callbacks(logdir, first_epoch)
            callbacks.append(resume.RunCheckpoint(resume.checkpoint_path(args.out), {
                "argv": argv, "hyperparameters": hp.to_dict(), "resumes": resumes}, log, index, lookahead, early_stop))
        if len(phases) > 1:
            print(f"Phase {index + 1}: {phase.name}, epochs {phase.first + 1}-{phase.end}, step size {phase.lr:g}",
                  flush=True)
        with distribute.multiworker_fit_fix(strategy):
            net.fit(batches, initial_epoch=first_epoch, epochs=phase.end, callbacks=callbacks,
                    shuffle=False,  # Batches shuffles by epoch number; Keras's own shuffle would draw on global RNG
                    verbose=1 if sys.stdout.isatty() else 2)
        if net.stop_training:  # early stopping or a NaN loss
            break
    if not log.history or not np.isfinite(log.history[-1]["train_loss"]):
        resume.checkpoint_path(args.out).unlink(missing_ok=True)  # nothing worth resuming
        return fail(f"training diverged: the loss became NaN or infinite in epoch {len(log.history)}; no model was "
                    f"saved (images of one flat colour, or a learning rate too high for the batch size, do this).", 3)
    print(f"Final weights sha256 {distribute.weights_digest(net)}", flush=True)
    if not chief:
        return 0

    # --- evaluate -----------------------------------------------------------------------------
    keras.mixed_precision.set_global_policy("float32")
    model = training.inference_model(args.arch, hp, num_classes, net)
    # --- save ---------------------------------------------------------------------------------
    meta = sidecar.for_training(**{
        "name": os.path.basename(args.out),
        "arch": args.arch,
        "class_names": list(data.class_names),
        "input_size": INPUT_SIZE,
        "input": "uint8-range RGB pixels 0..255, shape (N, 32, 32, 3); rescaling is inside the model",
        "output": "softmax probabilities over class_names",
        "data_source": data.source,
        "train_images": int(len(x_train)),
        "val_images": 0 if val is None else int(len(val[0])),
        "test_images": int(len(data.x_test)),
        "command": command_line([], argv),
        "seed": args.seed,
        "hyperparameters": hp.to_dict(),
        "epochs": hp.epochs,
        "epochs_run": len(log.history),
        "precision": policy,
        "replicas": replicas,
        "strategy": distribute.describe(strategy),
        "device": f"{device_kind}: {device_name}",
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "trained_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "train_seconds": round(log.train_seconds, 1),
        "history": log.history,
        "parameters": int(model.count_params()),
        "logdir": logdir,
        "resumes": resumes,
    })
    if args.arch == "transfer":
        meta["pretrained"] = "imagenet" if args.pretrained else None
    if early_stop is not None:
        meta["early_stop"] = {"patience": args.early_stop, "monitor": "val_loss",
                              "stopped_after_epoch": len(log.history) if early_stop.stopped_epoch else None,
                              "best_epoch": early_stop.best_epoch + 1}
    checkpoint.save(model, f"{args.out}.h5", meta)
    resume.checkpoint_path(args.out).unlink(missing_ok=True)  # the run is complete: nothing left to resume
    meta = card.evaluate(f"{args.out}.h5", data)  # one pass over the test split: accuracy, loss, report
    print(f"Test ({len(data.x_test):,}-image split of {data.source}, TTA level {hp.tta_level}): "
          f"accuracy {meta['test_accuracy']:.4f}, loss {meta['test_loss']:.4f}; training {log.train_seconds / 60:.1f} min")
    save_curves(f"{args.out}.h5", meta)
    print(f"Saved {args.out}.h5, {args.out}.json, {args.out}_curves.png; logs in {logdir}", flush=True)
    print_report(meta)
    return 0


def recipe_for(args):
    """The preset with --set, --epochs, --batch-size and --val-size applied; ValueError names an option mistake."""
    from cifarlab.ml.presets import PRESETS

    hp = PRESETS[args.arch].with_overrides(args.overrides)
    hp = hp.replace(**{key: getattr(args, key) for key in ("epochs", "batch_size", "val_size")
                       if getattr(args, key) is not None})
    if args.pretrained and args.arch != "transfer":
        raise ValueError("--pretrained needs --arch transfer.")
    if args.early_stop is not None and args.early_stop < 1:
        raise ValueError("--early-stop takes a patience of 1 or more epochs.")
    if args.early_stop is not None and hp.optimizer != "adam":
        raise ValueError(f"--early-stop is for recipes with a constant step size (baseline, transfer); {args.arch} "
                         f"decays its step size to 0 at its last epoch.")
    return hp


def command_line(subcommand, argv):
    """The shell command that reproduces this run, recorded in sidecars."""
    return " ".join(["python", "train.py", *subcommand, *(shlex.quote(a) for a in argv)])


def scaled_for_replicas(hp, replicas):
    """The recipe for `replicas` replicas: the global batch is --batch-size images on each, and every step size
    follows the linear scaling rule (Goyal et al. 2017), so each image moves the weights as much at any count."""
    scaled = {key: getattr(hp, key) * replicas for key in ("batch_size", "lr", "finetune_lr") if hasattr(hp, key)}
    return hp.replace(**scaled)


def print_report(meta):
    """Print the evaluation summary of a sidecar."""
    ev, cal = meta["evaluation"], meta["calibration"]
    print(f"Evaluation on {ev['images']:,} test images of {ev['data_source']}:")
    print(f"  accuracy {ev['accuracy']:.4f}  top-2 {ev['top2_accuracy']:.4f}  top-3 {ev['top3_accuracy']:.4f}  "
          f"macro F1 {ev['macro_f1']:.4f}")
    print(f"  temperature {cal['temperature']:.3f} ({cal['fitted_on']}); ECE {ev['ece_before']:.4f} -> "
          f"{ev['ece_after']:.4f}; NLL {ev['nll_before']:.4f} -> {ev['nll_after']:.4f}; "
          f"unsure below {cal['unsure_threshold']:.2f}")
    print(f"  {'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for name, m in ev["per_class"].items():
        print(f"  {name:<12}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>9}")


def save_curves(model_path, meta):
    """The training curves beside a model, drawn from its sidecar's per-epoch history (none: nothing to draw)."""
    from cifarlab.checkpoint import artefact_paths
    from cifarlab.report import plots

    if meta.get("history"):
        plots.training_curves(meta["history"], artefact_paths(model_path)["curves"], f"{meta['arch']}: test accuracy "
                              f"{meta['test_accuracy']:.2%} after {meta['train_seconds'] / 60:.1f} min")


def evaluate_main(argv):
    """python train.py evaluate --model M.h5 [--data D]: report, plots (curves from the sidecar), card, sidecar."""
    p = argparse.ArgumentParser(prog="train.py evaluate", description=evaluate_main.__doc__)
    p.add_argument("--model", default="model/cifar10_cnn.h5", help=".h5 model with its .json sidecar")
    p.add_argument("--data", help="dataset the model was trained on (default: official download)")
    args = p.parse_args(argv)
    from cifarlab.checkpoint import ModelFileError
    from cifarlab.ml.data import DataError, load_dataset
    from cifarlab.report import card

    try:
        meta = card.evaluate(args.model, load_dataset(args.data))
    except (DataError, ModelFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_curves(args.model, meta)
    print_report(meta)
    return 0


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
        print("error: --formats takes h5, savedmodel, float16 and int8, comma-separated", file=sys.stderr)
        return 2
    from cifarlab.checkpoint import ModelFileError
    from cifarlab.ml import export

    existing = [path for path in export.output_paths(args.model, args.out, formats) if os.path.exists(path)]
    if existing and not args.force:
        print(f"error: {existing[0]} exists: exports are never overwritten; give another --out, or --force.",
              file=sys.stderr)
        return 2
    from cifarlab.ml.data import DataError, load_dataset

    try:
        rows = export.export_all(args.model, args.out, load_dataset(args.data), command_line(["export"], argv),
                                 formats=formats)
    except (DataError, ModelFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Exports of {args.model}: test accuracy on the whole test split; latency = median of 50 one-image calls")
    print("| format | file | size MB | 1-image latency ms | test accuracy |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['path']} | {r['mb']:.1f} | {r['latency_ms']:.2f} | {r['accuracy']:.4f} |")
    return 0


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
        print("error: --batch, --part-size and --workers take whole numbers from 1", file=sys.stderr)
        return 2
    from cifarlab.checkpoint import ModelFileError
    from cifarlab.inference import Classifier

    try:
        source = batch.open_source(args.input)
        classifier = Classifier.from_path(args.model, chunk_images=args.batch)
        summary = batch.predict_folder(source, args.out, classifier, args.workers, args.part_size, args.resume,
                                       args.force, args.batch)
    except (batch.BatchError, ModelFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote {args.out}: " + "\n  ".join(summary.lines()))
    return 0


SUBCOMMANDS = {"evaluate": evaluate_main, "export": export_main, "predict": predict_main}

if __name__ == "__main__":
    sys.exit(SUBCOMMANDS[sys.argv[1]](sys.argv[2:]) if sys.argv[1:2] and sys.argv[1] in SUBCOMMANDS else main())
