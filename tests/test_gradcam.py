import os

import keras
import numpy as np
import pytest
from PIL import Image

from cifarlab.ml import gradcam, models
from cifarlab.ml.presets import FastRecipe
from cifarlab.modelfile import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "static", "examples", "cat.png")


@pytest.fixture(scope="module")
def real_image():
    return np.asarray(Image.open(EXAMPLE).convert("RGB"))


@pytest.mark.parametrize("model_file", ["cifar10_cnn.h5", "baseline.h5"])
def test_heatmap_on_shipped_models(model_file, real_image):
    model, _ = load(os.path.join(ROOT, "model", model_file))
    cam, index = gradcam.heatmap(model, real_image)
    assert cam.shape == (32, 32)
    assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    assert cam.std() > 0.05  # not constant on a real image
    assert index == int(np.argmax(model(real_image[None].astype("float32"))[0]))


def test_fast_net_uses_a_7x7_map_of_the_backbone():
    wrapped = models.with_tta(models.build_fast_backbone(FastRecipe(widths=(8, 16, 16)), 10), level=1)
    network = gradcam.Explainer(wrapped).network
    assert network.name == "fast_backbone"
    assert gradcam.target_layer(network).output.shape[1:3] == (7, 7)


def test_baseline_sequential_scores_log_probabilities():
    explainer = gradcam.Explainer(models.build_baseline(10))
    network = explainer.network
    assert isinstance(network, keras.Sequential) and explainer.softmax
    assert gradcam.target_layer(network).name == network.layers[3].name  # the last conv, 13x13


def test_requested_class_is_explained(real_image):
    model = models.build_baseline(10)
    cam, index = gradcam.heatmap(model, real_image, class_index=7)
    assert index == 7 and cam.shape == (32, 32) and np.isfinite(cam).all()


def test_overlay_shows_the_image_beside_the_heat_and_under_it_where_the_model_did_not_look(real_image):
    cam = np.zeros((32, 32), np.float32)
    cam[:, 16:] = 1.0  # the model looked at the right half only
    image = np.asarray(gradcam.overlay(real_image, cam, display_size=96, gap=8)).astype(int)
    assert image.shape == (96, 200, 3)
    plain = np.asarray(Image.fromarray(real_image).resize((96, 96), Image.NEAREST)).astype(int)
    assert (image[:, :96] == plain).all()  # the input itself, untouched
    overlaid = image[:, 104:]
    assert (overlaid[:, :40] == plain[:, :40]).all()  # no heat: the image shows through unchanged
    assert np.abs(overlaid[:, 56:] - plain[:, 56:]).mean() > 20  # heat: coloured over
