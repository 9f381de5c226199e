"""What the web pages and the APIs share: uploads in, predictions out, in one vectorised model call."""
import base64
import io

import numpy as np

from .. import sidecar
from ..errors import CifarlabError
from .decoding import OverBudget


# the HTTP status each reason an image is refused for is answered with (images.REASONS, then the web layer's own)
STATUS = {"empty": 400, "damaged": 400, "unsupported": 415, "malformed": 422, "too_large": 413, "shape": 422,
          "memory": 413, "over_budget": 413, "late": 503}


def status_of(error):
    """The HTTP status of an ImageError."""
    return STATUS[error.reason]


class UploadRefused(CifarlabError):
    """An upload request refused as a whole: its message, HTTP status and, when its files were read, their items."""

    def __init__(self, message, status, items=()):
        super().__init__(message, status)
        self.items = list(items)


def classify_uploads(files, limit, decode, classifier):
    """The one upload pipeline of the form and /api/predict: the "file" parts (at most `limit`, counted before any is
    read), decoded by `decode` within the request's budget, the decodable ones classified in one model call.
    UploadRefused when no image could be classified; otherwise the items, each with its prediction or its error."""
    if "file" not in files:
        raise UploadRefused('No file was sent: choose an image to upload (multipart/form-data field "file").', 400)
    uploads = [f for f in files.getlist("file") if f.filename]
    if len(uploads) > limit:
        raise UploadRefused(f"Too many files: at most {limit} per request.", 400)
    if not uploads:
        raise UploadRefused('No file was selected: choose an image to upload (multipart/form-data field "file").', 400)
    try:
        items = decode([(f.filename, f.read()) for f in uploads])
    except OverBudget as exc:
        raise UploadRefused(exc.message, status_of(exc)) from None
    refused = [item for item in items if item.error is not None]
    if len(refused) == len(items):
        raise UploadRefused(*refusal(refused), items)
    return classify_items(classifier, items)


def classify_items(classifier, items):
    """Fill in the predictions of the decodable items with one batched model call."""
    good = [item for item in items if item.error is None]
    if good:
        for item, prediction in zip(good, classifier.predict(np.stack([item.pixels for item in good]))):
            item.prediction = prediction
    return items


def refusal(refused):
    """(message, HTTP status) for refused items: every file named, their status when they share one, else 400."""
    if len(refused) == 1:
        return f"{refused[0].filename}: {refused[0].error.message}", status_of(refused[0].error)
    statuses = {status_of(item.error) for item in refused}
    return ("None of the files could be used: " + "; ".join(f"{item.filename}: {item.error.message}"
                                                            for item in refused[:5]),
            statuses.pop() if len(statuses) == 1 else 400)


def prediction_json(item):
    """The API's description of one item: its prediction, or its error and HTTP status."""
    if item.error is not None:
        return {"filename": item.filename, "error": item.error.message, "status": status_of(item.error)}
    answer_id = {"id": item.extras["id"]} if "id" in item.extras else {}  # for POST /api/feedback
    return {"filename": item.filename, **answer_id, **item.prediction.to_json()}


def model_summary(classifier):
    """Name, version (file hash) and headline metrics of the served model."""
    meta = classifier.meta
    return {"name": sidecar.display_name(meta), "run": meta.get("name"), "training": sidecar.training_time(meta),
            "arch": meta.get("arch"), "version": classifier.version,
            "test_accuracy": meta.get("test_accuracy"), "class_names": classifier.class_names,
            "temperature": classifier.temperature, "unsure_threshold": classifier.unsure_threshold,
            "ood_method": classifier.detector.score, "ood_threshold": classifier.detector.threshold}


def png_data_uri(image):
    """A PIL image as a data: URI (allowed by the CSP's img-src)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
