import io
import json
import re

import pytest

import train
from app import create_app
from cifarlab import REPO
from cifarlab.ml import architectures
from cifarlab.ml.presets import PRESETS, TITLES, FastRecipe, Recipe, TransferRecipe
from tests.helpers import image_bytes
from tests.helpers import write_folder


@pytest.fixture
def dummy(monkeypatch):
    """The tiny architecture of tests/arch_dummy.py, a plugin for one test (named in CIFARLAB_ARCHITECTURES)."""
    monkeypatch.setenv(architectures.PLUGINS, "tests.arch_dummy")
    return architectures.catalog().architectures["dummy"]


def test_a_new_architecture_trains_saves_serves_explains_and_is_refused_for_export_in_one_line(dummy, tmp_path,
                                                                                                 capsys):
    data = write_folder(tmp_path / "data", ["red", "blue"], per_class=12, size=(40, 40), noise=40)
    out = tmp_path / "runs" / "dummy"
    assert train.main(["--data", str(data), "--arch", "dummy", "--val-size", "4", "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["arch"] == "dummy" and meta["architecture"] == "dummy" and meta["parameters"] < 200

    app = create_app({"TESTING": True, "MODEL_PATH": f"{out}.h5", "UPLOAD_FOLDER": str(tmp_path / "uploads"),
                      "WTF_CSRF_ENABLED": False, "SECRET_KEY": "test-only"})
    client = app.test_client()
    html = client.post("/", data={"file": (io.BytesIO(image_bytes()), "x.png")},
                       content_type="multipart/form-data").get_data(as_text=True)
    assert re.search(r'<span class="label">(red|blue)</span>', html)
    link = re.search(r'class="explain-link" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert client.get(link).status_code == 200
    assert "Dummy test net" in client.get("/model").get_data(as_text=True)

    capsys.readouterr()
    assert train.main(["export", "--model", f"{out}.h5", "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("the dummy net is for tests: it is not exported.")


def test_every_preset_names_a_registered_architecture_and_old_sidecars_find_theirs():
    assert {name: architectures.of_recipe(hp).name for name, hp in PRESETS.items()} == {
        "baseline": "baseline", "fast": "fast", "fast_oe": "fast", "muon": "fast", "wide": "fast",
        "transfer": "transfer"}
    assert architectures.of_model({"arch": "fast_oe"}).name == "fast"  # a sidecar written before the registry
    assert architectures.of_model({"arch": "fast", "architecture": "transfer"}).name == "transfer"
    assert architectures.of_model({"arch": "remote"}) is None


def test_a_transfer_recipe_under_a_new_name_gets_the_transfer_net_and_takes_pretrained_weights():
    hp = TransferRecipe(backbone="EfficientNetV2B3")
    architecture = architectures.of_recipe(hp)
    assert architecture.name == "transfer" and architecture.pretrained and not architecture.explainable
    assert [p.name for p in architecture.phases(hp)] == ["frozen backbone", "fine-tuning"]


def test_a_recipe_class_belongs_to_one_architecture():
    with pytest.raises(architectures.ArchitectureError, match="already belongs to the fast architecture"):
        architectures.check_unique([*architectures.BUILT_IN, architectures.Architecture("other", FastRecipe, None,
                                                                                        None)])


def test_without_plugins_the_catalog_is_the_built_ins_and_read_only(monkeypatch):
    monkeypatch.delenv(architectures.PLUGINS, raising=False)
    catalog = architectures.catalog()
    assert list(catalog.architectures) == ["baseline", "fast", "transfer"]
    assert catalog.presets == PRESETS and catalog.titles == TITLES and set(TITLES) == set(PRESETS)
    with pytest.raises(TypeError):
        catalog.presets["mine"] = Recipe()  # a plugin declares its presets in its own module


def test_a_plugin_joins_the_catalog_without_changing_the_built_ins(dummy):
    catalog = architectures.catalog()
    assert catalog.architectures["dummy"] is dummy and catalog.of_recipe(catalog.presets["dummy"]) is dummy
    assert catalog.titles["dummy"] == "dummy test net" and "dummy" not in PRESETS and "dummy" not in TITLES


@pytest.mark.parametrize("plugins, message", [
    ("tests.no_such_module", "tests.no_such_module is no architecture module"),
    ("json", "json is no architecture module"),
    ("tests.arch_dummy,tests.arch_dummy", "declares the preset dummy, which exists already"),
])
def test_a_bad_plugin_is_refused_with_a_clear_message(plugins, message, monkeypatch, capsys):
    monkeypatch.setenv(architectures.PLUGINS, plugins)
    with pytest.raises(architectures.ArchitectureError, match=message):
        architectures.catalog()
    assert train.main(["--arch", "fast"]) == 2 and message in capsys.readouterr().err


def test_no_code_outside_the_registry_tests_an_architecture_or_preset_name():
    names = "|".join(PRESETS)
    tests = re.compile(rf"\barch\w*\s*(==|!=|\bin\b)|[\"']({names})[\"']\s*(==|!=|\bin\b)|isinstance\([^)]*Recipe\b"
                       rf"|(?<!optimizer )(==|!=) *[\"']({names})[\"']")  # the optimizer "muon" is not the preset
    sources = [REPO / "train.py", REPO / "app.py", *(REPO / "cifarlab").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}" for path in sources
             if path.name not in ("architectures.py", "presets.py")
             for number, line in enumerate(path.read_text().splitlines(), 1) if tests.search(line)]
    assert len(sources) > 40 and found == []
