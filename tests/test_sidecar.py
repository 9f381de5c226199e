import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cifarlab import atomic, modelfile, sidecar
from cifarlab.sidecar import SCHEMA_VERSION, SidecarError

REPO = Path(__file__).resolve().parent.parent
COMMITTED = sorted((REPO / "model").glob("*.json")) + sorted((REPO / "results").glob("*.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_sidecar_still_loads(path):
    meta = sidecar.check(json.loads(path.read_text()))
    assert meta["class_names"] and meta["input_size"] == 32
    assert 1 <= meta["schema_version"] <= SCHEMA_VERSION
    if meta["schema_version"] == 1:  # written before the schema had a version: its commit is unknown
        assert meta["git_commit"] is None


def test_a_training_sidecar_records_the_schema_and_the_commit():
    meta = sidecar.for_training(name="m", class_names=["a", "b"], input_size=32)
    assert meta["schema_version"] == SCHEMA_VERSION
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        pytest.skip("not a git clone")
    assert meta["git_commit"].split("+")[0] == head.stdout.strip()


def test_no_commit_is_recorded_outside_a_git_clone(tmp_path):
    assert sidecar.git_commit(tmp_path) is None


@pytest.mark.parametrize("meta, message", [
    ([1, 2], "not a JSON object"),
    ({"input_size": 32}, "lacks class_names"),
    ({"class_names": [], "input_size": 32}, "lacks class_names"),
    ({"class_names": ["a"], "input_size": "32"}, "lacks input_size"),
    ({"class_names": ["a"], "input_size": 32, "schema_version": SCHEMA_VERSION + 1}, "newer than this code"),
    ({"class_names": ["a", "a"], "input_size": 32}, "distinct"),
    ({"class_names": ["a", 3], "input_size": 32}, "distinct non-empty strings"),
    ({"class_names": ["a"], "input_size": 100000}, "input_size 100000"),
    ({"class_names": ["a"], "input_size": 32, "calibration": {"temperature": 0}}, "temperature 0"),
    ({"class_names": ["a"], "input_size": 32, "calibration": {"temperature": "2"}}, "positive number"),
    ({"class_names": ["a"], "input_size": 32, "calibration": {"unsure_threshold": 1.5}}, "unsure_threshold"),
    ({"class_names": ["a"], "input_size": 32, "tta_views": []}, "tta_views"),
    ({"class_names": ["a"], "input_size": 32, "tta_views": [[False, 0, 0, 0.0]]}, "not all 0"),
    ({"class_names": ["a"], "input_size": 32, "tta_views": [[False, 40, 0, 1.0]]}, "tta_views"),
    ({"class_names": ["a"], "input_size": 32, "tta_views": [[1, 0, 0, 1.0]]}, "mirror"),
])
def test_a_sidecar_that_cannot_describe_a_model_is_refused_in_one_line(meta, message):
    with pytest.raises(SidecarError, match=message):
        sidecar.check(meta)


def test_the_reader_names_the_file_of_a_bad_sidecar(tmp_path):
    (tmp_path / "m.h5").write_bytes(b"")
    (tmp_path / "m.json").write_text(json.dumps({"class_names": ["a"], "input_size": 32, "schema_version": 99}))
    with pytest.raises(modelfile.ModelFileError, match=r"m\.json: sidecar schema_version 99"):
        modelfile.read_meta(tmp_path / "m.h5")


def test_evaluation_and_export_keep_the_training_provenance():
    trained = {"name": "m", "class_names": ["a", "b"], "input_size": 32, "schema_version": 2, "git_commit": "abc"}
    report = {"accuracy": 0.9, "nll_before": 0.3}
    evaluated = sidecar.with_evaluation(trained, {"temperature": 1.5}, report)
    assert (evaluated["test_accuracy"], evaluated["test_loss"], evaluated["git_commit"]) == (0.9, 0.3, "abc")
    exported = sidecar.for_export(evaluated, "TFLite int8", "model/m.h5", 0.89, "python train.py export", "def")
    assert exported["git_commit"] == "abc" and exported["export_git_commit"] == "def"
    assert exported["test_accuracy"] == 0.89 and exported["calibration"]["applied_inside_model"] == 1.5
    assert exported["calibration"]["temperature"] == 1.0  # the export's probabilities are calibrated already


def test_an_export_of_a_backbone_lists_its_views_and_keeps_the_temperature_for_the_reader():
    source = {"name": "m", "class_names": ["a", "b"], "input_size": 32, "schema_version": 2,
              "calibration": {"temperature": 1.5}}
    views = [(False, 0, 0, 0.5), (True, 0, 0, 0.25), (True, 1, 1, 0.25)]
    exported = sidecar.for_export(source, "TFLite int8", "model/m.h5", 0.89, "python train.py export", None, views)
    assert exported["tta_views"] == [[False, 0, 0, 0.5], [True, 0, 0, 0.25], [True, 1, 1, 0.25]]
    assert "logits" in exported["output"]
    assert exported["calibration"] == {"temperature": 1.5}  # applied by the reader, after the views' mean
    assert exported["schema_version"] == SCHEMA_VERSION >= 3  # older readers refuse it instead of misreading it


def test_an_old_sidecar_gains_the_current_schema_when_evaluated_again():
    old = {"name": "m", "class_names": ["a", "b"], "input_size": 32}
    evaluated = sidecar.with_evaluation(old, {"temperature": 1.0}, {"accuracy": 0.5, "nll_before": 1.0})
    assert evaluated["schema_version"] == 1 and evaluated["git_commit"] is None  # its training commit stays unknown


@pytest.mark.parametrize("meta,name", [
    ({"name": "fast_oe", "arch": "fast_oe"}, "Fast CNN with outlier exposure"),
    ({"name": "fast_oe (TFLite int8)", "arch": "fast_oe", "format": "TFLite int8"},
     "Fast CNN with outlier exposure, TFLite int8"),
    ({"name": "my-run", "arch": "something-new"}, "My-run"),
])
def test_a_model_is_shown_by_what_it_is_not_by_its_run_name(meta, name):
    assert sidecar.display_name(meta) == name


def test_pages_name_the_model_for_users_and_print_counts_with_separators(make_app, tiny_model_path, tmp_path):
    model = tmp_path / "m.h5"
    shutil.copy(tiny_model_path, model)
    atomic.write_json(modelfile.sidecar_path(model), {**modelfile.read_meta(tiny_model_path), "parameters": 1234567})
    page = make_app(MODEL_PATH=str(model)).test_client().get("/model").get_data(as_text=True)
    assert "<h1>Model card: Seed baseline CNN</h1>" in page and "Model: <strong>Seed baseline CNN</strong>" in page
    assert "1,234,567 parameters" in page and "tiny" not in page


@pytest.mark.parametrize("meta,phrase", [
    ({"epochs": 16, "train_seconds": 1707.3, "command": "python train.py --arch fast"},
     "trained for 16 epochs in 28.5 min"),
    ({"epochs": 4, "train_seconds": 1474.8, "command": "python train.py --init a.h5",
      "init": {"path": "a.h5", "name": "fast_oe", "epochs": 3, "train_seconds": 5797.3}},
     "fine-tuned for 4 epochs in 24.6 min from fast_oe (121.2 min of training in all)"),
    ({"epochs": 4, "train_seconds": 60.0, "command": "python train.py --init a.h5",
      "init": {"path": "a.h5", "name": None, "epochs": 3, "train_seconds": None}},
     "fine-tuned for 4 epochs in 1.0 min from a.h5 (its earlier training not recorded)"),
    ({"epochs": 4, "train_seconds": 60.0, "command": "python train.py --init a.h5"},  # a sidecar from before "init"
     "fine-tuned for 4 epochs in 1.0 min from an earlier model (its earlier training not recorded)"),
])
def test_training_time_counts_every_stage_of_a_fine_tune(meta, phrase):
    assert sidecar.training_time(meta) == phrase


def test_a_fine_tunes_lineage_carries_the_whole_training_of_its_start():
    first = {"name": "fast6", "epochs": 16, "train_seconds": 100.0, "command": "python train.py"}
    second = {"name": "oe", "epochs": 3, "train_seconds": 50.0, "command": "python train.py --init f.h5",
              "init": sidecar.lineage("f.h5", first)}
    third = {"epochs": 4, "train_seconds": 25.0, "command": "python train.py --init o.h5",
             "init": sidecar.lineage("o.h5", second)}
    assert third["init"] == {"path": "o.h5", "name": "oe", "epochs": 3, "train_seconds": 150.0}
    assert sidecar.total_train_seconds(third) == 175.0
