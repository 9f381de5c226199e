import numpy as np
import pytest

from cifarlab.report import metrics
from cifarlab.inference import calibrate


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_report_on_a_known_case():
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[.7, .2, .1], [.2, .7, .1], [.1, .8, .1], [.1, .6, .3], [.3, .3, .4], [.5, .1, .4]])
    r = metrics.classification_report(y, probs, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["top2_accuracy"] == pytest.approx(1.0)
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert r["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert r["per_class"]["c"]["recall"] == pytest.approx(0.5)
    assert r["per_class"]["a"]["f1"] == pytest.approx(0.5)


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    y = np.array([0, 0, 0, 1])  # predictions all class 0 with confidence 0.75: 3 of 4 right
    probs = np.tile([0.75, 0.25], (4, 1))
    assert metrics.expected_calibration_error(probs, y) == pytest.approx(0.0)
    assert metrics.expected_calibration_error(np.tile([0.99, 0.01], (4, 1)), y) == pytest.approx(0.24)


def test_temperature_fit_recovers_overconfidence_and_lowers_ece():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (20000, 10))
    y = np.array([rng.choice(10, p=p) for p in softmax(logits)])
    overconfident = softmax(3 * logits)
    t = metrics.fit_temperature(overconfident, y)
    assert t == pytest.approx(3.0, rel=0.05)
    before = metrics.expected_calibration_error(overconfident, y)
    after = metrics.expected_calibration_error(calibrate(overconfident, t), y)
    assert after < before / 3


def test_unsure_threshold_reaches_the_target_precision():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (5000, 10))
    y = np.array([rng.choice(10, p=p) for p in softmax(logits)])
    probs = softmax(logits)
    t = metrics.unsure_threshold(probs, y, 0.9)
    kept = probs.max(1) >= t
    assert 0 < t < 1 and (probs.argmax(1)[kept] == y[kept]).mean() >= 0.9
