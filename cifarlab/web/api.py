"""JSON APIs: /api/predict (multipart uploads), TF-Serving-compatible /v1/models/..., health probes."""
import base64
import binascii
import json

import numpy as np
from flask import Blueprint, current_app, jsonify, request
from werkzeug.routing import BaseConverter

from . import decoding, openapi, uploads
from ..errors import CifarlabError
from .context import parts
from .current import classifier, count_refused_request, decode, predictor, record_answers, served, served_or_default
from .registry import NotServed

bp = Blueprint("api", __name__)
JSON_PREFIXES = ("/api/", "/v1/", "/healthz", "/readyz")  # paths whose errors are answered in JSON
SIGNATURES = ("serving_default", "verdicts")  # :predict answers rows of probabilities, or named outputs per instance


class ServableName(BaseConverter):
    """A model name or version label in a /v1/models/ path: no ':', so `NAME:predict` is never a name (GET on it is
    a 405 with Allow: POST, not a 404 for a model called "NAME:predict")."""

    regex = "[^/:]+"


@bp.record_once
def add_converter(state):
    state.app.url_map.converters["servable"] = ServableName


class ApiError(CifarlabError):
    """A client error answered as {"error": message} with an HTTP status."""


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
    return error_json(exc.message, uploads.status_of(exc))


@bp.errorhandler(uploads.UploadRefused)
def upload_refused(exc):
    """The refusal, with each file's own error when the files were read."""
    count_refused_request(exc)
    if not exc.items:
        return error_json(exc.message, exc.status)
    return jsonify({**predictions_json(exc.items), "error": exc.message}), exc.status


@bp.get("/openapi.json")
def openapi_spec():
    return jsonify(openapi.spec(current_app.config["MAX_BATCH_FILES"]))


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    models = parts().models
    answers = {name: model_ready(models, name) for name in models.names()} or \
        {"": (False, "no model is loaded (MODEL_DIR has no model folders)")}
    ready = all(ok for ok, _ in answers.values())
    detail = "; ".join(f"{name}: {text}" for name, (_, text) in answers.items()) if len(answers) > 1 else \
        next(iter(answers.values()))[1]
    return jsonify(status="ready" if ready else "not ready", detail=detail), 200 if ready else 503


def model_ready(models, name):
    """(ready, detail) of one model: its serving version's, or not ready when none is loaded."""
    try:
        return models.get(name)[1].classifier.ready()
    except NotServed as exc:
        return False, exc.message


@bp.post("/api/predict")
def predict():
    """Each file classified or refused on its own, like the form; 200 when at least one was classified."""
    items = uploads.classify_uploads(request.files, current_app.config["MAX_BATCH_FILES"], decode, predictor())
    record_answers(items)
    return jsonify(predictions_json(items))


def predictions_json(items):
    """The /api/predict answer: a prediction or an error per file, and the model that made them."""
    name, model = served_or_default()
    return {"predictions": [uploads.prediction_json(item) for item in items],
            "model": {**uploads.model_summary(model.classifier), "served_name": name, "served_version": model.version}}


@bp.get("/v1/models/<servable:name>")
@bp.get("/v1/models/<servable:name>/versions/<int:version>")
@bp.get("/v1/models/<servable:name>/labels/<servable:label>")
def serving_status(name, version=None, label=None):
    """TF Serving's model status: every version of the model (or the one asked for) and its state."""
    servable = parts().models.servable(name)
    if label is not None or version is not None:
        _, model = served()
        versions = [servable.versions[model.version]]
    else:
        versions = [servable.versions[number] for number in sorted(servable.versions, reverse=True)]
    return jsonify(model_version_status=[v.status() for v in versions])


@bp.get("/v1/models/<servable:name>/metadata")
@bp.get("/v1/models/<servable:name>/versions/<int:version>/metadata")
@bp.get("/v1/models/<servable:name>/labels/<servable:label>/metadata")
def serving_metadata(name, version=None, label=None):
    _, model = served()
    c = model.classifier
    size = c.input_size
    return jsonify(model_spec={"name": name, "signature_name": "serving_default", "version": str(model.version)},
                   metadata={
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


@bp.post("/v1/models/<servable:name>:predict")
@bp.post("/v1/models/<servable:name>/versions/<int:version>:predict")
@bp.post("/v1/models/<servable:name>/labels/<servable:label>:predict")
def serving_predict(name, version=None, label=None):
    served()  # 404 before the body is read when the model, version or label is not served
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
    pixels = instances_pixels(instances)
    return jsonify(predictions=[p.serving_row(named=signature == "verdicts") for p in predictor().predict(pixels)])


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
                raise ApiError(f"instance {i}: {decoded[i].error.message}", uploads.status_of(decoded[i].error))
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
