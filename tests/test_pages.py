"""Every page answers 200 for every kind of model the repo ships or exports, and for a remote front."""
import io
import json
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from app import create_app
from tests.helpers import free_port
from tests.helpers import image_bytes

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["shipped h5", "shipped int8 with views", "best h5", "baseline h5", "tflite without views",
         "tflite with views", "remote front"]


@pytest.fixture
def backend_url(tiny_model_path, tmp_path):
    """This app on the tiny model, served on a loopback port: the remote front's backend."""
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "UPLOAD_FOLDER": str(tmp_path / "b"),
                      "SECRET_KEY": "t"})
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    # poll often: shutdown() waits out one poll (0.5 s by default)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(params=KINDS)
def model_settings(request, exported, exported_tta):
    """Settings that serve one kind of model."""
    return {
        "shipped h5": lambda: {"MODEL_PATH": str(ROOT / "model" / "cifar10_cnn.h5")},
        "shipped int8 with views": lambda: {"MODEL_PATH": str(ROOT / "model" / "cifar10_cnn_int8.tflite")},
        "best h5": lambda: {"MODEL_PATH": str(ROOT / "model" / "best.h5")},
        "baseline h5": lambda: {"MODEL_PATH": str(ROOT / "model" / "baseline.h5")},
        "tflite without views": lambda: {"MODEL_PATH": str(exported[0] / "tiny_int8.tflite")},
        "tflite with views": lambda: {"MODEL_PATH": str(exported_tta[0] / "tta_int8.tflite")},
        "remote front": lambda: {"INFERENCE_URL": request.getfixturevalue("backend_url")},
    }[request.param]()


def test_every_page_answers_200_for_every_model_kind(make_app, model_settings):
    client = make_app(**model_settings).test_client()
    for url in ("/", "/model", "/api", "/examples/cat"):
        assert client.get(url).status_code == 200, url
    one = {"file": (io.BytesIO(image_bytes(seed=1)), "a.png")}
    assert client.post("/", data=one, content_type="multipart/form-data").status_code == 200
    two = {"file": [(io.BytesIO(image_bytes(seed=i)), f"{i}.png") for i in range(2)]}
    assert client.post("/", data=two, content_type="multipart/form-data").status_code == 200
    api = client.post("/api/predict", data={"file": (io.BytesIO(image_bytes()), "a.png")},
                      content_type="multipart/form-data")
    assert api.status_code == 200 and api.get_json()["predictions"][0]["class"]


def test_the_default_model_page_shows_its_ood_benchmark_and_mild_corruptions(make_app):
    meta = json.loads((ROOT / "model" / "cifar10_cnn_int8.json").read_text())
    page = make_app(MODEL_PATH=str(ROOT / "model" / "cifar10_cnn_int8.tflite")).test_client().get("/model")
    html = page.get_data(as_text=True)
    assert all(f"<td>{r['set']}</td>" in html for r in meta["ood_benchmark"]["rows"])
    mild = meta["ood_benchmark"]["corruptions"][0]
    assert f"<td>{mild['corruption'].replace('_', ' ')}</td><td>{100 * mild['accuracy']:.1f}%</td>" in html
