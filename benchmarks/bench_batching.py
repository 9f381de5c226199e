"""Batching across requests: the default server (int8, gunicorn, 2 workers) with each request on its own forward pass
(BATCH_WINDOW_MS=0) against shared passes (the default window, and with more threads per worker to fill them).

    python benchmarks/bench_batching.py                  # 15 s per row, loopback only; about 3 minutes
    python benchmarks/bench_batching.py --seconds 5 --concurrency 1,32

Prints one Markdown table (req/s, p50, p99, errors, mean images per forward pass read off the server's /metrics) and the
in-process forward pass of one image against 16 at once: what batching can win at most.
"""
import argparse
import os
import re
import sys
import tempfile

import loadtest  # beside this script: its folder is on sys.path when it runs
from bench_serve import in_process_images_per_second, load
from loadtest import image_bytes

CONFIGS = {  # label: settings of the server
    "each request alone (BATCH_WINDOW_MS=0)": {"BATCH_WINDOW_MS": "0"},
    "batched (default: 2 ms window, 4 threads)": {},
    "batched, 16 threads per worker": {"WEB_THREADS": "16"},
}


def passes(port):
    """(images, forward passes) so far, from the server's own cifarlab_batch_size histogram (all workers)."""
    _, text = loadtest.request("GET", port, "/metrics", b"", {})
    total = sum(float(v) for v in re.findall(r"^cifarlab_batch_size_sum\{[^}]*\} (\S+)", text.decode(), re.M))
    count = sum(float(v) for v in re.findall(r"^cifarlab_batch_size_count\{[^}]*\} (\S+)", text.decode(), re.M))
    return total, count


def forward_ms(model_path, batch, seconds=3.0):
    """Milliseconds per image of Classifier.predict on `batch` images at once, in this process."""
    return 1000 / in_process_images_per_second(model_path, batch, seconds, call="predict")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(loadtest.REPO / "model" / "cifar10_cnn_int8.tflite"))
    p.add_argument("--seconds", type=float, default=15, help="per concurrency level and server")
    p.add_argument("--concurrency", default="1,8,32")
    args = p.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    png = image_bytes("PNG", size=(32, 32), seed=1)
    tmp = tempfile.mkdtemp(prefix="cifarlab-batching-")
    rows = []
    for label, settings in CONFIGS.items():
        port = loadtest.free_port()
        env = {"BIND": f"127.0.0.1:{port}", "MODEL_PATH": os.path.abspath(args.model), "WEB_WORKERS": "2",
               "UPLOAD_FOLDER": os.path.join(tmp, str(port)), "SECRET_KEY": os.urandom(16).hex(), **settings}
        proc = loadtest.start_server(loadtest.python_command("-m", "gunicorn", "-c", "gunicorn.conf.py"), port, env,
                                     log_path=os.path.join(tmp, f"{port}.log"), ready_path="/readyz")
        try:
            for clients in levels:
                images, count = passes(port)
                s = load(port, "/api/predict", [("file", "cat.png", png)], clients, args.seconds)
                images_after, count_after = passes(port)
                rows.append((label, clients, s, (images_after - images) / max(1.0, count_after - count)))
        finally:
            loadtest.stop_server(proc)
    print(f"Serving {os.path.relpath(args.model, loadtest.REPO)} with gunicorn, 2 workers, {args.seconds:.0f} s per "
          "row, one 32x32 PNG per request")
    print("| server | clients | req/s | p50 ms | p99 ms | errors | images per forward pass |")
    print("|---|---|---|---|---|---|---|")
    for label, clients, s, per_pass in rows:
        print(f"| {label} | {clients} | {s['rps']:.1f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['unexpected']} | "
              f"{per_pass:.2f} |")
    alone = {c: s["rps"] for label, c, s, _ in rows if label == next(iter(CONFIGS))}
    print("\n| server | clients | req/s against each request alone |\n|---|---|---|")
    for label, clients, s, _ in rows:
        if label != next(iter(CONFIGS)) and alone.get(clients):
            print(f"| {label} | {clients} | {s['rps'] / alone[clients]:.2f}x |")
    one, sixteen = forward_ms(args.model, 1), forward_ms(args.model, 16)
    print(f"\nIn-process forward pass (predict, both cores): {one:.2f} ms per image alone, {sixteen:.2f} ms per image "
          f"16 at once: batching can save at most {1 - sixteen / one:.0%} of the model's share of a request.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
