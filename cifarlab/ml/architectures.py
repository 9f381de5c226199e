"""The architecture registry: each net declares here its recipe class, builders, training phases, Grad-CAM and export
rules; a preset names its architecture by its recipe's class, and no other code tests a preset's or a net's name.

Imports no TensorFlow (the web layer asks it whether a model can be explained); the builders import Keras when called.
Adding an architecture: docs/training.md, "Adding an architecture".
"""
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, NamedTuple

from .presets import PRESETS, FastRecipe, Recipe, TransferRecipe


class Phase(NamedTuple):
    """A stretch of training with one optimizer: epochs [first, end), peak step size, backbone frozen or not."""

    name: str
    first: int
    end: int
    lr: float
    frozen_backbone: bool = False


def one_phase(hp):
    """All epochs with one optimizer: every recipe but the transfer one."""
    return [Phase("training", 0, hp.epochs, hp.lr)]


@dataclass(frozen=True)
class Architecture:
    """One net: how to build, train, save, explain and export it."""

    name: str                        # recorded in sidecars as "architecture"
    recipe: type                     # the Recipe class of its presets (exactly this class, not a subclass)
    build: Callable                  # (hp, num_classes, x_train, replicas, pretrained) -> (net, outputs logits?)
    saved_model: Callable            # (hp, num_classes, trained net) -> float32 model as saved: 0..255 in, softmax out
    phases: Callable = one_phase     # hp -> [Phase]; each phase compiles its own optimizer
    enter_phase: Callable = None     # (net, phase) -> None before a phase compiles, e.g. to freeze a backbone
    explainable: bool = True         # Grad-CAM's search for the last conv layer of >= 7x7 pixels fits this net
    export_refused: str = None       # None: train.py export takes it; else the one line it answers instead
    pretrained: bool = False         # takes --pretrained (ImageNet weights downloaded by Keras)


ARCHITECTURES = {}


def register(architecture):
    """Add an architecture (its recipe class must be its own); returns it."""
    taken = [a.name for a in ARCHITECTURES.values() if a.recipe is architecture.recipe and a.name != architecture.name]
    if taken:
        raise ValueError(f"{architecture.recipe.__name__} already belongs to the {taken[0]} architecture")
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def of_recipe(hp):
    """The architecture a recipe trains; ValueError for a recipe class no architecture declares."""
    for architecture in ARCHITECTURES.values():
        if type(hp) is architecture.recipe:
            return architecture
    raise ValueError(f"no architecture is registered for recipes of class {type(hp).__name__}")


def of_model(meta):
    """The architecture a sidecar's model was trained as; None for a model not trained here (e.g. a remote one).
    Sidecars before the registry name only their preset ("arch"), which names its architecture."""
    if meta.get("architecture") in ARCHITECTURES:
        return ARCHITECTURES[meta["architecture"]]
    recipe = PRESETS.get(meta.get("arch"))
    return None if recipe is None else of_recipe(recipe)


def build_baseline(hp, num_classes, x_train, replicas=1, pretrained=False):
    """The seed CNN, softmax out."""
    from . import models

    return models.build_baseline(num_classes), False


def copy_into(fresh, net):
    """A fresh float32 model with the trained net's weights."""
    fresh.set_weights(net.get_weights())
    return fresh


def saved_baseline(hp, num_classes, net):
    """The seed CNN as saved: the same net in float32."""
    from . import models

    return copy_into(models.build_baseline(num_classes), net)


def build_fast(hp, num_classes, x_train, replicas=1, pretrained=False):
    """The airbench-style net, whitening filters fitted to the training images; logits out."""
    from . import models

    net = models.build_fast_backbone(hp, num_classes, synchronized_bn=replicas > 1)
    models.init_fast_backbone(net, x_train, hp)
    return net, True


def saved_fast(hp, num_classes, net):
    """The fast net as saved: its float32 copy inside the recipe's test-time views, softmax out."""
    from . import models

    return models.with_tta(copy_into(models.build_fast_backbone(hp, num_classes), net), hp.tta_level)


def build_transfer(hp, num_classes, x_train, replicas=1, pretrained=False):
    """A keras.applications backbone with a new head, softmax out."""
    from . import models

    return models.build_transfer(hp, num_classes, pretrained), False


def transfer_phases(hp):
    """The head alone on the frozen backbone first, then everything at the fine-tuning step size."""
    frozen = min(hp.frozen_epochs, hp.epochs)
    return [p for p in (Phase("frozen backbone", 0, frozen, hp.lr, True),
                        Phase("fine-tuning", frozen, hp.epochs, hp.finetune_lr)) if p.end > p.first]


def freeze_backbone(net, phase):
    """Freeze or unfreeze the pretrained backbone for a phase."""
    net.get_layer("backbone").trainable = not phase.frozen_backbone


def saved_transfer(hp, num_classes, net):
    """The transfer net as saved: a fresh float32 copy (the backbone trainable, for the same weight order)."""
    from . import models

    net.get_layer("backbone").trainable = True
    return copy_into(models.build_transfer(hp, num_classes), net)


register(Architecture("baseline", Recipe, build_baseline, saved_baseline))
register(Architecture("fast", FastRecipe, build_fast, saved_fast))
register(Architecture("transfer", TransferRecipe, build_transfer, saved_transfer, transfer_phases, freeze_backbone,
                      explainable=False,  # Grad-CAM knows plain conv nets, not a backbone nested inside a model
                      pretrained=True))

# more architectures: each cifarlab/ml/arch_NAME.py module registers its own (and adds its preset) when imported here
for module in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
    if module.name.startswith("arch_"):
        importlib.import_module(f"{__package__}.{module.name}")
