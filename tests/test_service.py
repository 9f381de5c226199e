import pytest

from cifarlab.inference import Prediction
from cifarlab.web import service
from cifarlab.web.decoding import decode_items
from tests.test_decoding import BUDGET, image_bytes


class CountingClassifier:
    class_names = ["cat", "dog"]

    def __init__(self):
        self.calls = []

    def predict(self, pixels):
        self.calls.append(len(pixels))
        return [Prediction([0.25, 0.75], self.class_names, 0.25, unsure=True) for _ in pixels]


def test_decodable_items_are_classified_in_one_batched_call():
    items = decode_items([("a.png", image_bytes()), ("x", b"junk"), ("b.png", image_bytes(seed=1))], 32, BUDGET)
    clf = CountingClassifier()
    service.classify_items(clf, items)
    assert clf.calls == [2] and items[1].prediction is None and items[2].prediction.label == "dog"
    assert service.prediction_json(items[0])["unsure"] is True
    assert service.prediction_json(items[1]) == {"filename": "x", "error": items[1].error.message, "status": 415}


@pytest.mark.parametrize("payloads, status, text", [
    ([("a.txt", b"hi")], 415, "a.txt: This is not an image"),
    ([("a.txt", b"hi"), ("b.txt", b"ho")], 415, "None of the files could be used: a.txt"),
    ([("a.txt", b"hi"), ("e.png", b"")], 400, "e.png: The file is empty"),
])
def test_the_refusal_names_every_file_and_keeps_a_shared_status(payloads, status, text):
    refusal = service.refusal(decode_items(payloads, 32, BUDGET))
    assert refusal.status == status and text in refusal.message


def test_no_refusal_when_one_file_could_be_classified():
    assert service.refusal(decode_items([("a.png", image_bytes()), ("b", b"")], 32, BUDGET)) is None
