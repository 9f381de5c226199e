"""A classifier that asks a server speaking the TF Serving REST protocol (TF Serving, or another instance).

Every call has one overall deadline (a watchdog shuts the socket when it passes, so a backend that trickles bytes
cannot hold a thread longer), a cap on the answer's size, a cap on calls in flight, and a circuit breaker: after
a few failures in a row the front answers 503 at once for a while instead of waiting on a dead backend. Answers
are validated (shape, finite, 0..1, rows summing to 1). The backend's address appears in logs, never to users.
"""
import http.client
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import numpy as np

from ..errors import CifarlabError
from ..prediction import SERVING_FIELDS, Prediction
from ..ood import Detector
from ..sidecar import CIFAR10_CLASSES


class BackendUnavailable(CifarlabError):
    """The inference backend did not answer usefully; the web front answers 503. The message is for logs."""

    status = 503


class CircuitBreaker:
    """Opens after `failures` failed calls in a row; while open (for `cooldown` s) calls fail at once."""

    def __init__(self, failures=3, cooldown=15.0, clock=time.monotonic):
        self.failures, self.cooldown, self.clock = failures, cooldown, clock
        self.lock = threading.Lock()
        self.count, self.opened_at = 0, None

    def check(self):
        """Raise BackendUnavailable while open; after the cool-down one call is let through to try."""
        with self.lock:
            if self.opened_at is None:
                return
            if self.clock() - self.opened_at < self.cooldown:
                raise BackendUnavailable("circuit breaker open after repeated backend failures")
            self.opened_at = self.clock()  # half-open: this caller tries, the others keep failing fast

    def record(self, ok):
        with self.lock:
            if ok:
                self.count, self.opened_at = 0, None
            else:
                self.count += 1
                if self.count >= self.failures:
                    self.opened_at = self.clock()


def is_number(value):
    """A JSON number, not a bool; callers compare it before any float conversion, so a 400-digit integer is refused."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_probability(value):
    """A JSON number in 0..1 (NaN fails the comparison)."""
    return is_number(value) and 0 <= value <= 1


def check_verdicts(predictions, rows, classes):
    """The backend's named-output rows ("verdicts" signature) as (probabilities, [(ood_score, unsure, unknown)]),
    or BackendUnavailable saying what is wrong."""
    if not isinstance(predictions, list) or len(predictions) != rows or not all(
            isinstance(row, dict) and set(row) == set(SERVING_FIELDS)
            for row in predictions):
        raise BackendUnavailable(f"backend answered no {rows} rows of probabilities, ood_score, unsure and unknown")
    probs = check_probabilities([row["probabilities"] for row in predictions], rows, classes)
    verdicts = []
    for row in predictions:
        score, unsure, unknown = row["ood_score"], row["unsure"], row["unknown"]
        if not (is_number(score) and abs(score) < 1e6):
            raise BackendUnavailable("backend ood_score is not a finite number")
        if not (isinstance(unsure, bool) and isinstance(unknown, bool)):
            raise BackendUnavailable("backend unsure and unknown are not booleans")
        verdicts.append((float(score), unsure, unknown))
    return probs, verdicts


def check_probabilities(predictions, rows, classes):
    """The backend's predictions as a float64 (rows, classes) array, or BackendUnavailable saying what is wrong."""
    if not isinstance(predictions, list) or len(predictions) != rows:
        raise BackendUnavailable(f"backend answered {type(predictions).__name__} predictions, not {rows} rows")
    if not all(isinstance(row, list) and len(row) == classes and all(is_probability(v) for v in row)
               for row in predictions):
        raise BackendUnavailable(f"backend predictions are not rows of {classes} numbers in 0..1")
    probs = np.asarray(predictions, dtype=np.float64)
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise BackendUnavailable("backend predictions are not finite probabilities in 0..1")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise BackendUnavailable("backend prediction rows do not sum to 1")
    return probs


class RemoteClassifier:
    """Same interface as inference.Classifier, with predictions from POST {url}/v1/models/{name}:predict."""

    def __init__(self, url, name="cifar10", timeout=10.0, retries=1, input_size=32, max_inflight=3,
                 max_response=4 * 1024 * 1024, breaker=None):
        parts = urlsplit(url)
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.url, self.name = url.rstrip("/"), name
        self.timeout, self.retries, self.input_size, self.max_response = timeout, retries, input_size, max_response
        self.inflight = threading.BoundedSemaphore(max_inflight)
        self.breaker = breaker or CircuitBreaker()
        self.model, self.version, self.temperature = None, "remote", 1.0  # the backend calibrates
        self.unsure_threshold, self.detector = None, Detector("backend's", None)  # and gives the verdicts
        self.class_names = list(CIFAR10_CLASSES)
        self.meta = {"name": f"{name} (remote backend)", "arch": "remote", "class_names": self.class_names,
                     "input_size": input_size, "data_source": "remote backend"}
        self.described = False  # True once the backend's metadata was read and valid
        try:
            self.refresh_metadata()
        except BackendUnavailable:
            pass  # the front starts anyway: metadata is read again on each call, which answers 503 until it is valid

    def _once(self, method, path, body, deadline):
        """One HTTP exchange that ends by `deadline` (time.monotonic()), whatever the backend does."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=remaining)
        conn.connect()  # the watchdog needs the socket itself: the connection lets go of it after getresponse
        watchdog = threading.Timer(deadline - time.monotonic(), _shut, args=(conn.sock,))
        watchdog.start()
        try:
            conn.request(method, self.prefix + path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read(self.max_response + 1)
            if len(data) > self.max_response:
                raise BackendUnavailable(f"backend answer larger than {self.max_response} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError("deadline passed")
            return response.status, data
        finally:
            watchdog.cancel()
            conn.close()

    def _call(self, method, path, body=None, validate=lambda answer: answer):
        """validate(JSON answer) of the backend within one overall deadline; retries failures (all calls are
        idempotent). An answer validate refuses (BackendUnavailable) counts as a failure for the breaker."""
        self.breaker.check()
        if not self.inflight.acquire(blocking=False):
            raise BackendUnavailable("too many backend calls in flight")
        data = None if body is None else json.dumps(body).encode()
        deadline = time.monotonic() + self.timeout
        last = None
        try:
            for attempt in range(self.retries + 1):
                try:
                    status, answer = self._once(method, path, data, deadline)
                    if 400 <= status < 500:
                        self.breaker.record(True)  # the backend is up; it refused this request
                        raise BackendUnavailable(f"backend refused the request ({status}): {answer[:200]!r}")
                    if status == 200:
                        try:
                            result = validate(json.loads(answer))
                        except BackendUnavailable:
                            self.breaker.record(False)
                            raise
                        self.breaker.record(True)
                        return result
                    last = f"backend error {status}"
                except (OSError, http.client.HTTPException, ValueError, RecursionError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if attempt < self.retries and deadline - time.monotonic() > 0.2 * 2 ** attempt:
                    time.sleep(0.2 * 2 ** attempt)
            self.breaker.record(False)
            raise BackendUnavailable(f"inference backend {self.url} unavailable ({last})")
        finally:
            self.inflight.release()

    def refresh_metadata(self):
        """Class names (and version) from the backend's metadata; odd metadata counts as a backend that is down."""
        answer = self._call("GET", f"/v1/models/{self.name}/metadata")
        meta = answer.get("metadata") if isinstance(answer, dict) else None
        if not isinstance(meta, dict):
            raise BackendUnavailable("backend metadata is not a JSON object with a 'metadata' object")
        names = meta.get("class_names")
        if names is not None:
            if not isinstance(names, list) or not names or not all(isinstance(c, str) for c in names):
                raise BackendUnavailable("backend class_names is not a list of strings")
            self.class_names = self.meta["class_names"] = list(names)
        self.version = str(meta.get("version", self.version))[:64]
        self.described = True

    def describe(self):
        """Read the backend's metadata if it was not read yet (the backend was down at start-up)."""
        if not self.described:
            self.refresh_metadata()

    def probabilities(self, images):
        """Calibrated probabilities for uint8 images (N, H, W, 3), computed by the backend and validated."""
        return np.stack([p.probs for p in self.predict(images)])

    def predict(self, images):
        """[Prediction] from the backend's "verdicts" signature, every field validated; a bad answer counts as a
        failure for the circuit breaker."""
        images = np.asarray(images)
        self.describe()

        def valid(answer):
            if not isinstance(answer, dict):
                raise BackendUnavailable("backend answer is not a JSON object")
            return check_verdicts(answer.get("predictions"), len(images), len(self.class_names))

        probs, verdicts = self._call("POST", f"/v1/models/{self.name}:predict",
                                     {"signature_name": "verdicts", "instances": images.astype(int).tolist()}, valid)
        return [Prediction(p, self.class_names, *verdict) for p, verdict in zip(probs, verdicts)]

    def warm_up(self):
        """Nothing to compile here; readiness is asked of the backend."""

    def ready(self):
        """(ready, detail) according to the backend's model status; the detail never names the backend's address."""
        try:
            self.describe()
            status = self._call("GET", f"/v1/models/{self.name}")["model_version_status"][0]
            state = status.get("state")
        except (BackendUnavailable, KeyError, IndexError, TypeError, AttributeError):
            return False, "inference backend unavailable"
        return state == "AVAILABLE", f"inference backend: {state}"


def _shut(sock):
    """Watchdog: end a socket's blocking reads and writes now."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: nothing left to interrupt
