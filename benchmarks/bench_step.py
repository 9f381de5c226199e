"""Training-step benchmark of the fast net: seconds per step and per epoch by precision, GELU form and batch norm.

    python benchmarks/bench_step.py                  # ~10 min on 2 CPU cores; prints a Markdown table
    python benchmarks/bench_step.py --steps 4 --configs mixed_bfloat16:tanh:fused
    python benchmarks/bench_step.py --preset wide --steps 3 --rounds 1 --configs mixed_bfloat16:tanh:fused

Synthetic images, the preset's net (fast by default), optimizer, loss and batch size; the epoch time assumes
48,000 training images. The first call of fit (tracing) is not timed; each row is the median step of
its configuration, and the configurations run in turn --rounds times, because a shared machine's
speed drifts over minutes.
"""
import argparse
import datetime
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CONFIGS = ["mixed_bfloat16:erf:keras", "mixed_bfloat16:tanh:keras", "mixed_bfloat16:tanh:fused",
           "float32:erf:keras", "float32:tanh:fused"]


def time_config(preset, policy, gelu, norm, steps, train_images):
    """Seconds per training step of a preset with one precision policy, GELU form and batch norm."""
    import keras
    import numpy as np

    from cifarlab.ml import architectures, training
    from cifarlab.ml.presets import PRESETS

    keras.mixed_precision.set_global_policy(policy)
    hp = PRESETS[preset].replace(gelu_tanh=gelu == "tanh", fused_bn=norm == "fused")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (hp.batch_size * steps, 32, 32, 3), dtype=np.uint8)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, len(x))]
    net, _ = architectures.of_recipe(hp).build(hp, 10, x)
    net.compile(optimizer=training.make_optimizer(hp, 1000),
                loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=hp.label_smoothing))
    batches = training.Batches(x, y, hp.batch_size, seed=0, augment=True, translate=hp.translate,
                               cutout=hp.cutout)
    net.fit(batches, epochs=1, verbose=0)  # tracing and warm-up
    ends = [time.perf_counter()]
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: ends.append(time.perf_counter()))
    net.fit(batches, epochs=1, verbose=0, callbacks=[clock])
    per_step = float(np.median(np.diff(ends)))  # the median step: this shared machine has slow spells
    return per_step, per_step * math.ceil(train_images / hp.batch_size)


def main(argv=None):
    from cifarlab.ml.presets import PRESETS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=[name for name, hp in PRESETS.items() if hasattr(hp, "gelu_tanh")],
                   default="fast", help="whose net and batch size")
    p.add_argument("--steps", type=int, default=6, help="timed steps per configuration")
    p.add_argument("--train-images", type=int, default=48_000, help="images per epoch for the epoch column")
    p.add_argument("--configs", nargs="+", default=CONFIGS,
                   help="precision:gelu:norm, gelu in {erf, tanh}, norm in {keras, fused}")
    p.add_argument("--rounds", type=int, default=2, help="passes over the configurations, interleaved")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:  # one configuration per process: the precision policy is global state
        per_step, per_epoch = time_config(args.preset, *args.child.split(":"), args.steps, args.train_images)
        print(f"{per_step:.3f} {per_epoch:.1f}")
        return 0
    import subprocess

    from cifarlab.ml.training import cpu_name
    print(f"Preset {args.preset}:\n| precision | GELU | batch norm | s / step (batch {PRESETS[args.preset].batch_size}) "
          f"| s / epoch ({args.train_images:,} images) |\n|---|---|---|---:|---:|")
    for config in [c for _ in range(args.rounds) for c in args.configs]:
        out = subprocess.run([sys.executable, __file__, "--child", config, "--preset", args.preset,
                              "--steps", str(args.steps), "--train-images", str(args.train_images)],
                             capture_output=True, text=True, check=True)
        per_step, per_epoch = out.stdout.split()[-2:]
        print(f"| {' | '.join(config.split(':'))} | {per_step} | {per_epoch} |", flush=True)
    print(f"Machine: {cpu_name()}; {datetime.date.today().isoformat()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
