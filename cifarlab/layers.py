"""The custom Keras layers inside saved model files (test-time views, GELU, fused batch norm): what loading one needs."""
import keras
from keras import layers, ops

from . import quiet
from .images import tta_view

PACKAGE = "cifarlab"  # registration namespace of the custom layers saved in .h5 files


@keras.saving.register_keras_serializable(package=PACKAGE)
class MirrorAndShift(layers.Layer):
    """Deterministic view of a batch: optional horizontal mirror, then a reflect-padded shift."""

    def __init__(self, mirror=False, dx=0, dy=0, **kwargs):
        super().__init__(**kwargs)
        self.mirror, self.dx, self.dy = bool(mirror), int(dx), int(dy)

    def call(self, x):
        return tta_view(x, self.mirror, self.dx, self.dy, xp=ops)

    def get_config(self):
        return {**super().get_config(), "mirror": self.mirror, "dx": self.dx, "dy": self.dy}


@keras.saving.register_keras_serializable(package=PACKAGE)
class WeightedMean(layers.Layer):
    """Weighted mean of several same-shaped tensors (used to average TTA logits)."""

    def __init__(self, weights, **kwargs):
        super().__init__(**kwargs)
        self.view_weights = [float(w) for w in weights]

    def call(self, inputs):
        total = sum(self.view_weights)
        return sum(w / total * t for w, t in zip(self.view_weights, inputs))

    def get_config(self):
        return {**super().get_config(), "weights": self.view_weights}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GELU(layers.Layer):
    """GELU activation, exact (erf) or in its tanh form (the same curve to ~1e-3); Keras's Activation has no switch."""

    def __init__(self, approximate=False, **kwargs):
        super().__init__(**kwargs)
        self.approximate = bool(approximate)

    def call(self, x):
        return keras.activations.gelu(x, approximate=self.approximate)

    def get_config(self):
        return {**super().get_config(), "approximate": self.approximate}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNorm(layers.BatchNormalization):
    """BatchNormalization whose training pass on TensorFlow is one fused kernel (Keras composes ~10 ops).

    Same normalisation and running statistics; any case the fused kernel does not cover (another backend,
    synchronized replicas, masks, a channel axis other than the last, inference) is left to Keras.
    """

    def call(self, inputs, training=None, mask=None):
        fused = (training and self.trainable and not self.synchronized and mask is None and len(inputs.shape) == 4
                 and self.axis in (-1, 3) and keras.backend.backend() == "tensorflow")
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        tf = quiet.tensorflow()

        channels = inputs.shape[-1]
        scale = ops.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        offset = ops.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        outputs, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=scale, offset=offset, mean=tf.zeros([0]), variance=tf.zeros([0]),
            epsilon=self.epsilon, data_format="NHWC", is_training=True)
        n = ops.cast(ops.prod(ops.shape(inputs)[:-1]), "float32")
        variance = unbiased_variance * (n - 1) / n  # the kernel returns Bessel-corrected variance; Keras keeps biased
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs
