import numpy as np
import pytest

from cifarlab import outliers


@pytest.mark.parametrize("family", list(outliers.FAMILIES))
def test_each_family_is_deterministic_by_seed_and_differs_across_seeds(family):
    a, b = outliers.generate(family, 4, seed=1), outliers.generate(family, 4, seed=1)
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, outliers.generate(family, 4, seed=2))


def test_training_fitting_and_benchmark_seeds_are_disjoint():
    assert len({outliers.TRAIN_SEED, outliers.FIT_SEED, outliers.BENCH_SEED}) == 3


def test_a_mix_draws_every_family_evenly_once_per_process_and_cannot_be_changed():
    mix = outliers.mixed(2 * len(outliers.FAMILIES), seed=3)
    assert mix.shape == (2 * len(outliers.FAMILIES), 32, 32, 3)
    np.testing.assert_array_equal(mix[:2], outliers.generate(next(iter(outliers.FAMILIES)), 2, seed=3))
    assert outliers.mixed(2 * len(outliers.FAMILIES), seed=3) is mix  # the same set again: drawn once
    with pytest.raises(ValueError):
        mix[0, 0, 0, 0] = 1  # shared between callers: read-only
