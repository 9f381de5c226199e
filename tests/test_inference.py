import shutil

import numpy as np
import pytest

from cifarlab import atomic, modelfile
from cifarlab.inference import Classifier, ViewAverage, calibrate
from cifarlab.prediction import Prediction


def test_temperature_one_leaves_probabilities_alone():
    probs = np.array([[0.7, 0.2, 0.1]])
    assert calibrate(probs, 1.0) is probs


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_keeps_the_ranking_and_sharpens_or_softens(temperature):
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    out = calibrate(probs, temperature)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert (out.argmax(1) == probs.argmax(1)).all()
    assert (out.max(1) > probs.max(1)).all() if temperature < 1 else (out.max(1) < probs.max(1)).all()


def test_certain_and_impossible_classes_stay_finite():
    assert np.isfinite(calibrate(np.array([[1.0, 0.0, 0.0]]), 1.5)).all()


def test_view_average_is_the_weighted_mean_of_each_views_logits():
    images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    views = [(False, 0, 0, 2.0), (True, 0, 0, 1.0), (False, 1, 1, 1.0)]
    seen = []

    def logits(rows):  # a stand-in backbone: two "classes" read from one pixel of each row
        seen.append(rows)
        return rows[:, 0, 0, :2].astype(np.float32) / 50

    mean_logits = ViewAverage(logits, views)(images)
    rows = seen[0]
    np.testing.assert_array_equal(rows[:2], images)
    np.testing.assert_array_equal(rows[2:4], images[:, :, ::-1])  # mirrored
    np.testing.assert_array_equal(rows[4:, 0, 0], images[:, 1, 1])  # (dx, dy) = (1, 1): reads one pixel further on
    mean = 0.5 * logits(rows[:2]) + 0.25 * logits(rows[2:4]) + 0.25 * logits(rows[4:])
    np.testing.assert_allclose(mean_logits, mean, rtol=1e-5)


def test_prediction_top_k_is_ordered_and_ties_keep_class_order():
    p = Prediction([0.1, 0.3, 0.3, 0.3], ["a", "b", "c", "d"])
    assert (p.index, p.label, p.confidence) == (1, "b", pytest.approx(0.3))
    assert [name for name, _, _ in p.top(3)] == ["b", "c", "d"] and len(p.top(10)) == 4


def test_a_loaded_model_predicts_calibrated_rows_and_refuses_wrong_shapes(tiny_model_path):
    clf = Classifier.from_path(tiny_model_path)
    assert not clf.ready()[0]
    clf.warm_up()
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    probs = clf.probabilities(x)
    assert probs.shape == (3, len(clf.class_names)) and np.allclose(probs.sum(1), 1, atol=1e-5) and clf.ready()[0]
    assert len(clf.version) == 12
    with pytest.raises(ValueError, match="expected images of shape"):
        clf.probabilities(x[:, :16])


@pytest.mark.parametrize("source, sidecar_change, message", [
    ("exported", {"tta_views": [[False, 0, 0, 1.0]]}, "but the model outputs probabilities"),
    ("exported_tta", {"tta_views": None}, "but the sidecar lists no tta_views"),
])
def test_a_tflite_file_whose_output_kind_contradicts_its_sidecar_is_refused(request, tmp_path, source,
                                                                            sidecar_change, message):
    folder = request.getfixturevalue(source)[0]
    original = next(folder.glob("*_int8.tflite"))
    model = tmp_path / "m.tflite"
    shutil.copy(original, model)
    meta = {k: v for k, v in {**modelfile.read_meta(original), **sidecar_change}.items() if v is not None}
    atomic.write_json(modelfile.sidecar_path(model), meta)
    with pytest.raises(modelfile.ModelFileError, match=message):
        Classifier.from_path(str(model))
