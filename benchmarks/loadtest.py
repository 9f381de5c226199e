"""Loopback load generation for the benchmarks and tests: start a server, post uploads and attacks, summarise latencies."""
import http.client
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from cifarlab import REPO  # servers start here, as under make serve, wherever a benchmark runs from
from cifarlab.web.serve import free_port, wait_ready  # noqa: F401  (benchmarks and tests import them from here)


def image_bytes(fmt="PNG", mode="RGB", size=(32, 32), seed=0, **save_args):
    """Encode a random image in the given format and mode."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def start_server(command, port, env=None, ready_path="/healthz", timeout=120, log_path=os.devnull, headers=None):
    """Start a server process (own process group) in the repository and wait until ready_path answers 200."""
    log = open(log_path, "ab")
    proc = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                            cwd=REPO, start_new_session=True)
    if wait_ready(proc, port, ready_path, timeout, headers, every=0.25):
        return proc
    if proc.poll() is not None:
        raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(command)} (log: {log_path})")
    stop_server(proc)
    raise RuntimeError(f"server not ready after {timeout} s: {' '.join(command)}")


def stop_server(proc):
    """Terminate a server started by start_server, with its workers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def process_tree_rss_mb(pid):
    """{pid: resident MiB} for a process and all its descendants (Linux /proc)."""
    result, todo = {}, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            result[p] = rss / 1024  # kB -> MiB
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            continue
    return result


def progressive_jpeg(side=64, repeats=0):
    """A progressive JPEG; with repeats, its last scan written that many more times (each one a decoding pass)."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", progressive=True, quality=30)
    data = buffer.getvalue()
    last = data.rfind(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + b"\xff\xd9"


def scan_bomb(size=257_000):
    """A progressive JPEG of `size` bytes that repeats its last scan (each repeat one more full decoding pass)."""
    base = progressive_jpeg()
    scan = len(base) - base.rfind(b"\xff\xda") - 2
    return progressive_jpeg(repeats=(size - len(base)) // scan)


def png_with_empty_chunks(count):
    """A valid 8x8 PNG with `count` empty ancillary chunks before its image data."""
    raw = image_bytes("PNG", size=(8, 8))
    empty = struct.pack(">I4s", 0, b"teXt") + struct.pack(">I", zlib.crc32(b"teXt"))
    head = raw.index(b"IDAT") - 4
    return raw[:head] + empty * count + raw[head:]


def gif_with_tiny_comment_blocks(count):
    """A valid GIF with a comment extension of `count` one-byte sub-blocks."""
    raw = image_bytes("GIF", size=(8, 8))
    descriptor = 13 + (3 << ((raw[10] & 7) + 1))  # after the global colour table: the first image descriptor
    return raw[:descriptor] + b"\x21\xfe" + b"\x01x" * count + b"\x00" + raw[descriptor:]


def multipart(fields, files):
    """(body, content type) for form fields {name: value} and files [(field, filename, bytes)]."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for field, filename, data in files:
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(method, port, path, body=None, headers=None, timeout=60):
    """(status, body bytes) of one HTTP request to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def run_clients(n_clients, seconds, make_request):
    """Call make_request(client_id, rng) from n_clients threads for `seconds`; [(ok, status, latency s, kind)]."""
    results, lock = [], threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(i):
        rng = np.random.default_rng(i)
        local = []
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                ok, status, kind = make_request(i, rng)
            except OSError as exc:
                ok, status, kind = False, type(exc).__name__, "connection"
            local.append((ok, status, time.perf_counter() - started, kind))
        with lock:
            results.extend(local)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    return results


def summarise(results, seconds):
    """requests, req/s, p50/p99 ms, unexpected count and status counts of run_clients results."""
    latencies = np.array([r[2] for r in results]) * 1000 if results else np.array([np.nan])
    statuses = {}
    for _, status, _, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {"requests": len(results), "rps": len(results) / seconds,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "unexpected": sum(1 for ok, *_ in results if not ok), "statuses": statuses}


def python_command(*args):
    """The current interpreter running args (so a venv's packages are used)."""
    return [sys.executable, *args]


def slow_clients(port, connections, seconds, drip_every=2.0):
    """Hold `connections` slowloris connections for `seconds`: half drip header bytes, half drip a promised body.

    Each sends one byte every `drip_every` s and reconnects when the server hangs up. Returns connections made.
    """
    stop_at = time.monotonic() + seconds
    made, lock = [0], threading.Lock()

    def attacker(i):
        head = (b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\n" +
                (b"Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n" if i % 2 else b""))
        drip = b"x" if i % 2 else b"X-Slow: 1\r\n" * 1000
        while time.monotonic() < stop_at:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    with lock:
                        made[0] += 1
                    s.sendall(head)
                    for byte in drip:
                        if time.monotonic() >= stop_at:
                            return
                        s.sendall(bytes([byte]))
                        time.sleep(drip_every)
            except OSError:
                time.sleep(0.2)  # the server hung up: come back, as an attacker would

    threads = [threading.Thread(target=attacker, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    return threads, made


def probe(port, path, seconds, every, timeout=5.0):
    """GET path every `every` s for `seconds`; [(status or error name, latency s)]."""
    results, stop_at = [], time.monotonic() + seconds
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        try:
            status = request("GET", port, path, headers={"Host": "localhost"}, timeout=timeout)[0]
        except OSError as exc:
            status = type(exc).__name__
        results.append((status, time.perf_counter() - started))
        time.sleep(max(0.0, every - (time.perf_counter() - started)))
    return results


def probe_during(port, send, clients, seconds, every, join_timeout=60):
    """Call send() from `clients` threads at once while /healthz is probed for `seconds` (loadtest.probe);
    ([(send's result, seconds)], probes)."""
    answers = []

    def timed():
        started = time.perf_counter()
        result = send()
        answers.append((result, time.perf_counter() - started))

    threads = [threading.Thread(target=timed) for _ in range(clients)]
    for thread in threads:
        thread.start()
    probes = probe(port, "/healthz", seconds=seconds, every=every)
    for thread in threads:
        thread.join(join_timeout)
    return answers, probes


class FakeBackend(BaseHTTPRequestHandler):
    """A TF-Serving-protocol backend that misbehaves as `self.server.mode` says (tests and bench_load)."""

    MODES = ("ok", "hang", "trickle", "garbage", "nan", "negative", "strings", "ragged", "not-normalised", "huge",
             "huge-integer", "bad-verdict", "error", "list-metadata")

    @classmethod
    def start(cls, mode="ok", port=0):
        """A threaded server on a loopback port (default: a free one), serving in a daemon thread; .mode, .hits, .answered."""
        server = ThreadingHTTPServer(("127.0.0.1", port), cls)
        server.daemon_threads = True
        server.mode, server.hits, server.answered = mode, 0, 0
        # poll often: shutdown() waits out one poll (0.5 s by default)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server

    def log_message(self, *args):
        pass

    def answer(self, body, status=200):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.server.hits += 1
        if self.server.mode == "list-metadata" and self.path.endswith("/metadata"):
            return self.answer([1, 2, 3])
        if self.path.endswith("/metadata"):
            return self.answer({"metadata": {"class_names": [f"class{i}" for i in range(10)], "version": "7"}})
        self.answer({"model_version_status": [{"state": "AVAILABLE"}]})

    def do_POST(self):
        self.server.hits += 1
        self.respond(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.server.answered += 1  # in full: a client that hung up first makes the last write raise

    def respond(self, request):
        """Answer one predict request as the mode says."""
        rows, named = len(request["instances"]), request.get("signature_name") == "verdicts"

        def predictions(row, **verdict):  # the row form, or the named-output form the "verdicts" signature asks for
            fields = {"ood_score": 0.9, "unsure": True, "unknown": False, **verdict}
            return [{"probabilities": row, **fields} if named else row] * rows

        mode = self.server.mode
        if mode == "hang":
            time.sleep(30)
        elif mode == "slow":  # a correct answer after 2 s
            time.sleep(2)
            self.answer({"predictions": predictions([0.1] * 10)})
        elif mode == "trickle":  # headers promptly, then one byte a second
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(30):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(1)
        elif mode == "garbage":
            self.answer(b"<html>not json</html>")
        elif mode == "nan":
            row = b"[NaN, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]"
            self.answer(b'{"predictions": [' + (b'{"probabilities": ' + row + b', "ood_score": 1, "unsure": true, '
                                                 b'"unknown": false}' if named else row) + b"]}")
        elif mode == "negative":
            self.answer({"predictions": predictions([-0.5, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])})
        elif mode == "strings":
            self.answer({"predictions": predictions(["0.1"] * 10)})
        elif mode == "ragged":
            self.answer({"predictions": predictions([0.5, 0.5])})
        elif mode == "not-normalised":
            self.answer({"predictions": predictions([0.5] * 10)})
        elif mode == "huge-integer":  # a 400-digit integer: no float holds it
            self.answer({"predictions": predictions([10 ** 400] + [0.1] * 9)})
        elif mode == "bad-verdict":
            self.answer({"predictions": predictions([0.1] * 10, ood_score="high", unknown="yes")})
        elif mode == "huge":
            self.answer({"predictions": predictions([0.1] * 10), "padding": "x" * 5_000_000})
        elif mode == "error":
            self.answer({"error": "boom"}, 500)
        else:
            self.answer({"predictions": predictions([0.1] * 10)})
