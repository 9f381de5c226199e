"""Training machinery: learning-rate schedule, batch augmentation, the bias-scaled optimizer, lookahead."""
import keras
import numpy as np
import pytest

from cifarlab.ml import training
from cifarlab.ml.presets import FastRecipe


def schedule_values(schedule, steps):
    return [float(schedule(step)) for step in steps]


@pytest.mark.parametrize("end", [0.0, 0.07])
def test_schedule_warms_up_then_decays_to_its_end(end):
    schedule = training.WarmupLinearDecay(peak=2.0, total_steps=100, start=0.2, warmup=0.25, end=end)
    start, peak, middle, last = schedule_values(schedule, [0, 25, 62.5, 100])
    assert start == pytest.approx(0.4)
    assert peak == pytest.approx(2.0)
    assert middle == pytest.approx(2.0 * (end + (1 - end) * 0.5))
    assert last == pytest.approx(2.0 * end)


def test_schedule_round_trips_through_its_config():
    schedule = training.WarmupLinearDecay(peak=1.5, total_steps=40, start=0.1, warmup=0.3, end=0.05)
    copy = training.WarmupLinearDecay(**schedule.get_config())
    assert schedule_values(copy, range(41)) == schedule_values(schedule, range(41))


def test_optimizer_ends_at_the_presets_lr_end():
    hp = FastRecipe(optimizer="sgd", lr=1.0, lr_start=0.2, lr_warmup=0.2, lr_end=0.1, momentum=0.9, weight_decay=0.0,
                    bias_lr_scale=1.0)
    optimizer = training.make_optimizer(hp, steps=50)
    optimizer.iterations.assign(50)
    assert float(optimizer.learning_rate) == pytest.approx(0.1)


def test_augment_mirrors_every_other_epoch_and_only_shifts_within_reach():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    flip_bits = np.zeros(64, dtype=np.int64)
    even = training.augment(x.copy(), rng, epoch=0, flip_bits=flip_bits, translate=0)
    odd = training.augment(x.copy(), rng, epoch=1, flip_bits=flip_bits, translate=0)
    np.testing.assert_array_equal(even, x)
    np.testing.assert_array_equal(odd, x[:, :, ::-1])
    shifted = training.augment(x.copy(), rng, epoch=0, flip_bits=flip_bits, translate=1)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    for i in range(len(x)):  # every image is one of the 9 reflect-padded crops of itself
        assert any(np.array_equal(shifted[i], padded[i, dy:dy + 8, dx:dx + 8]) for dy in range(3) for dx in range(3))
    assert not np.array_equal(shifted, x)


def test_cutout_zeroes_one_square_per_image_clipped_at_the_borders():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, (500, 16, 16, 3), dtype=np.uint8)  # no zero pixels before the cutout
    out = training.augment(x.copy(), rng, epoch=0, flip_bits=np.zeros(500, dtype=np.int64), translate=0, cutout=6)
    zeroed = (out == 0).all(axis=3)
    np.testing.assert_array_equal(out[~zeroed], x[~zeroed])  # everything else untouched
    for mask in zeroed:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert mask.sum() == len(rows) * len(cols)  # one rectangle: the square, cut by the border
        assert 3 <= len(rows) <= 6 and 3 <= len(cols) <= 6  # its centre lies in the image
    assert zeroed.mean(axis=0).min() > 0  # borders and corners get covered too


def test_augment_without_cutout_draws_what_it_always_drew():
    x = np.random.default_rng(1).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    flip_bits = np.zeros(32, dtype=np.int64)
    plain = training.augment(x.copy(), np.random.default_rng(2), 0, flip_bits, translate=2)
    with_zero = training.augment(x.copy(), np.random.default_rng(2), 0, flip_bits, translate=2, cutout=0)
    np.testing.assert_array_equal(plain, with_zero)  # a resumed older run sees the same batches


def test_batches_cover_every_image_once_per_epoch():
    x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(3, axis=3)
    y = np.arange(10)
    batches = training.Batches(x, y, batch_size=4, seed=0)
    assert len(batches) == 3
    orders = []
    for epoch in (0, 1, 0):
        batches.prepare(epoch)
        seen_x = np.concatenate([batches[i][0][:, 0, 0, 0] for i in range(len(batches))])
        seen_y = np.concatenate([batches[i][1] for i in range(len(batches))])
        np.testing.assert_array_equal(np.sort(seen_x), y)
        np.testing.assert_array_equal(seen_x, seen_y)  # images stay with their labels
        orders.append(seen_x)
    assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch ...
    np.testing.assert_array_equal(orders[0], orders[2])  # ... as a function of the epoch alone (resumable)


def test_bias_scaled_sgd_steps_batch_norm_offsets_further():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, use_bias=False),
                              keras.layers.BatchNormalization(scale=False)])
    optimizer = training.ScaledBiasSGD(bias_lr_scale=8.0, learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    kernel, beta = model.trainable_variables
    before = [keras.ops.convert_to_numpy(v).copy() for v in (kernel, beta)]
    grads = [keras.ops.ones_like(kernel), keras.ops.ones_like(beta)]
    optimizer.apply(grads, [kernel, beta])
    kernel_step, beta_step = (before[i] - keras.ops.convert_to_numpy(v) for i, v in enumerate((kernel, beta)))
    np.testing.assert_allclose(kernel_step, 0.1, rtol=1e-6)
    np.testing.assert_allclose(beta_step, 0.8, rtol=1e-6)


def test_lookahead_pulls_weights_to_their_average_at_the_end():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    lookahead = training.Lookahead(total_steps=4, every=1)
    lookahead.set_model(model)
    lookahead.on_train_begin()
    for value in (1.0, 2.0, 3.0, 4.0):
        model.layers[0].kernel.assign(np.full((2, 1), value, dtype=np.float32))
        lookahead.on_train_batch_end(0)
    lookahead.on_train_end()
    final = keras.ops.convert_to_numpy(model.layers[0].kernel)
    assert 0.0 < final[0, 0] < 4.0  # pulled back from the last weights towards earlier ones
    np.testing.assert_array_equal(final, np.asarray(lookahead.average[0]))


def test_lookahead_reattaches_a_jax_trainers_state_before_reading_the_weights():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])
    calls = []
    model.jax_state_sync = lambda: calls.append(keras.ops.convert_to_numpy(model.layers[0].kernel).copy())
    lookahead = training.Lookahead(total_steps=10, every=1)
    lookahead.set_model(model)
    lookahead.on_train_begin()
    lookahead.on_train_batch_end(0)
    assert calls  # mid-epoch, JAX's trained values live off the variables until this is called


def test_event_files_need_tensorflow_whatever_the_backend(monkeypatch, tmp_path):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    callbacks = training.logging_callbacks(tmp_path / "logs", initial_epoch=0)
    assert [type(c).__name__ for c in callbacks] == ["CountingCSVLogger"]  # Keras on JAX without TensorFlow: CSV only


def test_each_epoch_shows_its_progress_and_the_time_left():
    import io
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    stream = io.StringIO()
    model.fit(np.zeros((8, 2)), np.zeros((8, 1)), batch_size=2, epochs=2, verbose=0,
              callbacks=[training.EpochProgress(epochs=2, every=0.0, stream=stream)])
    lines = stream.getvalue().splitlines()
    assert lines[0] == "epoch 1/2: 4 batches ..."
    assert lines[1].startswith("epoch 1/2: 1/4 batches (") and "s left)" in lines[1]
    assert lines[4].startswith("epoch 1/2: 4/4 batches (") and "done in" in lines[4]
    assert lines[5] == "epoch 2/2: 4 batches ..." and len(lines) == 10


def test_orthogonalize_keeps_singular_vectors_and_flattens_singular_values():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(576, 64)) * np.linspace(0.2, 3.0, 64)  # columns of very different scales
    u, s, vt = np.linalg.svd(g, full_matrices=False)
    x = keras.ops.convert_to_numpy(training.orthogonalize(keras.ops.convert_to_tensor(g, "float32")))
    assert x.shape == g.shape
    core = u.T @ x @ vt.T  # diagonal when x shares g's singular vectors
    np.testing.assert_allclose(core - np.diag(np.diag(core)), 0, atol=1e-3)
    assert np.all((np.diag(core) > 0.5) & (np.diag(core) < 1.5)), np.diag(core)  # spread 15x in g, not in x


def muon_net():
    return keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(3, 2, name="whiten"),
                             keras.layers.Conv2D(8, 3, use_bias=False, name="block1a_conv"),
                             keras.layers.Flatten(), keras.layers.Dense(2, use_bias=False, name="head")])


def test_muon_normalises_each_filter_bank_and_steps_it_by_its_orthogonalised_gradient():
    net = muon_net()
    optimizer = training.MuonSGD(peak_lr=0.5, muon_lr=0.24, muon_momentum=0.6, learning_rate=0.5, momentum=0.0,
                                 weight_decay=0.1)
    variables = net.trainable_variables
    optimizer.build(variables)
    conv, head = net.get_layer("block1a_conv").kernel, net.get_layer("head").kernel
    before = [keras.ops.convert_to_numpy(v).copy() for v in (conv, head)]
    grads = {id(v): np.random.default_rng(i).normal(size=v.shape).astype(np.float32) for i, v in enumerate(variables)}
    optimizer.apply([keras.ops.convert_to_tensor(grads[id(v)]) for v in variables], variables)
    kernel, grad = before[0], grads[id(conv)]
    step = keras.ops.convert_to_numpy(training.orthogonalize(keras.ops.convert_to_tensor(grad.reshape(-1, 8))))
    expected = kernel * np.sqrt(8) / np.linalg.norm(kernel) - 0.24 * step.reshape(kernel.shape)  # no decay
    np.testing.assert_allclose(keras.ops.convert_to_numpy(conv), expected, atol=1e-5)
    sgd_step = before[1] * (1 - 0.1 * 0.5) - 0.5 * grads[id(head)]  # decoupled decay, then SGD
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head), sgd_step, atol=1e-5)


def test_muon_trains_the_whitening_bias_at_a_rate_decaying_to_zero():
    net = muon_net()
    whiten = net.get_layer("whiten")
    whiten.kernel.trainable = False
    optimizer = training.MuonSGD(peak_lr=0.5, whiten_bias_steps=2, bias_lr_scale=4.0, learning_rate=0.5,
                                 momentum=0.0, weight_decay=0.1)
    variables = net.trainable_variables
    assert any(v is whiten.bias for v in variables) and not any(v is whiten.kernel for v in variables)
    optimizer.build(variables)
    moves = []
    for _ in range(3):
        start = keras.ops.convert_to_numpy(whiten.bias).copy()
        optimizer.apply([keras.ops.ones_like(v) for v in variables], variables)
        moves.append(float(np.mean(start - keras.ops.convert_to_numpy(whiten.bias))))
    np.testing.assert_allclose(moves, [0.5 * 4.0, 0.5 * 4.0 * 0.5, 0.0], atol=1e-6)  # 2.0, 1.0, then frozen


@pytest.fixture
def pixels():
    return np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)


def test_a_teacher_mixes_its_softmax_into_each_target(tiny_model_path, pixels):
    labels = np.eye(10, dtype=np.float32)[[0, 1, 2, 3, 4, 5]]
    own = np.asarray(keras.models.load_model(tiny_model_path, compile=False)(pixels.astype(np.float32)))
    np.testing.assert_allclose(training.Teacher(tiny_model_path, 1.0, 1.0).targets(pixels, labels), own, atol=1e-5)
    np.testing.assert_array_equal(training.Teacher(tiny_model_path, 0.0, 1.0).targets(pixels, labels), labels)
    mixed = training.Teacher(tiny_model_path, 0.8, 1.0).targets(pixels, labels)
    np.testing.assert_allclose(mixed, 0.8 * own + 0.2 * labels, atol=1e-5)
    softer = training.Teacher(tiny_model_path, 1.0, 4.0).targets(pixels, labels)
    np.testing.assert_allclose(softer.sum(axis=1), 1.0, atol=1e-5)
    assert (softer.max(axis=1) < own.max(axis=1)).all() and (softer.argmax(axis=1) == own.argmax(axis=1)).all()


def test_a_teacher_changes_the_class_targets_of_a_batch_not_its_images_or_outliers(tiny_model_path, pixels):
    x, y = np.repeat(pixels, 2, axis=0), np.eye(10, dtype=np.float32)[np.arange(12) % 10]
    bank = np.zeros((20, 32, 32, 3), np.uint8)
    options = dict(augment=True, translate=2, outliers=bank, outlier_fraction=0.5)
    plain = training.Batches(x, y, 4, seed=1, **options)
    taught = training.Batches(x, y, 4, seed=1, teacher=training.Teacher(tiny_model_path, 1.0, 1.0), **options)
    (xp, yp, wp), (xt, yt, wt) = plain[1], taught[1]
    np.testing.assert_array_equal(xp, xt)
    np.testing.assert_array_equal(wp, wt)
    assert not np.array_equal(yp[:4], yt[:4]) and np.array_equal(yp[4:], yt[4:])  # outliers keep uniform targets
    np.testing.assert_allclose(yt.sum(axis=1), 1.0, atol=1e-5)


def test_the_outlier_bank_leaves_out_the_families_a_recipe_excludes():
    x = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    everything = training.outlier_bank(x, 90, seed=0)
    without_noise = training.outlier_bank(x, 90, seed=0, families=FastRecipe(outlier_exclude="noise").outlier_families())
    assert len(everything) == len(without_noise) == 90
    assert not np.array_equal(everything[:9], without_noise[:9])  # the bank began with the noise family
    np.testing.assert_array_equal(everything[81:], without_noise[81:])  # the scrambled photos are the same
