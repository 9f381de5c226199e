"""gunicorn settings (`make serve` puts nginx in front): small CPU box, model loaded in each worker after the fork."""
import multiprocessing
import os
import secrets
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # gunicorn's chdir has not run yet
from cifarlab.web import settings  # noqa: E402  (light: no Flask app, no model)

try:
    launcher = {**settings.defaults(), **settings.from_environ()}
except settings.ConfigError as exc:  # one line and exit 2, as for every other bad setting
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
bind = launcher["BIND"]
wsgi_app = "app:create_app()"
worker_class = "gthread"
# One process per core: TensorFlow inference holds the GIL only briefly, but Python request handling
# (decoding, templating) does, so processes scale it; a few threads per worker keep I/O waits overlapped.
workers = launcher["WEB_WORKERS"] or multiprocessing.cpu_count()
threads = launcher["WEB_THREADS"]
preload_app = False  # TensorFlow's runtime must not be forked: each worker builds the app (and model) itself
timeout = 60  # seconds a worker may be silent before it is replaced
graceful_timeout = 20
max_requests = 2000  # recycle a worker now and then: heap fragmentation cannot pile up
max_requests_jitter = 200  # ... and the workers do not all restart at once
accesslog = None  # the app logs method, path, status and latency itself
# gunicorn 27's control socket defaults to one path per user ($XDG_RUNTIME_DIR/gunicorn.ctl), which each new instance
# takes over from the last; nothing here uses gunicornc, so none is opened
control_socket_disable = True
loglevel = os.environ.get("LOG_LEVEL", "info")


if not os.environ.get("SECRET_KEY"):  # workers must share one key, or a CSRF token from one fails on another
    os.environ["SECRET_KEY"] = secrets.token_hex(32)
    print("warning: SECRET_KEY is not set: using a random key for this server run (forms served before a "
          "restart will ask to be sent again). Set SECRET_KEY in the environment.", file=sys.stderr)

# /metrics sums every worker's samples from files in this folder (prometheus-client's multiprocess mode); make serve
# sets it to a folder of its run, gunicorn alone gets one here; either way it starts empty and is removed at exit
OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cifarlab-metrics-")


def on_starting(server):
    """Refuse to start on a bad setting or model file with one line and exit code 2, before any worker boots."""
    from cifarlab.web.serve import checked_config

    checked_config()


def post_fork(server, worker):
    """Give each worker an equal share of the cores for TensorFlow, before TensorFlow starts."""
    share = str(max(1, multiprocessing.cpu_count() // workers))
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, share)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def child_exit(server, worker):
    """A dead worker's live gauges (requests in flight) leave the sums; its counters stay counted, in one merged file."""
    from cifarlab.web.metrics import fold_dead_worker

    fold_dead_worker(worker.pid, os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_exit(server):
    if OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
