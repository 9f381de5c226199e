"""Keras models: the seed baseline CNN, the fast airbench-style network with built-in TTA, and a transfer net."""
import functools

import keras
import numpy as np
from keras import layers

from .. import modelfile
from ..errors import CifarlabError
from ..images import INPUT_SIZE
from ..layers import PACKAGE, GELU, FusedBatchNorm, MirrorAndShift, WeightedMean  # noqa: F401  (re-exported)

def build_baseline(num_classes=10, input_size=INPUT_SIZE):
    """The seed CNN exactly: two conv/pool stages, Dense(64), softmax; rescaling inside."""
    return keras.Sequential([
        keras.Input((input_size, input_size, 3)),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(num_classes, activation="softmax"),
    ], name="baseline")


class WeightsDownloadError(CifarlabError, RuntimeError):
    """Pretrained weights that could not be fetched; the message says what to do."""


def build_transfer(hp, num_classes, pretrained=False, input_size=INPUT_SIZE):
    """The TransferRecipe's keras.applications backbone on inputs upscaled inside the model: 0..255 in, softmax out."""
    backbone, image_size = hp.backbone, hp.image_size
    if not backbone.startswith("EfficientNetV2") or not hasattr(keras.applications, backbone):
        raise ValueError(f"backbone {backbone!r}: expected a keras.applications EfficientNetV2 model (they rescale "
                         f"their own 0..255 inputs), e.g. EfficientNetV2B0")
    inputs = keras.Input((input_size, input_size, 3), name="pixels")
    x = layers.Resizing(image_size, image_size, name="upscale")(inputs)
    try:
        base = getattr(keras.applications, backbone)(include_top=False, weights="imagenet" if pretrained else None,
                                                     input_shape=(image_size, image_size, 3), pooling="avg")
    except Exception as exc:  # keras.utils.get_file reports a failed download as a bare Exception
        if not pretrained:
            raise
        raise WeightsDownloadError(
            f"could not fetch the ImageNet weights of {backbone} ({str(exc).splitlines()[0][:160]}); Keras downloads "
            f"them once into ~/.keras/models, so run once with network access, or train without --pretrained"
        ) from None
    base.name = "backbone"
    x = base(x, training=False)  # batch-norm keeps its statistics even when the backbone is unfrozen
    x = layers.Dropout(hp.dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="head")(x)
    return keras.Model(inputs, outputs, name=f"transfer_{backbone}")


def fan_in_uniform():
    """Uniform(+-1/sqrt(fan_in)), PyTorch's default: smaller weights than Glorot, so larger effective steps."""
    return keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform")


def _conv_bn(x, width, name, *, bn_momentum, synchronized, gelu_tanh, fused_bn, pool=False):
    """Conv3x3 (no bias) -> [MaxPool2] -> BatchNorm (offset only: a decayed scale would shrink to 0) -> GELU."""
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=fan_in_uniform(),
                      name=f"{name}_conv")(x)
    if pool:
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    norm = FusedBatchNorm if fused_bn else layers.BatchNormalization
    x = norm(momentum=bn_momentum, epsilon=1e-12, scale=False, synchronized=synchronized, name=f"{name}_bn")(x)
    return GELU(gelu_tanh, name=f"{name}_gelu")(x)


def build_fast_backbone(hp, num_classes=10, synchronized_bn=False, whiten_width=24, input_size=INPUT_SIZE):
    """airbench-style net a FastRecipe describes: 2x2 whitening conv, three conv-pool-BN-GELU groups; outputs logits.

    hp.depth 3 gives each group a third convolution and a skip connection around its last two (airbench96).

    synchronized_bn: batch statistics over all replicas of a tf.distribute strategy (TensorFlow only),
    so every worker normalises, and keeps running statistics, as one device with the global batch would.
    hp.whiten_float32 keeps the whitening in full precision under a mixed policy; its filters subtract
    neighbouring pixels with large weights, so bfloat16 inputs (8 significant bits) add rounding noise to its
    weakest channels.
    """
    whiten_dtype = "float32" if hp.whiten_float32 else None
    inputs = keras.Input((input_size, input_size, 3), name="pixels")
    x = layers.Rescaling(1.0 / 255, dtype=whiten_dtype, name="rescale")(inputs)
    x = layers.Conv2D(whiten_width, 2, padding="valid", dtype=whiten_dtype, name="whiten")(x)
    x = GELU(hp.gelu_tanh, dtype=whiten_dtype, name="whiten_gelu")(x)
    conv_bn = functools.partial(_conv_bn, bn_momentum=hp.bn_momentum, synchronized=synchronized_bn,
                                gelu_tanh=hp.gelu_tanh, fused_bn=hp.fused_bn)
    for i, width in enumerate(hp.widths, start=1):
        x = conv_bn(x, width, f"block{i}a", pool=True)
        if hp.depth == 3:
            x = layers.Add(name=f"block{i}_skip")([x, conv_bn(conv_bn(x, width, f"block{i}b"), width, f"block{i}c")])
        else:
            x = conv_bn(x, width, f"block{i}b")
    x = layers.MaxPooling2D(3, name="head_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(num_classes, use_bias=False, kernel_initializer=fan_in_uniform(), dtype="float32",
                     name="head")(x)
    logits = layers.Rescaling(hp.logit_scale, dtype="float32", name="logit_scale")(x)
    return keras.Model(inputs, logits, name="fast_backbone")


TTA_VIEWS = {  # (mirror, dx, dy, weight); airbench's level-2 test-time augmentation
    0: [(False, 0, 0, 1.0)],
    1: [(False, 0, 0, 0.5), (True, 0, 0, 0.5)],
    2: [(False, 0, 0, 0.25), (True, 0, 0, 0.25),
        (False, -1, -1, 0.125), (True, -1, -1, 0.125),
        (False, 1, 1, 0.125), (True, 1, 1, 0.125)],
}


def with_tta(backbone, level=2):
    """Wrap a logits backbone into a model that averages TTA-view logits and returns softmax."""
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    views = TTA_VIEWS[level]
    outputs = [backbone(MirrorAndShift(m, dx, dy, name=modelfile.VIEW.format(i))(inputs))
               for i, (m, dx, dy, _) in enumerate(views)]
    logits = outputs[0] if len(outputs) == 1 else WeightedMean([w for *_, w in views], name=modelfile.MEAN)(outputs)
    probs = layers.Activation("softmax", dtype="float32", name=modelfile.PROBABILITIES)(logits)
    return keras.Model(inputs, probs, name=f"fast_tta{level}")



def init_fast_backbone(net, x_train, hp):
    """airbench's initialisation: fixed whitening filters from 5,000 training images' patches, Dirac 3x3 convs."""
    sample = x_train[np.random.default_rng(0).permutation(len(x_train))[:5000]].astype(np.float32) / 255
    kernel = whitening_kernel(sample, eps=hp.whiten_eps)
    mean_patch = sample[:, :2, :2, :].mean(axis=0)  # (2, 2, 3), approximately stationary over the image
    bias = -np.tensordot(mean_patch, kernel, axes=3)
    whiten = net.get_layer("whiten")
    whiten.set_weights([kernel, bias.astype(np.float32)])
    whiten.kernel.trainable = False  # fixed whitening filters: decorrelated inputs from the first step
    whiten.bias.trainable = hp.whiten_bias_epochs > 0  # the Muon recipe trains the bias for a few epochs
    dirac_init(net)


def dirac_init(net):
    """Make the first in_channels filters of every 3x3 conv an identity map (airbench's partial Dirac init)."""
    for layer in net.layers:
        if isinstance(layer, layers.Conv2D) and layer.kernel_size == (3, 3):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            n_in, n_out = kernel.shape[2:]
            n = min(n_in, n_out)
            kernel[:, :, :, :n] = 0
            kernel[1, 1, np.arange(n), np.arange(n)] = 1
            layer.kernel.assign(kernel)


def whitening_kernel(images, eps, kernel_size=2):
    """Whitening filters for images (N, H, W, 3) in 0..1, from the patch covariance of standardised pixels."""
    n, h, w, c = images.shape
    k = kernel_size
    std = np.maximum(images.reshape(-1, c).std(axis=0), 1e-3)  # a constant channel must not divide by 0
    images = images / std  # eps is relative to unit-variance channels, as in airbench
    patches = np.stack([images[:, i:h - k + 1 + i, j:w - k + 1 + j, :]
                        for i in range(k) for j in range(k)], axis=3)  # N, H', W', k*k, C
    patches = patches.reshape(-1, k * k * c).astype(np.float64)
    patches -= patches.mean(axis=0)
    cov = patches.T @ patches / len(patches)
    eigval, eigvec = np.linalg.eigh(cov)
    filters = eigvec.T / np.sqrt(eigval + eps)[:, None]  # (k*k*C, k*k*C): one filter per row
    filters = np.concatenate([filters, -filters])  # +/- pairs, as airbench: 2*k*k*C filters
    return (filters.T.reshape(k, k, c, -1) / std[None, None, :, None]).astype(np.float32)


def output_shapes(network):
    """{layer name: output shape}; a Sequential loaded from .h5 has no symbolic outputs, so propagate shapes."""
    if not isinstance(network, keras.Sequential):
        return {layer.name: layer.output.shape for layer in network.layers}
    shape, shapes = (None, *network.input_shape[1:]), {}
    for layer in network.layers:
        shape = shapes[layer.name] = layer.compute_output_shape(shape)
    return shapes


def forward_flops(model):
    """Multiply-add FLOPs (x2) of one image through the model's Conv2D and Dense layers, nested models included."""
    shapes, total = output_shapes(model), 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer) * len(layer._inbound_nodes)  # a backbone called once per TTA view
        elif isinstance(layer, layers.Conv2D):
            kh, kw, c_in, c_out = layer.kernel.shape
            h, w = shapes[layer.name][1:3]
            total += 2 * h * w * kh * kw * c_in * c_out
        elif isinstance(layer, layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total
