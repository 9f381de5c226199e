"""Grad-CAM on demand for the web layer: the Keras model is built lazily, once per process, on the first request."""
import importlib.util
import threading

from .. import checkpoint
from ..ml.presets import PRESETS, TransferRecipe
from .service import png_data_uri

# gradcam.Explainer knows the baseline and fast nets, whatever their recipe; a transfer net's backbone is not one
GRADCAM_ARCHS = tuple(name for name, recipe in PRESETS.items() if not isinstance(recipe, TransferRecipe))


class Explanations:
    """Heatmaps of where the served model looked, from its own Keras model or the .h5 a .tflite was exported from."""

    def __init__(self, model_path=None, model=None):
        self.model_path, self.model = model_path, model
        self.explainer, self.lock = None, threading.Lock()

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

    def overlay(self, pixels, class_index):
        """A PNG data URI of the Grad-CAM heatmap of class_index over the 32x32 input."""
        from ..ml import gradcam

        with self.lock:
            if self.explainer is None:
                model = self.model or checkpoint.load(self.model_path)[0]
                self.explainer = gradcam.Explainer(model)
            cam, _ = self.explainer.heatmap(pixels, class_index)
        return png_data_uri(gradcam.overlay(pixels, cam))
