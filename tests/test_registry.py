"""Model versions (TF Serving's layout): highest served, hot reload, refused broken versions, labels, several models."""
import io
import json
import logging
import os
import shutil

import pytest

from cifarlab import REPO, modeldir
from cifarlab.web.context import parts
from tests.helpers import image_bytes
from tests.test_web_metrics import sample

INT8 = REPO / "model" / "cifar10_cnn_int8.tflite"


def add_version(root, name, number, source=INT8, broken=False):
    """A version folder written beside its place, then renamed into it (as an operator rolls one out)."""
    staging = root / f".staging-{name}-{number}"
    staging.mkdir(parents=True)
    shutil.copy(source, staging / source.name)
    shutil.copy(source.with_suffix(".json"), staging / source.with_suffix(".json").name)
    if broken:
        (staging / source.name).write_bytes(b"not a model at all" * 100)
    (root / name).mkdir(exist_ok=True)
    os.rename(staging, root / name / str(number))
    return root / name / str(number)


@pytest.fixture
def model_dir(tmp_path):
    root = tmp_path / "models"
    add_version(root, "cnn", 1)
    return root


@pytest.fixture
def dir_app(make_app, model_dir):
    return make_app(MODEL_DIR=str(model_dir), MODEL_POLL_SECONDS=0, SERVING_MODEL_NAME="cnn")


def served_version(client, path="/api/predict"):
    reply = client.post(path, data={"file": (io.BytesIO(image_bytes()), "a.png")}, content_type="multipart/form-data")
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()["model"]["served_version"]


def test_the_highest_version_is_served_and_a_new_one_is_picked_up(dir_app, model_dir):
    client = dir_app.test_client()
    assert served_version(client) == 1
    add_version(model_dir, "cnn", 2)
    parts(dir_app).models.poll()
    assert served_version(client) == 2
    status = client.get("/v1/models/cnn").get_json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "END")]
    assert client.post("/v1/models/cnn/versions/1:predict", json={"instances": [[[[0, 0, 0]] * 32] * 32]}
                       ).status_code == 404  # unloaded: no label keeps it


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(dir_app, model_dir, caplog):
    client = dir_app.test_client()
    add_version(model_dir, "cnn", 2, broken=True)
    with caplog.at_level(logging.WARNING, logger="cifarlab.web.registry"):
        parts(dir_app).models.poll()
    assert any("version 2 refused" in r.getMessage() for r in caplog.records)
    assert served_version(client) == 1
    status = {s["version"]: s for s in client.get("/v1/models/cnn").get_json()["model_version_status"]}
    assert status["2"]["state"] == "END" and status["2"]["status"]["error_message"]
    assert status["1"]["state"] == "AVAILABLE"
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'cifarlab_model_loads_total{model="cnn",outcome="refused"} 1.0' in metrics
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cifarlab.web.registry"):
        parts(dir_app).models.poll()  # unchanged: not tried again
    assert not caplog.records


def test_labels_pick_versions_and_keep_them_loaded(dir_app, model_dir):
    client = dir_app.test_client()
    add_version(model_dir, "cnn", 2)
    (model_dir / "cnn" / "labels.json").write_text(json.dumps({"stable": 1, "canary": 2}))
    parts(dir_app).models.poll()
    pixels = {"instances": [[[[0, 0, 0]] * 32] * 32]}
    for path in ("/v1/models/cnn/labels/stable:predict", "/v1/models/cnn/labels/canary:predict",
                 "/v1/models/cnn/versions/1:predict", "/v1/models/cnn:predict"):
        assert client.post(path, json=pixels).status_code == 200, path
    assert client.get("/v1/models/cnn/labels/stable").get_json()["model_version_status"][0]["version"] == "1"
    assert client.get("/v1/models/cnn/labels/canary/metadata").get_json()["model_spec"]["version"] == "2"
    missing = client.post("/v1/models/cnn/labels/beta:predict", json=pixels)
    assert missing.status_code == 404 and "beta" in missing.get_json()["error"]
    (model_dir / "cnn" / "labels.json").write_text(json.dumps({"stable": 2}))  # roll stable forward
    parts(dir_app).models.poll()
    assert client.get("/v1/models/cnn/labels/stable").get_json()["model_version_status"][0]["version"] == "2"
    assert client.post("/v1/models/cnn/versions/1:predict", json=pixels).status_code == 404


def test_removing_the_served_version_rolls_back_to_the_one_before(dir_app, model_dir):
    client = dir_app.test_client()
    newest = add_version(model_dir, "cnn", 2)
    parts(dir_app).models.poll()
    assert served_version(client) == 2
    shutil.move(newest, model_dir / "cnn" / ".rolled-back-2")
    parts(dir_app).models.poll()
    assert served_version(client) == 1


def test_two_models_answer_by_name_on_every_surface(make_app, model_dir, tiny_model_path):
    tiny = add_version(model_dir, "tiny", 1, source=tiny_model_path)
    assert tiny.exists()
    app = make_app(MODEL_DIR=str(model_dir), MODEL_POLL_SECONDS=0, SERVING_MODEL_NAME="cnn")
    client = app.test_client()
    cnn = client.post("/api/predict", data={"file": (io.BytesIO(image_bytes()), "a.png")})
    small = client.post("/api/predict?model=tiny", data={"file": (io.BytesIO(image_bytes()), "a.png")})
    assert cnn.get_json()["model"]["served_name"] == "cnn" and small.get_json()["model"]["served_name"] == "tiny"
    assert cnn.get_json()["model"]["run"] != small.get_json()["model"]["run"]
    form = client.post("/", data={"file": (io.BytesIO(image_bytes()), "a.png"), "model": "tiny"})
    assert form.status_code == 200 and b"tiny" in form.data
    page = client.get("/").get_data(as_text=True)
    assert '<select id="model" name="model">' in page and '<option value="tiny">' in page
    assert client.get("/model?model=tiny").status_code == 200
    assert client.post("/v1/models/tiny:predict", json={"instances": [[[[0, 0, 0]] * 32] * 32]}).status_code == 200
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("path,method", [("/?model=nope", "get"), ("/model?model=nope", "get"),
                                         ("/api/predict?model=nope", "post"), ("/v1/models/nope", "get"),
                                         ("/v1/models/nope:predict", "post"), ("/v1/models/cnn/versions/9", "get")])
def test_a_model_or_version_that_is_not_served_is_a_404(dir_app, path, method):
    reply = getattr(dir_app.test_client(), method)(path, data={"file": (io.BytesIO(image_bytes()), "a.png")}
                                                   if method == "post" else None)
    assert reply.status_code == 404
    assert b"Traceback" not in reply.data


def test_a_form_post_for_a_model_that_is_not_served_shows_the_form(dir_app):
    reply = dir_app.test_client().post("/", data={"file": (io.BytesIO(image_bytes()), "a.png"), "model": "nope"})
    assert reply.status_code == 404 and b'id="upload-form"' in reply.data and b"No such model" in reply.data


def test_a_model_with_no_loadable_version_boots_not_ready_and_the_others_serve(make_app, model_dir):
    add_version(model_dir, "bad", 1, broken=True)
    app = make_app(MODEL_DIR=str(model_dir), MODEL_POLL_SECONDS=0, SERVING_MODEL_NAME="cnn")
    assert "model 'bad': no version could be loaded" in parts(app).models.unloadable()[0]
    client = app.test_client()
    assert served_version(client) == 1
    reply = client.post("/api/predict?model=bad", data={"file": (io.BytesIO(image_bytes()), "a.png")})
    assert reply.status_code == 503 and "no version loaded" in reply.get_json()["error"]
    assert client.get("/readyz").status_code == 503


def test_a_worker_with_every_version_moved_away_boots_and_recovers(make_app, model_dir, tmp_path):
    os.rename(model_dir / "cnn" / "1", tmp_path / "away")
    app = make_app(MODEL_DIR=str(model_dir), MODEL_POLL_SECONDS=0, SERVING_MODEL_NAME="cnn")
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["status"] == "not ready"
    for page, status in (("/", 200), ("/api", 200), ("/no-such-page", 404), ("/model", 503)):
        assert client.get(page).status_code == status, page
    reply = client.post("/api/predict", data={"file": (io.BytesIO(image_bytes()), "a.png")})
    assert reply.status_code == 503 and b"Traceback" not in reply.data
    os.rename(tmp_path / "away", model_dir / "cnn" / "1")
    parts(app).models.poll()
    assert served_version(client) == 1 and client.get("/readyz").status_code == 200


def test_an_empty_model_dir_boots_and_serves_a_model_folder_added_later(make_app, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    app = make_app(MODEL_DIR=str(root), MODEL_POLL_SECONDS=0, SERVING_MODEL_NAME="cnn")
    assert app.test_client().get("/readyz").status_code == 503
    add_version(root, "cnn", 1)
    parts(app).models.poll()
    assert served_version(app.test_client()) == 1


@pytest.mark.parametrize("name", ["\u00b2", "01", "\u0661", "1.0", "99999999999999999999999"])
def test_folders_that_are_not_plain_version_numbers_are_ignored(model_dir, name):
    (model_dir / "cnn" / name).mkdir()
    assert modeldir.version_folders(model_dir / "cnn") == {1: str(model_dir / "cnn" / "1")}


def test_a_model_file_too_large_is_refused_unread_and_the_old_version_serves(dir_app, model_dir, monkeypatch):
    folder = add_version(model_dir, "cnn", 2)
    monkeypatch.setattr("cifarlab.modelfile.MAX_MODEL_BYTES", 1000)
    parts(dir_app).models.poll()
    version = parts(dir_app).models.servable("cnn").versions[2]
    assert version.state == "END" and "larger than a model file may be" in version.error
    assert served_version(dir_app.test_client()) == 1 and folder.exists()


@pytest.mark.parametrize("field, value", [("threshold", "high"), ("threshold", float("nan")), ("score", "guess")])
def test_a_version_with_a_bad_detector_in_its_sidecar_is_refused(dir_app, model_dir, field, value):
    folder = add_version(model_dir, "cnn", 2)
    sidecar = folder / INT8.with_suffix(".json").name
    meta = json.loads(sidecar.read_text())
    meta["ood"][field] = value
    sidecar.write_text(json.dumps(meta))
    parts(dir_app).models.poll()
    assert f"ood.{field}" in parts(dir_app).models.servable("cnn").versions[2].error
    assert served_version(dir_app.test_client()) == 1


def test_the_served_file_overwritten_in_place_does_not_reach_the_workers(make_app, tmp_path):
    path = tmp_path / INT8.name
    shutil.copy(INT8, path)
    shutil.copy(INT8.with_suffix(".json"), path.with_suffix(".json"))
    app = make_app(MODEL_PATH=str(path))
    path.write_bytes(b"")  # truncated in place, as cp does before it writes
    client = app.test_client()
    assert served_version(client) == 1
    path.write_bytes(INT8.read_bytes()[:1000])
    assert served_version(client) == 1


def test_model_path_alone_is_one_model_at_version_1(client):
    assert client.get("/v1/models/cifar10").get_json()["model_version_status"][0]["version"] == "1"


@pytest.mark.parametrize("text", ['{"stable": "1"}', "[1]", "not json", '{"stable": true}'])
def test_bad_labels_are_refused_and_the_old_ones_kept(dir_app, model_dir, text, caplog):
    (model_dir / "cnn" / "labels.json").write_text(json.dumps({"stable": 1}))
    parts(dir_app).models.poll()
    (model_dir / "cnn" / "labels.json").write_text(text)
    with caplog.at_level(logging.WARNING, logger="cifarlab.web.registry"):
        parts(dir_app).models.poll()
    assert any("labels not read" in r.getMessage() for r in caplog.records)
    assert parts(dir_app).models.servable("cnn").labels == {"stable": 1}


def test_version_file_needs_one_model_with_its_sidecar(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"x")
    assert modeldir.version_file(tmp_path) is None
    (tmp_path / "m.json").write_text("{}")
    assert modeldir.version_file(tmp_path) == str(tmp_path / "m.tflite")


@pytest.fixture
def canary_dir(model_dir):
    add_version(model_dir, "cnn", 2)
    (model_dir / "cnn" / "labels.json").write_text(json.dumps({"stable": 1, "canary": 2}))
    return model_dir


def test_a_canary_answers_its_share_of_clients_and_each_client_sticks_to_its_side(make_app, canary_dir):
    app = make_app(MODEL_DIR=str(canary_dir), MODEL_POLL_SECONDS=0, SERVING_MODEL_NAME="cnn", CANARY_SHARE=0.2)
    models = parts(app).models
    versions = [models.get(client=f"id:client-{n}")[1].version for n in range(2000)]
    assert abs(versions.count(2) / 2000 - 0.2) <= 0.03 and set(versions) == {1, 2}
    client = app.test_client()
    canary_client = f"client-{versions.index(2)}"
    for _ in range(3):
        answer = client.post("/api/predict", data={"file": (io.BytesIO(image_bytes()), "a.png")},
                             headers={"X-Client-ID": canary_client})
        assert answer.get_json()["model"]["served_version"] == 2
    assert served_version(client) == models.get(client="ip:127.0.0.1")[1].version


def test_without_a_share_the_stable_label_answers_even_below_a_newer_canary(make_app, canary_dir):
    app = make_app(MODEL_DIR=str(canary_dir), MODEL_POLL_SECONDS=0, SERVING_MODEL_NAME="cnn")
    assert {parts(app).models.get(client=f"id:{n}")[1].version for n in range(200)} == {1}
    assert served_version(app.test_client()) == 1


def test_a_shadow_canary_computes_but_stable_answers(make_app, canary_dir):
    app = make_app(MODEL_DIR=str(canary_dir), MODEL_POLL_SECONDS=0, SERVING_MODEL_NAME="cnn", CANARY_SHARE=1.0,
                   CANARY_MODE="shadow")
    client = app.test_client()
    for _ in range(3):
        assert served_version(client) == 1
    text = client.get("/metrics").get_data(as_text=True)
    shadowed = sum(sample(text, "cifarlab_shadow_predictions_total", model="cnn", version="2", agreed=agreed)
                   for agreed in ("true", "false"))
    assert shadowed == 3  # the same file: they agree
    assert sample(text, "cifarlab_shadow_predictions_total", model="cnn", version="2", agreed="true") == 3
    assert sample(text, "cifarlab_images_classified_total", model="cnn", version="2") == 0  # it answered nobody
    assert sample(text, "cifarlab_predict_duration_seconds_count", model="cnn", version="1") == 3
