"""Training machinery used by train.py: batches with augmentation, schedule, optimizer, logging."""
import math
import platform
import time

import keras
import numpy as np

from . import models


def describe_device():
    """('GPU'|'CPU', human-readable name) of the device Keras will train on."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
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


def augment(x, rng, epoch, flip_bits, translate):
    """One epoch's view of uint8 images: alternating mirror, then reflect-padded random shifts."""
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
    return out


class Batches(keras.utils.PyDataset):
    """Shuffled (and optionally augmented) batches of in-memory uint8 images; backend-agnostic."""

    def __init__(self, x, y, batch_size, seed, augment=False, translate=0):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.rng = np.random.default_rng(seed)
        self.do_augment, self.translate = augment, translate
        self.flip_bits = self.rng.integers(0, 2, len(x))
        self.epoch = 0
        self._prepare()

    def _prepare(self):
        order = self.rng.permutation(len(self.x))
        x = self.x[order]
        self.epoch_x = augment(x, self.rng, self.epoch, self.flip_bits[order], self.translate) if self.do_augment else x
        self.epoch_y = self.y[order]

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i):
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.epoch_x[s], self.epoch_y[s]

    def on_epoch_end(self):
        self.epoch += 1
        self._prepare()


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


def make_optimizer(hp, steps):
    """The optimizer a preset asks for."""
    if hp["optimizer"] == "adam":
        return keras.optimizers.Adam(hp["lr"])
    schedule = WarmupLinearDecay(hp["lr"], steps, hp["lr_start"], hp["lr_warmup"], hp.get("lr_end", 0.0))
    return ScaledBiasSGD(bias_lr_scale=hp["bias_lr_scale"], learning_rate=schedule,
                         momentum=hp["momentum"], nesterov=True, weight_decay=hp["weight_decay"])


def build_training_model(arch, hp, num_classes, x_train, replicas=1):
    """(model to train, whether it outputs logits) for an architecture name."""
    if arch == "baseline":
        return models.build_baseline(num_classes), False
    net = models.fast_backbone_for(hp, num_classes, synchronized_bn=replicas > 1)
    sample = x_train[np.random.default_rng(0).permutation(len(x_train))[:5000]].astype(np.float32) / 255
    kernel = models.whitening_kernel(sample, eps=hp.get("whiten_eps", 5e-4))
    mean_patch = sample[:, :2, :2, :].mean(axis=0)  # (2, 2, 3), approximately stationary over the image
    bias = -np.tensordot(mean_patch, kernel, axes=3)
    whiten = net.get_layer("whiten")
    whiten.set_weights([kernel, bias.astype(np.float32)])
    whiten.trainable = False  # fixed whitening filters: decorrelated inputs from the first step
    models.dirac_init(net)
    return net, True


class Lookahead(keras.callbacks.Callback):
    """airbench's lookahead: every `every` steps, weights are pulled back to their moving average.

    The average's decay ramps up cubically to `final_decay` over training; at the end the net takes the
    average. Batch-norm running statistics are averaged too.
    """

    def __init__(self, total_steps, every=5, final_decay=0.95 ** 5):
        super().__init__()
        self.total_steps, self.every, self.final_decay = total_steps, every, final_decay

    def on_train_begin(self, logs=None):
        self.variables = [v for v in self.model.variables if "float" in str(v.dtype)]
        self.average = [keras.ops.convert_to_numpy(v).copy() for v in self.variables]
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            self.pull(self.final_decay * (self.step / self.total_steps) ** 3)

    def on_train_end(self, logs=None):
        self.pull(1.0)

    def pull(self, decay):
        """average <- decay*average + (1-decay)*weights; weights <- average."""
        for variable, average in zip(self.variables, self.average):
            if decay < 1.0:
                average *= decay
                average += (1 - decay) * keras.ops.convert_to_numpy(variable)
            variable.assign(average)


class EpochLog(keras.callbacks.Callback):
    """Times training alone (evaluation excluded) and records per-epoch metrics on val and test."""

    def __init__(self, eval_sets, batch_size=1000):
        super().__init__()
        self.eval_sets, self.eval_batch = eval_sets, batch_size
        self.history, self.train_seconds = [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.train_seconds += time.perf_counter() - self._start
        row = {"epoch": epoch + 1, "train_seconds": round(self.train_seconds, 2),
               "train_loss": float(logs["loss"]), "train_accuracy": float(logs.get("accuracy", float("nan")))}
        for name, (x, y) in self.eval_sets.items():
            loss, acc = self.model.evaluate(x, y, batch_size=self.eval_batch, verbose=0, return_dict=False)[:2]
            row[f"{name}_loss"], row[f"{name}_accuracy"] = float(loss), float(acc)
        self.history.append(row)
        print("  " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
