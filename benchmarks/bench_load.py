"""Load test: the production server (gunicorn) under 16 clients of mixed valid and hostile uploads; or attacks.

    python benchmarks/bench_load.py                 # 16 clients, 60 s, loopback only; stops by itself
    python benchmarks/bench_load.py --clients 4 --seconds 10
    python benchmarks/bench_load.py --attacks       # attacks on `make serve`'s stack (nginx + gunicorn), about 8 min

Prints requests, statuses, unexpected errors, p50/p99 latency, server RSS (idle, after a warm-up, end), and the
uploads/ folder (a temporary one with a small retention cap) in files and bytes. With --attacks: slow clients,
decompression-bomb uploads, a base64 CPU bomb, parallel scan bombs, header bombs, early 413s, an explanation flood,
one client filling the uploads folder, a hanging inference backend; then the serving platform (odd and huge version
folders with every worker killed, a bad sidecar, a rollback by mv, every version moved away, cp over the served file,
a flood of invented HTTP methods) and the small ones (a line break in a URL, an encoded slash, TRACE, GET on
:predict, a 2 MB text field); each with what it must not do.
"""
import argparse
import base64
import http.client
import io
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from PIL import Image

import loadtest  # beside this script: its folder is on sys.path when it runs
from loadtest import image_bytes


def blank_png(width, height, mode="L"):
    """A PNG of one flat colour: tiny file, many pixels."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128 if mode == "L" else 0).save(buffer, format="PNG")
    return buffer.getvalue()


EXAMPLE = (Path(loadtest.REPO) / "static" / "examples" / "cat.png").read_bytes()  # a photo the model can explain
KINDS = [  # (kind, filename, bytes, expected status); each client cycles through them at random
    ("png-32", "cat.png", image_bytes("PNG", size=(32, 32)), 200),
    ("jpeg-640", "photo.jpg", image_bytes("JPEG", size=(640, 480)), 200),
    ("text", "notes.png", b"just some text, not an image", 415),
    ("truncated", "cut.png", image_bytes("PNG", size=(64, 64))[:400], 400),
    ("huge", "huge.png", blank_png(8000, 4000), 413),  # 32 M pixels > the 25 M limit, in a few kB
    ("empty", "empty.png", b"", 400),
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--max-files", type=int, default=300, help="retention cap of the temporary uploads/ folder")
    p.add_argument("--max-mb", type=int, default=20, help="retention cap in MiB")
    p.add_argument("--warmup", type=float, default=10, help="seconds of load before the 'warm' RSS reading")
    p.add_argument("--attacks", action="store_true", help="run the attack scenarios instead of the mixed load")
    p.add_argument("--slow-seconds", type=float, default=60, help="how long the slow clients attack")
    args = p.parse_args(argv)
    if args.attacks:
        return attacks(args.slow_seconds)

    uploads = tempfile.mkdtemp(prefix="cifarlab-load-")
    port = loadtest.free_port()
    env = {"BIND": f"127.0.0.1:{port}", "UPLOAD_FOLDER": uploads, "UPLOAD_MAX_FILES": str(args.max_files),
           "UPLOAD_MAX_BYTES": str(args.max_mb * 1024 * 1024), "SECRET_KEY": os.urandom(16).hex(),
           "LOG_LEVEL": "warning"}
    server = loadtest.start_server(loadtest.python_command("-m", "gunicorn", "-c", "gunicorn.conf.py"), port, env,
                                   log_path=os.path.join(uploads, ".server.log"))
    try:
        rss_start = loadtest.process_tree_rss_mb(server.pid)
        token_pages = {}

        def post(client, rng):
            kind, filename, data, expected = KINDS[rng.integers(len(KINDS))]
            if rng.random() < 0.5:  # the JSON API
                body, ctype = loadtest.multipart({}, [("file", filename, data)])
                status, _ = loadtest.request("POST", port, "/api/predict", body, {"Content-Type": ctype})
            else:  # the HTML form, with its CSRF token and session cookie
                if client not in token_pages:
                    token_pages[client] = form_token(port)
                token, cookie = token_pages[client]
                body, ctype = loadtest.multipart({"csrf_token": token}, [("file", filename, data)])
                status, _ = loadtest.request("POST", port, "/", body, {"Content-Type": ctype, "Cookie": cookie})
            return status == expected, status, kind

        loadtest.run_clients(args.clients, args.warmup, post)  # first requests allocate TF's caches
        rss_warm = loadtest.process_tree_rss_mb(server.pid)
        started = time.monotonic()
        results = loadtest.run_clients(args.clients, args.seconds, post)
        elapsed = time.monotonic() - started
        time.sleep(1)
        rss_end = loadtest.process_tree_rss_mb(server.pid)
        still_up = loadtest.request("GET", port, "/healthz")[0] == 200
    finally:
        loadtest.stop_server(server)

    s = loadtest.summarise(results, elapsed)
    stored = [f for f in os.listdir(uploads) if not f.startswith(".")]
    stored_bytes = sum(os.path.getsize(os.path.join(uploads, f)) for f in stored)
    print(f"Load: {args.clients} clients, {elapsed:.0f} s, mixed uploads {', '.join(k[0] for k in KINDS)}")
    print("| metric | value |\n|---|---|")
    print(f"| requests | {s['requests']:,} ({s['rps']:.1f} req/s) |")
    print(f"| statuses | {', '.join(f'{k}: {v}' for k, v in sorted(s['statuses'].items(), key=str))} |")
    print(f"| unexpected errors | {s['unexpected']} |")
    print(f"| latency p50 / p99 | {s['p50_ms']:.1f} ms / {s['p99_ms']:.1f} ms |")
    start, warm, end = (sum(r.values()) for r in (rss_start, rss_warm, rss_end))
    print(f"| server RSS: idle / after {args.warmup:.0f} s warm-up / end | {start:.0f} / {warm:.0f} / {end:.0f} MiB "
          f"({len(rss_end)} processes) |")
    print(f"| RSS growth during the measured {elapsed:.0f} s | {end - warm:+.0f} MiB |")
    print(f"| uploads/ | {len(stored)} files, {stored_bytes / 2**20:.1f} MiB (cap {args.max_files} files, {args.max_mb} MiB) |")
    print(f"| still serving after | {'yes' if still_up else 'NO'} |")
    return 0 if s["unexpected"] == 0 and still_up else 1


def start_stack(env, log_path=os.devnull):
    """`python -m cifarlab.web.serve` (nginx + gunicorn) on a free port; (process, port)."""
    port = loadtest.free_port()
    env = {"BIND": f"127.0.0.1:{port}", "SECRET_KEY": os.urandom(16).hex(), "LOG_LEVEL": "warning",
           "UPLOAD_FOLDER": tempfile.mkdtemp(prefix="cifarlab-attack-"), **env}
    return loadtest.start_server(loadtest.python_command("-m", "cifarlab.web.serve"), port, env,
                                 headers={"Host": "localhost"}, timeout=180, log_path=log_path), port


def peak_rss_during(server, action):
    """(action's result, RSS before, peak RSS while it ran, RSS 1 s after) of the server's process tree, MiB."""
    before = sum(loadtest.process_tree_rss_mb(server.pid).values())
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], sum(loadtest.process_tree_rss_mb(server.pid).values()))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    time.sleep(1)
    return result, before, peak[0], sum(loadtest.process_tree_rss_mb(server.pid).values())


def post_bombs(port, count):
    """(status, seconds, bytes) of one /api/predict with `count` 5000x5000 bilevel PNGs (3 kB each, 25 MP decoded)."""
    return post_files(port, [blank_png(5000, 5000, "1")] * count)


def attacks(slow_seconds):
    """Attack `make serve`'s stack on loopback; print one table row per attack; 0 when every target is met."""
    rows, ok = [], True
    server, port = start_stack({"TRUSTED_PROXIES": "127.0.0.1"})  # clients told apart by X-Forwarded-For
    try:
        threads, made = loadtest.slow_clients(port, connections=50, seconds=slow_seconds, drip_every=2.0)
        time.sleep(2)
        probes = loadtest.probe(port, "/healthz", seconds=slow_seconds - 4, every=5.0)
        for t in threads:
            t.join(slow_seconds + 30)
        worst = max(latency for _, latency in probes)
        met = all(status == 200 and latency < 1.0 for status, latency in probes)
        rows.append(("50 slow clients (headers or body 1 byte / 2 s) for "
                     f"{slow_seconds:.0f} s, {made[0]} connections made", f"/healthz every 5 s: "
                     f"{sum(s == 200 for s, _ in probes)}/{len(probes)} answered, slowest {worst * 1000:.0f} ms",
                     "all answer within 1 s", met))
        ok &= met

        (status, seconds, size), before, peak, after = peak_rss_during(server, lambda: post_bombs(port, 32))
        met = status in (200, 413) and peak - before < 300
        rows.append((f"32 x 25 MP PNG bombs in one request ({size / 1024:.0f} kB), default budget",
                     f"{status} in {seconds * 1000:.0f} ms, RSS peak {peak - before:+.0f} MiB",
                     "413 or 200; peak < +300 MiB", met))
        ok &= met

        bomb = blank_png(5000, 5000, "1")
        body = json.dumps({"instances": [{"b64": base64.b64encode(bomb).decode()}] * 256}).encode()
        started = time.perf_counter()
        status, _ = loadtest.request("POST", port, "/v1/models/cifar10:predict", body,
                                     {"Content-Type": "application/json", "Host": "localhost"})
        seconds = time.perf_counter() - started
        met = status == 413 and seconds < 1
        rows.append((f"256 b64 bombs in one :predict ({len(body) / 1024:.0f} kB JSON)",
                     f"{status} in {seconds * 1000:.0f} ms", "4xx within 1 s (was 24 s of CPU)", met))
        ok &= met
        ok &= structure_attacks(server, port, rows)
        ok &= upload_flood(port, rows)
    finally:
        loadtest.stop_server(server)

    server, port = start_stack({"MAX_REQUEST_PIXELS": str(32 * 25_000_000)})
    try:
        start = sum(loadtest.process_tree_rss_mb(server.pid).values())
        results = [peak_rss_during(server, lambda: post_bombs(port, 32)) for _ in range(4)]
        statuses = [r[0][0] for r in results]
        worst_peak = max(peak - before for _, before, peak, _ in results)
        end = results[-1][3]
        met = set(statuses) <= {200, 413} and worst_peak < 300 and abs(end - start) < 100
        rows.append(("4 x (32 x 25 MP bombs), request budget lifted to 800 MP (all decoded)",
                     f"{', '.join(map(str, statuses))}; {max(r[0][1] for r in results):.1f} s each at most; RSS peak "
                     f"{worst_peak:+.0f} MiB, after {end - start:+.0f} MiB", "peak < +300 MiB, after within 100 MiB",
                     met))
        ok &= met
    finally:
        loadtest.stop_server(server)

    backend = loadtest.FakeBackend.start("ok")
    server, port = start_stack({"INFERENCE_URL": f"http://127.0.0.1:{backend.server_port}"})
    try:
        backend.mode = "hang"
        body, ctype = loadtest.multipart({}, [("file", "cat.png", image_bytes("PNG", size=(32, 32)))])
        answers, probes = loadtest.probe_during(port, lambda: post_status(port, body, ctype), 8, seconds=12, every=1.0)
        worst = max(latency for _, latency in probes)
        met = all(s == 503 and t <= 10 for s, t in answers) and all(s == 200 and t < 1 for s, t in probes)
        rows.append(("inference backend hangs; 8 predictions at once",
                     f"{sorted({s for s, _ in answers})} within {max(t for _, t in answers):.1f} s; /healthz slowest "
                     f"{worst * 1000:.0f} ms", "503 within 10 s; /healthz within 1 s", met))
        ok &= met
    finally:
        loadtest.stop_server(server)
        backend.shutdown()

    ok &= platform_attacks(rows)
    ok &= small_attacks(rows)
    print("| attack | result | target | met |\n|---|---|---|---|")
    for attack, result, target, met in rows:
        print(f"| {attack} | {result} | {target} | {'yes' if met else 'NO'} |")
    return 0 if ok else 1


def header_bombs():
    """{name: bytes} of files whose structure, not their pixels, is the attack (each close to 10 MB, or tiny)."""
    fill = b"\xff\xd8" + b"\xff" * (10 * 2**20 - 4096) + image_bytes("JPEG")[2:]
    skinny = io.BytesIO()
    Image.new("I;16", (25_000_000, 1)).save(skinny, format="PNG")
    return {"10 MB of JPEG fill bytes": fill, "PNG of 830,000 empty chunks": loadtest.png_with_empty_chunks(830_000),
            "GIF of 4.5 M one-byte comment blocks": loadtest.gif_with_tiny_comment_blocks(4_500_000),
            "25,000,000 x 1 16-bit PNG": skinny.getvalue()}


def structure_attacks(server, port, rows):
    """Scan bombs in parallel, header bombs, early 413s and an explanation flood; appends rows, True when all met."""
    ok = True
    body, ctype = loadtest.multipart({}, [("file", f"bomb{i}.jpg", loadtest.scan_bomb()) for i in range(8)])
    answers, probes = loadtest.probe_during(port, lambda: post_status(port, body, ctype), 8, seconds=4, every=0.25)
    met = len(answers) == 8 and all(s == 422 and t < 10 for s, t in answers) and all(
        s == 200 and t < 1 for s, t in probes)
    rows.append((f"8 requests at once, each 8 scan bombs ({len(body) / 2**20:.1f} MB: 257 kB progressive JPEGs)",
                 f"{sorted({s for s, _ in answers})} within {max(t for _, t in answers):.2f} s; /healthz slowest "
                 f"{max(t for _, t in probes) * 1000:.0f} ms", "4xx within 10 s; /healthz within 1 s (was 90 s out)",
                 met))
    ok &= met

    for name, data in header_bombs().items():
        (status, seconds, _), before, peak, _ = peak_rss_during(server, lambda data=data: post_files(port, [data]))
        met = status in (413, 415, 422) and seconds < 2 and peak - before < 300
        rows.append((f"{name} ({len(data) / 1024:.0f} kB)", f"{status} in {seconds * 1000:.0f} ms, RSS peak "
                     f"{peak - before:+.0f} MiB", "4xx; < 2 s; peak < +300 MiB", met))
        ok &= met

    over = b"x" * (10 * 2**20 + 32 * 1024)  # past MAX_CONTENT_LENGTH but within what nginx lets through
    good, good_type = loadtest.multipart({}, [("file", "a.png", image_bytes())])
    pairs = [(loadtest.request("POST", port, "/api/predict", over, {"Host": "localhost"})[0],
              loadtest.request("POST", port, "/api/predict", good, {"Content-Type": good_type, "Host": "localhost"})[0])
             for _ in range(100)]
    met = all(first == 413 and second == 200 for first, second in pairs)
    rows.append(("100 x (an early 413, then an ordinary POST)", f"413s {sum(a == 413 for a, _ in pairs)}, then 200s "
                 f"{sum(b == 200 for _, b in pairs)}, 502s {sum(b == 502 for _, b in pairs)}", "0 x 502", met))
    ok &= met

    token, cookie = form_token(port)
    body, ctype = loadtest.multipart({"csrf_token": token}, [("file", "cat.png", EXAMPLE)])  # noise would be unknown,
    _, page = loadtest.request("POST", port, "/", body, {"Content-Type": ctype, "Host": "localhost", "Cookie": cookie})
    link = re.search(r'class="explain-link" href="([^"]+)"', page.decode()).group(1).replace("&amp;", "&")  # unexplained
    statuses = []

    def flood():
        statuses.extend(loadtest.request("GET", port, link, None, {"Host": "localhost"})[0] for _ in range(5))

    def explain_flood():
        threads = [threading.Thread(target=flood) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)

    _, before, peak, after = peak_rss_during(server, explain_flood)
    met = set(statuses) <= {200, 503} and 200 in statuses and peak - before < 100
    rows.append(("100 explanations, 20 at once (every web worker asked)", f"200s {statuses.count(200)}, 503s "
                 f"{statuses.count(503)}; server RSS peak {peak - before:+.0f} MiB", "200 or 503; peak < +100 MiB "
                 "(was +700 MiB per worker)", met))
    return ok & met


def upload_flood(port, rows):
    """One client's 8 form posts of 32 images each fill the uploads folder; another client's result keeps its link."""
    pictures = [("file", f"p{i}.png", image_bytes("PNG", size=(32, 32), seed=i)) for i in range(32)]
    statuses = []
    for _ in range(8):
        statuses.append(form_post(port, pictures, {"X-Forwarded-For": "198.51.100.1"})[0])
    status, page = form_post(port, [("file", "cat.png", EXAMPLE)], {"X-Forwarded-For": "198.51.100.2"})
    linked = 'class="explain-link"' in page
    met = set(statuses) == {200} and status == 200 and linked
    rows.append(("one client's 8 form posts of 32 images (256 results, past the 250 kept), then another client's",
                 f"flood {sorted(set(statuses))}; the other's result {status}, explanation link "
                 f"{'kept' if linked else 'MISSING'}", "the other client's result keeps its stored image and link "
                 "(was: none for 600 s)", met))
    return met


def form_post(port, files, headers):
    """(status, page) of one form post with its CSRF token, as the client the headers name."""
    token, cookie = form_token(port)
    body, ctype = loadtest.multipart({"csrf_token": token}, files)
    status, page = loadtest.request("POST", port, "/", body, {"Content-Type": ctype, "Host": "localhost",
                                                             "Cookie": cookie, **headers})
    return status, page.decode(errors="replace")


SHIPPED = Path(loadtest.REPO) / "model" / "cifar10_cnn_int8.tflite"


def stage_version(root, number, meta_change=None, sparse_bytes=None):
    """MODEL_DIR/cnn/<number> with the shipped int8 model, written beside and renamed in (as an operator rolls out);
    meta_change edits its sidecar; sparse_bytes replaces the model by a sparse file of that size."""
    staging = root / f".staging-{number}"
    staging.mkdir(parents=True)
    meta = json.loads(SHIPPED.with_suffix(".json").read_text())
    (staging / SHIPPED.with_suffix(".json").name).write_text(json.dumps({**meta, **(meta_change or {})}))
    if sparse_bytes:
        with open(staging / SHIPPED.name, "wb") as f:
            f.truncate(sparse_bytes)
    else:
        shutil.copy(SHIPPED, staging / SHIPPED.name)
    (root / "cnn").mkdir(exist_ok=True)
    os.rename(staging, root / "cnn" / str(number))
    return root / "cnn" / str(number)


def predict_version(port):
    """(status, served version or None) of one /api/predict of a small PNG."""
    body, ctype = loadtest.multipart({}, [("file", "a.png", image_bytes("PNG", size=(32, 32)))])
    try:
        status, answer = loadtest.request("POST", port, "/api/predict", body, {"Content-Type": ctype,
                                                                             "Host": "localhost"})
    except OSError:
        return None, None
    return status, json.loads(answer)["model"]["served_version"] if status == 200 else None


def under_load(port, action, seconds_after, clients=4):
    """Run action() while `clients` threads predict, and keep them going seconds_after more; [(status, version)]."""
    answers, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            answers.append(predict_version(port))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(1)
    action()
    time.sleep(seconds_after)
    stop.set()
    for t in threads:
        t.join(60)
    return answers


def failures(answers):
    """How many answers were not a 200 (5xx, or no answer at all)."""
    return sum(status != 200 for status, _ in answers)


def tally(answers):
    """'200: 900, 503: 2' of the answers' statuses."""
    return ", ".join(f"{k}: {v}" for k, v in sorted(Counter(status for status, _ in answers).items(), key=str))


def worker_pids(launcher):
    """The gunicorn workers under the make serve launcher."""
    def children(pid):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(c) for c in f.read().split()]
        except OSError:
            return []

    masters = [p for p in children(launcher.pid) if b"gunicorn" in Path(f"/proc/{p}/cmdline").read_bytes()]
    return sorted(w for m in masters for w in children(m))


def wait_serving(port, seconds):
    """Seconds until a prediction answers 200 (None if not within `seconds`)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if predict_version(port)[0] == 200:
            return time.monotonic() - started
        time.sleep(0.25)
    return None


def platform_attacks(rows):
    """A MODEL_DIR under make serve (2 workers): odd folders, a huge version, killed workers, a bad sidecar, a
    rollback by mv, every version moved away, invented methods; then cp over a MODEL_PATH file under load."""
    ok, root = True, Path(tempfile.mkdtemp(prefix="cifarlab-models-"))
    stage_version(root, 1)
    server, port = start_stack({"MODEL_DIR": str(root), "SERVING_MODEL_NAME": "cnn", "MODEL_POLL_SECONDS": "1",
                                "WEB_WORKERS": "2", "WEB_THREADS": "4", "GRADCAM": "false"})
    try:
        for name in ("\u00b2", "01", "\u0663"):  # isdigit() accepts them; int() refuses or misreads them
            (root / "cnn" / name).mkdir()
        stage_version(root, 2, sparse_bytes=64 * 2**30)  # 64 GiB of holes as the highest version
        time.sleep(3)
        before = worker_pids(server)
        for pid in before:
            os.kill(pid, signal.SIGKILL)  # gunicorn boots new workers, as after max_requests or a crash
        back = wait_serving(port, 90)
        after = [predict_version(port) for _ in range(20)]
        _, status_body = loadtest.request("GET", port, "/v1/models/cnn", None, {"Host": "localhost"})
        message = {v["version"]: v for v in json.loads(status_body)["model_version_status"]}.get("2", {}).get(
            "status", {}).get("error_message", "")
        met = back is not None and all(a == (200, 1) for a in after) and server.poll() is None and \
            str(root) not in status_body.decode() and message.startswith("MODEL_DIR/cnn/2/")
        rows.append(("folders ², 01, ٣ and a 64 GiB sparse .tflite as version 2; then every worker killed",
                     f"serving again in {back or 0:.1f} s, {sum(a == (200, 1) for a in after)}/20 from version 1; "
                     f"version 2 `END`: \"{message[:60]}...\"", "new workers boot, version 1 serves, no server path "
                     "shown (was: gunicorn halted, service down)", met))
        ok &= met

        answers = under_load(port, lambda: stage_version(root, 3, {"ood": {"score": "energy", "threshold": "high"}}),
                             4)
        met = failures(answers) == 0 and {v for _, v in answers[-20:]} == {1}
        rows.append(('a version whose sidecar says ood.threshold "high", rolled out under 4 clients',
                     f"{tally(answers)}; last 20 from version {sorted({v for _, v in answers[-20:]}, key=str)}",
                     "0 x 5xx, the old version serves (was: 1,435 of 1,636 x 500)", met))
        ok &= met

        stage_version(root, 4)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and {predict_version(port)[1] for _ in range(10)} != {4}:
            time.sleep(0.5)
        answers = under_load(port, lambda: os.rename(root / "cnn" / "4", root / "cnn" / ".4-bad"), 4)
        met = failures(answers) == 0 and {v for _, v in answers[-20:]} == {1}
        rows.append(("rollback as documented (`mv 4 .4-bad`) under 4 clients", f"{tally(answers)}; last 20 from "
                     f"version {sorted({v for _, v in answers[-20:]}, key=str)}", "0 x 5xx (was: 40 of 40 x 500)",
                     met))
        ok &= met

        os.rename(root / "cnn" / "1", root / "cnn" / ".1-away")
        time.sleep(3)
        pages = {path: loadtest.request("GET", port, path, None, {"Host": "localhost"})[0]
                 for path in ("/", "/api", "/no-such-page", "/readyz")}
        refused = predict_version(port)[0]
        os.rename(root / "cnn" / ".1-away", root / "cnn" / "1")
        back = wait_serving(port, 30)
        met = pages == {"/": 200, "/api": 200, "/no-such-page": 404, "/readyz": 503} and refused == 503 and \
            back is not None
        rows.append(("every version moved away, then moved back", f"{', '.join(f'{p} {s}' for p, s in pages.items())}"
                     f", predict {refused}; serving {back or 0:.1f} s after the move back", "pages work, 503 not "
                     "ready, back by itself (was: every page 500, /readyz 404)", met))
        ok &= met

        ok &= method_flood(port, rows)
    finally:
        loadtest.stop_server(server)
        shutil.rmtree(root, ignore_errors=True)
    return ok & copy_over_served_file(rows)


def series(port):
    """(cifarlab_http_requests_total series, bytes) of one /metrics scrape."""
    _, text = loadtest.request("GET", port, "/metrics", None, {"Host": "localhost"})
    return sum(line.startswith("cifarlab_http_requests_total{") for line in text.decode().splitlines()), len(text)


def method_flood(port, rows):
    """2,000 requests, each with an HTTP method of its own: /metrics must not grow a series per method."""
    before, size_before = series(port)
    for i in range(2000):
        method = "X" + "".join(chr(ord("A") + int(d)) for d in str(i))  # XA, XB, ... XCAAA: tokens nginx passes
        loadtest.request(method, port, "/healthz", None, {"Host": "localhost"})
    after, size_after = series(port)
    met = after - before <= 4
    rows.append(("2,000 requests, each with a method of its own", f"request series {before} -> {after}, scrape "
                 f"{size_before / 1024:.0f} -> {size_after / 1024:.0f} kB", "a few new series at most (was: one "
                 "per method, 42,440 series, 4 MB a scrape)", met))
    return met


def copy_over_served_file(rows):
    """MODEL_PATH mode, 2 workers, 4 clients: `cp` of identical bytes over the served .tflite, 20 times."""
    folder = Path(tempfile.mkdtemp(prefix="cifarlab-served-"))
    served = folder / SHIPPED.name
    shutil.copy(SHIPPED, served)
    shutil.copy(SHIPPED.with_suffix(".json"), folder)
    server, port = start_stack({"MODEL_PATH": str(served), "WEB_WORKERS": "2", "WEB_THREADS": "4",
                                "GRADCAM": "false"})
    try:
        workers = worker_pids(server)

        def copies():
            for _ in range(20):
                shutil.copyfile(SHIPPED, served)  # truncates the file in place, then writes it again
                time.sleep(0.2)

        answers = under_load(port, copies, 2)
        met = failures(answers) == 0 and worker_pids(server) == workers
        rows.append(("`cp` over the served .tflite 20 times (MODEL_PATH), under 4 clients",
                     f"{tally(answers)}; workers {'the same' if worker_pids(server) == workers else 'REPLACED'}",
                     "0 x 5xx, no worker dies (was: 11 SIGBUS, 37 x 502)", met))
    finally:
        loadtest.stop_server(server)
        shutil.rmtree(folder, ignore_errors=True)
    return met


def small_attacks(rows):
    """The smaller ones, on the default stack with its request log kept."""
    log = Path(tempfile.mkdtemp(prefix="cifarlab-log-")) / "serve.log"
    server, port = start_stack({"LOG_LEVEL": "info"}, log_path=str(log))
    ok = True
    try:
        def check(attack, result, target, met):
            nonlocal ok
            rows.append((attack, result, target, met))
            ok &= met

        status, _ = loadtest.request("GET", port, "/nothing%0a[2026-12-05]%20forged", None, {"Host": "localhost"})
        time.sleep(0.5)
        forged = [line for line in log.read_text().splitlines() if line.startswith("[2026-12-05] forged")]
        check("`%0a` in a URL, to forge a line in the request log", f"{status}; forged lines {len(forged)}",
              "0 forged lines", not forged)

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        answers = {}
        for method, path in (("GET", "/v1/models/%2F/metadata"), ("GET", "/v1/models/cifar10:predict"),
                             ("TRACE", "/"), ("OPTIONS", "/"), ("OPTIONS", "/v1/models/cifar10:predict")):
            conn.request(method, path, headers={"Host": "localhost"})
            reply = conn.getresponse()
            reply.read()
            answers[method, path] = (reply.status, reply.getheader("Content-Type") or "",
                                     set((reply.getheader("Allow") or "").split(", ")) - {""})
            if reply.getheader("Connection") == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()
        status, ctype, _ = answers["GET", "/v1/models/%2F/metadata"]
        check("`GET /v1/models/%2F/metadata`", f"{status} {ctype.split(';')[0]}", "a JSON 4xx (was: an HTML 308)",
              400 <= status < 500 and ctype.startswith("application/json"))
        status, _, allow = answers["GET", "/v1/models/cifar10:predict"]
        _, _, options = answers["OPTIONS", "/v1/models/cifar10:predict"]
        check("`GET` and `OPTIONS` on `/v1/models/cifar10:predict`", f"GET {status}, Allow {', '.join(sorted(allow))};"
              f" OPTIONS Allow {', '.join(sorted(options))}", "405 naming POST; no GET advertised (was: 404; GET)",
              status == 405 and allow == options == {"OPTIONS", "POST"})
        status, _, allow = answers["TRACE", "/"]
        _, _, app_allow = answers["OPTIONS", "/"]
        check("`TRACE /` (answered by nginx itself)", f"{status}, Allow {', '.join(sorted(allow)) or 'none'}",
              "405 with the app's Allow (was: no Allow)", status == 405 and allow == app_allow)

        field, field_type = loadtest.multipart({"note": "x" * (2 * 2**20)}, [("file", "a.png", image_bytes())])
        good, good_type = loadtest.multipart({}, [("file", "a.png", image_bytes())])
        pairs = [(loadtest.request("POST", port, "/", field, {"Content-Type": field_type, "Host": "localhost"})[0],
                  loadtest.request("POST", port, "/api/predict", good, {"Content-Type": good_type,
                                                                        "Host": "localhost"})[0]) for _ in range(10)]
        check("10 x (a form with a 2 MB text field, then an ordinary POST)", f"first {sorted({a for a, _ in pairs})}"
              f", then 200s {sum(b == 200 for _, b in pairs)}, 502s {sum(b == 502 for _, b in pairs)}",
              "0 x 502 (was: 10 of 10)", all(b == 200 for _, b in pairs))
    finally:
        loadtest.stop_server(server)
    return ok


def post_status(port, body, ctype):
    """The status of one /api/predict with this multipart body."""
    return loadtest.request("POST", port, "/api/predict", body, {"Content-Type": ctype, "Host": "localhost"})[0]


def post_files(port, files):
    """(status, seconds, bytes) of one /api/predict with these file contents."""
    body, ctype = loadtest.multipart({}, [("file", f"f{i}", data) for i, data in enumerate(files)])
    started = time.perf_counter()
    status = post_status(port, body, ctype)
    return status, time.perf_counter() - started, len(body)


def form_token(port):
    """(csrf token, session cookie) from a GET of the form."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/")
    response = conn.getresponse()
    html = response.read().decode()
    cookie = (response.getheader("Set-Cookie") or "").split(";", 1)[0]
    conn.close()
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1), cookie


if __name__ == "__main__":
    sys.exit(main())
