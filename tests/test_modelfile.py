import json

import keras
import numpy as np
import pytest

from cifarlab import modelfile
from cifarlab.ml import models
from cifarlab.ml.presets import FastRecipe

TINY = FastRecipe(widths=(8, 16, 16))


@pytest.fixture(scope="module")
def with_views():
    keras.utils.set_random_seed(0)
    return models.with_tta(models.build_fast_backbone(TINY, 10), level=2)


@pytest.fixture(scope="module")
def baseline():
    keras.utils.set_random_seed(0)
    return models.build_baseline(10)


def pixels(n=3):
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("level", [0, 2])
def test_a_model_with_views_gives_its_backbone_and_views_with_their_weights(level):
    model = models.with_tta(models.build_fast_backbone(TINY, 10), level=level)
    assert modelfile.backbone(model).name == "fast_backbone"
    assert modelfile.views(model) == ([(False, 0, 0, 1.0)] if level == 0 else models.TTA_VIEWS[level])


def test_a_single_view_model_is_its_own_backbone(baseline):
    assert modelfile.views(baseline) == [] and modelfile.backbone(baseline) is baseline
    assert modelfile.ends_in_softmax(baseline)


def test_the_backbone_of_a_model_with_views_outputs_logits(with_views):
    assert not modelfile.ends_in_softmax(modelfile.backbone(with_views)) and modelfile.ends_in_softmax(with_views)


@pytest.mark.parametrize("kind", ["with_views", "baseline"])
def test_the_logits_of_either_kind_give_back_its_probabilities(kind, request):
    model = request.getfixturevalue(kind)
    network, to_logits = modelfile.logits_model(model)
    logits = to_logits(np.asarray(network(pixels())))
    probabilities = np.asarray(model(pixels()))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), probabilities, atol=1e-5)
    symbolic = keras.Model(model.inputs[0], modelfile.symbolic_logits(model, model.inputs[0]))
    np.testing.assert_allclose(np.asarray(symbolic(pixels())), logits, atol=1e-4)


def test_log_probabilities_clip_zero_and_keep_the_order():
    out = modelfile.log_probabilities([[0.0, 0.25, 0.75]])
    assert out.dtype == np.float32 and out[0, 0] == pytest.approx(np.log(1e-12)) and out[0, 1] < out[0, 2]


def test_the_sidecar_record_states_the_contract_in_json(with_views, baseline):
    assert modelfile.describe(with_views) == {
        "output": "probabilities (softmax), from raw 0..255 RGB pixels",
        "logits": "input of layer 'probabilities' (mean of the views' logits)", "backbone": "fast_backbone",
        "views": 6}
    assert modelfile.describe(baseline)["views"] == 1 and modelfile.describe(baseline)["backbone"] is None
    assert json.loads(json.dumps(modelfile.describe(with_views))) == modelfile.describe(with_views)
