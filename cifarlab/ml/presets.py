"""Training recipes, one place for every hyperparameter (units in the comments)."""
import ast

PRESETS = {
    # The seed CNN and the seed recipe: the reference every other recipe is measured against.
    "baseline": dict(
        epochs=8,                 # passes over the training images
        batch_size=64,            # images per step
        optimizer="adam",         # Adam with Keras defaults
        lr=1e-3,                  # Adam step size, constant
        val_size=2000,            # training images held out for validation/calibration
        augment=False,            # no augmentation in the seed recipe
        label_smoothing=0.0,      # fraction of target mass spread over all classes
        tta_level=0,              # no test-time augmentation
    ),
    # airbench94-style recipe written for Keras on a small CPU (see README, "Flagship model").
    "fast": dict(
        epochs=15,                # passes over the training images (15 x 114-121 s measured: 28.5-30.3 min, the budget's edge)
        batch_size=1024,          # images per step
        optimizer="sgd",          # SGD with Nesterov momentum, decoupled weight decay
        lr=1.5,                   # peak step size for the mean loss (airbench's 11.5 per kilostep)
        lr_start=0.2,             # warm-up starts at this fraction of the peak
        lr_warmup=0.2,            # fraction of all steps spent warming up; then linear decay
        lr_end=0.0,               # fraction of the peak the decay ends at
        momentum=0.85,            # Nesterov momentum
        weight_decay=0.0089,      # decoupled decay per unit of step size (= airbench's 0.0153 through momentum)
        bias_lr_scale=64.0,       # BatchNorm offsets learn this many times faster (airbench's bias_scaler)
        label_smoothing=0.2,      # fraction of target mass spread over all classes
        val_size=2000,            # training images held out for validation/calibration
        augment=True,             # alternating mirror + reflect-padded translation
        translate=2,              # maximum shift in pixels, each axis
        widths=(64, 256, 256),    # channels of the three conv groups
        whiten_eps=5e-4,          # added to the patch-covariance eigenvalues (unit-variance pixels) before whitening
        whiten_float32=False,     # run the whitening conv in float32 under mixed precision
        bn_momentum=0.4,          # Keras convention: running = m*running + (1-m)*batch (airbench94 keeps 0.6; level, run air15)
        logit_scale=1 / 9,        # fixed multiplier on the logits
        gelu_tanh=True,           # GELU in its tanh form (within 1e-3 of erf); what the shipped model trained with
        fused_bn=True,            # TensorFlow's fused batch-norm kernel while training: same maths, ~15 % faster steps
        lookahead_every=5,        # steps between pulls of the weights to their moving average (0: off)
        tta_level=2,              # 0 none, 1 mirror, 2 mirror + 1-pixel shifts (6 views), in the saved model
    ),
    # Fine-tuning an ImageNet backbone (see README, "Transfer learning"): for small datasets of your own.
    "transfer": dict(
        epochs=8,                 # passes over the training images, both phases together
        frozen_epochs=2,          # first passes train the head alone on the frozen backbone
        batch_size=64,            # images per step
        optimizer="adam",         # Adam with Keras defaults
        lr=1e-3,                  # Adam step size while the backbone is frozen
        finetune_lr=1e-5,         # Adam step size once everything trains: small, to keep the pretrained features
        backbone="EfficientNetV2B0",  # keras.applications model; the EfficientNetV2 family rescales 0..255 itself
        image_size=96,            # pixels a side the input is upscaled to inside the model
        dropout=0.2,              # fraction of the pooled features dropped before the head, while training
        val_size=2000,            # training images held out for validation/calibration (and early stopping)
        augment=True,             # alternating mirror + reflect-padded translation
        translate=2,              # maximum shift in pixels, each axis, at 32x32
        label_smoothing=0.1,      # fraction of target mass spread over all classes
        tta_level=0,              # no test-time augmentation
    ),
}

# airbench94_muon's recipe (see docs/experiments.md, "Muon"): the fast recipe, except for these.
PRESETS["muon"] = {**PRESETS["fast"], **dict(
    epochs=13,                # passes over the training images (~2 min each here: the 30-minute budget)
    batch_size=2000,          # images per step (airbench94_muon's)
    optimizer="muon",         # Muon for the 3x3 conv filters, SGD with Nesterov momentum for offsets and head
    lr_start=1.0,             # no warm-up: the schedule starts at its peak and decays linearly to lr_end
    lr_warmup=0.0,            # fraction of all steps spent warming up
    weight_decay=0.0178,      # decoupled decay per unit of SGD step size (head and offsets; filters are normalised)
    muon_lr=0.24,             # Muon step: the orthogonalised update's size against filters of norm sqrt(outputs)
    muon_momentum=0.6,        # Muon's Nesterov momentum
    ns_steps=3,               # Newton-Schulz iterations per orthogonalisation
    whiten_bias_epochs=0,     # epochs the whitening bias trains for (rate decaying to 0); 3 in airbench94_muon, unstable here
    bn_momentum=0.6,          # Keras convention: running = m*running + (1-m)*batch (airbench94_muon's)
    lookahead_every=0,        # airbench94_muon has no lookahead
)}


def with_overrides(hp, assignments):
    """A copy of preset hp with KEY=VALUE strings applied; ValueError names a bad key or value."""
    hp = dict(hp)
    for assignment in assignments:
        key, sep, text = (part.strip() for part in assignment.partition("="))
        if not sep or key not in hp:
            raise ValueError(f"--set {assignment!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(hp))}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare word, e.g. optimizer=sgd
        old = hp[key]
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
        if type(value) is not type(old) or (isinstance(old, tuple) and len(value) != len(old)):
            raise ValueError(f"--set {assignment!r}: {key} takes a value like {old!r}")
        hp[key] = value
    return hp
