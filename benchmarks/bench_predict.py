"""Batch prediction benchmark: `train.py predict` (cifarlab.batch) against the model's in-process batch rate.

    .venv/bin/python benchmarks/bench_predict.py --data ../shared/data/cifar10-jpeg.tar.gz
    .venv/bin/python benchmarks/bench_predict.py --data ../shared/data/cifar10-jpeg.tar.gz --synthetic 100000 --beam
    .venv/bin/python benchmarks/bench_predict.py --hostile      # memory on archives of large members, no --data

Extracts the JPEG copy's test split (10,000 files) into a temporary folder, measures the in-process peak
(Classifier.predict on decoded batches: the model alone), then the predict command end to end (listing, reading,
decoding in worker processes, the model, the output) on that folder, checks its accuracy against the folder names,
optionally on a synthetic folder of N files (the test files copied over and over) and on the Beam DirectRunner
(needs make beam-venv). Prints one Markdown table. With --hostile: the peak memory of the command's whole process
tree on archives of 40 members of 60 MB of zeros each (a .zip and a .tar.gz of about 2 MB), and on a list naming
/dev/zero, against the IN_FLIGHT_BYTES bound.
"""
import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from cifarlab import REPO, batch
from cifarlab.children import descendants
from cifarlab.images import preprocess_bytes
from cifarlab.inference import Classifier


def extract_test_split(archive, folder):
    """The archive's test/<class>/* files under folder; their count."""
    count = 0
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and "test" in parts:
                target = folder.joinpath(*parts[parts.index("test"):])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
                count += 1
    return count


def in_process_rate(classifier, folder, batch_size, limit=4096):
    """Images/s of classifier.predict alone on decoded batches of the folder's first `limit` images."""
    images = np.stack([preprocess_bytes(p.read_bytes()) for p in sorted(folder.rglob("*.jpg"))[:limit]])
    classifier.predict(images[:batch_size])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(images), batch_size):
        classifier.predict(images[i:i + batch_size])
    return len(images) / (time.perf_counter() - started)


def accuracy(out):
    """Share of rows whose class is the name of the folder the file is in."""
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    return sum(row["class"] == Path(row["path"]).parent.name for row in rows) / len(rows), len(rows)


def command_rate(folder, out, model, workers):
    """(images/s, accuracy, rows) of the predict command on a folder, as a user runs it."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "train.py", "predict", str(folder), "--out", str(out), "--model", model,
                    *(["--workers", str(workers)] if workers else [])], cwd=REPO, check=True)
    seconds = time.perf_counter() - started
    acc, rows = accuracy(out)
    return rows / seconds, acc, rows


def synthetic_folder(source, folder, count):
    """A folder of `count` files: hard links to the test files, round after round (contents as on disk)."""
    files = sorted(source.rglob("*.jpg"))
    for k in range(count):
        original = files[k % len(files)]
        target = folder / original.parent.name / f"{k:07d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.hardlink_to(original)
        except OSError:
            shutil.copyfile(original, target)


def beam_rate(folder, out, model):
    """(images/s, accuracy, rows) of the Beam pipeline on the DirectRunner."""
    started = time.perf_counter()
    subprocess.run([str(REPO / ".venv-beam" / "bin" / "python"), "-m", "cifarlab.beam_predict", "--input",
                    f"{folder}/**", "--out", str(out / "preds"), "--model", model, "--direct_num_workers", "0",
                    "--direct_running_mode", "multi_processing"], cwd=REPO, check=True)
    seconds = time.perf_counter() - started
    rows = []
    for shard in sorted(out.glob("preds-*")):
        with open(shard, newline="") as f:
            rows += list(csv.DictReader(f))
    acc = sum(row["class"] == Path(row["path"]).parent.name for row in rows) / len(rows)
    return len(rows) / seconds, acc, len(rows)


def rss_bytes(pid):
    """Resident memory of one process, 0 once it has ended."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError):
        return 0


def peak_tree_rss(command):
    """(exit code, seconds, peak of the summed resident memory of the command and its descendants), sampled 20/s."""
    started = time.perf_counter()
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while run.poll() is None:
        peak = max(peak, sum(rss_bytes(pid) for pid in [run.pid, *descendants(run.pid)]))
        time.sleep(0.05)
    return run.returncode, time.perf_counter() - started, peak


def hostile_inputs(tmp, members=40, member_mb=60):
    """[(description, path)]: a .zip and a .tar.gz of `members` files of zeros, a list naming /dev/zero."""
    zeros = bytes(member_mb * 2**20)
    with zipfile.ZipFile(tmp / "zeros.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for k in range(members):
            archive.writestr(f"{k:03d}.png", zeros)
    with tarfile.open(tmp / "zeros.tar.gz", "w:gz") as archive:
        for k in range(members):
            info = tarfile.TarInfo(f"{k:03d}.png")
            info.size = len(zeros)
            archive.addfile(info, io.BytesIO(zeros))
    (tmp / "devices.txt").write_text("/dev/zero\n/dev/urandom\n")
    return [(f".zip, {members} x {member_mb} MB of zeros", tmp / "zeros.zip"),
            (f".tar.gz, {members} x {member_mb} MB of zeros", tmp / "zeros.tar.gz"),
            ("list naming /dev/zero and /dev/urandom", tmp / "devices.txt")]


def hostile(model):
    """Print the peak memory of the predict command on hostile inputs."""
    print(f"Batch prediction on hostile inputs with {model} (`{' '.join(sys.argv)}`); in-flight bound "
          f"{batch.IN_FLIGHT_BYTES // 2**20} MB\n")
    print("| input | size MB | exit | seconds | peak RSS of the process tree MB |\n|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in hostile_inputs(Path(tmp)):
            code, seconds, peak = peak_tree_rss([sys.executable, "train.py", "predict", str(path), "--out",
                                                 f"{path}.csv", "--model", model])
            print(f"| {name} | {path.stat().st_size / 2**20:.1f} | {code} | {seconds:.1f} | {peak / 2**20:,.0f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="the JPEG copy (.tar.gz with test/<class>/*)")
    p.add_argument("--hostile", action="store_true", help="only the memory table on hostile inputs")
    p.add_argument("--model", default="model/cifar10_cnn_int8.tflite")
    p.add_argument("--workers", type=int, help="decoding processes for the command (default: its own)")
    p.add_argument("--synthetic", type=int, default=0, help="also a synthetic folder of this many files")
    p.add_argument("--beam", action="store_true", help="also the Beam DirectRunner (needs make beam-venv)")
    args = p.parse_args()
    if args.hostile:
        return hostile(args.model)
    if not args.data:
        p.error("--data is needed (or --hostile)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        count = extract_test_split(args.data, tmp / "test")
        print(f"extracted {count:,} test files", file=sys.stderr, flush=True)
        peak = in_process_rate(Classifier.from_path(args.model, chunk_images=batch.BATCH), tmp / "test", batch.BATCH)
        rows.append(("in-process Classifier.predict, decoded batches of 256 (the model alone)", peak, None, None))
        rate, acc, n = command_rate(tmp / "test", tmp / "test.csv", args.model, args.workers)
        rows.append((f"train.py predict, {n:,} test JPEGs", rate, acc, n))
        if args.synthetic:
            synthetic_folder(tmp / "test", tmp / "synthetic", args.synthetic)
            rate, acc, n = command_rate(tmp / "synthetic", tmp / "synthetic.csv", args.model, args.workers)
            rows.append((f"train.py predict, synthetic folder of {n:,}", rate, acc, n))
        if args.beam:
            rate, acc, n = beam_rate(tmp / "test", tmp / "beam", args.model)
            rows.append((f"Beam DirectRunner (multi-processing), {n:,} test JPEGs", rate, acc, n))
    print(f"Batch prediction with {args.model} (`{' '.join(sys.argv)}`)\n")
    print("| run | images/s | of the in-process rate | accuracy |\n|---|---:|---:|---:|")
    for name, rate, acc, _ in rows:
        print(f"| {name} | {rate:,.0f} | {rate / peak:.0%} | {'' if acc is None else f'{acc:.2%}'} |")


if __name__ == "__main__":
    main()
