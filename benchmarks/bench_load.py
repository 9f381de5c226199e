"""Load test: the production server (gunicorn) under 16 clients of mixed valid and hostile uploads; or attacks.

    python benchmarks/bench_load.py                 # 16 clients, 60 s, loopback only; stops by itself
    python benchmarks/bench_load.py --clients 4 --seconds 10
    python benchmarks/bench_load.py --attacks       # attacks on `make serve`'s stack (nginx + gunicorn), about 4 min

Prints requests, statuses, unexpected errors, p50/p99 latency, server RSS (idle, after a warm-up, end), and the
uploads/ folder (a temporary one with a small retention cap) in files and bytes. With --attacks: slow clients,
decompression-bomb uploads, a base64 CPU bomb, parallel scan bombs, header bombs, early 413s, an explanation flood
and a hanging inference backend, each with what it must not do.
"""
import argparse
import base64
import http.client
import io
import json
import os
import re
import sys
import tempfile
import threading
import time

from PIL import Image

import loadtest  # beside this script: its folder is on sys.path when it runs
from loadtest import image_bytes


def blank_png(width, height, mode="L"):
    """A PNG of one flat colour: tiny file, many pixels."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128 if mode == "L" else 0).save(buffer, format="PNG")
    return buffer.getvalue()


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


def start_stack(env):
    """`python -m cifarlab.web.serve` (nginx + gunicorn) on a free port; (process, port)."""
    port = loadtest.free_port()
    env = {"BIND": f"127.0.0.1:{port}", "SECRET_KEY": os.urandom(16).hex(), "LOG_LEVEL": "warning",
           "UPLOAD_FOLDER": tempfile.mkdtemp(prefix="cifarlab-attack-"), **env}
    return loadtest.start_server(loadtest.python_command("-m", "cifarlab.web.serve"), port, env,
                                 headers={"Host": "localhost"}, timeout=180), port


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
    server, port = start_stack({})
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
    body, ctype = loadtest.multipart({"csrf_token": token}, [("file", "a.png", image_bytes("PNG", size=(64, 64)))])
    _, page = loadtest.request("POST", port, "/", body, {"Content-Type": ctype, "Host": "localhost", "Cookie": cookie})
    link = re.search(r'class="explain-link" href="([^"]+)"', page.decode()).group(1).replace("&amp;", "&")
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
