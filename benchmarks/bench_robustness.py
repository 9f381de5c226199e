"""Corruption robustness: accuracy, calibration and verdicts of a model under CIFAR-10-C's corruptions.

    .venv/bin/python benchmarks/bench_robustness.py --model model/cifar10_cnn_int8.tflite \
        --data ../shared/data/cifar10-jpeg.tar.gz [--images 1000] [--write]

--images test images drawn at random (Dataset.test_sample, seed --seed: all classes, not the first images of a
folder's class-ordered split), each under the 15 benchmark corruptions and the 4 held-out ones of CIFAR-10-C at
severities 1 to 5 (cifarlab.corruptions, its CIFAR parameters, seed --seed), through the model as the app serves it
(calibrated probabilities, verdicts). Prints a table of accuracy per corruption and severity, then the summary: clean
accuracy, mean corrupted accuracy over the 15 x 5 (CIFAR-10-C's headline number) and over the 4 x 5 held-out sets,
ECE, and the share of images answered unsure or unknown, clean and corrupted. --write stores it in the model's
sidecar; the model card and /model show it.
"""
import argparse
import datetime
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from cifarlab import atomic, corruptions, modelfile  # noqa: E402
from cifarlab.inference import Classifier  # noqa: E402
from cifarlab.report import card  # noqa: E402
from cifarlab.report.metrics import expected_calibration_error  # noqa: E402


def measure(classifier, x, y, batch=500):
    """accuracy, ECE, unsure and unknown rates of the served predictions of x (labels y)."""
    predictions = [p for i in range(0, len(x), batch) for p in classifier.predict(x[i:i + batch])]
    probs = np.stack([p.probs for p in predictions])
    return {"accuracy": float((probs.argmax(axis=1) == y).mean()), "ece": float(expected_calibration_error(probs, y)),
            "unsure": float(np.mean([p.unsure for p in predictions])),
            "unknown": float(np.mean([p.unknown for p in predictions]))}


def benchmark(classifier, x, y, names=tuple(corruptions.ALL), seed=0, progress=print):
    """{"clean": measures, "rows": [{corruption, held_out, severities: [measures at 1..5]}], "summary": {...}}."""
    clean = measure(classifier, x, y)
    rows, started = [], time.perf_counter()
    for name in names:
        rows.append({"corruption": name, "held_out": name in corruptions.HELD_OUT,
                     "severities": [measure(classifier, corruptions.corrupt(name, x, severity, seed), y)
                                    for severity in corruptions.SEVERITIES]})
        progress(f"  {name}: {np.mean([s['accuracy'] for s in rows[-1]['severities']]):.1%} "
                 f"({time.perf_counter() - started:.0f} s)")
    return {"clean": clean, "rows": rows, "summary": summarise(clean, rows)}


def summarise(clean, rows):
    """The headline numbers: means over the benchmark's corruptions x severities, and over the held-out ones."""
    def mean(key, held_out):
        values = [s[key] for r in rows if r["held_out"] == held_out for s in r["severities"]]
        return float(np.mean(values)) if values else None
    return {"clean_accuracy": clean["accuracy"], "mean_corrupted_accuracy": mean("accuracy", False),
            "held_out_accuracy": mean("accuracy", True), "clean_ece": clean["ece"], "corrupted_ece": mean("ece", False),
            "clean_unsure": clean["unsure"], "corrupted_unsure": mean("unsure", False),
            "clean_unknown": clean["unknown"], "corrupted_unknown": mean("unknown", False),
            "worst": min(({"corruption": r["corruption"], "severity": i + 1, "accuracy": s["accuracy"]}
                          for r in rows for i, s in enumerate(r["severities"])), key=lambda w: w["accuracy"],
                         default=None)}


def print_tables(result, images):
    print(f"\n{images:,} test images\n" + "\n".join(card.robustness_tables(result)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="model/cifar10_cnn_int8.tflite", help="any model file the app serves")
    p.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz", help="dataset with the test split")
    p.add_argument("--images", type=int, default=1000, help="test images, drawn at random by --seed")
    p.add_argument("--corruptions", default=",".join(corruptions.ALL), help="comma-separated subset to run")
    p.add_argument("--seed", type=int, default=0, help="seed of the test images drawn and of the corruptions' randomness")
    p.add_argument("--write", action="store_true", help="store the table in the model's sidecar")
    args = p.parse_args(argv)
    names = [n for n in args.corruptions.split(",") if n]
    if not names or set(names) - set(corruptions.ALL):
        p.error(f"--corruptions takes names from {', '.join(corruptions.ALL)}")
    from cifarlab.ml.data import load_dataset

    classifier = Classifier.from_path(args.model, chunk_images=100)
    data = load_dataset(args.data)
    x, y = data.test_sample(args.images, args.seed)
    print(f"{args.model}: {len(names)} corruptions x 5 severities on {len(x):,} test images of {data.source}", flush=True)
    result = benchmark(classifier, x, y, names, args.seed, progress=lambda line: print(line, flush=True))
    print_tables(result, len(x))
    if args.write:
        meta = modelfile.read_meta(args.model)
        command = "python benchmarks/bench_robustness.py " + " ".join(argv if argv is not None else sys.argv[1:])
        meta["robustness"] = {"command": command, "date": datetime.date.today().isoformat(), "images": len(x),
                              **result}
        atomic.write_json(modelfile.sidecar_path(args.model), meta)
        card.rewrite_card(args.model, meta)
        print(f"written to {modelfile.sidecar_path(args.model)} (and the model card beside an .h5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
