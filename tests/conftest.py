"""Shared fixtures: a tiny untrained model file, the app built on it, a client, image factories."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from app import create_app
from cifarlab import checkpoint
from cifarlab.ml import models
from cifarlab.ml.data import CIFAR10_CLASSES
from cifarlab.loadtest import image_bytes  # noqa: F401  (tests import it from here)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """An untrained baseline CNN saved with a sidecar, as train.py would save it."""
    path = tmp_path_factory.mktemp("model") / "tiny.h5"
    model = models.build_baseline(len(CIFAR10_CLASSES))
    checkpoint.save(model, path, {
        "name": "tiny", "arch": "baseline", "class_names": list(CIFAR10_CLASSES), "input_size": 32,
        "data_source": "synthetic", "test_accuracy": 0.1, "test_images": 10, "history": [],
    })
    return path


@pytest.fixture
def make_app(tiny_model_path, tmp_path):
    """Build the app on the tiny model with test settings, some of them overridden."""
    def build(**overrides):
        return create_app({
            "TESTING": True,
            "MODEL_PATH": str(tiny_model_path),
            "UPLOAD_FOLDER": str(tmp_path / "uploads"),
            "WTF_CSRF_ENABLED": False,
            "SECRET_KEY": "test-only",
            **overrides,
        })
    return build


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()
