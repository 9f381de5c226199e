import numpy as np

from cifarlab.ml import augmix, training


def test_augmix_is_a_pure_function_of_its_seed_and_keeps_the_image_recognisable(photos):
    one = augmix.augmix(photos[0], np.random.default_rng(3))
    np.testing.assert_array_equal(one, augmix.augmix(photos[0], np.random.default_rng(3)))
    assert one.shape == photos[0].shape and one.dtype == np.uint8 and not np.array_equal(one, photos[0])
    mixes = [augmix.augmix(photos[0], np.random.default_rng(seed)) for seed in range(20)]
    changes = [np.abs(m.astype(float) - photos[0]).mean() for m in mixes]
    assert 0 < np.median(changes) < 60  # out of 255: a mix with the original, not a new picture


def test_augmix_some_replaces_about_its_share_and_leaves_the_rest_untouched(photos):
    x = np.repeat(photos, 20, axis=0)
    mixed = augmix.augmix_some(x, 0.5, np.random.default_rng(0))
    changed = np.array([not np.array_equal(a, b) for a, b in zip(mixed, x)])
    assert 0.35 < changed.mean() < 0.65
    np.testing.assert_array_equal(augmix.augmix_some(x, 0.0, np.random.default_rng(0)), x)


def test_batches_with_augmix_keep_the_order_and_flips_of_a_run_without(photos):
    x, y = np.repeat(photos, 4, axis=0), np.eye(10, dtype=np.float32)[np.arange(40) % 10]
    plain = training.Batches(x, y, 8, seed=2, augment=True, translate=2)
    mixed = training.Batches(x, y, 8, seed=2, augment=True, translate=2, augmix=0.5)
    same = [np.array_equal(a, b) for i in range(len(plain)) for a, b in zip(plain[i][0], mixed[i][0])]
    assert 0.25 < np.mean(same) < 0.75  # the others are mixes of the very same views
    for i in range(len(plain)):
        np.testing.assert_array_equal(plain[i][1], mixed[i][1])
