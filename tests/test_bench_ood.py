import numpy as np
import pytest

from benchmarks import bench_ood
from cifarlab.ml.data import CIFAR10_CLASSES, load_image_folder
from tests.helpers import write_folder


def test_the_posthoc_comparison_scores_every_detector_on_every_family(tiny_model_path, tmp_path):
    data = load_image_folder(write_folder(tmp_path / "data", list(CIFAR10_CLASSES), per_class=6, noise=60))
    rows = bench_ood.posthoc_rows(tiny_model_path, data, per_family=4, fit_images=60)
    assert [r["score"] for r in rows] == ["max softmax", "max logit", "energy", "KNN (k=50)", "Mahalanobis", "ViM"]
    for r in rows:
        assert 0 <= r["auroc"] <= 1 and 0 <= r["fpr95"] <= 1 and len(r["per_family"]) == 9


def test_posthoc_scores_grow_away_from_the_training_features():
    rng = np.random.default_rng(0)
    labels = np.arange(400) % 4
    centres = np.eye(4, 8) * 10
    feats = centres[labels] + rng.normal(0, 1, (400, 8))

    class Head:
        def get_weights(self):
            return [centres.T / 10, np.zeros(4)]
    logits = feats @ centres.T / 10
    scores = bench_ood.posthoc_scores(feats, logits, labels, Head(), k=5)
    near, far = centres[:2] + 0.1, np.full((2, 8), 30.0) * [[1], [-1]]
    for name, score in scores.items():
        if name in ("KNN (k=50)", "Mahalanobis", "ViM"):
            assert (score(far, far @ centres.T / 10) > score(near, near @ centres.T / 10).max()).all(), name


@pytest.mark.slow
def test_the_open_set_protocol_compares_both_fine_tunes_on_every_split(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_ood, "OPEN_SET_SPLITS", ((0, 1, 2, 3, 4, 5),))
    data = load_image_folder(write_folder(tmp_path / "data", list(CIFAR10_CLASSES), per_class=4, noise=60))
    rows = bench_ood.open_set_rows(data, epochs=1, fine_tune_epochs=1, seeds=(0, 1))
    assert [r["set"] for r in rows] == ["open set: known 012345, seed 0", "open set: known 012345, seed 1",
                                        "open set: mean of 2"]
    assert rows[0]["images"] == int(np.isin(data.y_test, (6, 7, 8, 9)).sum()) > 0
    for key in ("baseline_auroc", "baseline_fpr95", "auroc", "fpr95"):
        assert all(0 <= r[key] <= 1 for r in rows), key
        assert rows[2][key] == pytest.approx((rows[0][key] + rows[1][key]) / 2), key
