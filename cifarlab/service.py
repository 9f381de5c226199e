"""What the web pages and the APIs share: uploads in, predictions out, in one vectorised model call."""
import base64
import io
from dataclasses import dataclass, field

import numpy as np

from .images import ImageError, decode_image, to_model_input
from .inference import Prediction


@dataclass
class Item:
    """One uploaded image: its name, the decoded image or the reason it was refused, and its prediction."""

    filename: str
    image: object = None
    error: ImageError = None
    prediction: Prediction = None
    extras: dict = field(default_factory=dict)


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


def decode_items(named_payloads, max_pixels):
    """[(filename, bytes)] -> [Item], each decoded or carrying the ImageError that refused it."""
    items = []
    for filename, data in named_payloads:
        item = Item(filename=clean_filename(filename))
        try:
            item.image = decode_image(data, max_pixels)
        except ImageError as exc:
            item.error = exc
        items.append(item)
    return items


def classify_items(classifier, items):
    """Fill in the predictions of the decodable items with one batched model call."""
    good = [item for item in items if item.error is None]
    if good:
        pixels = np.stack([to_model_input(item.image, classifier.input_size) for item in good])
        for item, probs in zip(good, classifier.probabilities(pixels)):
            item.prediction = Prediction(probs, classifier.class_names)
    return items


def clean_filename(name, limit=200):
    """A client-supplied file name fit for display and JSON (never used as a path)."""
    name = "".join(ch for ch in (name or "") if ch.isprintable())
    return name[:limit] or "upload"


def prediction_json(item):
    """The API's description of one classified item."""
    p = item.prediction
    return {
        "filename": item.filename,
        "class": p.label,
        "index": p.index,
        "probabilities": {name: round(float(v), 6) for name, v in zip(p.class_names, p.probs)},
        "top3": [{"class": name, "index": index, "probability": round(prob, 6)} for name, index, prob in p.top(3)],
    }


def model_summary(classifier):
    """Name, version (file hash) and headline metrics of the served model."""
    meta = classifier.meta
    return {"name": meta.get("name"), "arch": meta.get("arch"), "version": classifier.version,
            "test_accuracy": meta.get("test_accuracy"), "class_names": classifier.class_names,
            "temperature": classifier.temperature}


def png_data_uri(image):
    """A PIL image as a data: URI (allowed by the CSP's img-src)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
