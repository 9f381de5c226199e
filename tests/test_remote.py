"""The web front predicting through a TF-Serving-protocol backend: this app, or a misbehaving fake, on loopback."""
import io
import threading
import time

import numpy as np
import pytest
from werkzeug.serving import make_server

from app import create_app
from tests import helpers
from tests.helpers import free_port
from cifarlab.web.remote import BackendUnavailable, RemoteClassifier, check_probabilities
from tests.helpers import image_bytes


@pytest.fixture
def backend(tiny_model_path, tmp_path):
    """A real HTTP server (this app, local model) on a loopback port; yields its URL."""
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "UPLOAD_FOLDER": str(tmp_path / "b"),
                      "SECRET_KEY": "t"})
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    # poll often: shutdown() waits out one poll (0.5 s by default)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()


def front_app(url, tmp_path, **overrides):
    return create_app({"TESTING": True, "INFERENCE_URL": url, "UPLOAD_FOLDER": str(tmp_path / "f"),
                       "WTF_CSRF_ENABLED": False, "SECRET_KEY": "t", "INFERENCE_TIMEOUT": 5, "INFERENCE_RETRIES": 1,
                       **overrides})


def test_front_predicts_through_the_backend(backend, tmp_path):
    url, back = backend
    front = front_app(url, tmp_path).test_client()
    data = image_bytes(size=(40, 30), seed=4)
    via_front = front.post("/api/predict", data={"file": (io.BytesIO(data), "a.png")},
                           content_type="multipart/form-data").get_json()["predictions"][0]
    direct = back.test_client().post("/api/predict", data={"file": (io.BytesIO(data), "a.png")},
                                     content_type="multipart/form-data").get_json()["predictions"][0]
    assert via_front["index"] == direct["index"]
    for name, p in direct["probabilities"].items():
        assert via_front["probabilities"][name] == pytest.approx(p, abs=1e-5)
    page = front.post("/", data={"file": (io.BytesIO(data), "a.png")}, content_type="multipart/form-data")
    assert page.status_code == 200 and b'class="class-name"' in page.data
    assert front.get("/readyz").status_code == 200


def test_backend_down_gives_a_clear_503(tmp_path):
    front = front_app(f"http://127.0.0.1:{free_port()}", tmp_path).test_client()  # nothing listens there
    page = front.post("/", data={"file": (io.BytesIO(image_bytes()), "a.png")}, content_type="multipart/form-data")
    assert page.status_code == 503 and b"backend is unavailable" in page.data
    api = front.post("/api/predict", data={"file": (io.BytesIO(image_bytes()), "a.png")},
                     content_type="multipart/form-data")
    assert api.status_code == 503 and "unavailable" in api.get_json()["error"]
    assert front.get("/readyz").status_code == 503
    assert front.get("/healthz").status_code == 200  # the front itself is up


@pytest.fixture
def fake_backend():
    """A misbehaving TF-Serving backend on loopback (set .mode); yields (url, server)."""
    server = helpers.FakeBackend.start()
    yield f"http://127.0.0.1:{server.server_port}", server
    server.shutdown()
    server.server_close()


def post_image(client, url="/api/predict"):
    return client.post(url, data={"file": (io.BytesIO(image_bytes()), "a.png")}, content_type="multipart/form-data")


@pytest.mark.parametrize("mode", ["hang", "trickle", "garbage", "nan", "negative", "strings", "ragged",
                                  "not-normalised", "huge", "huge-integer", "bad-verdict", "error"])
def test_a_misbehaving_backend_is_a_503_by_the_deadline_that_never_names_it(fake_backend, tmp_path, mode):
    url, server = fake_backend
    front = front_app(url, tmp_path, INFERENCE_TIMEOUT=1).test_client()
    server.mode = mode
    answered = server.answered
    api = post_image(front)
    assert api.status_code == 503
    if mode in ("hang", "trickle"):  # the deadline answered, not the backend: it is still busy for 30 s
        assert server.answered == answered
    page = post_image(front, "/")
    for response in (api, page):
        assert str(server.server_port) not in response.get_data(as_text=True)
    assert front.get("/healthz").status_code == 200


def test_a_good_backend_answers_and_its_address_is_never_shown(fake_backend, tmp_path):
    url, server = fake_backend
    front = front_app(url, tmp_path).test_client()
    assert post_image(front).status_code == 200
    for path in ("/", "/api", "/readyz", "/model"):
        assert str(server.server_port) not in front.get(path).get_data(as_text=True)


def test_the_backends_verdicts_pass_through_the_front(backend, tmp_path):
    url, back = backend
    front = front_app(url, tmp_path).test_client()
    data = image_bytes(seed=9)
    via_front = front.post("/api/predict", data={"file": (io.BytesIO(data), "a.png")},
                           content_type="multipart/form-data").get_json()["predictions"][0]
    direct = back.test_client().post("/api/predict", data={"file": (io.BytesIO(data), "a.png")},
                                     content_type="multipart/form-data").get_json()["predictions"][0]
    for key in ("unsure", "unknown", "verdict"):
        assert via_front[key] == direct[key]
    assert via_front["ood_score"] == pytest.approx(direct["ood_score"], abs=1e-5)


@pytest.mark.parametrize("mode", ["huge-integer", "bad-verdict", "strings"])
def test_a_bad_answer_counts_as_a_failure_for_the_breaker(fake_backend, tmp_path, mode):
    url, server = fake_backend
    front = front_app(url, tmp_path, BREAKER_FAILURES=2, BREAKER_COOLDOWN=30.0, INFERENCE_RETRIES=0).test_client()
    server.mode = mode
    assert [post_image(front).status_code for _ in range(2)] == [503, 503]
    hits = server.hits
    assert post_image(front).status_code == 503 and server.hits == hits  # open: the backend is not asked


def test_metadata_that_is_not_an_object_counts_as_backend_down(fake_backend, tmp_path):
    url, server = fake_backend
    server.mode = "list-metadata"
    front = front_app(url, tmp_path).test_client()  # starts; does not crash
    assert front.get("/healthz").status_code == 200
    assert front.get("/").status_code == 200


def test_the_breaker_opens_after_repeated_failures_and_closes_after_the_cooldown(fake_backend, tmp_path):
    url, server = fake_backend
    front = front_app(url, tmp_path, BREAKER_FAILURES=2, BREAKER_COOLDOWN=1.0, INFERENCE_RETRIES=0).test_client()
    server.mode = "error"
    assert [post_image(front).status_code for _ in range(2)] == [503, 503]
    hits = server.hits
    assert post_image(front).status_code == 503
    assert server.hits == hits  # answered without asking the backend
    server.mode = "ok"
    time.sleep(1.1)
    assert post_image(front).status_code == 200


def test_calls_past_the_inflight_cap_are_refused_without_reaching_the_backend(fake_backend):
    url, server = fake_backend
    server.mode = "hang"
    remote = RemoteClassifier(url, timeout=2, retries=0, max_inflight=1)
    hits = server.hits  # the metadata call of the constructor
    first = threading.Thread(target=lambda: pytest.raises(BackendUnavailable, remote.probabilities,
                                                          np.zeros((1, 32, 32, 3), np.uint8)))
    first.start()
    while server.hits == hits:  # the first call is now inside the backend, holding the one slot
        time.sleep(0.01)
    with pytest.raises(BackendUnavailable, match="in flight"):  # refused by the cap, not timed out
        remote.probabilities(np.zeros((1, 32, 32, 3), np.uint8))
    assert server.hits == hits + 1  # the second call never reached the backend
    first.join()


@pytest.mark.parametrize("predictions", [[[0.1] * 10, [0.1] * 9], [[True] + [0.1] * 9], "x", [[float("inf")] * 10]])
def test_check_probabilities_refuses_what_is_not_a_distribution(predictions):
    with pytest.raises(BackendUnavailable):
        check_probabilities(predictions, 2 if len(predictions) == 2 else 1, 10)


def test_a_front_started_while_its_backend_is_down_reads_its_metadata_once_it_is_up(tmp_path):
    port = free_port()
    front = front_app(f"http://127.0.0.1:{port}", tmp_path, INFERENCE_RETRIES=0, BREAKER_FAILURES=100).test_client()
    assert front.get("/readyz").status_code == 503 and post_image(front).status_code == 503
    server = helpers.FakeBackend.start(port=port)  # the backend comes up where the front looks for it
    try:
        assert front.get("/readyz").status_code == 200
        answer = post_image(front)
        assert answer.status_code == 200 and answer.get_json()["predictions"][0]["class"].startswith("class")
    finally:
        server.shutdown()
        server.server_close()
