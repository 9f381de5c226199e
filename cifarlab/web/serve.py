"""The production stack of `make serve`: nginx (buffering, timeouts, body limit) in front of gunicorn on loopback.

    python -m cifarlab.web.serve             # BIND=127.0.0.1:8000 by default (make serve)
    BIND=0.0.0.0:8080 TRUSTED_HOSTS=classify.example.org python -m cifarlab.web.serve

Runs both in the foreground; Ctrl-C or SIGTERM stops both. A bad setting or model file: one line, exit 2.
"""
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import api, errors, explain, settings
from .. import REPO, modeldir, modelfile

TEMPLATE = REPO / "deploy" / "nginx.conf"
MULTIPART_SLACK = 64 * 1024  # bytes nginx allows above MAX_CONTENT_LENGTH for multipart framing


def free_port():
    """An unused TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port, path, headers=None, timeout=5):
    """The HTTP status of GET path on 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        return conn.getresponse().status
    finally:
        conn.close()


def wait_ready(proc, port, path, timeout, headers=None, every=0.1):
    """Poll path on port until it answers 200 (True); False when the process exits or time runs out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if http_status(port, path, headers) == 200:
                return True
        except OSError:
            pass  # not listening yet
        time.sleep(every)
    return False


def nginx_config(listen, upstream_port, run_dir, max_content_length, proxy_timeout=60.0, user=None,
                 trusted_proxies=()):
    """nginx.conf text from the repository's template."""
    real_ip = "".join(f"        set_real_ip_from {network};\n" for network in trusted_proxies)
    if real_ip:  # the client is the last address in X-Forwarded-For that is not a trusted proxy
        real_ip += "        real_ip_header X-Forwarded-For;\n        real_ip_recursive on;\n"
    values = {"@REAL_IP@": real_ip.rstrip("\n"), "@LISTEN@": listen, "@UPSTREAM@": str(upstream_port),
              "@RUN@": str(run_dir), "@ROOT@": str(REPO),
              "@MAX_BODY@": str(max_content_length + MULTIPART_SLACK), "@PROXY_TIMEOUT@": f"{proxy_timeout * 1000:.0f}ms",
              "@JSON_PATHS@": "|".join(api.JSON_PREFIXES), "@USER@": f"user {user};" if user else ""}
    text = TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace(name, value)
    return text


def nginx_user():
    """The unprivileged user nginx's worker runs as when started by root (None otherwise)."""
    if os.geteuid() != 0:
        return None
    for name in ("www-data", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    return None


def find_nginx():
    """Path of the nginx binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if os.path.exists(p)), None)


def stop(proc, sig=signal.SIGTERM, wait=20.0):
    """Send sig to a process and wait for it; kill it if it has not exited after `wait` seconds."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def shut_down(proxy, app_server, proxy_timeout):
    """Graceful, in order: nginx stops accepting and finishes the requests it has in flight (SIGQUIT), which needs
    gunicorn still answering; then gunicorn finishes its own and exits (SIGTERM, graceful_timeout)."""
    stop(proxy, signal.SIGQUIT, proxy_timeout + 5)
    stop(app_server, signal.SIGTERM, 30)


PREFLIGHT_DONE = "CIFARLAB_PREFLIGHT_DONE"  # set by make serve for its gunicorn: the app was checked once already


def checked_config():
    """(settings from the environment, the model's sidecar or None for a remote backend) after the quick checks and
    the full one (cifarlab.web.preflight, in a child process); one line and exit 2 when the app cannot start."""
    try:
        config = settings.current()
        meta = None if config["INFERENCE_URL"] else modelfile.preflight(modeldir.first_model_path(config))
    except (settings.ConfigError, modelfile.ModelFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if not os.environ.get(PREFLIGHT_DONE):
        full = subprocess.run([sys.executable, "-m", "cifarlab.web.preflight"], cwd=REPO, capture_output=True,
                              text=True)
        if full.returncode != 0:
            lines = full.stderr.strip().splitlines()
            print(next((line for line in lines if line.startswith("error:")),
                       f"error: the app could not start: {lines[-1] if lines else f'exit {full.returncode}'}"),
                  file=sys.stderr)
            sys.exit(2)
    return config, meta


def prepare_run_dir(listen, upstream_port, config, meta):
    """A fresh folder with nginx.conf, its temp folders and the error pages it serves; returns its path."""
    run_dir = Path(tempfile.mkdtemp(prefix="cifarlab-serve-"))
    user = nginx_user()
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run_dir / name).mkdir()
        if user:
            shutil.chown(run_dir / name, user)
    pages = run_dir / ".proxy-errors"
    pages.mkdir()
    for name, text in errors.proxy_pages(config["MAX_CONTENT_LENGTH"], meta).items():
        (pages / name).write_text(text)
    for path in (run_dir, pages, *pages.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the unprivileged worker
    (run_dir / "nginx.conf").write_text(nginx_config(listen, upstream_port, run_dir, config["MAX_CONTENT_LENGTH"],
                                                     config["PROXY_TIMEOUT"], user, config["TRUSTED_PROXIES"]))
    return run_dir


def start_explain_worker(config, meta, run_dir, env):
    """The server's one explain worker (None when the model is not explainable or EXPLAIN_SOCKET is set already),
    on a socket in a folder only this user can enter; env gets EXPLAIN_SOCKET for the web workers."""
    if config["EXPLAIN_SOCKET"] or meta is None or \
            explain.explainable(config, meta, modeldir.first_model_path(config)) is None:
        return None
    folder = run_dir / "explain"
    folder.mkdir(mode=0o700)
    env["EXPLAIN_SOCKET"] = str(folder / "explain.sock")
    return subprocess.Popen([sys.executable, "-m", "cifarlab.web.explain_worker"], env=env, cwd=REPO,
                            start_new_session=True)


def wait_for_explanations(explainer, socket_path, timeout):
    """Wait until the explain worker listens (the first explanation link then works), exits, or timeout passes."""
    give_up = time.monotonic() + timeout
    while explainer is not None and explainer.poll() is None and time.monotonic() < give_up:
        if os.path.exists(socket_path):
            return
        time.sleep(0.1)


def start_gunicorn(env):
    """gunicorn in its own session: a Ctrl-C or a signal to this process group reaches only this launcher, which stops
    everything in order."""
    return subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")],
                            env=env, cwd=REPO, start_new_session=True)


class Backoff:
    """Seconds to wait before the next restart: doubling from `first` up to `longest`, back to `first` after
    `calm` seconds without one."""

    def __init__(self, first=1.0, longest=30.0, calm=60.0):
        self.first, self.longest, self.calm = first, longest, calm
        self.wait, self.last = 0.0, None

    def next(self, now):
        calm = self.last is None or now - self.last > self.calm
        self.wait = self.first if calm else min(self.longest, self.wait * 2)
        self.last = now
        return self.wait


def main():
    config, meta = checked_config()
    nginx = find_nginx()
    if nginx is None:
        print("error: nginx is not installed (Debian/Ubuntu: apt-get install nginx-light)", file=sys.stderr)
        return 2
    listen = config["BIND"]
    upstream = free_port()
    run_dir = prepare_run_dir(listen, upstream, config, meta)

    (run_dir / "metrics").mkdir()  # the workers' metric samples (prometheus-client multiprocess), removed with run_dir
    env = {**os.environ, "BIND": f"127.0.0.1:{upstream}", "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
           PREFLIGHT_DONE: "1", "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics")}
    explainer = start_explain_worker(config, meta, run_dir, env)
    app_server = start_gunicorn(env)
    proxy = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds through the finally below
    try:
        if not wait_ready(app_server, upstream, "/healthz", 180, {"Host": "localhost"}):
            return app_server.poll() or 1
        wait_for_explanations(explainer, env.get("EXPLAIN_SOCKET"), 120)
        proxy = subprocess.Popen([nginx, "-p", str(run_dir), "-c", str(run_dir / "nginx.conf"), "-e", "stderr"],
                                 start_new_session=True)
        print(f"serving on http://{listen} (nginx -> gunicorn on 127.0.0.1:{upstream})", file=sys.stderr, flush=True)
        backoff = Backoff()
        while proxy.poll() is None:
            if app_server.poll() is not None:  # gunicorn halts when a new worker cannot boot: start it again
                wait = backoff.next(time.monotonic())
                print(f"warning: gunicorn exited ({app_server.returncode}); starting it again in {wait:g} s",
                      file=sys.stderr, flush=True)
                time.sleep(wait)
                app_server = start_gunicorn(env)
            time.sleep(0.5)
        return proxy.poll() or 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the shutdown short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        shut_down(proxy, app_server, config["PROXY_TIMEOUT"])
        stop(explainer, wait=5)
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
