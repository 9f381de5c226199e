"""A classifier that asks a server speaking the TF Serving REST protocol (TF Serving, or another instance)."""
import json
import time
import urllib.error
import urllib.request

import numpy as np

from .data import CIFAR10_CLASSES


class BackendUnavailable(Exception):
    """The inference backend did not answer usefully; the web front answers 503."""


class RemoteClassifier:
    """Same interface as inference.Classifier, with predictions from POST {url}/v1/models/{name}:predict."""

    def __init__(self, url, name="cifar10", timeout=10.0, retries=2, input_size=32):
        self.url, self.name = url.rstrip("/"), name
        self.timeout, self.retries, self.input_size = timeout, retries, input_size
        self.model, self.version, self.temperature = None, "remote", 1.0  # the backend calibrates
        self.class_names = list(CIFAR10_CLASSES)
        self.meta = {"name": f"{name} at {self.url}", "arch": "remote", "class_names": self.class_names,
                     "input_size": input_size, "data_source": "remote backend"}
        try:
            self.refresh_metadata()
        except BackendUnavailable:
            pass  # the front starts anyway: pages answer 503 until the backend is back

    def _call(self, method, path, body=None):
        """JSON answer of the backend; retries connection failures (all calls here are idempotent)."""
        data = None if body is None else json.dumps(body).encode()
        last = None
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    detail = exc.read()[:200].decode(errors="replace")
                    raise BackendUnavailable(f"backend refused the request ({exc.code}): {detail}") from None
                last = f"backend error {exc.code}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if attempt < self.retries:
                time.sleep(0.2 * 2 ** attempt)
        raise BackendUnavailable(f"inference backend {self.url} unavailable ({last})")

    def refresh_metadata(self):
        """Class names (and version) from the backend's metadata, when it offers them."""
        meta = self._call("GET", f"/v1/models/{self.name}/metadata").get("metadata", {})
        if isinstance(meta.get("class_names"), list):
            self.class_names = self.meta["class_names"] = [str(c) for c in meta["class_names"]]
        self.version = str(meta.get("version", self.version))

    def probabilities(self, images):
        """Calibrated probabilities for uint8 images (N, H, W, 3), computed by the backend."""
        images = np.asarray(images)
        answer = self._call("POST", f"/v1/models/{self.name}:predict", {"instances": images.astype(int).tolist()})
        probs = np.asarray(answer.get("predictions"), dtype=np.float64)
        if probs.shape != (len(images), len(self.class_names)):
            raise BackendUnavailable(f"backend answered predictions of shape {probs.shape}")
        return probs

    def warm_up(self):
        """Nothing to compile here; readiness is asked of the backend."""

    def ready(self):
        """(ready, detail) according to the backend's model status."""
        try:
            status = self._call("GET", f"/v1/models/{self.name}")["model_version_status"][0]
        except (BackendUnavailable, KeyError, IndexError, TypeError) as exc:
            return False, str(exc)
        return status.get("state") == "AVAILABLE", f"backend {self.url}: {status.get('state')}"
