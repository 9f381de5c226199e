import pytest

from cifarlab.ml.presets import PRESETS, with_overrides


def test_overrides_parse_values_in_the_type_of_the_preset():
    preset = dict(PRESETS["fast"])
    hp = with_overrides(PRESETS["fast"], ["whiten_eps=5e-3", "whiten_float32=True", "lr=2", "widths=[32, 64, 64]",
                                          "optimizer=adam", " epochs = 3 "])
    assert hp["whiten_eps"] == 5e-3 and hp["whiten_float32"] is True
    assert hp["lr"] == 2.0 and isinstance(hp["lr"], float)
    assert hp["widths"] == (32, 64, 64) and hp["optimizer"] == "adam" and hp["epochs"] == 3
    assert PRESETS["fast"] == preset
    assert with_overrides(PRESETS["fast"], []) == PRESETS["fast"]


@pytest.mark.parametrize("assignment", ["nope=1", "lr", "lr=abc", "epochs=2.5", "whiten_float32=1",
                                        "widths=(64, 256)", "augment=yes"])
def test_bad_overrides_name_the_problem(assignment):
    with pytest.raises(ValueError, match="--set"):
        with_overrides(PRESETS["fast"], [assignment])
