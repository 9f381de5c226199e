"""JSON APIs: /api/predict (multipart uploads), TF-Serving-compatible /v1/models/..., health probes."""
import base64
import binascii
import json

import numpy as np
from flask import Blueprint, current_app, g, jsonify, request

from . import decoding, service

bp = Blueprint("api", __name__)
JSON_PREFIXES = ("/api/", "/v1/", "/healthz", "/readyz")  # paths whose errors are answered in JSON
SIGNATURES = ("serving_default", "verdicts")  # :predict answers rows of probabilities, or named outputs per instance


class ApiError(Exception):
    """A client error answered as {"error": message} with an HTTP status."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.message, self.status = message, status


def is_json_path(path):
    """True for URLs served by this blueprint (their errors must be JSON, not HTML)."""
    return path.startswith(JSON_PREFIXES)


def error_json(message, status):
    """The error shape shared with TF Serving: {"error": "..."}."""
    return jsonify(error=message), status


@bp.errorhandler(ApiError)
def api_error(exc):
    return error_json(exc.message, exc.status)


@bp.errorhandler(decoding.OverBudget)
def over_budget(exc):
    return error_json(exc.message, service.status_of(exc))


@bp.errorhandler(service.UploadRefused)
def upload_refused(exc):
    """The refusal, with each file's own error when the files were read."""
    if not exc.items:
        return error_json(exc.message, exc.status)
    return jsonify({**predictions_json(exc.items), "error": exc.message}), exc.status


def classifier():
    return current_app.extensions["classifier"]


def decode(named_payloads):
    """[(filename, bytes)] -> decoded items, within this request's pixel budget and deadline, in the app's decoders."""
    return decoding.decode_items(named_payloads, classifier().input_size,
                                 decoding.Budget.from_config(current_app.config), g.get("started_monotonic"),
                                 current_app.extensions["decoders"])


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    ready, detail = classifier().ready()
    return jsonify(status="ready" if ready else "not ready", detail=detail), 200 if ready else 503


@bp.post("/api/predict")
def predict():
    """Each file classified or refused on its own, like the form; 200 when at least one was classified."""
    items = service.classify_uploads(request.files, current_app.config["MAX_BATCH_FILES"], decode, classifier())
    return jsonify(predictions_json(items))


def predictions_json(items):
    """The /api/predict answer: a prediction or an error per file, and the model that made them."""
    return {"predictions": [service.prediction_json(item) for item in items], "model": service.model_summary(classifier())}


def check_model_name(name):
    if name != current_app.config["SERVING_MODEL_NAME"]:
        raise ApiError(f"Servable not found for request: Latest({name})", 404)


@bp.get("/v1/models/<name>")
def serving_status(name):
    check_model_name(name)
    ready, detail = classifier().ready()
    return jsonify(model_version_status=[{
        "version": "1", "state": "AVAILABLE" if ready else "UNAVAILABLE",
        "status": {"error_code": "OK" if ready else "UNAVAILABLE", "error_message": "" if ready else detail},
    }])


@bp.get("/v1/models/<name>/metadata")
def serving_metadata(name):
    check_model_name(name)
    c = classifier()
    size = c.input_size
    return jsonify(model_spec={"name": name, "signature_name": "serving_default", "version": "1"}, metadata={
        "signature_def": {"signature_def": {"serving_default": {
            "inputs": {"images": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [
                {"size": "-1"}, {"size": str(size)}, {"size": str(size)}, {"size": "3"}]},
                "description": f"RGB pixels 0..255, or {{\"b64\": image file bytes}} resized to {size}x{size}"}},
            "outputs": {"probabilities": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [
                {"size": "-1"}, {"size": str(len(c.class_names))}]},
                "description": "temperature-calibrated softmax over class_names"}},
            "method_name": "tensorflow/serving/predict",
        }, "verdicts": {
            "inputs": {"images": {"dtype": "DT_FLOAT", "description": "as serving_default"}},
            "outputs": {"probabilities": {"dtype": "DT_FLOAT", "description": "as serving_default"},
                        "ood_score": {"dtype": "DT_FLOAT", "description": "higher = further from the training data"},
                        "unsure": {"dtype": "DT_BOOL", "description": "doubt between the known classes"},
                        "unknown": {"dtype": "DT_BOOL", "description": "none of the known classes"}},
            "method_name": "tensorflow/serving/predict",
        }}},
        "class_names": c.class_names, "version": c.version,
    })


@bp.post("/v1/models/<name>:predict")
def serving_predict(name):
    check_model_name(name)
    try:
        body = json.loads(request.get_data(cache=False))
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise ApiError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError('expected a JSON object with "instances" or "inputs"')
    instances = body.get("instances", body.get("inputs"))
    if not isinstance(instances, list) or not instances:
        raise ApiError('"instances" must be a non-empty list')
    limit = current_app.config["MAX_SERVING_INSTANCES"]
    if len(instances) > limit:
        raise ApiError(f"too many instances: at most {limit} per request")
    signature = body.get("signature_name", "serving_default")
    if signature not in SIGNATURES:
        raise ApiError(f"signature_name is one of {', '.join(SIGNATURES)}, not {str(signature)[:40]!r}")
    c = classifier()
    pixels = instances_pixels(instances)
    return jsonify(predictions=[p.serving_row(named=signature == "verdicts") for p in c.predict(pixels)])


def instances_pixels(instances):
    """TF-Serving instances -> (N, size, size, 3) pixels; b64 images share the request's pixel budget."""
    size = classifier().input_size
    images = {i: b64_bytes(instance, i) for i, instance in enumerate(instances) if isinstance(instance, dict)}
    items = decode([(str(i), data) for i, data in images.items()])
    decoded = dict(zip(images, items))
    pixels = []
    for i, instance in enumerate(instances):
        if i in decoded:
            if decoded[i].error is not None:
                raise ApiError(f"instance {i}: {decoded[i].error.message}", service.status_of(decoded[i].error))
            pixels.append(decoded[i].pixels.astype(np.float32))
        else:
            pixels.append(array_pixels(instance, i, size))
    return np.stack(pixels)


def b64_bytes(instance, index):
    """The image bytes of a {"b64": ...} instance."""
    if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
        raise ApiError(f'instance {index}: an object instance must be {{"b64": "<base64 image bytes>"}}')
    try:
        return base64.b64decode(instance["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(f"instance {index}: b64 is not valid base64") from None


def array_pixels(instance, index, size):
    """A nested [size][size][3] list of numbers in 0..255 -> float32 pixels."""
    try:
        cells = np.asarray(instance, dtype=object)
    except ValueError:  # ragged nesting
        raise ApiError(f"instance {index}: expected a {size}x{size}x3 array of numbers in 0..255") from None
    if not all(type(v) in (int, float) for v in cells.flat):  # no strings, booleans, nested lists or None
        raise ApiError(f"instance {index}: expected a {size}x{size}x3 array of numbers in 0..255")
    if not all(0 <= v <= 255 for v in cells.flat):  # NaN fails too; 10**400 is compared, never converted
        raise ApiError(f"instance {index}: pixel values must be numbers in 0..255")
    if cells.shape != (size, size, 3):
        raise ApiError(f"instance {index}: expected shape [{size}, {size}, 3], got {list(cells.shape)}")
    return cells.astype(np.float32)
