"""The architecture registry: each net declares its recipe class, builders, training phases, Grad-CAM and export
rules; a preset names its architecture by its recipe's class, and no other code tests a preset's or a net's name.

The built-in nets are the list BUILT_IN; plugin modules named in CIFARLAB_ARCHITECTURES add theirs; `catalog()` joins
them into read-only tables, and nothing is registered by mutating a global.
Imports no TensorFlow (the web layer asks it whether a model can be explained); the builders import Keras when called.
Adding an architecture: docs/training.md, "Adding an architecture".
"""
import functools
import importlib
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping, NamedTuple

from ..errors import CifarlabError
from .presets import PRESETS, TITLES, FastRecipe, Recipe, TransferRecipe

PLUGINS = "CIFARLAB_ARCHITECTURES"  # environment: comma-separated modules, each with ARCHITECTURE, PRESETS, TITLES


class ArchitectureError(CifarlabError, ValueError):
    """A plugin that cannot be loaded or clashes with a declared architecture, preset or recipe class."""


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


@dataclass(frozen=True)
class Catalog:
    """Every architecture, preset and preset title: the built-ins and the plugins', read-only."""

    architectures: Mapping[str, Architecture]
    presets: Mapping[str, Recipe]
    titles: Mapping[str, str]    # what the app and the model card call a model of each preset

    def of_recipe(self, hp):
        """The architecture a recipe trains; ArchitectureError for a recipe class no architecture declares."""
        for architecture in self.architectures.values():
            if type(hp) is architecture.recipe:
                return architecture
        raise ArchitectureError(f"no architecture is declared for recipes of class {type(hp).__name__}")

    def of_model(self, meta):
        """The architecture a sidecar's model was trained as; None for a model not trained here (e.g. a remote one).
        Sidecars before the registry name only their preset ("arch"), which names its architecture."""
        if meta.get("architecture") in self.architectures:
            return self.architectures[meta["architecture"]]
        recipe = self.presets.get(meta.get("arch"))
        return None if recipe is None else self.of_recipe(recipe)


def catalog():
    """The built-in architectures with those of the plugin modules CIFARLAB_ARCHITECTURES names."""
    return catalog_of(tuple(name.strip() for name in os.environ.get(PLUGINS, "").split(",") if name.strip()))


@functools.cache  # one catalog per list of plugins: each module is imported once
def catalog_of(plugins):
    """The built-ins plus each plugin module's ARCHITECTURE, PRESETS and TITLES; ArchitectureError on a clash."""
    architectures, presets, titles = list(BUILT_IN), dict(PRESETS), dict(TITLES)
    for name in plugins:
        try:
            module = importlib.import_module(name)
            architecture, more_presets, more_titles = module.ARCHITECTURE, module.PRESETS, module.TITLES
        except (ImportError, AttributeError) as exc:
            raise ArchitectureError(f"{PLUGINS}: {name} is no architecture module ({exc})") from None
        clash = set(more_presets) & set(presets)
        if clash:
            raise ArchitectureError(f"{PLUGINS}: {name} declares the preset {sorted(clash)[0]}, which exists already")
        architectures.append(architecture)
        presets.update(more_presets)
        titles.update(more_titles)
    check_unique(architectures)
    return Catalog(MappingProxyType({a.name: a for a in architectures}), MappingProxyType(presets),
                   MappingProxyType(titles))


def check_unique(architectures):
    """ArchitectureError unless each architecture has its own name and its own recipe class."""
    for index, architecture in enumerate(architectures):
        for earlier in architectures[:index]:
            if architecture.name == earlier.name or architecture.recipe is earlier.recipe:
                raise ArchitectureError(f"{architecture.name}: {architecture.recipe.__name__} already belongs to the "
                                        f"{earlier.name} architecture")


def of_recipe(hp):
    """The architecture a recipe trains (catalog().of_recipe)."""
    return catalog().of_recipe(hp)


def of_model(meta):
    """The architecture a sidecar's model was trained as, or None (catalog().of_model)."""
    return catalog().of_model(meta)


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


BUILT_IN = (
    Architecture("baseline", Recipe, build_baseline, saved_baseline),
    Architecture("fast", FastRecipe, build_fast, saved_fast),
    Architecture("transfer", TransferRecipe, build_transfer, saved_transfer, transfer_phases, freeze_backbone,
                 explainable=False,  # Grad-CAM knows plain conv nets, not a backbone nested inside a model
                 pretrained=True),
)
