import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from cifarlab.ml.data import CIFAR10_CLASSES
from tests.helpers import image_bytes


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
    ([("a.png", b"text"), ("b.png", b"")], 400, "b.png: "),
    ([("a.png", b"text"), ("b.png", b"more text")], 415, "b.png: "),
])
def test_api_errors_are_json(client, payloads, status, message):
    response = api_post(client, payloads) if payloads else client.post("/api/predict", data={})
    assert response.status_code == status and response.is_json
    assert message in response.get_json()["error"]


def test_api_classifies_the_good_files_and_reports_each_refused_one(client):
    response = api_post(client, [("ok.png", image_bytes()), ("bad.png", b""), ("text.png", b"hello")])
    assert response.status_code == 200
    ok, empty, text = response.get_json()["predictions"]
    assert ok["filename"] == "ok.png" and ok["class"] in CIFAR10_CLASSES and isinstance(ok["unsure"], bool)
    assert (empty["filename"], empty["status"]) == ("bad.png", 400) and "empty" in empty["error"]
    assert (text["filename"], text["status"]) == ("text.png", 415) and "class" not in text


@pytest.mark.parametrize("threshold,unsure", [(1.01, True), (0.0, False)])
def test_api_says_when_it_is_unsure(make_app, threshold, unsure):
    client = make_app(UNSURE_THRESHOLD=threshold).test_client()
    assert api_post(client, [("a.png", image_bytes())]).get_json()["predictions"][0]["unsure"] is unsure


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
    ({"instances": [np.full((32, 32, 3), "7").tolist()]}, "array of numbers"),  # strings are not pixels
    ({"instances": [np.full((32, 32, 3), True).tolist()]}, "array of numbers"),  # nor are booleans
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
    assert "curl -F file=@static/examples/cat.png" in html and "/v1/models/cifar10:predict" in html


def test_api_too_many_files_is_json_400(make_app):
    response = api_post(make_app(MAX_BATCH_FILES=2).test_client(),
                        [(f"{i}.png", image_bytes(seed=i)) for i in range(3)])
    assert response.status_code == 400 and "at most 2 per request" in response.get_json()["error"]


@pytest.mark.parametrize("raw,message", [
    (b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", "not valid JSON"),  # too deep for the parser
    (b'{"instances": [[[' + b"9" * 401 + b", 0, 0]]]}", "numbers in 0..255"),  # too large for a float
    (b'{"instances": [' + b"1" * 5000 + b"]}", "not valid JSON"),  # past Python's integer-digits limit
    (b"\xff\xfe{}", "not valid JSON"),
])
def test_serving_predict_hostile_json(client, raw, message):
    response = client.post("/v1/models/cifar10:predict", data=raw, content_type="application/json")
    assert response.status_code == 400 and message in response.get_json()["error"]


def bilevel_png(width, height):
    """A few kB of PNG that decodes to width x height pixels."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_serving_b64_bomb_is_refused_before_decoding(client):
    bomb = base64.b64encode(bilevel_png(5000, 5000)).decode()
    response = serving_post(client, {"instances": [{"b64": bomb}] * 256})
    assert response.status_code == 413
    assert "6,400,000,000 pixel decodes" in response.get_json()["error"] and "100,000,000" in response.get_json()["error"]


def test_upload_bomb_over_the_request_budget_is_413_and_within_it_classified(make_app):
    bombs = [(f"{i}.png", bilevel_png(5000, 5000)) for i in range(32)]
    refused = api_post(make_app().test_client(), bombs)
    assert refused.status_code == 413 and "per request" in refused.get_json()["error"]
    generous = make_app(MAX_REQUEST_PIXELS=32 * 25_000_000).test_client()
    response = api_post(generous, bombs[:3])
    assert response.status_code == 200 and len(response.get_json()["predictions"]) == 3


def test_images_past_the_deadline_are_refused_not_hung(make_app):
    client = make_app(REQUEST_DEADLINE=1e-9).test_client()
    response = api_post(client, [("a.png", image_bytes()), ("b.png", image_bytes(seed=1))])
    assert response.status_code == 503 and "limit" in response.get_json()["error"]


def test_the_openapi_spec_describes_exactly_the_app_routes(client, app):
    import re

    from cifarlab.web import openapi

    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    described = {(openapi.flask_rule(path), method.upper()) for path, item in spec["paths"].items() for method in item}
    routed = {(re.sub(r"<\w+:", "<", rule.rule), method) for rule in app.url_map.iter_rules()
              if rule.endpoint != "static" for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert described == routed
    assert b'href="/openapi.json"' in client.get("/api").data
