"""A tiny architecture written as docs/training.md says ("Adding an architecture"): one module, its preset inside,
loaded by naming it in CIFARLAB_ARCHITECTURES."""
from dataclasses import dataclass

from cifarlab.ml.architectures import Architecture
from cifarlab.ml.presets import Recipe


@dataclass(frozen=True, kw_only=True)
class DummyRecipe(Recipe):
    """One convolution and a softmax: the smallest net the registry can train."""

    width: int = 4                   # filters of the one convolution


def build(hp, num_classes, x_train, replicas=1, pretrained=False):
    """The net to train, softmax out."""
    import keras

    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(hp.width, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(num_classes, activation="softmax"),
    ], name="dummy"), False


def saved_model(hp, num_classes, net):
    """The net as saved: trained in float32 already, so the net itself."""
    return net


ARCHITECTURE = Architecture("dummy", DummyRecipe, build, saved_model,
                            export_refused="the dummy net is for tests: it is not exported.")
PRESETS = {"dummy": DummyRecipe(epochs=1, batch_size=8, val_size=4)}
TITLES = {"dummy": "dummy test net"}
