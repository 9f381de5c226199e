"""Load test: the production server (gunicorn) under 16 clients of mixed valid and hostile uploads.

    python bench_load.py                 # 16 clients, 60 s, loopback only; stops by itself
    python bench_load.py --clients 4 --seconds 10

Prints requests, statuses, unexpected errors, p50/p99 latency, server RSS (idle, after a warm-up, end), and the
uploads/ folder (a temporary one with a small retention cap) in files and bytes.
"""
import argparse
import http.client
import io
import os
import re
import sys
import tempfile
import time

from PIL import Image

from cifarlab import loadtest
from tests.conftest import image_bytes


def blank_png(width, height):
    """A PNG of one flat colour: tiny file, many pixels."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, format="PNG")
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
    args = p.parse_args(argv)

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
