"""Loopback load generation for the benchmark scripts: start a server, post uploads, summarise latencies."""
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import numpy as np


def free_port():
    """An unused TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command, port, env=None, ready_path="/healthz", timeout=120, log_path=os.devnull):
    """Start a server process (own process group) and wait until ready_path answers 200."""
    log = open(log_path, "ab")
    proc = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(command)} (log: {log_path})")
        try:
            status, _ = request("GET", port, ready_path)
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.25)
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
