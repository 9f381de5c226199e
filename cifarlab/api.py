"""JSON APIs: /api/predict (multipart uploads), TF-Serving-compatible /v1/models/..., health probes."""
import base64
import binascii

import numpy as np
from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import BadRequest

from . import service
from .images import ImageError, decode_image, to_model_input

bp = Blueprint("api", __name__)
JSON_PREFIXES = ("/api/", "/v1/", "/healthz", "/readyz")  # paths whose errors are answered in JSON


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


def classifier():
    return current_app.extensions["classifier"]


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    ready, detail = classifier().ready()
    return jsonify(status="ready" if ready else "not ready", detail=detail), 200 if ready else 503


@bp.post("/api/predict")
def predict():
    try:
        uploads = service.read_uploads(request.files, current_app.config["MAX_BATCH_FILES"])
    except service.TooManyFiles as exc:
        raise ApiError(f"too many files: at most {exc.limit} per request", 400) from None
    if not uploads:
        raise ApiError('send one or more images as multipart/form-data field "file"')
    items = service.decode_items(uploads, current_app.config["MAX_IMAGE_PIXELS"])
    refused = [item for item in items if item.error is not None]
    if refused:  # all or nothing: a client gets either every prediction or the reason for each refusal
        first = refused[0]
        raise ApiError(f"{first.filename}: {first.error.message}" +
                       (f" (and {len(refused) - 1} more refused)" if len(refused) > 1 else ""), first.error.status)
    service.classify_items(classifier(), items)
    return jsonify(predictions=[service.prediction_json(item) for item in items],
                   model=service.model_summary(classifier()))


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
        }}},
        "class_names": c.class_names, "version": c.version,
    })


@bp.post("/v1/models/<name>:predict")
def serving_predict(name):
    check_model_name(name)
    try:
        body = request.get_json(force=True, silent=False)
    except BadRequest:
        raise ApiError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError('expected a JSON object with "instances" or "inputs"')
    instances = body.get("instances", body.get("inputs"))
    if not isinstance(instances, list) or not instances:
        raise ApiError('"instances" must be a non-empty list')
    limit = current_app.config["MAX_SERVING_INSTANCES"]
    if len(instances) > limit:
        raise ApiError(f"too many instances: at most {limit} per request")
    c = classifier()
    pixels = np.stack([instance_pixels(instance, i, c.input_size) for i, instance in enumerate(instances)])
    return jsonify(predictions=np.round(c.probabilities(pixels).astype(np.float64), 7).tolist())


def instance_pixels(instance, index, size):
    """One TF-Serving instance -> (size, size, 3) pixels: a nested pixel array or {"b64": image bytes}."""
    if isinstance(instance, dict):
        if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
            raise ApiError(f'instance {index}: an object instance must be {{"b64": "<base64 image bytes>"}}')
        try:
            data = base64.b64decode(instance["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(f"instance {index}: b64 is not valid base64") from None
        try:
            image = decode_image(data, current_app.config["MAX_IMAGE_PIXELS"])
        except ImageError as exc:
            raise ApiError(f"instance {index}: {exc.message}", exc.status) from None
        return to_model_input(image, size)
    try:
        array = np.asarray(instance, dtype=np.float64)
    except (TypeError, ValueError):
        raise ApiError(f"instance {index}: expected a {size}x{size}x3 array of numbers") from None
    if array.shape != (size, size, 3):
        raise ApiError(f"instance {index}: expected shape [{size}, {size}, 3], got {list(array.shape)}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise ApiError(f"instance {index}: pixel values must be numbers in 0..255")
    return array.astype(np.float32)
