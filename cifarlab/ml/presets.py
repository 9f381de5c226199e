"""Training recipes: typed, one default per key (units in the comments), and the presets built from them."""
import ast
import dataclasses
import typing
from dataclasses import dataclass
from types import MappingProxyType

from ..outliers import FAMILIES

OPTIMIZERS = ("adam", "sgd", "muon")
BACKBONES = tuple(f"EfficientNetV2{size}" for size in ("B0", "B1", "B2", "B3", "S", "M", "L"))  # rescale 0..255 inside


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """What every recipe sets; the defaults are the seed recipe's (the baseline preset)."""

    epochs: int = 8                  # passes over the training images
    batch_size: int = 64             # images per step, on each replica
    optimizer: str = "adam"          # adam (Keras defaults) | sgd (Nesterov, decoupled decay) | muon (conv filters)
    lr: float = 1e-3                 # step size: Adam's constant one, or the peak of the SGD schedule (mean loss)
    val_size: int = 2000             # training images held out for validation/calibration
    augment: bool = False            # alternating mirror + reflect-padded translation
    translate: int = 2               # maximum shift in pixels, each axis, when augmenting
    cutout: int = 0                  # side in pixels of a square zeroed at a random place in each image (0: off)
    label_smoothing: float = 0.0     # fraction of target mass spread over all classes
    tta_level: int = 0               # test-time augmentation in the saved model: 0 none, 1 mirror, 2 mirror + shifts
    lookahead_every: int = 0         # steps between pulls of the weights to their moving average (0: off)
    outlier_fraction: float = 0.0    # outlier exposure: generated non-class images added per batch, x batch_size (0: off)
    outlier_weight: float = 0.5      # weight of their loss (cross-entropy to the uniform distribution) per image
    outlier_bank: int = 20000        # generated outliers drawn from (cifarlab.outliers, TRAIN_SEED; scrambled photos too)
    outlier_exclude: str = ""        # comma-separated cifarlab.outliers families left out of that bank, e.g. "noise"
    augmix: float = 0.0              # share of training images replaced by their AugMix each epoch (0: off)
    augmix_severity: int = 3         # strength of AugMix's operations, 1..10 (the paper's CIFAR default: 3)
    distill_weight: float = 0.8      # with --teacher: share of each image's target from the teacher (the rest: its label)
    distill_temperature: float = 1.0  # with --teacher: the teacher's logits are divided by this before its softmax

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type is float and type(value) is int:
                object.__setattr__(self, field.name, value := float(value))
            elif typing.get_origin(field.type) is tuple and isinstance(value, list):
                object.__setattr__(self, field.name, value := tuple(value))
            if not fits(value, field.type):
                raise ValueError(f"{field.name} takes a value like {field.default!r}, not {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer is one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is 1 or more, not {getattr(self, name)}")
        for name in ("val_size", "translate", "cutout", "lookahead_every", "outlier_fraction", "outlier_weight",
                     "outlier_bank"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is 0 or more, not {getattr(self, name)}")
        if not set(self.excluded_outliers()) < set(FAMILIES):
            raise ValueError(f"outlier_exclude names some of {', '.join(FAMILIES)} (not all), not {self.outlier_exclude!r}")
        if not 0 <= self.augmix <= 1 or not 1 <= self.augmix_severity <= 10:
            raise ValueError("augmix is a share from 0 to 1 and augmix_severity from 1 to 10")
        if not 0 <= self.distill_weight <= 1 or self.distill_temperature <= 0:
            raise ValueError("distill_weight is from 0 to 1 and distill_temperature above 0")
        if self.tta_level not in (0, 1, 2):
            raise ValueError(f"tta_level is 0, 1 or 2, not {self.tta_level}")

    def excluded_outliers(self):
        """The outlier families outlier_exclude names."""
        return [name.strip() for name in self.outlier_exclude.split(",") if name.strip()]

    def outlier_families(self):
        """The outlier families of the training bank."""
        return tuple(name for name in FAMILIES if name not in self.excluded_outliers())

    def replace(self, **changes):
        """A copy with some keys changed (checked like the constructor's)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The recipe as a plain dict, as recorded in sidecars and checkpoints."""
        return dataclasses.asdict(self)

    def with_overrides(self, assignments):
        """A copy with KEY=VALUE strings applied (--set); ValueError names a bad key or value."""
        keys = [field.name for field in dataclasses.fields(self)]
        recipe = self
        for assignment in assignments:
            key, sep, text = (part.strip() for part in assignment.partition("="))
            if not sep or key not in keys:
                raise ValueError(f"--set {assignment!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(keys))}")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text  # a bare word, e.g. optimizer=sgd
            try:
                recipe = recipe.replace(**{key: value})
            except ValueError as exc:
                raise ValueError(f"--set {assignment!r}: {exc}") from None
        return recipe


@dataclass(frozen=True, kw_only=True)
class FastRecipe(Recipe):
    """airbench94-style recipe for the fast net; the defaults are the fast preset's."""

    lr_start: float = 0.2            # warm-up starts at this fraction of the peak
    lr_warmup: float = 0.2           # fraction of all steps spent warming up; then linear decay
    lr_end: float = 0.0              # fraction of the peak the decay ends at
    momentum: float = 0.85           # Nesterov momentum
    weight_decay: float = 0.0089     # decoupled decay per unit of step size (= airbench's 0.0153 through momentum)
    bias_lr_scale: float = 64.0      # BatchNorm offsets learn this many times faster (airbench's bias_scaler)
    widths: tuple[int, int, int] = (64, 256, 256)  # channels of the three conv groups
    depth: int = 2                   # convolutions per group: 2, or 3 with a skip over the last two (airbench96)
    whiten_eps: float = 5e-4         # added to the patch-covariance eigenvalues (unit-variance pixels) before whitening
    whiten_float32: bool = False     # run the whitening conv in float32 under mixed precision
    whiten_bias_epochs: int = 0      # epochs the whitening bias trains for (rate decaying to 0); airbench94_muon: 3, unstable here
    bn_momentum: float = 0.4         # Keras convention: running = m*running + (1-m)*batch (airbench94: 0.6; run air15)
    logit_scale: float = 1 / 9       # fixed multiplier on the logits
    gelu_tanh: bool = True           # GELU in its tanh form (within 1e-3 of erf)
    fused_bn: bool = True            # TensorFlow's fused batch-norm kernel while training: same maths, ~15 % faster
    muon_lr: float = 0.24            # Muon step: the orthogonalised update's size against filters of norm sqrt(outputs)
    muon_momentum: float = 0.6       # Muon's Nesterov momentum
    ns_steps: int = 3                # Newton-Schulz iterations per orthogonalisation

    def __post_init__(self):
        super().__post_init__()
        if self.depth not in (2, 3):
            raise ValueError(f"depth is 2 or 3, not {self.depth}")


@dataclass(frozen=True, kw_only=True)
class TransferRecipe(Recipe):
    """Fine-tuning an ImageNet backbone: the head alone on the frozen backbone first, then everything."""

    frozen_epochs: int = 2           # first passes train the head alone on the frozen backbone
    finetune_lr: float = 1e-5        # Adam step size once everything trains: small, to keep the pretrained features
    backbone: str = "EfficientNetV2B0"  # keras.applications model; the EfficientNetV2 family rescales 0..255 itself
    image_size: int = 96             # pixels a side the input is upscaled to inside the model
    dropout: float = 0.2             # fraction of the pooled features dropped before the head, while training

    def __post_init__(self):
        super().__post_init__()
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone is one of {', '.join(BACKBONES)}, not {self.backbone!r}")


def fits(value, kind):
    """Whether value has exactly the type a recipe field declares (bool is not an int here)."""
    if typing.get_origin(kind) is tuple:
        parts = typing.get_args(kind)
        return isinstance(value, tuple) and len(value) == len(parts) and all(map(fits, value, parts))
    return type(value) is kind


# airbench94-style recipe written for Keras on a small CPU (see docs/experiments.md).
FAST = FastRecipe(
    epochs=15,                       # 15 x 114-121 s measured: 28.5-30.3 min, the budget's edge
    batch_size=1024,
    optimizer="sgd",
    lr=1.5,                          # airbench's 11.5 per kilostep
    augment=True,
    label_smoothing=0.2,
    tta_level=2,                     # 6 views
    lookahead_every=5,
)
PRESETS = MappingProxyType({  # read-only: a plugin's presets join them in architectures.catalog()
    # The seed CNN and the seed recipe: the reference every other recipe is measured against.
    "baseline": Recipe(),
    "fast": FAST,
    # Fine-tuning an ImageNet backbone (see docs/training.md): for small datasets of your own.
    "transfer": TransferRecipe(augment=True, label_smoothing=0.1),
    # The served recipe (issue #31): a trained fast net fine-tuned with outlier exposure (train.py --init), as
    # Hendrycks et al. fine-tune theirs, so it knows what it does not know.
    "fast_oe": FAST.replace(
        epochs=3,                    # fine-tuning passes; ~23 min each in float32 on 2 cores without bfloat16
        lr=0.3,                      # a fifth of the fast recipe's peak: keeps what the net has learnt
        lr_start=1.0,                # no warm-up: the schedule starts at its peak and decays linearly to 0
        lr_warmup=0.0,
        outlier_fraction=0.25,       # 256 generated outliers beside each 1,024-image batch: ~25 % more work per step
        outlier_weight=0.5,          # Hendrycks et al.'s lambda for outlier exposure
    ),
    # airbench94_muon's recipe (see docs/experiments.md, "Muon"): the fast recipe, except for these.
    "muon": FAST.replace(
        epochs=13,                   # ~2 min each here: the 30-minute budget
        batch_size=2000,             # airbench94_muon's
        optimizer="muon",
        lr_start=1.0,                # no warm-up: the schedule starts at its peak and decays linearly to lr_end
        lr_warmup=0.0,
        weight_decay=0.0178,         # head and offsets; the filters are normalised
        bn_momentum=0.6,             # airbench94_muon's
        lookahead_every=0,           # airbench94_muon has no lookahead
    ),
    # airbench96's changes to the fast recipe (see docs/experiments.md, "The wide recipe"): the best model, not a
    # fast one.
    "wide": FAST.replace(
        epochs=40,                   # airbench96's; 3.0 min on one H100 (Keras on JAX), many hours on this CPU
        widths=(128, 512, 512),
        depth=3,                     # a third convolution per group, with a skip over the last two
        cutout=12,
        translate=4,
        lr=1.17,                     # airbench96 takes 0.78 of airbench94's step
    ),
})

# what the app and the model card call a model of each preset (run names such as "fast_oe" stay in the sidecar)
TITLES = MappingProxyType({
    "baseline": "seed baseline CNN",
    "fast": "fast CNN (airbench-style)",
    "fast_oe": "fast CNN with outlier exposure",
    "muon": "fast CNN trained with Muon",
    "wide": "wide CNN (airbench96-style)",
    "transfer": "transfer net (pretrained backbone)",
})
