"""Grad-CAM: which parts of a 32x32 input a class score depends on, for the baseline and the fast net."""
import keras
import numpy as np
from PIL import Image

from .. import modelfile, quiet
from . import models

MIN_CAM_SIDE = 7  # pixels of the feature map; later, coarser conv outputs (3x3) say too little about where


def target_layer(network):
    """The last Conv2D whose output is at least MIN_CAM_SIDE pixels on a side."""
    shapes = models.output_shapes(network)
    convs = [layer for layer in network.layers
             if isinstance(layer, keras.layers.Conv2D) and min(shapes[layer.name][1:3]) >= MIN_CAM_SIDE]
    if not convs:
        raise ValueError(f"{network.name} has no Conv2D layer with an output of at least {MIN_CAM_SIDE}x{MIN_CAM_SIDE}")
    return convs[-1]


class Explainer:
    """Grad-CAM for one model: the scoring network, target layer and feature probe are built once."""

    def __init__(self, model):
        self.network = modelfile.backbone(model)  # a model with views is explained on view 0, the identity
        self.layer = target_layer(self.network)
        self.softmax = modelfile.ends_in_softmax(self.network)
        self.probe = None if isinstance(self.network, keras.Sequential) else keras.Model(
            self.network.inputs, [self.layer.output, self.network.output])

    def features_and_outputs(self, x):
        """(output of the target layer, output of the network) for a batch x."""
        if self.probe is not None:
            return self.probe(x, training=False)
        features = None
        for each in self.network.layers:  # a Sequential loaded from .h5 has no symbolic outputs
            x = each(x, training=False)
            if each is self.layer:
                features = x
        return features, x

    def heatmap(self, pixels, class_index=None):
        """(heatmap 32x32 in 0..1, class index) for one uint8 image (32, 32, 3); default class: the top one."""
        tf = quiet.tensorflow()

        x = tf.convert_to_tensor(np.asarray(pixels, np.float32)[None])
        with tf.GradientTape() as tape:
            features, outputs = self.features_and_outputs(x)
            scores = tf.cast(outputs, tf.float32)
            if self.softmax:  # log-probabilities: gradients that do not vanish as p -> 1
                scores = tf.math.log(tf.maximum(scores, 1e-12))
            if class_index is None:
                class_index = int(tf.argmax(scores[0]))
            score = scores[0, class_index]
        grads = tape.gradient(score, features)
        weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2))  # one weight per channel
        cam = tf.nn.relu(tf.reduce_sum(tf.cast(features, tf.float32) * weights[:, None, None, :], axis=-1))[0]
        cam = tf.image.resize(cam[..., None], pixels.shape[:2], method="bilinear")[..., 0].numpy()
        peak = cam.max()
        return (cam / peak if peak > 0 else cam).astype(np.float32), class_index


def heatmap(model, pixels, class_index=None):
    """(heatmap 32x32 in 0..1, class index) for one image; builds an Explainer (reuse one for many images)."""
    return Explainer(model).heatmap(pixels, class_index)


def overlay(pixels, cam, display_size=192, max_alpha=0.6, gap=8):
    """A display-size RGB PIL image: the input upscaled pixel-sharp on the left; on the right the same image with the
    heatmap laid over it in proportion to the heat, so the image stays visible where the model did not look."""
    from matplotlib import colormaps

    size = (display_size, display_size)
    base = Image.fromarray(np.asarray(pixels, np.uint8)).resize(size, Image.NEAREST)
    heat = Image.fromarray((colormaps["jet"](cam)[..., :3] * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
    weight = Image.fromarray((np.clip(cam, 0, 1) * max_alpha * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
    both = Image.new("RGB", (2 * display_size + gap, display_size), "white")
    both.paste(base, (0, 0))
    both.paste(Image.composite(heat, base, weight), (display_size + gap, 0))
    return both
