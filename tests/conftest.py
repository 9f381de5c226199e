"""Shared fixtures: a tiny untrained model file, the app built on it, a client, image factories."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil

import numpy as np
import pytest
from PIL import Image

import train
from app import create_app
from cifarlab import REPO, modelfile
from cifarlab.images import to_model_input
from cifarlab.ml.presets import FastRecipe
from cifarlab.sidecar import CIFAR10_CLASSES
from cifarlab.web.context import parts
from tests.helpers import write_folder

# No TensorFlow here: a test that needs a model pays for Keras in the fixture that builds one (test_layout checks).


@pytest.fixture(scope="session", autouse=True)
def feedback_instance(tmp_path_factory):
    """Apps and servers the tests start keep their feedback in a folder of the run, never the repository's instance/."""
    folder = tmp_path_factory.mktemp("instance")
    saved = {name: os.environ.get(name) for name in ("DATABASE_URL", "FEEDBACK_FOLDER")}
    os.environ["DATABASE_URL"] = f"sqlite:///{folder / 'feedback.db'}"
    os.environ["FEEDBACK_FOLDER"] = str(folder / "feedback")
    yield folder
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL server for the run (skipped where Debian's postgresql is missing, unless CI)."""
    from tests.databases import Postgres

    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Every database test runs on SQLite and on PostgreSQL, each time on an empty database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    return request.getfixturevalue("postgres").database()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """An untrained baseline CNN saved with a sidecar, as train.py would save it."""
    from cifarlab.ml import models

    path = tmp_path_factory.mktemp("model") / "tiny.h5"
    model = models.build_baseline(len(CIFAR10_CLASSES))
    modelfile.save(model, path, {
        "name": "tiny", "arch": "baseline", "class_names": list(CIFAR10_CLASSES), "input_size": 32,
        "data_source": "synthetic", "test_accuracy": 0.1, "test_images": 10, "history": [],
    })
    return path


@pytest.fixture
def make_app(tiny_model_path, tmp_path):
    """Build the app on the tiny model with test settings, some of them overridden; its decoders stop afterwards."""
    built = []

    def build(**overrides):
        app = create_app({
            "TESTING": True,
            "MODEL_PATH": str(tiny_model_path),
            "UPLOAD_FOLDER": str(tmp_path / "uploads"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'instance' / 'feedback.db'}",
            "FEEDBACK_FOLDER": str(tmp_path / "instance" / "feedback"),
            "WTF_CSRF_ENABLED": False,
            "SECRET_KEY": "test-only",
            **overrides,
        })
        built.append(app)
        return app
    yield build
    for app in built:
        if parts(app).decoders:
            parts(app).decoders.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_model_path):
    """The tiny model exported once: SavedModel + TFLite float16/int8 with sidecars."""
    root = tmp_path_factory.mktemp("export")
    data = write_folder(root / "data", ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                        "ship", "truck"], per_class=4, noise=60)
    model = root / "tiny.h5"
    shutil.copy(tiny_model_path, model)
    shutil.copy(modelfile.sidecar_path(tiny_model_path), modelfile.sidecar_path(model))
    assert train.main(["export", "--model", str(model), "--data", str(data), "--out", str(root / "out")]) == 0
    return root / "out", model, data


@pytest.fixture(scope="session")
def exported_tta(tmp_path_factory):
    """A tiny fast net with six test-time views and temperature 2, exported: its TFLite files output per-view logits."""
    import keras

    from cifarlab.ml import models

    root = tmp_path_factory.mktemp("export_tta")
    keras.utils.set_random_seed(0)
    net = models.with_tta(models.build_fast_backbone(FastRecipe(widths=(8, 16, 16)), 10), level=2)
    for layer in net.get_layer("fast_backbone").layers:  # confident outputs: a misapplied temperature would show
        if isinstance(layer, keras.layers.Conv2D):
            layer.kernel.assign(layer.kernel * 5.0)
    model = root / "tta.h5"
    modelfile.save(net, model, {"name": "tta", "arch": "fast", "class_names": list(CIFAR10_CLASSES),
                                 "input_size": 32, "calibration": {"temperature": 2.0}})
    data = write_folder(root / "data", list(CIFAR10_CLASSES), per_class=4, noise=60)
    assert train.main(["export", "--model", str(model), "--data", str(data), "--out", str(root / "out")]) == 0
    return root / "out", model, data


@pytest.fixture(scope="session")
def photos():
    """The app's ten example photos (one per class, in class order) at the model's input size."""
    paths = sorted((REPO / "static" / "examples").glob("*.png"))
    return np.stack([np.asarray(to_model_input(Image.open(p).convert("RGB"))) for p in paths])
