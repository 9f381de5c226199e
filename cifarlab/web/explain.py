"""Grad-CAM for the web layer: the Keras model is built once per process, on the first request or at start-up
(GRADCAM_PRELOAD)."""
import importlib.util
import logging
import threading
import time

import numpy as np

from .. import checkpoint, quiet
from ..ml.presets import PRESETS, TransferRecipe
from .service import png_data_uri

log = logging.getLogger(__name__)

# gradcam.Explainer knows the baseline and fast nets, whatever their recipe; a transfer net's backbone is not one
GRADCAM_ARCHS = tuple(name for name, recipe in PRESETS.items() if not isinstance(recipe, TransferRecipe))


class Explanations:
    """Heatmaps of where the served model looked, from its own Keras model or the .h5 a .tflite was exported from."""

    def __init__(self, model_path=None, model=None):
        self.model_path, self.model = model_path, model
        self.explainer, self.lock, self.preloading = None, threading.Lock(), None

    @classmethod
    def for_classifier(cls, config, classifier):
        """Explanations for the served model, or None when disabled, remote, without TensorFlow, for a net Grad-CAM
        does not know, or when no .h5 is at hand."""
        if (not config["GRADCAM"] or config["INFERENCE_URL"] or classifier.meta.get("arch") not in GRADCAM_ARCHS
                or importlib.util.find_spec("tensorflow") is None):
            return None
        if classifier.model is not None:
            return cls(model=classifier.model)
        source = checkpoint.source_model_path(config["MODEL_PATH"], classifier.meta)
        return cls(model_path=source) if source else None

    def _explainer(self):
        """The Explainer, built on first use (TensorFlow, the .h5, the gradient probe); call with the lock held."""
        from ..ml import gradcam

        if self.explainer is None:
            model = self.model or checkpoint.load(self.model_path)[0]
            self.explainer = gradcam.Explainer(model)
        return self.explainer

    def overlay(self, pixels, class_index):
        """A PNG data URI of the Grad-CAM heatmap of class_index beside and over the 32x32 input."""
        from ..ml import gradcam

        with self.lock:
            cam, _ = self._explainer().heatmap(pixels, class_index)
        return png_data_uri(gradcam.overlay(pixels, cam))

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
        except (checkpoint.ModelFileError, ValueError, OSError) as exc:  # the page then offers no heatmap
            log.warning("Grad-CAM preload failed: %s", exc)
            return
        log.info("Grad-CAM ready in %.1f s", time.perf_counter() - started)
