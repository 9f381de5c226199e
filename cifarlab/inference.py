"""Inference: a loaded model plus its sidecar, with a compiled predict path and calibration."""
import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import modelfile, ood, quiet
from .images import tta_rows
from .prediction import Prediction


class Classifier:
    """Predicts calibrated class probabilities, and a verdict, for uint8 (N, 32, 32, 3) images.

    model: the Keras model (None when serving a TFLite file: no Grad-CAM then);
    forward: uint8-range images -> logits (the mean over test-time views, or a softmax model's log-probabilities),
    a compiled call of `model` unless given. unsure_threshold and detector come from the sidecar unless given.
    """

    def __init__(self, model, meta, version="unversioned", forward=None, unsure_threshold=None, ood_threshold=None):
        self.model, self.meta, self.version = model, meta, version
        self.warmed_up = False
        self.class_names = list(meta["class_names"])
        self.input_size = int(meta["input_size"])
        calibration = meta.get("calibration", {})
        self.temperature = float(calibration.get("temperature", 1.0))
        self.unsure_threshold = float(calibration.get("unsure_threshold", 0.5) if unsure_threshold is None
                                      else unsure_threshold)
        self.detector = ood.Detector.from_meta(meta, ood_threshold)
        self._call = forward or self._compile(model)

    @classmethod
    def from_path(cls, model_path, chunk_images=None, **thresholds):
        """Load a .h5 or .tflite file + sidecar; raises modelfile.ModelFileError with a one-line reason.

        chunk_images: images per TFLite invoke (default: what serves one request fastest; more for bulk work).
        """
        if not os.path.isfile(model_path):
            raise modelfile.ModelFileError(f"{model_path}: model file not found.")
        if str(model_path).endswith(".tflite"):
            content = modelfile.read_model_bytes(model_path)  # served from memory: a copy over the file is harmless
            version = hashlib.sha256(content).hexdigest()[:12]  # changes whenever the weights do
            threads = int(os.environ.get("TF_NUM_INTRAOP_THREADS") or os.cpu_count())  # gunicorn's post_fork sets it
            forward, meta = PerThreadTFLite.load(model_path, threads, borrow_idle_core=threads < (os.cpu_count() or 1),
                                                 chunk_images=chunk_images, content=content)
            return cls(None, meta, version, forward, **thresholds)
        version = modelfile.model_digest(model_path)[:12]
        model, meta = modelfile.load(model_path)  # Keras reads every weight now and keeps no file open
        return cls(model, meta, version, **thresholds)

    @staticmethod
    def _compile(model):
        """A graph-compiled forward pass to logits with a fixed signature (model.predict costs tens of ms a call)."""
        quiet.tensorflow()
        import keras

        model, to_logits = modelfile.logits_model(model)
        if keras.backend.backend() != "tensorflow":
            return lambda x: to_logits(np.asarray(model(x, training=False)))
        tf = quiet.tensorflow()

        size = model.input_shape[1]
        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                         input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        return lambda x: to_logits(fn(tf.convert_to_tensor(x, tf.float32)).numpy())

    def logits(self, images):
        """The model's logits for uint8 images (N, H, W, 3), before calibration."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected images of shape (N, {self.input_size}, {self.input_size}, 3), got {images.shape}")
        return np.asarray(self._call(images.astype(np.float32)), np.float32)

    def raw_probabilities(self, images):
        """The model's own softmax output for uint8 images (N, H, W, 3)."""
        return softmax(self.logits(images))

    def probabilities(self, images):
        """Temperature-calibrated probabilities for uint8 images (N, H, W, 3)."""
        return softmax(self.logits(images) / self.temperature)

    def predict(self, images):
        """[Prediction] for uint8 images (N, H, W, 3): calibrated probabilities, out-of-distribution score, verdict."""
        logits = self.logits(images)
        probs = softmax(logits / self.temperature)
        scores = self.detector.scores(logits, self.temperature)
        unknown = self.detector.unknown(scores)
        return [Prediction(p, self.class_names, float(score), bool(p.max() < self.unsure_threshold), bool(flag))
                for p, score, flag in zip(probs, scores, unknown)]

    def warm_up(self):
        """Run one prediction so the first request does not pay for graph tracing."""
        self.probabilities(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))
        self.warmed_up = True

    def ready(self):
        """(ready, detail): loaded and answered a warm-up prediction."""
        return (True, "model loaded and warmed up") if self.warmed_up else (False, "model not warmed up yet")


class TFLiteRunner:
    """Batched predictions from a .tflite file (uint8 or float input, quantised or float output)."""

    def __init__(self, path, threads=None, content=None):
        """The file at path, or its bytes in `content` (then the file is never opened: replacing it is harmless)."""
        source = {"model_content": content} if content is not None else {"model_path": str(path)}
        self.interpreter = interpreter_class()(**source, num_threads=threads or os.cpu_count())
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None

    def __call__(self, images):
        images = np.asarray(images)
        if self.batch != len(images):
            self.interpreter.resize_tensor_input(self.input["index"], images.shape)
            self.interpreter.allocate_tensors()
            self.batch = len(images)
        self.interpreter.set_tensor(self.input["index"], images.astype(self.input["dtype"]))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"]).astype(np.float32)
        scale, zero = self.output.get("quantization", (0.0, 0))
        return (out - zero) * scale if scale else out


def check_output_kind(path, runner, views):
    """ModelFileError unless the file outputs what its sidecar says: per-view logits with tta_views, else probabilities
    (read the wrong way, either would serve nonsense that looks like an answer)."""
    size = runner.input["shape"][1]
    rows = runner(np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype(np.float32))
    probabilities = bool(np.all(rows >= -1e-3) and np.all(rows <= 1 + 1e-3) and np.allclose(rows.sum(1), 1, atol=0.05))
    if views and probabilities:
        raise modelfile.ModelFileError(f"{path}: the sidecar lists test-time views (per-view logits), but the model "
                                        "outputs probabilities.")
    if not views and not probabilities:
        raise modelfile.ModelFileError(f"{path}: the model outputs logits (an export with test-time views?), but the "
                                        "sidecar lists no tta_views.")


class PerThreadTFLite:
    """A TFLite forward pass usable from many threads: one interpreter per thread (one is not thread-safe).

    Rows run in chunks of a fixed size (the last one padded), so no interpreter is ever resized: that costs more
    than a forward pass. With `borrow_idle_core`, a call made while no other is in flight in this process runs half
    of its chunks on a helper thread at the same time (invoke releases the GIL): a request alone gets two cores.
    """

    def __init__(self, path, threads, chunk=1, borrow_idle_core=False, content=None):
        self.path, self.threads, self.chunk, self.content = path, threads, chunk, content
        self.local = threading.local()
        self.helper = ThreadPoolExecutor(1, thread_name_prefix="tflite-helper") if borrow_idle_core else None
        self.lock, self.in_flight = threading.Lock(), 0

    @classmethod
    def load(cls, path, threads=1, borrow_idle_core=False, chunk_images=None, content=None):
        """(forward, sidecar) after checking the file (or its bytes, `content`) opens and its shapes match the
        sidecar."""
        meta = modelfile.read_meta(path)
        with quiet.filtered_stderr(quiet.LITERT_NOISE):  # the first forward pass is where LiteRT announces XNNPACK
            try:
                probe = TFLiteRunner(path, threads, content)
            except (ValueError, RuntimeError) as exc:
                raise modelfile.ModelFileError(f"{path}: cannot load TFLite model "
                                                f"({' '.join(str(exc).split())[:200]}).") from None
            modelfile.check_shapes(path, tuple(probe.input["shape"]), tuple(probe.output["shape"]), meta)
            views = meta.get("tta_views")
            check_output_kind(path, probe, views)
        rows_per_image = len(views) if views else 1
        chunk = rows_per_image * chunk_images if chunk_images else (
            rows_per_image // 2 if rows_per_image % 2 == 0 else rows_per_image)
        forward = cls(path, threads, chunk, borrow_idle_core, content)
        forward.local.runner = probe
        return (ViewAverage(forward, views) if views else Composed(forward, modelfile.log_probabilities)), meta

    def run(self, chunks):
        """This thread's interpreter applied to each chunk."""
        runner = getattr(self.local, "runner", None)
        if runner is None:
            runner = self.local.runner = TFLiteRunner(self.path, self.threads, self.content)
        return [runner(chunk) for chunk in chunks]

    def __call__(self, rows):
        rows = np.asarray(rows)
        count = len(rows)
        if count % self.chunk:
            rows = np.concatenate([rows, np.zeros((self.chunk - count % self.chunk, *rows.shape[1:]), rows.dtype)])
        chunks = np.split(rows, max(1, len(rows) // self.chunk))
        with self.lock:
            self.in_flight += 1
            alone = self.in_flight == 1
        try:
            if alone and self.helper is not None and len(chunks) > 1:
                half = len(chunks) // 2
                others = self.helper.submit(self.run, chunks[half:])
                outputs = self.run(chunks[:half]) + others.result()
            else:
                outputs = self.run(chunks)
        finally:
            with self.lock:
                self.in_flight -= 1
        return np.concatenate(outputs)[:count]


class ViewAverage:
    """Logits from a backbone's forward pass (logits, one row per image view): the views' weighted mean.

    views: [(mirror, dx, dy, weight)], made by images.tta_view; the mean (and the softmax after it) run in float32
    because, quantised inside an int8 file, they cost accuracy."""

    def __init__(self, forward, views):
        self.forward, self.views = forward, [tuple(view) for view in views]
        weights = np.array([view[3] for view in views], np.float32)
        self.weights = weights / weights.sum()

    def __call__(self, images):
        logits = self.forward(tta_rows(images, self.views)).reshape(len(self.views), len(images), -1)
        return np.tensordot(self.weights, logits, axes=1)


class Composed:
    """then(forward(x)): a forward pass followed by a numpy function."""

    def __init__(self, forward, then):
        self.forward, self.then = forward, then

    def __call__(self, x):
        return self.then(self.forward(x))



def interpreter_class():
    """LiteRT's TFLite interpreter (ai-edge-litert: no TensorFlow in the process), else TensorFlow's own."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        tf = quiet.tensorflow()

        Interpreter = tf.lite.Interpreter
    return Interpreter


def calibrate(probs, temperature):
    """softmax(log(p) / T): temperature scaling applied to probabilities."""
    if temperature == 1.0:
        return probs
    return softmax(np.log(np.clip(probs, 1e-12, 1.0)) / temperature)


def softmax(logits):
    """exp(logits) normalised over the last axis, shifted by the maximum so it cannot overflow."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
