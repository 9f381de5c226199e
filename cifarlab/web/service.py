"""What the web pages and the APIs share: uploads in, predictions out, in one vectorised model call."""
import base64
import io

import numpy as np

from ..images import ImageError


class TooManyFiles(ValueError):
    """More files in one request than the app takes; `limit` is the most it takes."""

    def __init__(self, limit):
        super().__init__(f"too many files: at most {limit}")
        self.limit = limit


def read_uploads(files, limit):
    """[(filename, bytes)] of the "file" parts that name a file; TooManyFiles past `limit`, before reading any."""
    uploads = [f for f in files.getlist("file") if f.filename]
    if len(uploads) > limit:
        raise TooManyFiles(limit)
    return [(f.filename, f.read()) for f in uploads]


def classify_items(classifier, items):
    """Fill in the predictions of the decodable items with one batched model call."""
    good = [item for item in items if item.error is None]
    if good:
        for item, prediction in zip(good, classifier.predict(np.stack([item.pixels for item in good]))):
            item.prediction = prediction
    return items


def refusal(items):
    """The ImageError to answer with when no item could be classified (None when some could)."""
    refused = [item for item in items if item.error is not None]
    if len(refused) < len(items):
        return None
    if len(refused) == 1:
        return ImageError(f"{refused[0].filename}: {refused[0].error.message}", refused[0].error.status)
    statuses = {item.error.status for item in refused}
    return ImageError("None of the files could be used: " +
                      "; ".join(f"{item.filename}: {item.error.message}" for item in refused[:5]),
                      statuses.pop() if len(statuses) == 1 else 400)


def prediction_json(item):
    """The API's description of one item: its prediction, or its error and HTTP status."""
    if item.error is not None:
        return {"filename": item.filename, "error": item.error.message, "status": item.error.status}
    return {"filename": item.filename, **item.prediction.to_json()}


def model_summary(classifier):
    """Name, version (file hash) and headline metrics of the served model."""
    meta = classifier.meta
    return {"name": meta.get("name"), "arch": meta.get("arch"), "version": classifier.version,
            "test_accuracy": meta.get("test_accuracy"), "class_names": classifier.class_names,
            "temperature": classifier.temperature, "unsure_threshold": classifier.unsure_threshold,
            "ood_method": classifier.detector.score, "ood_threshold": classifier.detector.threshold}


def png_data_uri(image):
    """A PIL image as a data: URI (allowed by the CSP's img-src)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
