"""The models a server answers for, by name and version, as TF Serving lays them out and reloads them.

    MODEL_DIR/<name>/<version>/<model file>.tflite|.h5 (+ its .json sidecar)
    MODEL_DIR/<name>/labels.json             optional: {"stable": 3, "canary": 4}

Each name serves its highest version that loaded; a labelled version stays loaded too. With a "stable" label,
requests naming no version get that one instead, and a "canary" version answers CANARY_SHARE of the clients (the
same clients every time), or in shadow mode (CANARY_MODE) computes beside stable for that share, never answering.
A poll (MODEL_POLL_SECONDS) picks up a new version folder (write it elsewhere, then rename it into place), loads and warms it up beside the one
serving, and switches when it is ready: requests in flight finish on the old one. A version that fails to load is
refused with a log line and the old one keeps serving; it is tried again when its files change. MODEL_PATH alone is
one model (SERVING_MODEL_NAME), version 1, never polled.
"""
import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field

from .. import modelfile, modeldir
from ..modeldir import CANARY, model_names, read_labels, STABLE, stamp, version_file, version_folders
from ..errors import CifarlabError
from .batching import Batcher, InFlight
from .context import parts
from .remote import CircuitBreaker, RemoteClassifier

log = logging.getLogger(__name__)


class NotServed(CifarlabError, LookupError):
    """No such model, version or label: message in TF Serving's words, answered 404."""
    status = 404


class NotReady(NotServed):
    """The model exists but no version of it is loaded (all refused or moved away): answered 503 until one is."""
    status = 503


@dataclass
class Version:
    """One version of a model: its state as TF Serving reports it (LOADING, AVAILABLE, END) and, when available,
    the classifier and the batcher in front of it."""
    number: int
    path: str
    state: str = "LOADING"
    error: str = ""
    classifier: object = None
    batcher: object = None
    stamp: tuple = ()

    def served(self):
        """What a request holds on to: requests in flight finish on it even if this version is unloaded meanwhile."""
        return Served(self.number, self.path, self.classifier, self.batcher or self.classifier)

    def unload(self):
        if self.batcher is not None:
            self.batcher.close()
        self.classifier = self.batcher = None

    def status(self):
        """TF Serving's model_version_status entry."""
        return {"version": str(self.number), "state": self.state,
                "status": {"error_code": "UNKNOWN" if self.error else "OK", "error_message": self.error}}


@dataclass(frozen=True)
class Served:
    """One request's model: the version number, its classifier, and what to call predict on (its batcher, if any)."""
    version: int
    path: str
    classifier: object
    predictor: object

    def predict(self, images):
        return self.predictor.predict(images)


@dataclass
class Servable:
    """A model name: its versions and labels."""
    name: str
    folder: str = None  # None: one fixed file (MODEL_PATH or a remote backend), never polled
    versions: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)

    def highest(self, besides=None):
        """The highest available version (other than version `besides` where there is another), or None."""
        available = [v for v in list(self.versions.values()) if v.state == "AVAILABLE"]
        others = [v for v in available if v.number != besides] or available
        return max(others, key=lambda v: v.number) if others else None

    def labelled(self, label):
        """The available version a label points at, or None."""
        version = self.versions.get(self.labels.get(label))
        return version if version is not None and version.state == "AVAILABLE" else None

    def default(self):
        """The version a request naming none gets: the stable label's; else the highest, a canary set aside."""
        return self.labelled(STABLE) or self.highest(besides=self.labels.get(CANARY))


def client_bucket(client, name):
    """A client's fixed place in [0, 1) for one model: the same client lands on the same side of a canary split."""
    digest = hashlib.sha256(f"{name}\n{client}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


class Servables:
    """The served models by name; `get` answers the version a request asked for; `poll` reloads from disk."""

    def __init__(self, load, default, batching=None, observe_load=None, model_dir=None, canary_share=0.0,
                 canary_mode="split"):
        """load: path -> warmed-up classifier (raises ModelFileError); batching: version -> Batcher or None."""
        self.load, self.default, self.model_dir = load, default, model_dir
        self.canary_share, self.canary_mode = canary_share, canary_mode
        self.batching = batching or (lambda name, classifier: None)
        self.observe_load = observe_load or (lambda name, outcome: None)
        self.models, self.lock = {}, threading.Lock()

    @classmethod
    def fixed(cls, name, path, classifier, batching=None):
        """One model, one version, never polled (MODEL_PATH or a remote backend)."""
        servables = cls(None, name, batching)
        version = Version(1, path, "AVAILABLE", classifier=classifier)
        version.batcher = servables.batching(name, classifier)
        servables.models[name] = Servable(name, versions={1: version})
        return servables

    @classmethod
    def from_folder(cls, model_dir, default, load, batching=None, observe_load=None, canary_share=0.0,
                    canary_mode="split"):
        """Every model under model_dir at its highest loadable version. A model with none is logged, not raised: the
        worker still boots, says not ready, and serves it once a version loads (start-up preflight calls
        `unloadable` to refuse such a folder before the server starts)."""
        servables = cls(load, default, batching, observe_load, model_dir, canary_share, canary_mode)
        servables.poll()
        for message in servables.unloadable():
            log.error("%s; answering 503 for it until a version loads", message)
        return servables

    def unloadable(self):
        """A line per model that has no version loaded (empty when every model serves)."""
        if not self.models:
            return [f"{self.model_dir}: no model folders (MODEL_DIR/<name>/<version>/)"]
        lines = []
        for servable in self.models.values():
            if servable.highest() is None:
                errors = "; ".join(v.error for v in list(servable.versions.values()) if v.error)
                lines.append(f"model {servable.name!r}: no version could be loaded{': ' + errors if errors else ''}")
        return lines

    def names(self):
        return sorted(self.models)

    def servable(self, name):
        try:
            return self.models[name]
        except KeyError:
            if not self.models:
                raise NotReady("No model is loaded right now; try again shortly.") from None
            raise NotServed(f"Servable not found for request: Latest({name})") from None

    def get(self, name=None, version=None, label=None, client=None):
        """(name, Served) for the request: a version number, a label's version, or the default (see `routed`)."""
        name = name or self.default
        servable = self.servable(name)
        if label is not None:
            if label not in servable.labels:
                raise NotServed(f"Unrecognized servable version label: {label}")
            version = servable.labels[label]
        if version is None:
            chosen = self.routed(servable, client)
            if chosen is None:
                raise NotReady(f"Model {name} has no version loaded right now; try again shortly.")
        else:
            chosen = servable.versions.get(int(version))
            if chosen is None or chosen.state != "AVAILABLE":
                raise NotServed(f"Servable not found for request: Specific({name}, {version})")
        with self.lock:
            served = chosen.served()
        if served.classifier is None:  # unloaded between the two looks
            raise NotServed(f"Servable not found for request: Specific({name}, {chosen.number})")
        return name, served

    def routed(self, servable, client):
        """The version for a request naming none: the canary for its share of clients (split mode), else the default."""
        canary = servable.labelled(CANARY)
        if canary is not None and self.canary_mode == "split" and self.in_canary_share(servable.name, client):
            return canary
        return servable.default()

    def in_canary_share(self, name, client):
        return client is not None and client_bucket(client, name) < self.canary_share

    def shadow(self, name, answered, client):
        """Served of the canary that computes beside version `answered` for this client (shadow mode), or None."""
        servable = self.models.get(name)
        canary = servable.labelled(CANARY) if servable is not None and self.canary_mode == "shadow" else None
        if canary is None or canary.number == answered or not self.in_canary_share(name, client):
            return None
        with self.lock:
            served = canary.served()
        return served if served.classifier is not None else None

    def poll(self):
        """Find new model folders, load new or changed versions, unload those gone or no longer wanted (each change
        logged)."""
        if self.model_dir is not None:
            try:
                names = model_names(self.model_dir)
            except modelfile.ModelFileError as exc:
                log.warning("%s", exc)
                names = []
            for name in names:
                if name not in self.models:
                    self.models[name] = Servable(name, os.path.join(self.model_dir, name))
        for servable in list(self.models.values()):
            if servable.folder is not None:
                self._poll_model(servable)

    def _poll_model(self, servable):
        try:
            labels = read_labels(servable.folder)
        except (OSError, ValueError) as exc:
            log.warning("model %s: labels not read, keeping the previous ones: %s", servable.name, exc)
            labels = servable.labels
        folders = version_folders(servable.folder)
        highest_loaded = False
        for number in sorted(folders, reverse=True):
            known, current = servable.versions.get(number), stamp(folders[number])
            if known is not None and known.state == "AVAILABLE":
                highest_loaded = True
                continue
            if known is not None and known.error and known.stamp == current:
                continue  # refused before and unchanged since
            if not highest_loaded or number in labels.values():
                highest_loaded = self._load_version(servable, number, folders[number], current) or highest_loaded
        on_disk = [n for n, v in list(servable.versions.items()) if v.state == "AVAILABLE" and n in folders]
        wanted = set(labels.values()) | {max(on_disk, default=None)}
        with self.lock:
            servable.labels = labels
            for number, version in list(servable.versions.items()):
                if version.state == "AVAILABLE" and (number not in wanted or number not in folders):
                    version.state = "END"
                    version.unload()
                    log.info("model %s: version %d unloaded", servable.name, number)

    def public(self, message):
        """A message for anonymous clients (GET /v1/models/NAME): paths under MODEL_DIR shown relative to it."""
        for prefix in sorted({self.model_dir, os.path.abspath(self.model_dir), os.path.realpath(self.model_dir)},
                             key=len, reverse=True):
            message = re.sub(r"(?<![\w./-])" + re.escape(prefix.rstrip(os.sep) + os.sep), "MODEL_DIR/", message)
        return message

    def _load_version(self, servable, number, folder, current):
        """Load one version beside the serving one; True when it is now available."""
        path = version_file(folder)
        version = Version(number, path or folder, stamp=current)
        try:
            if path is None:
                raise modelfile.ModelFileError(f"{folder}: expected one .tflite or .h5 file with its .json sidecar")
            version.classifier = self.load(path)
            version.batcher = self.batching(servable.name, version.classifier)
        except (modelfile.ModelFileError, OSError, ValueError, MemoryError) as exc:
            version.state, version.error = "END", self.public(str(exc) or type(exc).__name__)
            with self.lock:
                servable.versions[number] = version
            log.warning("model %s: version %d refused, the serving version stays: %s", servable.name, number, exc)
            self.observe_load(servable.name, "refused")
            return False
        version.state = "AVAILABLE"
        with self.lock:
            servable.versions[number] = version
        log.info("model %s: version %d loaded from %s", servable.name, number, path)
        self.observe_load(servable.name, "loaded")
        return True

    def start_polling(self, every):
        """Poll in a daemon thread every `every` seconds for the life of the process."""
        def loop():
            while True:
                time.sleep(every)
                try:
                    self.poll()
                except Exception:  # noqa: BLE001  a surprise on disk must not end polling for the worker's life
                    log.exception("model poll failed; trying again in %g s", every)
        threading.Thread(target=loop, name="model-poll", daemon=True).start()


def init_app(app):
    """The served models (see make_servables) and the count of requests in flight their batchers wait for."""
    parts(app).in_flight = InFlight()
    parts(app).models = make_servables(app.config, parts(app).metrics, parts(app).in_flight)


def make_servables(config, metrics, in_flight):
    """The served models: every version folder under MODEL_DIR (polled for new ones), else MODEL_PATH's file or the
    remote front as one model; each warmed up, behind a batcher when BATCH_WINDOW_MS is set."""
    def batching(name, classifier):
        if not config["BATCH_WINDOW_MS"] or config["INFERENCE_URL"]:
            return None
        return Batcher(classifier.predict, config["BATCH_WINDOW_MS"] / 1000, config["BATCH_MAX_IMAGES"], in_flight,
                       observe=metrics.batch_size.labels(name).observe)

    def load(path):
        classifier = make_classifier(config, path)
        classifier.warm_up()
        return classifier

    if config["MODEL_DIR"] and not config["INFERENCE_URL"]:
        models = Servables.from_folder(config["MODEL_DIR"], modeldir.default_name(config), load,
                                                 batching, metrics.observe_model_load, config["CANARY_SHARE"],
                                                 config["CANARY_MODE"])
        if config["MODEL_POLL_SECONDS"]:
            models.start_polling(config["MODEL_POLL_SECONDS"])
        return models
    models = Servables.fixed(config["SERVING_MODEL_NAME"], config["MODEL_PATH"],
                                       load(config["MODEL_PATH"]), batching)
    metrics.observe_model_load(config["SERVING_MODEL_NAME"], "loaded")
    return models


def served_class_names(models):
    """Every class name of the models loaded now, in their order, each once."""
    names = []
    for name in models.names():
        try:
            classes = models.get(name)[1].classifier.class_names
        except NotServed:
            continue
        names += [c for c in classes if c not in names]
    return names


def make_classifier(config, model_path):
    """The remote front's client when INFERENCE_URL is set, else the model file loaded here (once per process)."""
    if config["INFERENCE_URL"]:
        return RemoteClassifier(
            config["INFERENCE_URL"], config["SERVING_MODEL_NAME"], config["INFERENCE_TIMEOUT"],
            config["INFERENCE_RETRIES"], max_inflight=config["INFERENCE_MAX_INFLIGHT"],
            max_response=config["INFERENCE_MAX_RESPONSE"],
            breaker=CircuitBreaker(config["BREAKER_FAILURES"], config["BREAKER_COOLDOWN"]))
    from ..inference import Classifier  # TensorFlow only for a local .h5 (a .tflite needs just LiteRT)

    return Classifier.from_path(model_path, unsure_threshold=config["UNSURE_THRESHOLD"],
                                ood_threshold=config["OOD_THRESHOLD"])  # raises ModelFileError
