import numpy as np
import pytest

from cifarlab.inference import Prediction
from cifarlab.web import service
from tests.conftest import image_bytes

BUDGET = service.Budget(max_image_pixels=10**6, max_request_pixels=10**6, deadline_s=10.0)


def test_each_file_is_decoded_or_refused_on_its_own():
    items = service.decode_items([("a.png", image_bytes()), ("b.txt", b"hello"), ("c.png", b"")], 32, BUDGET)
    assert [i.filename for i in items] == ["a.png", "b.txt", "c.png"]
    assert items[0].error is None and items[0].pixels.shape == (32, 32, 3) and items[0].pixels.dtype == np.uint8
    assert [i.error.status for i in items[1:]] == [415, 400]


def test_a_request_over_its_pixel_budget_is_refused_before_decoding():
    big = image_bytes(size=(800, 800))
    with pytest.raises(service.OverBudget) as exc:
        service.decode_items([("a.png", big), ("b.png", big)], 32, BUDGET)
    assert exc.value.status == 413 and "1,280,000 pixel decodes" in exc.value.message


def test_images_past_the_deadline_are_refused_with_503():
    items = service.decode_items([("a.png", image_bytes())], 32, BUDGET, started=-1e9)
    assert items[0].error.status == 503 and "limit" in items[0].error.message


class CountingClassifier:
    class_names = ["cat", "dog"]

    def __init__(self):
        self.calls = []

    def predict(self, pixels):
        self.calls.append(len(pixels))
        return [Prediction([0.25, 0.75], self.class_names, 0.25, unsure=True) for _ in pixels]


def test_decodable_items_are_classified_in_one_batched_call():
    items = service.decode_items([("a.png", image_bytes()), ("x", b"junk"), ("b.png", image_bytes(seed=1))], 32, BUDGET)
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
    refusal = service.refusal(service.decode_items(payloads, 32, BUDGET))
    assert refusal.status == status and text in refusal.message


def test_no_refusal_when_one_file_could_be_classified():
    assert service.refusal(service.decode_items([("a.png", image_bytes()), ("b", b"")], 32, BUDGET)) is None


@pytest.mark.parametrize("raw, clean", [("cat.png", "cat.png"), ("a\x00b\nc.png", "abc.png"), ("", "upload"),
                                        (None, "upload"), ("x" * 500, "x" * 200)])
def test_client_file_names_are_made_safe_to_show(raw, clean):
    assert service.clean_filename(raw) == clean
