"""Canary rollouts under MODEL_DIR: publish beside stable, promote, roll back; train.py models; a polling server."""
import io
import json

import pytest

import train
from cifarlab import rollout
from cifarlab.web.context import parts
from tests.helpers import image_bytes
from tests.test_registry import INT8, add_version


@pytest.fixture
def model_dir(tmp_path):
    root = tmp_path / "models"
    add_version(root, "cnn", 1)
    return root


def labels(model_dir):
    return json.loads((model_dir / "cnn" / "labels.json").read_text())


def test_publish_puts_the_model_in_as_a_canary_beside_the_serving_version(model_dir):
    assert rollout.publish(INT8, model_dir, "cnn") == (2, {"stable": 1, "canary": 2})
    assert labels(model_dir) == {"stable": 1, "canary": 2}
    assert sorted(p.name for p in (model_dir / "cnn" / "2").iterdir()) == [INT8.with_suffix(".json").name, INT8.name]
    assert not [p for p in (model_dir / "cnn").iterdir() if p.name.startswith(".publishing")]
    with pytest.raises(rollout.RolloutError, match="already has a canary"):
        rollout.publish(INT8, model_dir, "cnn")


def test_the_first_version_of_a_name_is_stable_at_once(tmp_path):
    assert rollout.publish(INT8, tmp_path / "models", "new") == (1, {"stable": 1})


def test_promote_makes_the_canary_stable_and_rollback_takes_it_out(model_dir):
    rollout.publish(INT8, model_dir, "cnn")
    assert rollout.promote(model_dir, "cnn") == {"stable": 2}
    rollout.publish(INT8, model_dir, "cnn")
    assert rollout.rollback(model_dir, "cnn") == {"stable": 2}
    assert not (model_dir / "cnn" / "3").exists() and (model_dir / "cnn" / ".3-rolled-back").is_dir()
    for step in (rollout.promote, rollout.rollback):
        with pytest.raises(rollout.RolloutError, match="no canary"):
            step(model_dir, "cnn")


@pytest.mark.parametrize("make_bad", [
    lambda tmp: tmp / "missing.tflite",
    lambda tmp: (tmp / "model.txt").write_text("x") and tmp / "model.txt",
    lambda tmp: (tmp / "lonely.tflite").write_bytes(INT8.read_bytes()) and tmp / "lonely.tflite",  # no sidecar
])
def test_publish_refuses_what_is_not_a_servable_model_in_one_line(tmp_path, model_dir, capsys, make_bad):
    bad = make_bad(tmp_path)
    assert train.main(["models", "--model-dir", str(model_dir), "--name", "cnn", "publish", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert sorted(p.name for p in (model_dir / "cnn").iterdir()) == ["1"]  # nothing half-published


@pytest.mark.parametrize("publishable", [False, True])
def test_publish_refuses_a_fine_tune_worse_than_the_model_it_started_from(tmp_path, model_dir, capsys, publishable):
    candidate = tmp_path / INT8.name
    candidate.write_bytes(INT8.read_bytes())
    meta = json.loads(INT8.with_suffix(".json").read_text())
    meta["feedback"] = {"init": "model/cifar10_cnn.h5", "publishable": publishable,
                        "worse_on": [] if publishable else ["feedback"]}
    candidate.with_suffix(".json").write_text(json.dumps(meta))
    code = train.main(["models", "--model-dir", str(model_dir), "--name", "cnn", "publish", str(candidate)])
    err = capsys.readouterr().err
    if publishable:
        assert code == 0 and (model_dir / "cnn" / "2").is_dir()
    else:
        assert code == 2 and "worse than the model it was fine-tuned from" in err and "on feedback" in err
        assert sorted(p.name for p in (model_dir / "cnn").iterdir()) == ["1"]


def test_the_command_walks_a_canary_through_a_polling_server(make_app, model_dir, capsys):
    app = make_app(MODEL_DIR=str(model_dir), MODEL_POLL_SECONDS=0, SERVING_MODEL_NAME="cnn", CANARY_SHARE=0.0)
    client = app.test_client()

    def version():
        reply = client.post("/api/predict", data={"file": (io.BytesIO(image_bytes()), "a.png")})
        return reply.get_json()["model"]["served_version"]

    command = ["--model-dir", str(model_dir), "--name", "cnn"]
    assert train.main(["models", *command, "publish", str(INT8)]) == 0
    parts(app).models.poll()
    assert version() == 1  # no share: the canary waits, loaded, behind the stable label
    assert client.get("/v1/models/cnn/labels/canary").get_json()["model_version_status"][0]["state"] == "AVAILABLE"
    assert train.main(["models", *command, "promote"]) == 0
    parts(app).models.poll()
    assert version() == 2
    assert train.main(["models", *command, "show"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "cnn: versions 1, 2; stable -> 2"


def test_without_a_stable_label_publish_keeps_the_highest_version_a_server_would_load_stable(model_dir):
    add_version(model_dir, "cnn", 2)
    add_version(model_dir, "cnn", 3, broken=True)  # refused at load: it cannot be what stays stable
    assert rollout.publish(INT8, model_dir, "cnn") == (4, {"stable": 2, "canary": 4})


def test_publish_refuses_a_canary_with_no_loadable_version_beside_it(tmp_path):
    root = tmp_path / "models"
    add_version(root, "cnn", 1, broken=True)
    with pytest.raises(rollout.RolloutError, match="none of versions 1 holds a model"):
        rollout.publish(INT8, root, "cnn")
    assert not (root / "cnn" / "labels.json").exists() and sorted(p.name for p in (root / "cnn").iterdir()) == ["1"]
