"""Feedback store benchmark: flags per second at 8 clients (SQLite and PostgreSQL), the review page with 100,000 items
waiting, and what keeping an answer adds to a prediction.

    python benchmarks/bench_feedback.py                  # about 4 minutes; loopback only; stops by itself
    python benchmarks/bench_feedback.py --seconds 5 --items 20000

The flag rows start gunicorn (`gunicorn.conf.py`, 2 workers x 4 threads, the shipped model) on a fresh database of
each kind (PostgreSQL: Debian's, a throwaway server on loopback; the row is skipped where it is not installed), record
answers to flag straight into the store (then ANALYZE on PostgreSQL, as autovacuum would), and let 8 clients
POST /api/feedback for --seconds. The review row fills the database with --items flagged answers and times GET /review
(the first 50, least sure first). The last rows time Store.record for one answer and /api/predict in the app with
FEEDBACK on and off.
"""
import argparse
import base64
import datetime
import io
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import loadtest  # beside this script: its folder is on sys.path when it runs
from cifarlab.feedback.schema import answers
from cifarlab.feedback.store import Store
from cifarlab.prediction import Prediction

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CREDENTIALS = "operator:benchmark only"  # REVIEW_CREDENTIALS of the benchmark's server


def predictions(count, seed=0):
    """[(32x32x3 pixels, Prediction)] of random images with random probabilities."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        probs = rng.dirichlet(np.ones(len(CLASSES)))
        out.append((rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), Prediction(probs, CLASSES)))
    return out


def fill(store, count, flagged):
    """Insert `count` answers in bulk (one image shared: rows are what is timed), flagged or not; returns their ids."""
    digest, size = store.save_image(np.zeros((32, 32, 3), np.uint8))
    rng = np.random.default_rng(1)
    stamp = datetime.datetime.now(datetime.timezone.utc)
    ids = []
    with store.engine.begin() as connection:
        for start in range(0, count, 5000):
            rows = []
            for i in range(start, min(count, start + 5000)):
                label = CLASSES[i % len(CLASSES)]
                rows.append({"id": secrets.token_urlsafe(16), "created_at": stamp, "image_sha256": digest,
                             "image_bytes": size, "model_name": "cifar10", "model_version": "1", "label": label,
                             "class_index": i % len(CLASSES), "confidence": float(rng.random()),
                             "probabilities": json.dumps([0.1] * len(CLASSES)), "ood_score": 0.0, "verdict": "known",
                             "sampled": False, "flag": CLASSES[(i + 1) % len(CLASSES)] if flagged else None,
                             "flagged_at": stamp if flagged else None})
            connection.execute(answers.insert(), rows)
            ids += [row["id"] for row in rows]
    if store.engine.dialect.name == "postgresql":  # what autovacuum would do within a minute of such a bulk insert;
        with store.engine.begin() as connection:  # without statistics the planner scans the table on every flag
            connection.exec_driver_sql("ANALYZE answers")
    return ids


def start_server(database_url, folder):
    """gunicorn on the shipped model with this database; (process, port)."""
    port = loadtest.free_port()
    env = {"BIND": f"127.0.0.1:{port}", "WEB_WORKERS": "2", "WEB_THREADS": "4", "DATABASE_URL": database_url,
           "FEEDBACK_FOLDER": str(folder / "feedback"), "UPLOAD_FOLDER": str(folder / "uploads"),
           "SECRET_KEY": os.urandom(16).hex(), "LOG_LEVEL": "warning", "GRADCAM": "false",
           "REVIEW_CREDENTIALS": CREDENTIALS, "FEEDBACK_MAX_ITEMS": "10000000"}
    return loadtest.start_server(loadtest.python_command("-m", "gunicorn", "-c", "gunicorn.conf.py"), port, env,
                                 log_path=str(folder / "server.log"), timeout=180), port


def flag_rate(port, ids, seconds, clients=8):
    """(flags answered 2xx per second, p50 ms, p99 ms, other statuses) of `clients` threads flagging distinct ids."""
    latencies, others, lock = [], [], threading.Lock()
    pending = iter(ids)
    deadline = time.monotonic() + seconds

    def client():
        while time.monotonic() < deadline:
            with lock:
                answer_id = next(pending, None)
            if answer_id is None:
                return
            body = json.dumps({"id": answer_id, "label": "dog"}).encode()
            started = time.perf_counter()
            status, _ = loadtest.request("POST", port, "/api/feedback", body, {"Content-Type": "application/json"})
            took = time.perf_counter() - started
            with lock:
                (latencies if status == 201 else others).append(took if status == 201 else status)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return (len(latencies) / elapsed, percentile(latencies, 50), percentile(latencies, 99), others)


def percentile(seconds, q):
    return float(np.percentile(seconds, q)) * 1000 if seconds else float("nan")


def review_p50(port, requests=30):
    """(p50 ms, p99 ms) of GET /review with the operator's credentials."""
    header = {"Authorization": "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()}
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        status, _ = loadtest.request("GET", port, "/review", None, header)
        times.append(time.perf_counter() - started)
        assert status == 200, status
    return percentile(times, 50), percentile(times, 99)


def database_rows(kind, url, seconds, items, rows):
    """The flag and review rows for one database."""
    folder = Path(tempfile.mkdtemp(prefix=f"cifarlab-bench-{kind}-"))
    store = Store.open(url, folder / "feedback", classes=CLASSES)
    ids = fill(store, 200_000, flagged=False)  # more than 8 clients flag in the time given
    server, port = start_server(url, folder)
    try:
        rate, p50, p99, others = flag_rate(port, ids, seconds)
        rows.append((f"flags/s, 8 clients, {kind}, 200,000 answers, none kept yet", f"{rate:,.0f} /s",
                     f"p50 {p50:.1f} ms, "
                     f"p99 {p99:.1f} ms{'' if not others else f'; other answers {sorted(set(others))}'}"))
        started = time.monotonic()
        fill(store, items, flagged=True)
        filled = time.monotonic() - started
        p50, p99 = review_p50(port)
        rows.append((f"GET /review, {kind}, {items:,} items waiting (200,000 answers besides)", f"p50 {p50:.1f} ms",
                     f"p99 {p99:.1f} ms "
                     f"(filled in {filled:.0f} s)"))
        rate, p50, p99, others = flag_rate(port, ids[len(ids) // 2:], seconds)
        rows.append((f"flags/s, 8 clients, {kind}, 200,000 answers + {items:,} kept for review", f"{rate:,.0f} /s",
                     f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"))
    finally:
        loadtest.stop_server(server)


def record_rows(rows, count=500):
    """Store.record of one answer (SQLite), and /api/predict in the app with FEEDBACK on and off."""
    folder = Path(tempfile.mkdtemp(prefix="cifarlab-bench-record-"))
    store = Store.open(f"sqlite:///{folder / 'feedback.db'}", folder / "feedback", classes=CLASSES)
    entries = predictions(count)
    times = []
    for entry in entries:
        started = time.perf_counter()
        store.record([entry], "cifar10", "1")
        times.append(time.perf_counter() - started)
    rows.append(("Store.record of one answer (SQLite: PNG written, row committed)", f"p50 {percentile(times, 50):.2f}"
                 f" ms", f"p99 {percentile(times, 99):.2f} ms (target: p50 <= 1 ms)"))

    from cifarlab.web.factory import create_app

    image = loadtest.image_bytes("PNG", size=(32, 32))
    p50s = {}
    for feedback in (False, True):
        app = create_app({"TESTING": True, "SECRET_KEY": "bench", "FEEDBACK": feedback, "GRADCAM": False,
                          "DATABASE_URL": f"sqlite:///{folder / f'app-{feedback}.db'}",
                          "FEEDBACK_FOLDER": str(folder / f"app-{feedback}"), "UPLOAD_FOLDER": str(folder / "up"),
                          "DECODE_PROCESSES": 0})
        client = app.test_client()
        times = []
        for i in range(count // 2 + 20):
            started = time.perf_counter()
            reply = client.post("/api/predict", data={"file": (io.BytesIO(image), "a.png")})
            if i >= 20:  # after a warm-up
                times.append(time.perf_counter() - started)
            assert reply.status_code == 200
        p50s[feedback] = statistics.median(times) * 1000
    rows.append(("/api/predict in the app, FEEDBACK off / on", f"p50 {p50s[False]:.2f} / {p50s[True]:.2f} ms",
                 f"a kept answer adds {p50s[True] - p50s[False]:+.2f} ms (target: <= 1 ms)"))
    return p50s[True] - p50s[False]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10, help="how long 8 clients flag, per row")
    p.add_argument("--items", type=int, default=100_000, help="flagged answers waiting for the review row")
    args = p.parse_args(argv)
    rows = []
    folder = Path(tempfile.mkdtemp(prefix="cifarlab-bench-sqlite-"))
    database_rows("SQLite", f"sqlite:///{folder / 'feedback.db'}", args.seconds, args.items, rows)
    postgres = throwaway_postgres()
    if postgres is None:
        rows.append(("PostgreSQL rows", "skipped", "Debian's postgresql is not installed"))
    else:
        try:
            database_rows("PostgreSQL", postgres.database(), args.seconds, args.items, rows)
        finally:
            postgres.stop()
    added = record_rows(rows)
    print("| measure | value | detail |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if added <= 1.0 else 1


def throwaway_postgres():
    """The tests' throwaway PostgreSQL server on loopback, or None where Debian's postgresql is missing."""
    sys.path.insert(0, str(loadtest.REPO))
    from tests.databases import Postgres, postgres_binaries

    return Postgres() if postgres_binaries() else None


if __name__ == "__main__":
    sys.exit(main())
