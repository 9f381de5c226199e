"""Serving benchmark: our production server against a seed-style reference, on the same model and machine.

    python benchmarks/bench_serve.py                      # 15 s per concurrency level, loopback only; stops by itself
    python benchmarks/bench_serve.py --seconds 5 --model model/baseline.h5 --fast-model ""

Our gunicorn server runs twice, on its default model (the int8 TFLite export, served by ai-edge-litert without
TensorFlow) and on the Keras .h5, against a seed-style reference on the .h5. Prints one Markdown table (req/s,
p50, p99, errors, RSS, start-up time to /readyz; ours/reference), then batch throughput of the API and of the
model in-process as a fraction of the machine's measured 3x3-convolution peak, then the targets and whether
they were met.
"""
import argparse
import os
import sys
import tempfile
import time

import loadtest  # beside this script: its folder is on sys.path when it runs
from loadtest import image_bytes


def conv_peak_gflops(seconds=5.0):
    """GFLOP/s of a float32 3x3 convolution (256 -> 256 channels, 16x16, batch 64) in TensorFlow."""
    import tensorflow as tf

    x = tf.random.normal([64, 16, 16, 256])
    k = tf.random.normal([3, 3, 256, 256])
    conv = tf.function(lambda a: tf.nn.conv2d(a, k, 1, "SAME"))
    conv(x).numpy()
    flops, runs, started = 2 * 64 * 16 * 16 * 9 * 256 * 256, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        conv(x).numpy()
        runs += 1
    return flops * runs / (time.perf_counter() - started) / 1e9


def in_process_images_per_second(model_path, batch=256, seconds=10.0, call="probabilities"):
    """Images/s of a Classifier method (`call`: probabilities, the compiled inference path; or predict, with the
    verdicts) on batches of random images."""
    import numpy as np

    from cifarlab.inference import Classifier

    clf = Classifier.from_path(model_path)
    x = np.random.default_rng(0).integers(0, 256, (batch, clf.input_size, clf.input_size, 3), dtype=np.uint8)
    method = getattr(clf, call)
    method(x)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        method(x)
        done += batch
    return done / (time.perf_counter() - started)


def load(port, path, field_files, clients, seconds, expected=200):
    """Post the same multipart body from `clients` threads for `seconds`; summary dict."""
    body, ctype = loadtest.multipart({}, field_files)

    def post(client, rng):
        status, _ = loadtest.request("POST", port, path, body, {"Content-Type": ctype})
        return status == expected, status, "image"

    started = time.monotonic()
    results = loadtest.run_clients(clients, seconds, post)
    return loadtest.summarise(results, time.monotonic() - started)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(loadtest.REPO / "model" / "cifar10_cnn.h5"))
    p.add_argument("--fast-model", default=str(loadtest.REPO / "model" / "cifar10_cnn_int8.tflite"),
                   help="int8 export of --model ('' to skip)")
    p.add_argument("--seconds", type=float, default=15, help="per concurrency level and server")
    p.add_argument("--concurrency", default="1,8,32")
    args = p.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    png = image_bytes("PNG", size=(32, 32), seed=1)
    tmp = tempfile.mkdtemp(prefix="cifarlab-serve-")

    from cifarlab import modelfile
    from cifarlab.ml import models

    flops = models.forward_flops(modelfile.load(args.model)[0])
    peak = conv_peak_gflops()

    models_served = {"ours int8 (default)": args.fast_model} if args.fast_model else {}
    models_served["ours .h5"] = args.model
    servers = []
    for label, model in models_served.items():
        port = loadtest.free_port()  # LOG_LEVEL left at its default: the request log is written, as in production
        servers.append((label, model, loadtest.python_command("-m", "gunicorn", "-c", "gunicorn.conf.py"), port,
                        "/api/predict", {"BIND": f"127.0.0.1:{port}", "MODEL_PATH": os.path.abspath(model),
                                         "UPLOAD_FOLDER": os.path.join(tmp, label), "SECRET_KEY": os.urandom(16).hex()}))
    port = loadtest.free_port()
    reference = loadtest.python_command(str(loadtest.REPO / "tools" / "reference_server.py"), str(port),
                                        os.path.abspath(args.model), os.path.join(tmp, "ref"))
    servers.append(("reference", args.model, reference, port, "/predict", {}))
    os.makedirs(os.path.join(tmp, "ref"))
    rows, batch, ready_s = [], {}, {}
    for label, model, command, port, path, env in servers:
        started = time.monotonic()
        proc = loadtest.start_server(command, port, env, log_path=os.path.join(tmp, f"{label}.log"),
                                     ready_path="/readyz" if label != "reference" else "/healthz")
        ready_s[label] = time.monotonic() - started
        try:
            for clients in levels:
                s = load(port, path, [("file", "cat.png", png)], clients, args.seconds)
                s["rss"] = loadtest.process_tree_rss_mb(proc.pid)
                rows.append((label, clients, s))
            if label != "reference":
                files = [("file", f"{i}.png", png) for i in range(32)]
                s = load(port, path, files, clients=2, seconds=args.seconds)
                batch[f"API {label}, 32 files per request, 2 clients"] = s["rps"] * 32
        finally:
            loadtest.stop_server(proc)
    for label, model in models_served.items():
        batch[f"{label} in-process, batch 256"] = in_process_images_per_second(model)

    print(f"Serving {os.path.relpath(args.model, loadtest.REPO)} ({flops / 1e6:,.0f} MFLOP per image), "
          f"{args.seconds:.0f} s per row, same 32x32 PNG")
    print("| server | clients | req/s | p50 ms | p99 ms | errors | RSS MiB (processes) | ready s | req/s ours/ref |")
    print("|---|---|---|---|---|---|---|---|---|")
    ref = {c: s for n, c, s in rows if n == "reference"}
    for label, clients, s in rows:
        ratio = f"{s['rps'] / ref[clients]['rps']:.1f}x" if label != "reference" and ref[clients]["rps"] else ""
        rss = s["rss"]
        workers = sorted(rss.values())[1:] if label != "reference" and len(rss) > 1 else list(rss.values())
        print(f"| {label} | {clients} | {s['rps']:.1f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['unexpected']} | "
              f"{sum(rss.values()):.0f} ({len(rss)}; per worker {max(workers):.0f}) | {ready_s[label]:.1f} | {ratio} |")
    print(f"\nConv peak (TF float32 3x3 probe): {peak:.0f} GFLOP/s")
    print("| batch path | images/s | GFLOP/s | of conv peak |\n|---|---|---|---|")
    for label, images_per_second in batch.items():
        gflops = images_per_second * flops / 1e9
        print(f"| {label} | {images_per_second:,.0f} | {gflops:.0f} | {gflops / peak:.0%} |")

    print("\n| target | measured | met |\n|---|---|---|")
    default = next(iter(models_served))
    mine = {c: s for label, c, s in rows if label == default}
    workers = sorted(mine[max(mine)]["rss"].values())[1:] or list(mine[max(mine)]["rss"].values())
    share = max((v * flops / 1e9 / peak, label) for label, v in batch.items() if "int8" not in label)  # float vs float
    checks = [("p50 <= 8 ms at 1 client, default server", 1 in mine and mine[1]["p50_ms"],
               lambda v: f"{v:.1f} ms", lambda v: v <= 8),
              (">= 15x reference req/s at 8 clients, default server", 8 in mine and mine[8]["rps"] / ref[8]["rps"],
               lambda v: f"{v:.1f}x", lambda v: v >= 15),
              ("RSS per worker <= 200 MiB, default server", max(workers), lambda v: f"{v:.0f} MiB", lambda v: v <= 200),
              ("ready <= 3 s after start, default server", ready_s[default], lambda v: f"{v:.1f} s", lambda v: v <= 3),
              (">= 50 % of conv peak in batch (float model)", share[0], lambda v: f"{v:.0%}", lambda v: v >= 0.5)]
    for target, value, shown, met in checks:
        print(f"| {target} | {shown(value) if value is not False else 'not measured'} | "
              f"{'yes' if value is not False and met(value) else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
