import dataclasses
import json

import pytest

from cifarlab.ml.presets import PRESETS, FastRecipe, Recipe, TransferRecipe


def test_overrides_parse_values_in_the_type_of_the_field():
    preset = PRESETS["fast"]
    hp = preset.with_overrides(["whiten_eps=5e-3", "whiten_float32=True", "lr=2", "widths=[32, 64, 64]",
                                "optimizer=adam", " epochs = 3 "])
    assert hp.whiten_eps == 5e-3 and hp.whiten_float32 is True
    assert hp.lr == 2.0 and isinstance(hp.lr, float)
    assert hp.widths == (32, 64, 64) and hp.optimizer == "adam" and hp.epochs == 3
    assert PRESETS["fast"] is preset and preset.epochs == 15 and preset.widths == (64, 256, 256)
    assert preset.with_overrides([]) == preset


@pytest.mark.parametrize("assignment", ["nope=1", "lr", "lr=abc", "epochs=2.5", "whiten_float32=1",
                                        "widths=(64, 256)", "augment=yes", "optimizer=rmsprop", "epochs=0",
                                        "tta_level=3", "val_size=-1", "finetune_lr=1e-4", "depth=4",
                                        "cutout=-1", "outlier_exclude=cats", "distill_weight=1.5",
                                        "distill_temperature=0.0", "augmix=2.0", "augmix_severity=11",
                                        "outlier_exclude=noise,flat,gradient,pattern,shapes,text,strokes,fractal,screen"])
def test_bad_overrides_name_the_problem(assignment):
    with pytest.raises(ValueError, match="--set"):
        PRESETS["fast"].with_overrides([assignment])


def test_a_recipe_checks_its_types_when_built_not_when_used():
    with pytest.raises(ValueError, match="widths"):
        FastRecipe(widths=(64, 256))
    with pytest.raises(ValueError, match="augment"):
        Recipe(augment=1)
    with pytest.raises(ValueError, match="backbone is one of EfficientNetV2B0"):
        TransferRecipe(backbone="ResNet50")
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["baseline"].epochs = 1  # presets are shared: nobody may change one in place


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_recorded_recipe_rebuilds_the_same_recipe(name):
    preset = PRESETS[name]
    recorded = json.loads(json.dumps(preset.to_dict()))  # as a sidecar or a checkpoint holds it
    assert type(preset)(**recorded) == preset


def test_every_key_is_declared_once_with_its_default():
    classes = (Recipe, FastRecipe, TransferRecipe)
    declared = [key for cls in classes for key in vars(cls).get("__annotations__", {})]
    assert len(declared) == len(set(declared))  # a subclass never declares (and so defaults) a key again
    assert all(field.default is not dataclasses.MISSING for cls in classes for field in dataclasses.fields(cls))
    assert {type(preset) for preset in PRESETS.values()} == set(classes)


def test_the_wide_preset_is_the_fast_one_with_airbench96s_changes():
    fast, wide = PRESETS["fast"].to_dict(), PRESETS["wide"].to_dict()
    changed = {key for key in fast if fast[key] != wide[key]}
    assert changed == {"epochs", "widths", "depth", "cutout", "translate", "lr"}
    assert PRESETS["wide"].depth == 3 and PRESETS["fast"].depth == 2 and PRESETS["fast"].cutout == 0
