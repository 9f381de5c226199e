"""One training run, fresh or resumed, in the order train.py takes its steps: device, data, model, train, save."""
import datetime
import json
import os
import time
from dataclasses import dataclass

import keras
import numpy as np

from . import architectures, distribute, resume, training
from .. import atomic, cli, modelfile, sidecar
from ..errors import CifarlabError
from ..images import INPUT_SIZE
from ..report import card
from .data import DataError, load_dataset, load_feedback_export
from .models import WeightsDownloadError


class RunError(CifarlabError):
    """A run that cannot go on: the one line train.py prints, and its exit code (3: training diverged)."""


@dataclass
class Device:
    """Where the run computes: the tf.distribute strategy, its replicas, whether this worker writes files."""

    strategy: object
    replicas: int
    chief: bool
    kind: str
    name: str
    policy: str


@dataclass(frozen=True)
class Run:
    """What every step reads: the options (train.py's TrainOptions, and the argv they came from), the recipe, its
    net, the device."""

    options: object
    argv: list
    hp: object
    architecture: architectures.Architecture
    device: Device
    resumes: list                    # earlier interruptions: [{at_epoch, checkpoint_saved_at, resumed_at}]


@dataclass
class Split:
    """The images the run trains on, and those it reports on each epoch."""

    x_train: np.ndarray
    y_train: np.ndarray
    val: tuple
    eval_sets: dict
    feedback: object = None          # data.FeedbackData with --feedback


def train_run(options, argv, hp, command, state=None):
    """Train the run the options describe (or continue it from a resume.RunState), then save and evaluate it;
    RunError says why it cannot."""
    device = start_device(options)
    hp = scaled_for_replicas(hp, device.replicas)
    if state is not None and state.config["hyperparameters"] != json.loads(json.dumps(hp.to_dict())):
        raise RunError("the preset changed since the interrupted run started (or it ran on another number of "
                       "replicas); its hyperparameters are in its checkpoint.")
    run = Run(options, argv, hp, architectures.of_recipe(hp), device, resumes_of(state))
    data, split = load_data(run)
    try:
        batches, net, loss = build_model(run, split, data.class_names, state)
        log, early_stop = fit(run, batches, net, loss, split, state)
    finally:  # the model is saved in float32, and a run that stops (diverged, Ctrl-C) leaves the process as it was
        keras.mixed_precision.set_global_policy("float32")
    if device.chief:  # other workers write nothing
        save_and_evaluate(run, net, data, split, log, early_stop, command)


def resumes_of(state):
    """The run's interruptions so far, this one last (none for a fresh run)."""
    if state is None:
        return []
    return [*state.config.get("resumes", []), {
        "at_epoch": state.config["epochs_done"], "checkpoint_saved_at": state.config["saved_at"],
        "resumed_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}]


def start_device(options):
    """The strategy (first: collective ops are set up at start-up), the seed, the precision; prints them."""
    try:
        strategy = distribute.make_strategy(options.strategy)
    except distribute.StrategyError as exc:
        raise RunError(exc) from None
    replicas, chief = distribute.replicas(strategy), distribute.is_chief(strategy)
    keras.utils.set_random_seed(options.seed)
    kind, name = training.describe_device()
    policy = "float32" if options.precision == "float32" else training.mixed_precision_policy(kind)
    print(f"Device: {kind} ({name}); Keras {keras.__version__} on {keras.backend.backend()}; "
          f"precision {policy}; {distribute.describe(strategy)}, {replicas} replica(s)"
          f"{'' if chief else ', not the chief: writes no files'}", flush=True)
    return Device(strategy, replicas, chief, kind, name, policy)


def scaled_for_replicas(hp, replicas):
    """The recipe for `replicas` replicas: the global batch is --batch-size images on each, and every step size
    follows the linear scaling rule (Goyal et al. 2017), so each image moves the weights as much at any count."""
    scaled = {key: getattr(hp, key) * replicas for key in ("batch_size", "lr", "finetune_lr") if hasattr(hp, key)}
    return hp.replace(**scaled)


def load_data(run):
    """(dataset, Split): the training images less the validation split, and the sets reported each epoch."""
    options, hp = run.options, run.hp
    started = time.perf_counter()
    try:
        data = load_dataset(options.data)
        data.check_trainable()
        val_size = hp.val_size if options.val_size is not None else data.default_val_size(hp.val_size)
        (x_train, y_train), val = data.split_validation(val_size, seed=options.seed)
    except DataError as exc:
        raise RunError(exc) from None
    if options.early_stop and val is None:
        raise RunError("--early-stop watches the validation loss: give --val-size 1 or more.")
    one_hot = np.eye(len(data.class_names), dtype=np.float32)
    eval_sets = {"test": (data.x_test, one_hot[data.y_test])}
    if val is not None:
        eval_sets = {"val": (val[0], one_hot[val[1]]), **eval_sets}
    print(f"Data: {data.source}: {len(x_train)} train, {0 if val is None else len(val[0])} val, "
          f"{len(data.x_test)} test images, classes {', '.join(data.class_names)} "
          f"({time.perf_counter() - started:.1f} s)", flush=True)
    feedback = None
    if options.feedback:
        try:
            feedback = load_feedback_export(options.feedback, data.class_names, options.feedback_holdout)
        except DataError as exc:
            raise RunError(exc) from None
        x_train = np.concatenate([x_train, np.repeat(feedback.x_train, options.feedback_weight, axis=0)])
        y_train = np.concatenate([y_train, np.repeat(feedback.y_train, options.feedback_weight)])
        if len(feedback.y_holdout):
            eval_sets["feedback"] = (feedback.x_holdout, one_hot[feedback.y_holdout])
        print(f"Feedback: {feedback.source}: {len(feedback.y_train)} corrections to train on (each x"
              f"{options.feedback_weight}), {len(feedback.y_holdout)} held out, {len(feedback.outliers)} "
              "\"none of these\" images", flush=True)
    return data, Split(x_train, one_hot[y_train], val, eval_sets, feedback)


def load_teacher(options, hp, class_names):
    """The --teacher model's soft targets (None without one); RunError when it cannot teach these classes."""
    if not options.teacher:
        return None
    try:
        teacher = training.Teacher(options.teacher, hp.distill_weight, hp.distill_temperature)
    except modelfile.ModelFileError as exc:
        raise RunError(f"--teacher {options.teacher}: {exc}") from None
    if list(teacher.meta["class_names"]) != list(class_names):
        raise RunError(f"--teacher {options.teacher} knows other classes ({', '.join(teacher.meta['class_names'])}).")
    print(f"Teacher: {options.teacher} ({teacher.meta.get('test_accuracy', float('nan')):.2%} test accuracy), "
          f"{hp.distill_weight:g} of each target, temperature {hp.distill_temperature:g}", flush=True)
    return teacher


def build_model(run, split, class_names, state):
    """(batches, net to train, loss): the augmented batches (with generated outliers for outlier exposure), the
    architecture's net in the run's precision, its --init weights on a fresh run."""
    options, hp, device = run.options, run.hp, run.device
    keras.mixed_precision.set_global_policy(device.policy)
    bank = None
    if hp.outlier_fraction:
        print(f"Outliers: generating {hp.outlier_bank:,} for outlier exposure", flush=True)
        bank = training.outlier_bank(split.x_train, hp.outlier_bank, options.seed, hp.outlier_families())
        if split.feedback is not None and len(split.feedback.outliers):  # what users said is none of the classes
            bank = np.concatenate([bank, np.repeat(split.feedback.outliers, options.feedback_weight, axis=0)])
    elif split.feedback is not None and len(split.feedback.outliers):
        print(f"Outliers: the {len(split.feedback.outliers)} \"none of these\" images are not used: recipe {options.arch} "
              "has no outlier exposure (fast_oe has)", flush=True)
    batches = training.Batches(split.x_train, split.y_train, hp.batch_size, options.seed,
                               augment=hp.augment, translate=hp.translate, cutout=hp.cutout, outliers=bank,
                               outlier_fraction=hp.outlier_fraction, outlier_weight=hp.outlier_weight,
                               teacher=load_teacher(options, hp, class_names), augmix=hp.augmix,
                               augmix_severity=hp.augmix_severity)
    with distribute.scope(device.strategy):  # variables mirrored on every replica, updates all-reduced
        try:
            net, from_logits = run.architecture.build(hp, len(class_names), split.x_train, device.replicas,
                                                      options.pretrained)
        except WeightsDownloadError as exc:
            raise RunError(exc) from None
        if options.init and state is None:
            try:
                training.load_initial_weights(net, options.init)
            except (modelfile.ModelFileError, ValueError) as exc:
                raise RunError(f"--init {options.init}: {exc}") from None
    loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=hp.label_smoothing)
    print(f"Model: {options.arch}, {net.count_params():,} parameters. Per-epoch val/test metrics: the net as it "
          "trains (its precision, one view); the final test line: the saved .h5 as the app serves it", flush=True)
    return batches, net, loss


def fit(run, batches, net, loss, split, state):
    """Train phase after phase from where the run is (its checkpoint written each epoch); (EpochLog, EarlyStopping
    or None). RunError (code 3) when the loss diverged: nothing is saved."""
    out = run.options.out
    done = 0 if state is None else state.config["epochs_done"]
    log = training.EpochLog(split.eval_sets) if state is None else training.EpochLog(
        split.eval_sets, history=state.config["history"], train_seconds=state.config["train_seconds"])
    if state is not None:
        print(f"Resuming {out} after epoch {done} ({log.train_seconds / 60:.1f} min trained)", flush=True)
    early_stop, phases = None, run.architecture.phases(run.hp)
    for index, phase in enumerate(phases):
        if phase.end <= done:
            continue
        if len(phases) > 1:
            print(f"Phase {index + 1}: {phase.name}, epochs {phase.first + 1}-{phase.end}, step size {phase.lr:g}",
                  flush=True)
        early_stop = fit_phase(run, batches, net, loss, log, index, phase, max(done, phase.first), state)
        state = None  # restored into the first phase that runs
        if net.stop_training:  # early stopping or a NaN loss
            break
    if not log.history or not np.isfinite(log.history[-1]["train_loss"]):
        resume.checkpoint_path(out).unlink(missing_ok=True)  # nothing worth resuming
        raise RunError(f"training diverged: the loss became NaN or infinite in epoch {len(log.history)}; no model was "
                       f"saved (images of one flat colour, or a learning rate too high for the batch size, do this).",
                       exit_code=3)
    print(f"Final weights sha256 {distribute.weights_digest(net)}", flush=True)
    return log, early_stop


def fit_phase(run, batches, net, loss, log, index, phase, first_epoch, state):
    """One phase of training with its own optimizer from first_epoch (a resumed run: after its last finished one,
    its state restored first); the phase's EarlyStopping or None."""
    options, hp, device = run.options, run.hp, run.device
    if run.architecture.enter_phase:  # e.g. freeze or unfreeze a pretrained backbone
        run.architecture.enter_phase(net, phase)
    with distribute.scope(device.strategy):
        optimizer = training.phase_optimizer(hp, phase, len(batches))
        net.compile(optimizer=optimizer, loss=loss, metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    lookahead = training.Lookahead(hp.epochs * len(batches), hp.lookahead_every) if hp.lookahead_every else None
    last_phase = phase.end == hp.epochs
    early_stop = resume.EarlyStopping(options.early_stop) if options.early_stop and last_phase else None
    if state is not None:
        try:
            resume.restore(state, net, lookahead, early_stop, index)
        except resume.ResumeError as exc:
            raise RunError(exc) from None
    callbacks = [log, training.EpochData(batches), keras.callbacks.TerminateOnNaN()]  # log first: times the
    callbacks += [lookahead] if lookahead else []  # epoch's shuffling and augmentation too
    callbacks += [early_stop] if early_stop else []  # after the log, which puts val_loss into the epoch's logs
    if device.chief:  # other workers write nothing
        callbacks.insert(0, training.EpochProgress(hp.epochs))  # first: its epoch's line ends before the log's
        callbacks += training.logging_callbacks(logdir(options), first_epoch)
        callbacks.append(resume.RunCheckpoint(resume.checkpoint_path(options.out), {
            "options": cli.to_dict(run.options), "argv": run.argv, "hyperparameters": hp.to_dict(), "resumes": run.resumes}, log, index, lookahead,
            early_stop))
    with distribute.multiworker_fit_fix(device.strategy):
        net.fit(batches, initial_epoch=first_epoch, epochs=phase.end, callbacks=callbacks,
                shuffle=False,  # Batches shuffles by epoch number; Keras's own shuffle would draw on global RNG
                verbose=0)  # EpochProgress and EpochLog print instead: time left, and each epoch's figures once
    return early_stop


def logdir(options):
    """TensorBoard event files and metrics.csv: --logdir, or beside the model."""
    return options.logdir or f"{options.out}_logs"


def save_and_evaluate(run, net, data, split, log, early_stop, command):
    """Save the float32 model as the app serves it with its sidecar, evaluate it once on the test split (report,
    calibration, detector, card, plots) and print the summary."""
    options, hp, architecture, device = run.options, run.hp, run.architecture, run.device
    model = architecture.saved_model(hp, len(data.class_names), net)
    meta = sidecar.for_training(**{
        "name": os.path.basename(options.out),
        "arch": options.arch,
        "architecture": architecture.name,
        "class_names": list(data.class_names),
        "input_size": INPUT_SIZE,
        "input": "uint8-range RGB pixels 0..255, shape (N, 32, 32, 3); rescaling is inside the model",
        "output": "softmax probabilities over class_names",
        "model_file": modelfile.describe(model),  # where the logits, backbone and views are (cifarlab.modelfile)
        "data_source": data.source,
        "train_images": int(len(split.x_train)),
        "train_class_counts": dict(zip(data.class_names, np.sum(split.y_train, axis=0).round().astype(int).tolist())),
        "val_images": 0 if split.val is None else int(len(split.val[0])),
        "test_images": int(len(data.x_test)),
        "command": command,
        "seed": options.seed,
        "hyperparameters": hp.to_dict(),
        "epochs": hp.epochs,
        "epochs_run": len(log.history),
        "precision": device.policy,
        "replicas": device.replicas,
        "strategy": distribute.describe(device.strategy),
        "device": f"{device.kind}: {device.name}",
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "trained_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "train_seconds": round(log.train_seconds, 1),
        "history": log.history,
        "parameters": int(model.count_params()),
        "logdir": logdir(options),
        "resumes": run.resumes,
    })
    if options.init:
        meta["init"] = sidecar.lineage(options.init, modelfile.read_meta(options.init))
    if options.teacher:
        meta["teacher"] = {"path": options.teacher, "test_accuracy": modelfile.read_meta(options.teacher).get("test_accuracy")}
    if architecture.pretrained:
        meta["pretrained"] = "imagenet" if options.pretrained else None
    if early_stop is not None:
        meta["early_stop"] = {"patience": options.early_stop, "monitor": "val_loss",
                              "stopped_after_epoch": len(log.history) if early_stop.stopped_epoch else None,
                              "best_epoch": early_stop.best_epoch + 1}
    modelfile.save(model, f"{options.out}.h5", meta)
    resume.checkpoint_path(options.out).unlink(missing_ok=True)  # the run is complete: nothing left to resume
    meta = card.evaluate(f"{options.out}.h5", data)  # one pass over the test split: accuracy, loss, report
    print(f"Test ({len(data.x_test):,}-image split of {data.source}, TTA level {hp.tta_level}): "
          f"accuracy {meta['test_accuracy']:.4f}, loss {meta['test_loss']:.4f}; training {log.train_seconds / 60:.1f} min")
    if split.feedback is not None:
        meta = compare_with_init(run, data, split.feedback, f"{options.out}.h5", meta)
    card.save_curves(f"{options.out}.h5", meta)
    print(f"Saved {options.out}.h5, {options.out}.json, {options.out}_curves.png; logs in {logdir(options)}", flush=True)
    card.print_summary(meta)


def compare_with_init(run, data, feedback, model_path, meta):
    """The fine-tuned model beside the --init model it started from, on the test split and the held-out feedback, each
    as the app serves it; recorded in the sidecar and card as `feedback`, with whether it may be published (it may
    not be worse on either)."""
    from ..inference import Classifier

    def accuracy_on(path, sets):
        classifier = Classifier.from_path(path)
        return {name: float(np.mean(np.argmax(card.logits_in_batches(classifier, x), axis=1) == y))
                for name, (x, y) in sets.items()}

    held = {"feedback": (feedback.x_holdout, feedback.y_holdout)} if len(feedback.y_holdout) else {}
    sets = {"test": (data.x_test, data.y_test), **held}
    new = {"test": meta["test_accuracy"]}  # card.evaluate's pass: the same argmax of the same served model
    if held:
        new.update(accuracy_on(model_path, held))
    accuracy = {"new": new, "init": accuracy_on(run.options.init, sets)}
    worse = [name for name in sets if accuracy["new"][name] < accuracy["init"][name]]
    meta = {**meta, "feedback": {
        "export": feedback.source, "corrections": int(len(feedback.y_train)), "weight": run.options.feedback_weight,
        "held_out": int(len(feedback.y_holdout)), "outliers": int(len(feedback.outliers)), "init": run.options.init,
        "accuracy": accuracy["new"], "init_accuracy": accuracy["init"], "worse_on": worse, "publishable": not worse}}
    atomic.write_json(modelfile.sidecar_path(model_path), meta)
    card.rewrite_card(model_path, meta)
    for name in sets:
        print(f"Against --init on {name}: {accuracy['new'][name]:.2%} (was {accuracy['init'][name]:.2%}, "
              f"{len(sets[name][1]):,} images)", flush=True)
    print("Publishable: not worse on the test split nor on the held-out feedback." if not worse else
          f"Not publishable: worse than --init on {' and '.join(worse)}; `train.py models publish` refuses it.",
          flush=True)
    return meta
