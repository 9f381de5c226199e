"""Training machinery used by train.py: batches with augmentation, schedule, optimizer, logging."""
import math
import platform
import sys
import time

import keras
import numpy as np

from .. import modelfile, progress, quiet

from . import models
from .augmix import augmix_some


def describe_device():
    """('GPU'|'CPU', human-readable name) of the device Keras will train on."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        tf = quiet.tensorflow()
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return "GPU", tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    elif backend == "jax":
        import jax
        if jax.default_backend() == "gpu":
            return "GPU", jax.devices()[0].device_kind
    return "CPU", cpu_name()


def cpu_name():
    """Processor model and logical core count."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import os
    return f"{name}, {os.cpu_count()} logical cores"


def cpu_has_bf16():
    """True when the CPU has native bfloat16 dot products (AVX512_BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def mixed_precision_policy(device_kind):
    """float16 on GPUs, bfloat16 on CPUs that compute it natively, else float32."""
    if device_kind == "GPU":
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def augment(x, rng, epoch, flip_bits, translate, cutout=0):
    """One epoch's view of uint8 images: alternating mirror, reflect-padded random shifts, then cutout squares."""
    flip = (flip_bits ^ (epoch % 2)).astype(bool)  # each image mirrored on every other epoch
    out = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    if translate:
        p = translate
        padded = np.pad(out, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
        h, w = x.shape[1:3]
        dy, dx = rng.integers(0, 2 * p + 1, size=(2, len(x)))
        for sy in range(2 * p + 1):  # group images by shift: 25 slices instead of per-image work
            for sx in range(2 * p + 1):
                idx = np.flatnonzero((dy == sy) & (dx == sx))
                out[idx] = padded[idx, sy:sy + h, sx:sx + w]
    if cutout:
        out = np.where(cutout_masks(out.shape[:3], cutout, rng)[..., None], np.uint8(0), out)
    return out


def cutout_masks(shape, size, rng):
    """(N, H, W) booleans: for each image a size x size square at a random place, clipped at the borders."""
    n, h, w = shape
    top = rng.integers(-(size // 2), h - size // 2, n)[:, None, None]  # the square's centre lies in the image
    left = rng.integers(-(size // 2), w - size // 2, n)[:, None, None]
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    return (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)


class Batches(keras.utils.PyDataset):
    """Shuffled (and optionally augmented) batches of in-memory uint8 images; backend-agnostic.

    Epoch k's order and augmentation depend on (seed, k) alone, so a resumed run sees exactly the batches it would
    have seen; EpochData (a callback) says which epoch Keras starts, whatever else Keras calls in between.

    With `outliers` (uint8 images that are none of the classes) and outlier_fraction > 0, every batch also carries
    round(outlier_fraction x batch_size) of them, augmented alike, with the uniform distribution as their target and
    `outlier_weight` as their sample weight (outlier exposure); their draw has its own random stream, so the class
    images' order and augmentation are those of a run without outliers.
    With `augmix`, that share of each epoch's images is replaced by its AugMix (own stream too); with a `teacher`,
    each batch's targets are the teacher's soft targets for the very images the batch holds.
    """

    def __init__(self, x, y, batch_size, seed, augment=False, translate=0, cutout=0, outliers=None,
                 outlier_fraction=0.0, outlier_weight=0.5, teacher=None, augmix=0.0, augmix_severity=3):
        super().__init__()
        self.teacher, self.augmix, self.augmix_severity = teacher, augmix, augmix_severity
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.do_augment, self.translate, self.cutout = augment, translate, cutout
        self.outliers = outliers if outliers is not None and outlier_fraction > 0 else None
        self.per_batch = round(outlier_fraction * batch_size) if self.outliers is not None else 0
        self.outlier_weight = outlier_weight
        self.flip_bits = np.random.default_rng(seed).integers(0, 2, len(x))
        self.epoch = None
        self.prepare(0)

    def prepare(self, epoch):
        """Shuffle (and augment) for epoch `epoch` (0-based), unless that is the epoch already prepared."""
        if epoch == self.epoch:
            return
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.x))
        x = self.x[order]
        self.epoch_x = (augment(x, rng, epoch, self.flip_bits[order], self.translate, self.cutout)
                        if self.do_augment else x)
        if self.augmix:  # its own random stream: the flips, shifts and outliers stay those of a run without it
            self.epoch_x = augmix_some(self.epoch_x, self.augmix, np.random.default_rng([self.seed, epoch, 2]),
                                       self.augmix_severity)
        self.epoch_y, self.epoch = self.y[order], epoch
        if self.per_batch:
            rng = np.random.default_rng([self.seed, epoch, 1])
            picked = self.outliers[rng.integers(0, len(self.outliers), len(self) * self.per_batch)]
            self.epoch_outliers = augment(picked, rng, epoch, rng.integers(0, 2, len(picked)), self.translate)

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i):
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        x, y = self.epoch_x[s], self.epoch_y[s]
        if self.teacher is not None:  # on the very views the student sees (function matching)
            y = self.teacher.targets(x, y)
        if not self.per_batch:
            return x, y
        extra = self.epoch_outliers[i * self.per_batch:(i + 1) * self.per_batch]
        uniform = np.full((len(extra), y.shape[1]), 1.0 / y.shape[1], y.dtype)
        weights = np.concatenate([np.ones(len(x), np.float32), np.full(len(extra), self.outlier_weight, np.float32)])
        return np.concatenate([x, extra]), np.concatenate([y, uniform]), weights


def outlier_bank(x_train, count, seed, families=None):
    """count uint8 images that are none of the classes: procedural families (cifarlab.outliers; all by default) and,
    one in ten, training images cut into a 4 x 4 grid of tiles and shuffled (photo statistics without an object)."""
    from .. import outliers

    scrambled = count // 10
    rng = np.random.default_rng([seed, 7])
    tiles = x_train[rng.integers(0, len(x_train), scrambled)].copy()
    h, w = tiles.shape[1] // 4, tiles.shape[2] // 4
    grid = tiles.reshape(scrambled, 4, h, 4, w, 3).transpose(0, 1, 3, 2, 4, 5).reshape(scrambled, 16, h, w, 3)
    grid = grid[np.arange(scrambled)[:, None], rng.permuted(np.tile(np.arange(16), (scrambled, 1)), axis=1)]
    tiles = grid.reshape(scrambled, 4, 4, h, w, 3).transpose(0, 1, 3, 2, 4, 5).reshape(tiles.shape)
    procedural = outliers.mixed(count - scrambled, seed + outliers.TRAIN_SEED, families=families or tuple(outliers.FAMILIES))
    return np.concatenate([procedural, tiles])


class Teacher:
    """A trained model's soft targets for the student's batches (distillation): weight x softmax(teacher logits / T)
    plus (1 - weight) x the label. A model with test-time views teaches with its backbone, on the one view given."""

    def __init__(self, model_path, weight, temperature):
        from .. import modelfile

        model, self.meta = modelfile.load(model_path)
        self.network, self.outputs_logits = modelfile.backbone(model), bool(modelfile.views(model))
        self.weight, self.temperature = weight, temperature

    def logits(self, x):
        """The teacher's logits (log-probabilities for a softmax-ending model) of uint8 images."""
        out = np.asarray(self.network.predict_on_batch(x.astype(np.float32)), np.float64)
        return out if self.outputs_logits else modelfile.log_probabilities(out, np.float64)

    def targets(self, x, y):
        """The training targets of images x whose one-hot labels are y."""
        z = self.logits(x) / self.temperature
        soft = np.exp(z - z.max(axis=1, keepdims=True))
        soft /= soft.sum(axis=1, keepdims=True)
        return (self.weight * soft + (1 - self.weight) * y).astype(y.dtype)


class EpochData(keras.callbacks.Callback):
    """Prepares each epoch's batches as Keras begins the epoch (before it reads any of them)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.prepare(epoch)


@keras.saving.register_keras_serializable(package=models.PACKAGE)
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from start*peak to peak over warmup*total steps, then linear decay to end*peak."""

    def __init__(self, peak, total_steps, start=0.2, warmup=0.2, end=0.0):
        self.peak, self.total_steps, self.start, self.warmup, self.end = peak, total_steps, start, warmup, end

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        up = max(1.0, self.warmup * self.total_steps)
        rise = self.start + (1 - self.start) * step / up
        fall = self.end + (1 - self.end) * (self.total_steps - step) / max(1.0, self.total_steps - up)
        return self.peak * keras.ops.clip(keras.ops.minimum(rise, fall), 0.0, 1.0)

    def get_config(self):
        return dict(peak=self.peak, total_steps=self.total_steps, start=self.start, warmup=self.warmup, end=self.end)


class ScaledBiasSGD(keras.optimizers.SGD):
    """SGD whose BatchNorm offsets (beta) take `bias_lr_scale` times larger steps; decay unchanged."""

    def __init__(self, bias_lr_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.bias_lr_scale = bias_lr_scale

    def build(self, var_list):
        super().build(var_list)
        self._scaled_keys = {self._var_key(v) for v in var_list if v.path.endswith("beta")}

    def update_step(self, gradient, variable, learning_rate):
        if self.bias_lr_scale != 1.0 and self._var_key(variable) in self._scaled_keys:
            gradient = gradient * self.bias_lr_scale  # linear in SGD+momentum: same as a larger step
        return super().update_step(gradient, variable, learning_rate)


def orthogonalize(g, steps=3):
    """Newton-Schulz approximation of U V^T for g = U S V^T (singular values land in about 0.7..1.2)."""
    a, b, c = 3.4445, -4.7750, 2.0315  # quintic coefficients of airbench94_muon / modded-nanogpt
    tall = g.shape[0] > g.shape[1]
    x = keras.ops.transpose(g) if tall else g
    x = x / (keras.ops.sqrt(keras.ops.sum(keras.ops.square(x))) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        xxt = keras.ops.matmul(x, keras.ops.transpose(x))
        x = a * x + keras.ops.matmul(b * xxt + c * keras.ops.matmul(xxt, xxt), x)
    return keras.ops.transpose(x) if tall else x


class MuonSGD(ScaledBiasSGD):
    """airbench94_muon's optimizer: Muon for the 3x3 convolution filters, SGD (as ScaledBiasSGD) for the rest.

    Before each step a filter bank is rescaled to norm sqrt(output channels) (the batch norm after it makes its
    scale irrelevant, so it takes no weight decay), then moves by muon_lr times the orthogonalised Nesterov momentum
    of its gradient, reshaped to (inputs x 3 x 3, outputs). muon_lr follows the same schedule as the SGD step.
    The whitening bias, when trainable, learns at the BatchNorm-offset rate decaying linearly to 0 over its first
    whiten_bias_steps, without weight decay.
    """

    def __init__(self, peak_lr, muon_lr=0.24, muon_momentum=0.6, ns_steps=3, whiten_bias_steps=0, **kwargs):
        super().__init__(**kwargs)
        self.peak_lr, self.muon_lr, self.muon_momentum = peak_lr, muon_lr, muon_momentum
        self.ns_steps, self.whiten_bias_steps = ns_steps, whiten_bias_steps

    def build(self, var_list):
        super().build(var_list)
        self._muon_momentums = {self._var_key(v): self.add_variable_from_reference(v, "muon_momentum")
                                for v in var_list if len(v.shape) == 4 and v.path.endswith("_conv/kernel")}
        self._whiten_bias_keys = {self._var_key(v) for v in var_list if v.path.endswith("whiten/bias")}

    def _use_weight_decay(self, variable):
        key = self._var_key(variable)
        return key not in self._muon_momentums and key not in self._whiten_bias_keys and super()._use_weight_decay(variable)

    def update_step(self, gradient, variable, learning_rate):
        key = self._var_key(variable)
        if key in self._muon_momentums:
            return self._muon_step(keras.ops.cast(gradient, variable.dtype), variable, learning_rate)
        if key in self._whiten_bias_keys:  # SGD's step is linear in the gradient: rescaling it sets this bias's rate
            step = keras.ops.cast(self.iterations, "float32")
            own_lr = self.peak_lr * self.bias_lr_scale * keras.ops.maximum(0.0, 1.0 - step / self.whiten_bias_steps)
            gradient = gradient * keras.ops.cast(own_lr / keras.ops.maximum(learning_rate, 1e-12), gradient.dtype)
        return super().update_step(gradient, variable, learning_rate)

    def _muon_step(self, gradient, variable, learning_rate):
        momentum = self._muon_momentums[self._var_key(variable)]
        self.assign(momentum, self.muon_momentum * momentum + gradient)
        nesterov = gradient + self.muon_momentum * momentum
        outputs = variable.shape[-1]
        update = orthogonalize(keras.ops.reshape(nesterov, (-1, outputs)), self.ns_steps)
        norm = keras.ops.sqrt(keras.ops.sum(keras.ops.square(variable)))
        lr = self.muon_lr * keras.ops.cast(learning_rate, variable.dtype) / self.peak_lr
        self.assign(variable, variable * (outputs ** 0.5 / norm) - lr * keras.ops.reshape(update, variable.shape))


def make_optimizer(hp, steps):
    """The optimizer a preset asks for."""
    if hp.optimizer == "adam":
        return keras.optimizers.Adam(hp.lr)
    schedule = WarmupLinearDecay(hp.lr, steps, hp.lr_start, hp.lr_warmup, hp.lr_end)
    sgd = dict(bias_lr_scale=hp.bias_lr_scale, learning_rate=schedule, momentum=hp.momentum, nesterov=True,
               weight_decay=hp.weight_decay)
    if hp.optimizer == "muon":
        return MuonSGD(hp.lr, hp.muon_lr, hp.muon_momentum, hp.ns_steps,
                       round(hp.whiten_bias_epochs * steps / hp.epochs), **sgd)  # one phase: all epochs
    return ScaledBiasSGD(**sgd)


def phase_optimizer(hp, phase, steps_per_epoch):
    """The optimizer of one training phase: the recipe's, at the phase's step size, scheduled over its epochs."""
    return make_optimizer(hp.replace(lr=phase.lr), steps=(phase.end - phase.first) * steps_per_epoch)


def load_initial_weights(net, model_path):
    """Copy a saved model's weights (its backbone's, for a model with test-time views) into the net to train."""
    from .. import modelfile

    source = modelfile.backbone(modelfile.load(model_path)[0])
    shapes = [tuple(w.shape) for w in source.get_weights()]
    if shapes != [tuple(w.shape) for w in net.get_weights()]:
        raise ValueError("its weights do not fit this recipe's net (another architecture or widths)")
    net.set_weights(source.get_weights())


class Lookahead(keras.callbacks.Callback):
    """airbench's lookahead: every `every` steps, weights are pulled back to their moving average.

    The average's decay ramps up cubically to `final_decay` over training; at the end the net takes the
    average. Batch-norm running statistics are averaged too.
    """

    def __init__(self, total_steps, every=5, final_decay=0.95 ** 5):
        super().__init__()
        self.total_steps, self.every, self.final_decay = total_steps, every, final_decay
        self.resumed = None  # (step, average) of an interrupted run

    def on_train_begin(self, logs=None):
        self.variables = [v for v in self.model.variables if "float" in str(v.dtype)]
        self.average = [keras.ops.convert_to_numpy(v).copy() for v in self.variables]
        self.step = 0
        if self.resumed is not None:
            self.step, average = self.resumed
            self.average, self.resumed = [np.array(a) for a in average], None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            self.pull(self.final_decay * (self.step / self.total_steps) ** 3)

    def on_train_end(self, logs=None):
        self.pull(1.0)

    def pull(self, decay):
        """average <- decay*average + (1-decay)*weights; weights <- average."""
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()  # mid-epoch, Keras on JAX keeps the trained state off the model's variables
        for variable, average in zip(self.variables, self.average):
            if decay < 1.0:
                average *= decay
                average += (1 - decay) * keras.ops.convert_to_numpy(variable)
            variable.assign(average)


def logging_callbacks(logdir, initial_epoch):
    """Keras's CSV logger (logdir/metrics.csv) and, where TensorBoard is installed, its event files.

    A run continuing at initial_epoch appends, after dropping rows of epochs it is about to redo.
    """
    import importlib.util
    from pathlib import Path

    csv = Path(logdir) / "metrics.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    if initial_epoch and csv.exists() and csv.stat().st_size:
        header, *rows = csv.read_text().splitlines(keepends=True)
        csv.write_text(header + "".join(row for row in rows if int(row.split(",", 1)[0]) <= initial_epoch))
    callbacks = [CountingCSVLogger(str(csv), append=initial_epoch > 0)]
    if all(importlib.util.find_spec(m) for m in ("tensorboard", "tensorflow")):  # Keras writes them with tf.summary
        callbacks.append(keras.callbacks.TensorBoard(str(logdir), write_graph=False, profile_batch=0))
    return callbacks


class CountingCSVLogger(keras.callbacks.CSVLogger):
    """Keras's CSV logger with epochs counted from 1, as the console and the sidecar count them."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


class EpochProgress(keras.callbacks.Callback):
    """A progress line inside each epoch: batches done, rate and time left, every `every` seconds."""

    def __init__(self, epochs, every=10.0, stream=None):
        super().__init__()
        self.epochs, self.every, self.stream = epochs, every, stream

    def on_epoch_begin(self, epoch, logs=None):
        self.progress = progress.Progress(f"epoch {epoch + 1}/{self.epochs}", self.params["steps"], unit="batches",
                                          every=self.every, stream=self.stream or sys.stdout)

    def on_train_batch_end(self, batch, logs=None):
        self.progress.update(1)


class EpochLog(keras.callbacks.Callback):
    """Times training alone (evaluation excluded) and records per-epoch metrics on val and test.

    The metrics are also added to the epoch's logs, so later callbacks (CSV, TensorBoard, early stopping) see them.
    """

    def __init__(self, eval_sets, batch_size=1000, history=(), train_seconds=0.0):
        super().__init__()
        self.eval_sets, self.eval_batch = eval_sets, batch_size
        self.history, self.train_seconds = list(history), train_seconds

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.train_seconds += time.perf_counter() - self._start
        row = {"epoch": epoch + 1, "train_seconds": round(self.train_seconds, 2),
               "train_loss": float(logs["loss"]), "train_accuracy": float(logs.get("accuracy", float("nan")))}
        for name, (x, y) in self.eval_sets.items():
            loss, acc = self.model.evaluate(x, y, batch_size=self.eval_batch, verbose=0, return_dict=False)[:2]
            row[f"{name}_loss"], row[f"{name}_accuracy"] = float(loss), float(acc)
            if logs is not None:
                logs[f"{name}_loss"], logs[f"{name}_accuracy"] = float(loss), float(acc)
        self.history.append(row)
        print("  " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
