import io

import pytest
from werkzeug.datastructures import FileStorage, MultiDict

from cifarlab.images import REASONS
from cifarlab.prediction import Prediction
from cifarlab.web import uploads
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
    uploads.classify_items(clf, items)
    assert clf.calls == [2] and items[1].prediction is None and items[2].prediction.label == "dog"
    assert uploads.prediction_json(items[0])["unsure"] is True
    assert uploads.prediction_json(items[1]) == {"filename": "x", "error": items[1].error.message, "status": 415}


@pytest.mark.parametrize("payloads, status, text", [
    ([("a.txt", b"hi")], 415, "a.txt: This is not an image"),
    ([("a.txt", b"hi"), ("b.txt", b"ho")], 415, "None of the files could be used: a.txt"),
    ([("a.txt", b"hi"), ("e.png", b"")], 400, "e.png: The file is empty"),
])
def test_the_refusal_names_every_file_and_keeps_a_shared_status(payloads, status, text):
    message, code = uploads.refusal(decode_items(payloads, 32, BUDGET))
    assert code == status and text in message


def form(*named_payloads, field="file"):
    """The files of a multipart form, as Flask's request.files holds them."""
    return MultiDict([(field, FileStorage(io.BytesIO(data), filename=name)) for name, data in named_payloads])


def decode(named_payloads):
    return decode_items(named_payloads, 32, BUDGET)


def test_the_pipeline_classifies_the_usable_files_and_keeps_the_others_errors():
    clf = CountingClassifier()
    items = uploads.classify_uploads(form(("a.png", image_bytes()), ("b", b"")), 5, decode, clf)
    assert clf.calls == [1] and items[0].prediction.label == "dog" and items[1].error.reason == "empty"


@pytest.mark.parametrize("files, limit, status, text, items", [
    (form(("a.png", b""), field="other"), 5, 400, "No file was sent", 0),
    (form(("", b"")), 5, 400, "No file was selected", 0),
    (form(("a.png", image_bytes()), ("b.png", image_bytes())), 1, 400, "at most 1 per request", 0),
    (form(("a.txt", b"hi"), ("b.txt", b"ho")), 5, 415, "None of the files could be used", 2),
])
def test_the_pipeline_refuses_a_request_without_a_usable_image_in_one_way(files, limit, status, text, items):
    clf = CountingClassifier()
    with pytest.raises(uploads.UploadRefused) as refused:
        uploads.classify_uploads(files, limit, decode, clf)
    assert refused.value.status == status and text in refused.value.message
    assert len(refused.value.items) == items and clf.calls == []


def test_the_pipeline_counts_files_before_reading_any():
    files = form(("a.png", image_bytes()), ("b.png", image_bytes()))
    with pytest.raises(uploads.UploadRefused):
        uploads.classify_uploads(files, 1, decode, CountingClassifier())
    assert all(f.stream.tell() == 0 for f in files.getlist("file"))


def test_every_reason_an_image_is_refused_for_has_an_http_status():
    assert set(REASONS) <= set(uploads.STATUS) and all(400 <= s < 600 for s in uploads.STATUS.values())
