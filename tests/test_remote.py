"""The web front predicting through a TF-Serving-protocol backend: another instance of this app on loopback."""
import io
import threading

import pytest
from werkzeug.serving import make_server

from app import create_app
from cifarlab.loadtest import free_port
from tests.conftest import image_bytes


@pytest.fixture
def backend(tiny_model_path, tmp_path):
    """A real HTTP server (this app, local model) on a loopback port; yields its URL."""
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "UPLOAD_FOLDER": str(tmp_path / "b"),
                      "SECRET_KEY": "t"})
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()


def front_app(url, tmp_path):
    return create_app({"TESTING": True, "INFERENCE_URL": url, "UPLOAD_FOLDER": str(tmp_path / "f"),
                       "WTF_CSRF_ENABLED": False, "SECRET_KEY": "t", "INFERENCE_TIMEOUT": 5, "INFERENCE_RETRIES": 1})


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
