"""Memory per served model: each model file loaded and warmed up in a fresh process, its resident memory before
and after (what one more model under MODEL_DIR costs each web worker).

    python benchmarks/bench_models.py                    # the shipped files
    python benchmarks/bench_models.py model/best.h5 model/cifar10_cnn_int8.tflite
"""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = ["model/cifar10_cnn_int8.tflite", "model/cifar10_cnn.h5", "model/best.h5", "model/baseline.h5"]
PROBE = """
import json, sys
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
from cifarlab.web import factory  # the web process's imports, without a model
before = rss()
from cifarlab.inference import Classifier
classifier = Classifier.from_path(sys.argv[1])
classifier.warm_up()
second = Classifier.from_path(sys.argv[1])
second.warm_up()
print(json.dumps({"before": before, "after": rss()}))
"""


def measure(path):
    """{before, after} MiB of a fresh process that loads the file twice (the second copy: one more version)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", PROBE, path], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_copy(path):
    """MiB the first copy of the file costs: a process that loads it once against one that loads nothing."""
    probe = PROBE.replace("second = Classifier.from_path(sys.argv[1])\nsecond.warm_up()\n", "")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", probe, path], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    paths = (argv if argv is not None else sys.argv[1:]) or DEFAULT
    print("| model file | web process before MiB | with the model MiB | first model costs MiB | each more version MiB |")
    print("|---|---|---|---|---|")
    for path in paths:
        once, twice = first_copy(path), measure(path)
        print(f"| {path} | {once['before']:.0f} | {once['after']:.0f} | {once['after'] - once['before']:.0f} | "
              f"{twice['after'] - once['after']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
