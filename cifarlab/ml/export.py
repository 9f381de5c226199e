"""Exports of a trained .h5 for other serving systems: SavedModel (TF Serving), TFLite float16 and int8."""
import os
import tempfile
import time

import numpy as np

from . import architectures
from .. import atomic, modelfile, sidecar
from ..images import tta_rows
from ..inference import Classifier, TFLiteRunner, ViewAverage
from ..progress import Progress


def calibrated_model(model, temperature):
    """A Keras model: uint8-range pixels -> temperature-calibrated probabilities (softmax(logits / T))."""
    import keras

    inputs = keras.Input(model.input_shape[1:], name="images")
    logits = modelfile.symbolic_logits(model, inputs)
    probs = keras.layers.Activation("softmax", name=modelfile.PROBABILITIES)(logits / temperature)
    return keras.Model(inputs, probs, name=f"{model.name}_calibrated")


def export_saved_model(model, temperature, path):
    """SavedModel whose serving_default takes uint8 images (N, 32, 32, 3) and returns {"probabilities"}."""
    return write_saved_model(calibrated_model(model, temperature), "probabilities", path)


def write_saved_model(model, output_name, path):
    """SavedModel whose serving_default takes uint8 images (N, H, W, 3) and returns {output_name: model(images)}."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda images: {output_name: model(tf.cast(images, tf.float32), training=False)},
        input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.uint8, name="images")])
    archive.write_out(path, verbose=False)
    return path


def export_tflite(saved_model_path, path, kind, calibration_images=None):
    """TFLite flatbuffer from the SavedModel: kind 'float16' (weights) or 'int8' (full integer, calibrated)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_path, signature_keys=["serving_default"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif kind == "int8":
        images = np.asarray(calibration_images, np.uint8)
        converter.representative_dataset = lambda: ([images[i:i + 1]] for i in range(len(images)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    else:
        raise ValueError(f"unknown TFLite kind {kind!r}")
    with open(path, "wb") as f:
        f.write(converter.convert())
    return path


def saved_model_runner(path):
    """Batched predictions from the SavedModel's serving signature."""
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    return lambda images: serve(images=tf.constant(np.asarray(images, np.uint8)))["probabilities"].numpy()


def measure(predict, x_test, y_test, batch=250, repeats=50, label="test accuracy"):
    """(test accuracy, median single-image latency in ms) of a predict function."""
    progress = Progress(label, len(x_test))
    correct = 0
    for i in range(0, len(x_test), batch):
        correct += int((predict(x_test[i:i + batch]).argmax(1) == y_test[i:i + batch]).sum())
        progress.update(len(x_test[i:i + batch]))
    one = x_test[:1]
    predict(one)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(one)
        times.append(time.perf_counter() - started)
    return correct / len(x_test), 1000 * float(np.median(times))


FORMATS = ("h5", "savedmodel", "float16", "int8")  # what export_all measures (and writes) unless told fewer


def output_paths(model_path, out_dir, formats=FORMATS):
    """The files and folders export_all writes for these formats (the SavedModel always; each .tflite's sidecar)."""
    stem = os.path.join(out_dir, os.path.splitext(os.path.basename(model_path))[0])
    paths = [f"{stem}_savedmodel"]
    for kind in ("float16", "int8"):
        if kind in formats:
            paths += [f"{stem}_{kind}.tflite", f"{stem}_{kind}.json"]
    return paths


def export_all(model_path, out_dir, data, command="", calibration_count=500, seed=0, formats=FORMATS):
    """Write the SavedModel and TFLite files (each .tflite with a sidecar, so MODEL_PATH can serve it);
    return rows of format, path, MB, latency, test accuracy.

    A model with test-time views gives TFLite files of its backbone alone (one view per row, logits out): the reader
    makes the views and averages their logits in float (inference.ViewAverage); quantised inside an int8 file, the
    views' mean and the softmax cost accuracy. Other models' files output probabilities.
    """
    commit = sidecar.git_commit()  # before any file is written: an export into model/ changes tracked files
    model, meta = modelfile.load(model_path)
    architecture = architectures.of_model(meta)
    if architecture is not None and architecture.export_refused:
        raise modelfile.ModelFileError(f"{model_path}: {architecture.export_refused}")
    temperature = float(meta.get("calibration", {}).get("temperature", 1.0))
    os.makedirs(out_dir, exist_ok=True)
    saved, *_ = output_paths(model_path, out_dir)
    stem = saved.removesuffix("_savedmodel")
    export_saved_model(model, temperature, saved)
    calibration = data.x_train[np.random.default_rng(seed).permutation(len(data.x_train))[:calibration_count]]
    views = modelfile.views(model) or None
    with tempfile.TemporaryDirectory() as tmp:
        source = saved if not views else write_saved_model(modelfile.backbone(model), "logits",
                                                           os.path.join(tmp, "backbone"))
        fp16 = export_tflite(source, f"{stem}_float16.tflite", "float16") if "float16" in formats else None
        int8 = export_tflite(source, f"{stem}_int8.tflite", "int8", tta_rows(calibration, views) if views else calibration) \
            if "int8" in formats else None
    clf = Classifier(model, meta)
    measured = [  # (name, path or None when not asked for, a function making its predictor)
                ("Keras .h5", model_path if "h5" in formats else None, lambda: clf.probabilities),
                ("SavedModel (uint8 in)", saved if "savedmodel" in formats else None, lambda: saved_model_runner(saved)),
                ("TFLite float16", fp16, lambda: tflite_runner(fp16, views)),
                ("TFLite int8", int8, lambda: tflite_runner(int8, views))]
    rows = []
    for step, (name, path, predict) in enumerate(measured, start=1):
        if path is None:
            continue
        print(f"[{step}/{len(measured)}] {name}: accuracy on {len(data.x_test):,} test images, latency", flush=True)
        accuracy, latency = measure(predict(), data.x_test, data.y_test, label=f"[{step}/{len(measured)}] {name}")
        rows.append({"format": name, "path": path, "mb": size_mb(path), "latency_ms": latency, "accuracy": accuracy})
        if path.endswith(".tflite"):
            exported = sidecar.for_export(meta, name, model_path, accuracy, command, commit, views)
            if meta.get("ood"):  # the detector's threshold is refitted on this file's own logits
                exported = refit_detector(path, exported, data)
            atomic.write_json(modelfile.sidecar_path(path), exported)
    return rows


def refit_detector(path, meta, data):
    """meta with its ood section fitted again on the exported file's own validation and outlier logits."""
    from ..report import card

    atomic.write_json(modelfile.sidecar_path(path), meta)  # the classifier reads the sidecar beside the file
    classifier = Classifier.from_path(path, chunk_images=100)
    _, val = data.split_validation(int(meta.get("val_images", 0)), seed=int(meta.get("seed", 0)))
    if val is None:
        return meta
    fitted = card.fit_detector(classifier, card.logits_in_batches(classifier, val[0], label="detector: validation split"),
                               classifier.temperature)
    rates = card.test_rates(card.logits_in_batches(classifier, data.x_test, label="detector: test split"), fitted,
                            classifier.temperature, classifier.unsure_threshold)
    return {**meta, "ood": {**fitted, **rates}}


def tflite_runner(path, views=None):
    """Probabilities from a .tflite file: its own output, or the weighted mean of its logits over test-time views."""
    runner = TFLiteRunner(path)
    return ViewAverage(runner, views) if views else runner


def size_mb(path):
    """Size of a file, or of a directory tree, in MB."""
    if os.path.isfile(path):
        return os.path.getsize(path) / 1e6
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 1e6
