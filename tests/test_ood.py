"""Out-of-distribution scores, thresholds, outlier exposure batches and the verdict everywhere."""
import io
import json
import shutil

import numpy as np
import pytest

from cifarlab import atomic, modelfile, ood
from cifarlab.inference import Classifier
from cifarlab.ml import training
from cifarlab.ml.data import CIFAR10_CLASSES, load_image_folder
from cifarlab.report import card
from tests.helpers import image_bytes, write_folder


def test_scores_grow_away_from_a_confident_answer():
    confident, flat = np.array([[9.0, 0, 0]]), np.array([[0.1, 0, 0]])
    for name, score in ood.SCORES.items():
        assert score(flat)[0] > score(confident)[0], name
    assert ood.msp_score(np.array([[0.0, 0.0]]))[0] == pytest.approx(0.5)


def test_auroc_and_fpr95_on_known_cases():
    inliers, outliers_ = np.arange(100.0), np.arange(100.0) + 1000
    assert ood.auroc(outliers_, inliers) == 1.0 and ood.auroc(inliers, outliers_) == 0.0
    assert ood.auroc(np.ones(10), np.ones(10)) == pytest.approx(0.5)  # ties count half
    assert ood.fpr_at_95_tpr(outliers_, inliers) == 0.0 and ood.fpr_at_95_tpr(inliers, inliers) >= 0.95


def test_the_threshold_leaves_the_stated_share_of_validation_scores_unknown():
    scores = np.random.default_rng(0).normal(size=10_000)
    threshold = ood.fit_threshold(scores)
    assert (scores > threshold).mean() == pytest.approx(1 - ood.UNKNOWN_QUANTILE, abs=0.002)
    detector = ood.Detector("energy", threshold)
    assert detector.unknown(scores).mean() == pytest.approx(0.04, abs=0.002)
    assert not ood.Detector("msp", None).unknown(scores).any()  # no fitted threshold: never unknown


def test_outlier_exposure_batches_add_uniform_targets_and_keep_the_class_stream():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), np.eye(4, dtype=np.float32)[rng.integers(0, 4, 40)]
    bank = training.outlier_bank(x, 30, seed=0)
    plain = training.Batches(x, y, 8, seed=3, augment=True, translate=2)
    exposed = training.Batches(x, y, 8, seed=3, augment=True, translate=2, outliers=bank, outlier_fraction=0.5,
                               outlier_weight=0.25)
    px, py = plain[1]
    ex, ey, weights = exposed[1]
    assert len(ex) == 12 and np.array_equal(ex[:8], px) and np.array_equal(ey[:8], py)
    np.testing.assert_allclose(ey[8:], 0.25)  # uniform over 4 classes
    assert weights.tolist() == [1.0] * 8 + [0.25] * 4


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model_path):
    """The tiny model evaluated on a tiny dataset with a validation split: its sidecar gains a fitted detector."""
    root = tmp_path_factory.mktemp("ood")
    model = root / "tiny.h5"
    shutil.copy(tiny_model_path, model)
    meta = json.loads(modelfile.sidecar_path(tiny_model_path).read_text())
    atomic.write_json(modelfile.sidecar_path(model), {
        **meta, "val_images": 20, "seed": 0, "train_images": 20, "hyperparameters": {}, "command": "tiny",
        "device": "CPU", "precision": "float32", "keras": "3", "backend": "tensorflow", "train_seconds": 1.0,
        "epochs": 1, "parameters": 1})
    data = load_image_folder(write_folder(root / "data", list(CIFAR10_CLASSES), per_class=4, noise=60))
    return model, card.evaluate(model, data)


def test_evaluation_fits_a_detector_by_measurement_and_states_its_rule(evaluated):
    _, meta = evaluated
    fitted = meta["ood"]
    assert fitted["score"] in ood.SCORES and set(fitted["fit_auroc"]) == set(ood.SCORES)
    assert fitted["fit_auroc"][fitted["score"]] == max(fitted["fit_auroc"].values())
    assert "quantile" in fitted["rule"] and 0 <= fitted["test_unknown_rate"] <= fitted["test_flagged_rate"] <= 1
    assert Classifier.from_path(evaluated[0]).detector == ood.Detector(fitted["score"], fitted["threshold"])


def test_every_prediction_carries_its_verdict_in_page_api_and_serving(make_app, evaluated):
    client = make_app(MODEL_PATH=str(evaluated[0]), OOD_THRESHOLD=-1e5).test_client()  # everything is unknown
    page = client.post("/", data={"file": (io.BytesIO(image_bytes()), "a.png")}, content_type="multipart/form-data")
    assert page.status_code == 200 and "does not look like any of the 10 classes it knows" in page.get_data(True)
    batch = client.post("/", data={"file": [(io.BytesIO(image_bytes(seed=i)), f"{i}.png") for i in range(2)]},
                        content_type="multipart/form-data")
    assert batch.get_data(as_text=True).count("not one of the 10 classes") == 2
    api = client.post("/api/predict", data={"file": (io.BytesIO(image_bytes()), "a.png")},
                      content_type="multipart/form-data").get_json()["predictions"][0]
    assert api["unknown"] is True and api["verdict"] == "unknown" and isinstance(api["ood_score"], float)
    assert isinstance(api["unsure"], bool) and len(api["probabilities"]) == 10
    pixels = np.zeros((32, 32, 3), int).tolist()
    plain = client.post("/v1/models/cifar10:predict", json={"instances": [pixels]}).get_json()["predictions"]
    assert len(plain[0]) == 10 and isinstance(plain[0][0], float)  # existing clients keep the row form
    named = client.post("/v1/models/cifar10:predict",
                        json={"signature_name": "verdicts", "instances": [pixels]}).get_json()["predictions"]
    assert named[0]["unknown"] is True and set(named[0]) == {"probabilities", "ood_score", "unsure", "unknown"}
    assert client.post("/v1/models/cifar10:predict", json={"signature_name": "x", "instances": [pixels]}
                       ).status_code == 400
    known = make_app(MODEL_PATH=str(evaluated[0]), OOD_THRESHOLD=1e5).test_client()
    assert known.post("/api/predict", data={"file": (io.BytesIO(image_bytes()), "a.png")},
                      content_type="multipart/form-data").get_json()["predictions"][0]["unknown"] is False
