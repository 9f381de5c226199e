"""Inference: a loaded model plus its sidecar, with a compiled predict path and calibration."""
import hashlib

import numpy as np

from . import checkpoint


class Classifier:
    """Predicts calibrated class probabilities for uint8 (N, 32, 32, 3) images."""

    def __init__(self, model, meta, version="unversioned"):
        self.model, self.meta, self.version = model, meta, version
        self.warmed_up = False
        self.class_names = list(meta["class_names"])
        self.input_size = int(meta["input_size"])
        self.temperature = float(meta.get("calibration", {}).get("temperature", 1.0))
        self._call = self._compile(model)

    @classmethod
    def from_path(cls, model_path):
        """Load model + sidecar; raises checkpoint.ModelFileError with a one-line reason."""
        model, meta = checkpoint.load(model_path)
        with open(model_path, "rb") as f:
            version = hashlib.sha256(f.read()).hexdigest()[:12]  # changes whenever the weights do
        return cls(model, meta, version)

    @staticmethod
    def _compile(model):
        """A graph-compiled forward pass with a fixed signature (model.predict costs tens of ms a call)."""
        import keras

        if keras.backend.backend() != "tensorflow":
            return lambda x: np.asarray(model(x, training=False))
        import tensorflow as tf

        size = model.input_shape[1]
        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                         input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        return lambda x: fn(tf.convert_to_tensor(x, tf.float32)).numpy()

    def raw_probabilities(self, images):
        """The model's own softmax output for uint8 images (N, H, W, 3)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected images of shape (N, {self.input_size}, {self.input_size}, 3), got {images.shape}")
        return self._call(images.astype(np.float32))

    def probabilities(self, images):
        """Temperature-calibrated probabilities for uint8 images (N, H, W, 3)."""
        return calibrate(self.raw_probabilities(images), self.temperature)

    def warm_up(self):
        """Run one prediction so the first request does not pay for graph tracing."""
        self.probabilities(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))
        self.warmed_up = True

    def ready(self):
        """(ready, detail): loaded and answered a warm-up prediction."""
        return (True, "model loaded and warmed up") if self.warmed_up else (False, "model not warmed up yet")


def calibrate(probs, temperature):
    """softmax(log(p) / T): temperature scaling applied to probabilities."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


class Prediction:
    """Probabilities over named classes, with the top class and top-k helpers."""

    def __init__(self, probs, class_names):
        self.probs = np.asarray(probs, dtype=np.float64)
        self.class_names = class_names
        self.index = int(np.argmax(self.probs))
        self.label = class_names[self.index]
        self.confidence = float(self.probs[self.index])

    def top(self, k=3):
        """[(class name, index, probability)] for the k most likely classes."""
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.class_names[i], int(i), float(self.probs[i])) for i in order]
