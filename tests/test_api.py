import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from cifarlab.data import CIFAR10_CLASSES
from tests.conftest import image_bytes


def api_post(client, payloads, url="/api/predict"):
    return client.post(url, data={"file": [(io.BytesIO(data), name) for name, data in payloads]},
                       content_type="multipart/form-data")


def serving_post(client, body, name="cifar10"):
    return client.post(f"/v1/models/{name}:predict", data=json.dumps(body), content_type="application/json")


def test_api_predict_many(client):
    response = api_post(client, [("a.png", image_bytes(seed=1)), ("b.jpg", image_bytes("JPEG", seed=2))])
    assert response.status_code == 200 and response.is_json
    body = response.get_json()
    assert [p["filename"] for p in body["predictions"]] == ["a.png", "b.jpg"]
    for p in body["predictions"]:
        assert list(p["probabilities"]) == list(CIFAR10_CLASSES)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert p["class"] == CIFAR10_CLASSES[p["index"]] == p["top3"][0]["class"]
        assert [t["probability"] for t in p["top3"]] == sorted((t["probability"] for t in p["top3"]), reverse=True)
    assert re.fullmatch(r"[0-9a-f]{12}", body["model"]["version"])
    assert body["model"]["test_accuracy"] == 0.1


def test_api_agrees_with_the_result_page(client):
    data = image_bytes(size=(70, 50), seed=5)
    api = api_post(client, [("x.png", data)]).get_json()["predictions"][0]
    html = client.post("/", data={"file": (io.BytesIO(data), "x.png")},
                       content_type="multipart/form-data").get_data(as_text=True)
    assert f'class="class-index">{api["index"]}<' in html
    for t in api["top3"]:
        assert f"<td>{t['class']}</td><td>{t['index']}</td><td class=\"pct\">{100 * t['probability']:.1f}%<" in html


def test_api_needs_no_csrf_token_and_sets_no_cookie(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    response = api_post(app.test_client(), [("a.png", image_bytes())])
    assert response.status_code == 200 and "Set-Cookie" not in response.headers


@pytest.mark.parametrize("payloads,status,message", [
    ([], 400, 'field "file"'),
    ([("a.png", b"text, not an image")], 415, "a.png: "),
    ([("ok.png", image_bytes()), ("bad.png", b"")], 400, "bad.png: "),
])
def test_api_errors_are_json(client, payloads, status, message):
    response = api_post(client, payloads) if payloads else client.post("/api/predict", data={})
    assert response.status_code == status and response.is_json
    assert message in response.get_json()["error"]


def test_api_json_for_unknown_paths_and_methods(client):
    for response, status in ((client.get("/api/nothing"), 404), (client.get("/api/predict"), 405),
                             (client.get("/v1/models/other"), 404)):
        assert response.status_code == status and response.is_json and response.get_json()["error"]


def test_api_body_too_large_is_json_413(make_app):
    app = make_app(WTF_CSRF_ENABLED=True, MAX_CONTENT_LENGTH=1000)
    response = api_post(app.test_client(), [("big.png", image_bytes(size=(200, 200)))])
    assert response.status_code == 413 and "too large" in response.get_json()["error"]


def test_serving_predict_pixels_and_b64_agree(client, app):
    data = image_bytes(size=(32, 32), seed=7)
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).tolist()
    b64 = base64.b64encode(data).decode()
    response = serving_post(client, {"instances": [pixels, {"b64": b64}]})
    assert response.status_code == 200
    predictions = np.array(response.get_json()["predictions"])
    assert predictions.shape == (2, 10)
    np.testing.assert_allclose(predictions[0], predictions[1], atol=1e-6)
    api = api_post(client, [("x.png", data)]).get_json()["predictions"][0]
    np.testing.assert_allclose(predictions[0], list(api["probabilities"].values()), atol=1e-5)


@pytest.mark.parametrize("body,message", [
    ({"instances": []}, "non-empty list"),
    ({"signature": "x"}, "non-empty list"),
    ([1, 2], "JSON object"),
    ({"instances": [[[0] * 3] * 32]}, "expected shape [32, 32, 3]"),
    ({"instances": [np.full((32, 32, 3), 300).tolist()]}, "0..255"),
    ({"instances": [[["a"] * 3] * 32] * 1}, "array of numbers"),
    ({"instances": [{"b64": "***"}]}, "not valid base64"),
    ({"instances": [{"b64": base64.b64encode(b"text").decode()}]}, "not an image"),
    ({"instances": [{"url": "http://x"}]}, '{"b64"'),
])
def test_serving_predict_bad_bodies(client, body, message):
    response = serving_post(client, body)
    assert 400 <= response.status_code < 500 and message in response.get_json()["error"]


def test_serving_predict_invalid_json(client):
    response = client.post("/v1/models/cifar10:predict", data=b"{not json", content_type="application/json")
    assert response.status_code == 400 and "not valid JSON" in response.get_json()["error"]


def test_serving_status_and_metadata(client):
    status = client.get("/v1/models/cifar10").get_json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    meta = client.get("/v1/models/cifar10/metadata").get_json()
    assert meta["metadata"]["class_names"] == list(CIFAR10_CLASSES)
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert [d["size"] for d in signature["inputs"]["images"]["tensor_shape"]["dim"]] == ["-1", "32", "32", "3"]


def test_probes(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_api_page_has_working_examples(client):
    html = client.get("/api").get_data(as_text=True)
    assert "curl -F file=@cat.png" in html and "/v1/models/cifar10:predict" in html


def test_api_too_many_files_is_json_400(make_app):
    response = api_post(make_app(MAX_BATCH_FILES=2).test_client(),
                        [(f"{i}.png", image_bytes(seed=i)) for i in range(3)])
    assert response.status_code == 400 and "at most 2 per request" in response.get_json()["error"]
