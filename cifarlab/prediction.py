"""The one result type, and its fields declared once: each field's JSON key and value, OpenAPI schema, CSV column,
place in :predict's named-output row and how the API page shows it all come from FIELDS."""
from dataclasses import dataclass
from typing import Callable

import numpy as np

VERDICTS = ("known", "unsure", "unknown")
PROBABILITY = {"type": "number", "minimum": 0, "maximum": 1}


@dataclass(frozen=True)
class Field:
    """One field of a prediction's JSON answer."""

    name: str  # its JSON key
    value: Callable  # Prediction -> its JSON value
    schema: dict  # its OpenAPI schema
    csv: Callable = None  # Prediction -> its cell in `train.py predict`'s CSV; None: no column of its own
    serving: Callable = None  # Prediction -> its value in :predict's named-output row; None: not in that row
    shape: str = ""  # how the API page shows the value's form after the key


FIELDS = (
    Field("class", lambda p: p.label, {"type": "string"}, csv=lambda p: p.label),
    Field("index", lambda p: p.index, {"type": "integer", "minimum": 0}, csv=lambda p: p.index),
    Field("verdict", lambda p: p.verdict, {"enum": list(VERDICTS)}, csv=lambda p: p.verdict),
    Field("unsure", lambda p: p.unsure, {"type": "boolean"}, csv=lambda p: p.unsure, serving=lambda p: p.unsure),
    Field("unknown", lambda p: p.unknown, {"type": "boolean"}, csv=lambda p: p.unknown, serving=lambda p: p.unknown),
    Field("ood_score", lambda p: round(p.ood_score, 6), {"type": "number"}, csv=lambda p: f"{p.ood_score:.4f}",
          serving=lambda p: round(p.ood_score, 6)),
    Field("probabilities", lambda p: {name: round(float(v), 6) for name, v in zip(p.class_names, p.probs)},
          {"type": "object", "additionalProperties": PROBABILITY},
          serving=lambda p: np.round(p.probs, 7).tolist(), shape=": {class: p, …}"),
    Field("top3", lambda p: [{"class": name, "index": index, "probability": round(prob, 6)}
                             for name, index, prob in p.top(3)],
          {"type": "array", "maxItems": 3, "items": {
              "type": "object", "required": ["class", "index", "probability"],
              "properties": {"class": {"type": "string"}, "index": {"type": "integer"}, "probability": PROBABILITY}}},
          csv=lambda p: ";".join(f"{label}:{prob:.4f}" for label, _, prob in p.top(3)),
          shape=': [{"class", "index", "probability"}, …]'),
)
CSV_FIELDS = tuple(field for field in FIELDS if field.csv)  # then one column per class, its probability
SERVING_FIELDS = tuple(field.name for field in FIELDS if field.serving)  # :predict's named outputs ("verdicts")


class Prediction:
    """The one result type: probabilities over named classes, top class, top-k, the out-of-distribution score and
    the verdict flags (unsure: doubt between the known classes; unknown: none of them). Pages, /api/predict and
    :predict all serialise it through FIELDS."""

    def __init__(self, probs, class_names, ood_score=0.0, unsure=False, unknown=False):
        self.probs = np.asarray(probs, dtype=np.float64)
        self.class_names = class_names
        self.index = int(np.argmax(self.probs))
        self.label = class_names[self.index]
        self.confidence = float(self.probs[self.index])
        self.ood_score, self.unsure, self.unknown = float(ood_score), bool(unsure), bool(unknown)

    @property
    def verdict(self):
        """known, unsure or unknown."""
        return "unknown" if self.unknown else "unsure" if self.unsure else "known"

    def top(self, k=3):
        """[(class name, index, probability)] for the k most likely classes."""
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.class_names[i], int(i), float(self.probs[i])) for i in order]

    def serving_row(self, named):
        """:predict's answer for one instance: TF Serving's row of probabilities, or its named-output form."""
        row = {field.name: field.serving(self) for field in FIELDS if field.serving}
        return row if named else row["probabilities"]

    def to_json(self):
        """The JSON object every API answers for one prediction."""
        return {field.name: field.value(self) for field in FIELDS}

    def csv_cells(self):
        """Its cells in `train.py predict`'s CSV: the CSV_FIELDS, then each class's probability."""
        return [*(field.csv(self) for field in CSV_FIELDS), *(f"{p:.6f}" for p in self.probs)]
