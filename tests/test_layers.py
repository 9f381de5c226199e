import math

import keras
import numpy as np
import pytest

from cifarlab import layers
from cifarlab.images import tta_view
from cifarlab.ml import models


def test_mirror_and_shift_views():
    x = np.arange(2 * 4 * 4 * 1, dtype="float32").reshape(2, 4, 4, 1)
    np.testing.assert_array_equal(layers.MirrorAndShift(mirror=True)(x), x[:, :, ::-1])
    shifted = np.asarray(layers.MirrorAndShift(dx=1, dy=0)(x))
    np.testing.assert_array_equal(shifted[:, :, :3], x[:, :, 1:])  # content moves left by one pixel
    np.testing.assert_array_equal(shifted[:, :, 3], x[:, :, 2])  # reflect padding at the border


def test_the_keras_views_and_the_serving_views_are_one_function():
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3)).astype("float32")
    for mirror, dx, dy, _ in models.TTA_VIEWS[2]:
        np.testing.assert_array_equal(np.asarray(layers.MirrorAndShift(mirror, dx, dy)(x)),
                                      tta_view(x, mirror, dx, dy))


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu_layer_matches_the_erf_curve_and_keeps_its_form(approximate):
    x = np.linspace(-6, 6, 1001, dtype="float32")
    exact = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    layer = layers.GELU(approximate)
    np.testing.assert_allclose(np.asarray(layer(x)), exact, atol=1e-3 if approximate else 1e-6)
    assert layers.GELU.from_config(layer.get_config()).approximate is approximate


def test_fused_batch_norm_trains_like_keras_batch_norm():
    import tensorflow as tf
    x = tf.constant(np.random.default_rng(0).normal(1.0, 3.0, (8, 5, 5, 6)), tf.float32)
    norms = [cls(momentum=0.4, epsilon=1e-12, scale=False) for cls in (layers.FusedBatchNorm,
                                                                       keras.layers.BatchNormalization)]
    outputs, grads = [], []
    for layer in norms:
        layer.build(x.shape)
        layer.beta.assign(np.linspace(-1, 1, 6))
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(y ** 3)
        outputs.append(y.numpy())
        grads.append(tape.gradient(loss, layer.beta).numpy())
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-4)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-3, atol=1e-3)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(getattr(norms[0], name).numpy(), getattr(norms[1], name).numpy(), rtol=1e-5)
    np.testing.assert_allclose(norms[0](x, training=False), norms[1](x, training=False), atol=1e-4)
