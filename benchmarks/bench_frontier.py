"""Accuracy-vs-training-time frontier from train.py sidecars: the best test accuracy within each time budget.

    python benchmarks/bench_frontier.py --data cifar10-jpeg.tar.gz results/*.json

Prints three Markdown tables: every run by training time, the best run inside each budget (with the
command that trained it), and runs that differ only by --seed as mean and spread. With --data, the last
two count only the runs trained on that dataset (file name of the sidecar's data_source); they count only
runs on one kind of device, --device (default CPU: the budgets are this CPU's; GPU for the GPU runs).
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

from cifarlab import sidecar

BUDGETS_MIN = (10, 20, 30, 45)  # training wall-time budgets, minutes


# Hyperparameters added after some sidecars were written, at the value that reproduces the code before them, so
# that an older run and a newer seed of the same recipe count as one recipe.
ADDED_LATER = {"cutout": 0, "depth": 2}  # commit e39a3d2


def load_run(path):
    """The fields the frontier needs from one sidecar."""
    meta = sidecar.check(json.loads(Path(path).read_text()))
    hyperparameters = {**ADDED_LATER, **meta["hyperparameters"]}
    last = meta["history"][-1] if meta.get("history") else {}
    return {
        "name": meta["name"], "command": meta["command"], "seed": meta.get("seed", 0),
        "data": Path(meta["data_source"]).name,
        "device": meta.get("device", "CPU").split(":")[0],  # CPU or GPU; the oldest sidecars predate the field
        "epochs": hyperparameters["epochs"], "minutes": meta["train_seconds"] / 60,
        "test_accuracy": meta["test_accuracy"],  # the saved model (TTA inside) on the whole test split
        "val_accuracy": last.get("val_accuracy"),  # last epoch, no TTA
        "recipe": json.dumps([meta["arch"], hyperparameters, meta.get("precision"), meta["data_source"],
                              meta.get("train_images")], sort_keys=True),
    }


def best_within(runs, minutes):
    """The most accurate run whose training took at most `minutes`, else None."""
    inside = [r for r in runs if r["minutes"] <= minutes]
    return max(inside, key=lambda r: r["test_accuracy"]) if inside else None


def seed_groups(runs):
    """[(runs of one recipe)] for every recipe trained with more than one seed."""
    groups = {}
    for run in runs:
        groups.setdefault(run["recipe"], []).append(run)
    return [g for g in groups.values() if len({r["seed"] for r in g}) > 1]


def runs_table(runs):
    """Markdown: one row per run."""
    lines = ["| run | data | device | seed | epochs | training time | s / epoch | val acc (no TTA) | "
             "test acc (TTA) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        val = "" if r["val_accuracy"] is None else f"{r['val_accuracy']:.2%}"
        lines.append(f"| {r['name']} | {r['data']} | {r['device']} | {r['seed']} | {r['epochs']} | "
                     f"{r['minutes']:.1f} min | {r['minutes'] * 60 / r['epochs']:.0f} | {val} | "
                     f"{r['test_accuracy']:.2%} |")
    return "\n".join(lines)


def frontier_table(runs, budgets=BUDGETS_MIN):
    """Markdown: the best run within each budget."""
    lines = ["| budget | best test acc (TTA) | run | epochs | training time | command |",
             "|---:|---:|---|---:|---:|---|"]
    for minutes in budgets:
        best = best_within(runs, minutes)
        if best is None:
            lines.append(f"| {minutes} min | not measured | | | | |")
        else:
            lines.append(f"| {minutes} min | {best['test_accuracy']:.2%} | {best['name']} | {best['epochs']} | "
                         f"{best['minutes']:.1f} min | `{best['command']}` |")
    return "\n".join(lines)


def seeds_table(runs):
    """Markdown: mean and spread of the test accuracy over seeds of one recipe."""
    lines = ["| runs | seeds | epochs | test acc (TTA) mean | min .. max | training time |", "|---|---|---:|---:|---:|---:|"]
    for group in seed_groups(runs):
        accs = [r["test_accuracy"] for r in group]
        minutes = [r["minutes"] for r in group]
        lines.append(f"| {', '.join(r['name'] for r in group)} | {', '.join(str(r['seed']) for r in group)} | "
                     f"{group[0]['epochs']} | {statistics.mean(accs):.2%} | {min(accs):.2%} .. {max(accs):.2%} | "
                     f"{min(minutes):.1f} .. {max(minutes):.1f} min |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sidecars", nargs="+", help="train.py sidecar .json files")
    p.add_argument("--data", help="frontier and seed tables only over runs on this dataset file name")
    p.add_argument("--device", choices=("CPU", "GPU"), default="CPU",
                   help="frontier and seed tables only over runs on this kind of device (default: CPU)")
    args = p.parse_args(argv)
    runs = sorted((load_run(path) for path in args.sidecars), key=lambda r: r["minutes"])
    ranked = [r for r in runs if r["device"] == args.device and (not args.data or r["data"] == args.data)]
    if not ranked:
        p.error(f"no sidecar was trained on {args.data or 'any dataset'!r} on a {args.device}")
    print("\n\n".join([runs_table(runs), frontier_table(ranked), seeds_table(ranked)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
