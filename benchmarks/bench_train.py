"""Time-to-accuracy benchmark: train the baseline and the fast preset with train.py, print one table.

    python benchmarks/bench_train.py --data ../shared/data/cifar10-jpeg.tar.gz          # ~35 min on 2 CPU cores
    python benchmarks/bench_train.py --from-sidecars runs/bench/baseline.json model/cifar10_cnn.json
"""
import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path


def run_training(arch, data, out):
    """Train one preset with train.py in its own process; return its sidecar."""
    cmd = [sys.executable, str(Path(__file__).resolve().parents[1] / "train.py"), "--arch", arch, "--out", str(out)] + (["--data", data] if data else [])
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads(Path(out).with_suffix(".json").read_text())


def first_time_reaching(meta, target):
    """Training seconds at the first epoch whose test accuracy is >= target, else None."""
    return next((row["train_seconds"] for row in meta["history"] if row["test_accuracy"] >= target), None)


def table(base, fast):
    """The side-by-side Markdown table of epoch, cumulative time and test accuracy."""
    lines = ["| epoch | baseline time (s) | baseline test acc | fast time (s) | fast test acc |",
             "|---:|---:|---:|---:|---:|"]
    for i in range(max(len(base["history"]), len(fast["history"]))):
        cells = [str(i + 1)]
        for meta in (base, fast):
            row = meta["history"][i] if i < len(meta["history"]) else None
            cells += [f"{row['train_seconds']:.0f}", f"{row['test_accuracy']:.2%}"] if row else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| final (saved model) | {base['train_seconds']:.0f} | {base['test_accuracy']:.2%} | "
                 f"{fast['train_seconds']:.0f} | {fast['test_accuracy']:.2%} (TTA) |")
    target = base["test_accuracy"]
    t_base, t_fast = first_time_reaching(base, target), first_time_reaching(fast, target)
    if t_base and t_fast:
        lines.append(f"\nTime to the baseline's final test accuracy ({target:.2%}): baseline {t_base:.0f} s, "
                     f"fast {t_fast:.0f} s (time ratio fast/baseline {t_fast / t_base:.1f}).")
    lines.append(f"Machine: {fast['device']}; {datetime.date.today().isoformat()}. "
                 "Per-epoch accuracies are without TTA; evaluation time is not counted as training time.")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="dataset for train.py --data (default: official download)")
    p.add_argument("--baseline-out", default="runs/bench/baseline", help="where the baseline model goes")
    p.add_argument("--fast-out", default="runs/bench/fast", help="where the fast model goes")
    p.add_argument("--from-sidecars", nargs=2, metavar=("BASELINE_JSON", "FAST_JSON"),
                   help="print the table from two existing sidecars instead of training")
    args = p.parse_args(argv)
    if args.from_sidecars:
        base, fast = (json.loads(Path(f).read_text()) for f in args.from_sidecars)
    else:
        base = run_training("baseline", args.data, args.baseline_out)
        fast = run_training("fast", args.data, args.fast_out)
    print(table(base, fast))
    return 0


if __name__ == "__main__":
    sys.exit(main())
