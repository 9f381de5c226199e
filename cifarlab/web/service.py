"""What the web pages and the APIs share: uploads in, predictions out, in one vectorised model call."""
import base64
import io
import time
from dataclasses import dataclass, field

import numpy as np

from ..images import ImageError, decode_cost, decode_image, to_model_input
from ..inference import Prediction
from .storage import display_copy


@dataclass
class Item:
    """One uploaded image: its name, model input and display copy or the reason it was refused, its prediction."""

    filename: str
    pixels: np.ndarray = None  # (size, size, 3) uint8 model input
    image: object = None  # RGB PIL display copy, at most storage.DISPLAY_MAX_SIDE per side
    error: ImageError = None
    prediction: Prediction = None
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """What one request may spend on decoding: pixels per image, pixels in all, seconds."""

    max_image_pixels: int
    max_request_pixels: int
    deadline_s: float

    @classmethod
    def from_config(cls, config):
        return cls(config["MAX_IMAGE_PIXELS"], config["MAX_REQUEST_PIXELS"], config["REQUEST_DEADLINE"])


class TooManyFiles(ValueError):
    """More files in one request than the app takes; `limit` is the most it takes."""

    def __init__(self, limit):
        super().__init__(f"too many files: at most {limit}")
        self.limit = limit


class OverBudget(ImageError):
    """The request's images together would decode to more pixels than the budget: refused before decoding (413)."""

    def __init__(self, pixels, limit):
        super().__init__(f"The images in this request would cost {pixels:,} pixel decodes (each scan of a progressive "
                         f"JPEG counts); the limit is {limit:,} per request. Send fewer or smaller images.", 413)


def read_uploads(files, limit):
    """[(filename, bytes)] of the "file" parts that name a file; TooManyFiles past `limit`, before reading any."""
    uploads = [f for f in files.getlist("file") if f.filename]
    if len(uploads) > limit:
        raise TooManyFiles(limit)
    return [(f.filename, f.read()) for f in uploads]


def decode_items(named_payloads, input_size, budget, started=None):
    """[(filename, bytes)] -> [Item], decoded one at a time, each with its model input or the ImageError that refused it.

    Raises OverBudget (before decoding anything) when the images together exceed the request's pixel budget;
    images not reached before the deadline (from `started`, a time.monotonic()) are refused with a 503.
    """
    total = sum(decode_cost(data, budget.max_image_pixels) for _, data in named_payloads)
    if total > budget.max_request_pixels:
        raise OverBudget(total, budget.max_request_pixels)
    started = time.monotonic() if started is None else started
    items = []
    for filename, data in named_payloads:
        item = Item(filename=clean_filename(filename))
        try:
            if time.monotonic() - started > budget.deadline_s:
                raise ImageError(f"Not decoded: the request ran past its {budget.deadline_s:g} s limit; "
                                 "send fewer or smaller images.", 503)
            image = decode_image(data, budget.max_image_pixels)
            item.pixels = to_model_input(image, input_size)
            item.image = display_copy(image)
            del image  # only the model input and the display copy outlive this loop
        except ImageError as exc:
            item.error = exc
        items.append(item)
    return items


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


def clean_filename(name, limit=200):
    """A client-supplied file name fit for display and JSON (never used as a path)."""
    name = "".join(ch for ch in (name or "") if ch.isprintable())
    return name[:limit] or "upload"


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
