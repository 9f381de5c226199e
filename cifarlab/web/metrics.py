"""Prometheus metrics of the web app, served at /metrics; correct across gunicorn workers in multiprocess mode.

Under `make serve` each worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR (set, created and removed by
cifarlab.web.serve; gunicorn.conf.py's child_exit folds a dead worker's files in), and /metrics in any worker sums
them.
Without that variable (flask run, tests) the app's own registry holds this process's samples.
"""
import ipaddress
import os

from flask import abort, current_app, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.mmap_dict import MmapedDict

from .context import parts

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.012, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # images per forward pass
CONTENT_TYPE = CONTENT_TYPE_LATEST
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})  # any other counts as "other"


def fold_dead_worker(pid, folder):
    """A dead worker's live gauges leave the sums; its counters and histograms are added into one `<kind>_merged.db`
    and its own files removed, so the folder holds as many files as live workers (+2) however often workers are
    recycled. Called by gunicorn's master only. A scrape in the instant between the add and the removal may count
    that worker twice."""
    multiprocess.mark_process_dead(pid, folder)
    for kind in ("counter", "histogram"):
        dead = os.path.join(folder, f"{kind}_{pid}.db")
        if not os.path.exists(dead):
            continue
        merged = MmapedDict(os.path.join(folder, f"{kind}_merged.db"))
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
                total, _ = merged.read_value(key)
                merged.write_value(key, total + value, timestamp)
        finally:
            merged.close()
        os.remove(dead)


class Metrics:
    """The app's metrics; one object per app, registered in its own registry (or shared files when multiprocess)."""

    def __init__(self, multiproc_dir=None):
        self.multiproc_dir = multiproc_dir if multiproc_dir is not None else os.environ.get(MULTIPROC_ENV)
        self.registry = CollectorRegistry()
        own = None if self.multiproc_dir else self.registry  # multiprocess: samples go to files, read at scrape time
        self.requests = Counter("cifarlab_http_requests", "HTTP requests answered, by route and status",
                                ["method", "route", "status"], registry=own)
        self.latency = Histogram("cifarlab_http_request_duration_seconds", "Time from request to answer, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=own)
        self.in_flight = Gauge("cifarlab_http_requests_in_flight", "Requests being answered now",
                               multiprocess_mode="livesum", registry=own)
        self.images = Counter("cifarlab_images_classified", "Images classified, by model and version",
                              ["model", "version"], registry=own)
        self.verdicts = Counter("cifarlab_verdicts", "Predictions by verdict (known, unsure, unknown)",
                                ["model", "version", "verdict"], registry=own)
        self.predict_latency = Histogram("cifarlab_predict_duration_seconds", "Time of one request's forward pass "
                                         "(batching wait included), by model and version", ["model", "version"],
                                         buckets=LATENCY_BUCKETS, registry=own)
        self.flags = Counter("cifarlab_flags", "Answers users flagged, by the model and version that gave them",
                             ["model", "version"], registry=own)
        self.shadow = Counter("cifarlab_shadow_predictions", "Images a shadow canary also classified, by whether its "
                              "class agreed with the answer", ["model", "version", "agreed"], registry=own)
        self.refused = Counter("cifarlab_refused_uploads", "Images or requests refused, by reason",
                               ["reason"], registry=own)
        self.model_loads = Counter("cifarlab_model_loads", "Model versions loaded or refused, by model and outcome",
                                   ["model", "outcome"], registry=own)
        self.batch_size = Histogram("cifarlab_batch_size", "Images per forward pass (requests batched together)",
                                    ["model"], buckets=BATCH_BUCKETS, registry=own)
        if self.multiproc_dir:
            multiprocess.MultiProcessCollector(self.registry, path=self.multiproc_dir)

    def observe_request(self, method, route, status, seconds):
        """Count one answered request; a method outside METHODS is "other", so clients cannot add series."""
        self.requests.labels(method if method in METHODS else "other", route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_predictions(self, model, version, predictions, seconds):
        """Count a request's forward pass: its images, their verdicts and its time."""
        self.images.labels(model, version).inc(len(predictions))
        self.predict_latency.labels(model, version).observe(seconds)
        for prediction in predictions:
            self.verdicts.labels(model, version, prediction.verdict).inc()

    def observe_shadow(self, model, version, answers, shadowed):
        """Count a shadow canary's predictions by whether each class agrees with the answer given."""
        for answer, shadow in zip(answers, shadowed):
            self.shadow.labels(model, version, str(answer.label == shadow.label).lower()).inc()

    def observe_refused(self, reason):
        self.refused.labels(reason).inc()

    def observe_model_load(self, model, outcome):
        self.model_loads.labels(model, outcome).inc()

    def exposition(self):
        """The metrics in Prometheus's text format."""
        return generate_latest(self.registry)


def client_address(remote_addr, real_ip):
    """The client's address: nginx's X-Real-IP when the request came from a proxy on loopback, else the peer's."""
    try:
        peer = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return None
    if peer.is_loopback and real_ip:
        try:
            return ipaddress.ip_address(real_ip.strip())
        except ValueError:
            return None
    return peer


def allowed(networks, address):
    """True when address is in one of the networks (None: everyone)."""
    if networks is None:
        return True
    return address is not None and any(address in network for network in networks)


def init_app(app):
    """This process's counters, and /metrics to scrape them."""
    parts(app).metrics = Metrics()
    app.add_url_rule("/metrics", "metrics", scrape)


def scrape():
    """Prometheus's text format, to the clients METRICS_ALLOW lets in (loopback by default), 403 for others."""
    client = client_address(request.remote_addr, request.headers.get("X-Real-IP"))
    if not allowed(current_app.config["METRICS_ALLOW"], client):
        abort(403, "Metrics are served to the addresses in METRICS_ALLOW only (by default loopback).")
    return parts().metrics.exposition(), 200, {"Content-Type": CONTENT_TYPE}
