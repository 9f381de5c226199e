import pytest

from cifarlab.ml import run
from cifarlab.ml.presets import PRESETS


@pytest.mark.parametrize("arch", ["fast", "transfer"])
def test_every_step_size_scales_with_the_replica_count(arch):
    hp = PRESETS[arch]
    scaled = run.scaled_for_replicas(hp, 4)
    assert scaled.batch_size == 4 * hp.batch_size and scaled.lr == pytest.approx(4 * hp.lr)
    if hasattr(hp, "finetune_lr"):
        assert scaled.finetune_lr == pytest.approx(4 * hp.finetune_lr)
    assert run.scaled_for_replicas(hp, 1) == hp and PRESETS[arch] is hp  # the preset itself is untouched
