"""Grad-CAM for the web layer: in the web process (the Keras model built once, on the first request or at start-up,
GRADCAM_PRELOAD), or in one explain worker per server (EXPLAIN_SOCKET, as `make serve` runs it: cifarlab.web.
explain_worker), so that web workers never load TensorFlow and explanations at once are capped for the whole server."""
import importlib.util
import logging
import threading
import time
from multiprocessing.connection import Client

import numpy as np

from .. import modelfile, quiet
from ..errors import CifarlabError
from .context import parts
from .registry import NotServed
from .uploads import png_data_uri

log = logging.getLogger(__name__)


class ExplanationUnavailable(CifarlabError):
    """An explanation that cannot be given now; `message` says why (busy, starting, gone)."""

    status = 503


def gradcam_module():
    """cifarlab.ml.gradcam, TensorFlow imported first with its start-up lines filtered."""
    quiet.tensorflow()
    from ..ml import gradcam

    return gradcam


def explainable(config, meta, model_path):
    """The .h5 Grad-CAM needs for this model (model_path itself, or the file an export came from), or None when
    explanations are off, remote, without TensorFlow, or for a net Grad-CAM does not know. Imports no TensorFlow."""
    if not config["GRADCAM"] or config["INFERENCE_URL"] or importlib.util.find_spec("tensorflow") is None:
        return None
    from ..ml import architectures  # the registry alone: no TensorFlow

    architecture = architectures.of_model(meta)
    if architecture is None or not architecture.explainable:
        return None
    if not meta.get("exported_from"):  # a Keras model file, explained from itself
        return model_path
    return modelfile.source_model_path(model_path, meta)


class RemoteExplanations:
    """Explanations asked of the server's explain worker over its Unix socket: one at a time there, a bounded queue,
    and a 503 (ExplanationUnavailable) when it is full, starting, or not running."""

    def __init__(self, socket_path, timeout):
        self.socket_path, self.timeout = socket_path, timeout

    def overlay(self, pixels, class_index):
        """The explain worker's PNG data URI of the Grad-CAM heatmap of class_index for these 32x32 pixels."""
        try:
            conn = Client(self.socket_path, family="AF_UNIX")
        except OSError:
            raise ExplanationUnavailable("Explanations are starting or not running; try again in a minute.") from None
        with conn:
            try:
                conn.send((pixels, int(class_index)))
                if not conn.poll(self.timeout):
                    raise ExplanationUnavailable(f"The explanation took longer than {self.timeout:g} s; try again.")
                status, value = conn.recv()
            except (EOFError, OSError):
                raise ExplanationUnavailable("The explain worker stopped while explaining; try again.") from None
        if status != "ok":
            raise ExplanationUnavailable(value)
        return value


class Explanations:
    """Heatmaps of where the served model looked, from its own Keras model or the .h5 a .tflite was exported from."""

    def __init__(self, model_path=None, model=None):
        self.model_path, self.model = model_path, model
        self.explainer, self.lock, self.preloading = None, threading.Lock(), None

    @classmethod
    def for_classifier(cls, config, classifier, model_path):
        """Explanations for the served model (None when not explainable): through the explain worker when
        EXPLAIN_SOCKET is set, else here, on the served Keras model itself or the .h5 an export came from."""
        source = explainable(config, classifier.meta, model_path)
        if source is None:
            return None
        if config["EXPLAIN_SOCKET"]:
            return RemoteExplanations(config["EXPLAIN_SOCKET"], config["EXPLAIN_TIMEOUT"])
        return cls(model=classifier.model) if classifier.model is not None else cls(model_path=source)

    def _explainer(self):
        """The Explainer, built on first use (TensorFlow, the .h5, the gradient probe); call with the lock held."""
        if self.explainer is None:
            model = self.model or modelfile.load(self.model_path)[0]
            self.explainer = gradcam_module().Explainer(model)
        return self.explainer

    def overlay(self, pixels, class_index):
        """A PNG data URI of the Grad-CAM heatmap of class_index beside and over the 32x32 input."""
        with self.lock:
            cam, _ = self._explainer().heatmap(pixels, class_index)
        return png_data_uri(gradcam_module().overlay(pixels, cam))

    def warm_up(self):
        """Build the explainer and run one heatmap, so the first user's explanation does not wait for them."""
        with self.lock:
            explainer = self._explainer()
            explainer.heatmap(np.zeros(explainer.network.input_shape[1:], np.uint8), 0)

    def preload(self):
        """Import TensorFlow now, then warm_up in a background thread (a request meanwhile waits on the lock).

        The import is not left to the thread: it filters TensorFlow's start-up lines from fd 2 for a few seconds,
        which would hold back other threads' log lines meanwhile.
        """
        quiet.tensorflow()
        self.preloading = threading.Thread(target=self._warm_up_logged, name="gradcam-preload", daemon=True)
        self.preloading.start()

    def _warm_up_logged(self):
        started = time.perf_counter()
        try:
            self.warm_up()
        except (modelfile.ModelFileError, ValueError, OSError) as exc:  # the page then offers no heatmap
            log.warning("Grad-CAM preload failed: %s", exc)
            return
        log.info("Grad-CAM ready in %.1f s", time.perf_counter() - started)


def init_app(app):
    """Grad-CAM for the first served model (none when nothing is loaded yet or GRADCAM is off), and which it is."""
    parts(app).explain, parts(app).explained = make_explanations(app.config, parts(app).models)


def make_explanations(config, models):
    """(Grad-CAM explanations or None, the (name, version) they are for); TensorFlow preloaded when asked."""
    try:
        name, first = models.get()
    except NotServed:  # nothing loaded yet: the worker boots, says not ready, and offers no heatmaps
        return None, None
    explanations = Explanations.for_classifier(config, first.classifier, first.path)
    if isinstance(explanations, Explanations) and config["GRADCAM_PRELOAD"]:
        explanations.preload()
    return explanations, (name, first.version)  # heatmaps are offered for this model version only
