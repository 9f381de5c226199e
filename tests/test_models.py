import keras
import numpy as np
import pytest

from cifarlab.ml import models
from cifarlab.ml.presets import FastRecipe

TINY = FastRecipe(widths=(8, 16, 16))  # a fast net small enough for tests


def test_baseline_is_the_seed_cnn():
    model = models.build_baseline(10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Rescaling", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    assert [model.layers[i].filters for i in (1, 3)] == [32, 64]
    assert model.layers[6].units == 64 and model.layers[7].units == 10
    assert model.count_params() == 167_562


def test_depth_three_adds_a_convolution_and_a_skip_to_every_group():
    two, three = models.build_fast_backbone(TINY, 10), models.build_fast_backbone(TINY.replace(depth=3), 10)
    convs = lambda net: [layer.name for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]  # noqa: E731
    assert len(convs(three)) == len(convs(two)) + 3
    skips = [layer for layer in three.layers if isinstance(layer, keras.layers.Add)]
    assert [layer.name for layer in skips] == ["block1_skip", "block2_skip", "block3_skip"]
    extra = sum(9 * w * w for w in TINY.widths)  # one more 3x3 conv of width w, and its batch-norm offsets
    assert three.count_params() - two.count_params() == extra + sum(3 * w for w in TINY.widths)


def test_tta_model_round_trips_through_h5(tmp_path):
    backbone = models.build_fast_backbone(TINY, 10)
    model = models.with_tta(backbone, level=2)
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    probs = np.asarray(model(x))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    model.save(tmp_path / "m.h5")
    loaded = keras.models.load_model(tmp_path / "m.h5", compile=False, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), probs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("gelu_tanh", [False, True])
def test_recipe_chooses_the_gelu_form_of_the_saved_backbone(tmp_path, gelu_tanh):
    models.build_fast_backbone(TINY.replace(gelu_tanh=gelu_tanh), 10).save(tmp_path / "b.h5")
    loaded = keras.models.load_model(tmp_path / "b.h5", compile=False, safe_mode=True)
    gelus = [layer for layer in loaded.layers if isinstance(layer, models.GELU)]
    assert len(gelus) == 7 and all(layer.approximate is gelu_tanh for layer in gelus)


@pytest.mark.parametrize("whiten_float32", [False, True])
def test_whitening_can_stay_float32_under_mixed_precision(whiten_float32):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        net = models.build_fast_backbone(TINY.replace(whiten_float32=whiten_float32), 10)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    expected = "float32" if whiten_float32 else "bfloat16"
    assert [net.get_layer(n).compute_dtype for n in ("rescale", "whiten", "whiten_gelu")] == [expected] * 3
    assert net.get_layer("block1a_conv").compute_dtype == "bfloat16"
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    assert np.isfinite(np.asarray(net(x), dtype="float32")).all()


def test_tta_is_mirror_invariant():
    model = models.with_tta(models.build_fast_backbone(TINY, 10), level=1)
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(model(x[:, :, ::-1])), rtol=1e-4, atol=1e-6)


def test_whitening_kernel_decorrelates_patches():
    rng = np.random.default_rng(0)
    base = rng.random((200, 16, 16, 1))
    images = np.concatenate([base, 0.5 * base + 0.1 * rng.random((200, 16, 16, 1)), rng.random((200, 16, 16, 1))], -1)
    kernel = models.whitening_kernel(images, eps=1e-8)
    assert kernel.shape == (2, 2, 3, 24)
    patches = np.stack([images[:, i:15 + i, j:15 + j] for i in range(2) for j in range(2)], 3).reshape(-1, 12)
    out = (patches - patches.mean(0)) @ kernel.reshape(12, 24)[:, :12]
    np.testing.assert_allclose(np.cov(out.T), np.eye(12), atol=0.05)


