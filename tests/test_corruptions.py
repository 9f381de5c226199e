import numpy as np
import pytest

from cifarlab import corruptions

# parameter tables that are not monotone in how far pixels move: glass blur swaps pixels at every severity, elastic
# transform's severity 1 is its largest affine jitter, saturate goes from washed out (1, 2) to vivid (3 to 5)
NOT_MONOTONE = {"glass_blur", "elastic_transform", "saturate"}


def change(a, b):
    return np.abs(a.astype(np.float64) - b).mean()


@pytest.mark.parametrize("name", list(corruptions.ALL))
def test_each_corruption_changes_an_image_a_little_at_severity_1_and_a_lot_at_5(photos, name):
    mild, harsh = (corruptions.corrupt(name, photos, severity) for severity in (1, 5))
    assert mild.shape == harsh.shape == photos.shape and mild.dtype == harsh.dtype == np.uint8
    assert 0.5 < change(mild, photos) < 35 and change(harsh, photos) > 4  # out of 255
    if name not in NOT_MONOTONE:
        assert change(harsh, photos) > 1.3 * change(mild, photos)
    np.testing.assert_array_equal(corruptions.corrupt(name, photos, 3, seed=7), corruptions.corrupt(name, photos, 3, seed=7))


def test_the_benchmark_is_cifar10c_fifteen_and_its_four_held_out_ones():
    assert len(corruptions.BENCHMARK) == 15 and len(corruptions.HELD_OUT) == 4
    assert set(corruptions.MILD) <= set(corruptions.ALL) and not set(corruptions.BENCHMARK) & set(corruptions.HELD_OUT)
    with pytest.raises(ValueError, match="severity is 1 to 5"):
        corruptions.corrupt("fog", np.zeros((1, 32, 32, 3), np.uint8), 6)
