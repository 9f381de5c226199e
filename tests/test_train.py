import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import train
from cifarlab import modelfile, REPO, sidecar
from cifarlab.inference import Classifier
from cifarlab.ml.data import load_image_folder
from tests.helpers import image_bytes
from tests.helpers import write_folder


NARROW = {"fast": ["--set", "widths=(8,16,16)"], "muon": ["--set", "widths=(8,16,16)"]}  # where width is not the point


@pytest.fixture
def tiny_dataset(tmp_path):
    """Two classes of noisy single-colour images of another size than 32x32."""
    return write_folder(tmp_path / "data", ["red", "blue"], per_class=12, size=(40, 40), noise=40)


@pytest.mark.parametrize("arch", ["baseline", "fast", "muon"])
def test_train_writes_model_sidecar_and_curves(tmp_path, tiny_dataset, arch):
    out = tmp_path / "out" / "m"
    rc = train.main(["--data", str(tiny_dataset), "--arch", arch, "--epochs", "1", "--batch-size", "8",
                     "--val-size", "4", "--out", str(out), *NARROW.get(arch, [])])
    assert rc == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["class_names"] == ["blue", "red"]
    assert meta["arch"] == arch and meta["epochs"] == 1 and meta["input_size"] == 32
    assert meta["model_file"]["views"] == (1 if arch == "baseline" else 6)  # the fast recipes' level-2 views
    assert meta["command"].startswith("python train.py --data")
    assert meta["schema_version"] == sidecar.SCHEMA_VERSION and meta["git_commit"] == sidecar.git_commit()
    assert len(meta["history"]) == 1 and meta["train_seconds"] > 0
    assert 0.0 <= meta["test_accuracy"] <= 1.0 and meta["test_images"] == 24 and meta["val_images"] == 4
    for png in ("curves", "confusion", "reliability", "mistakes"):
        assert (tmp_path / "out" / f"m_{png}.png").stat().st_size > 1000
    assert meta["calibration"]["temperature"] > 0 and meta["evaluation"]["images"] == 24
    assert meta["evaluation"]["accuracy"] == pytest.approx(meta["test_accuracy"], abs=1e-6)
    assert "## Test metrics" in (tmp_path / "out" / "m_card.md").read_text()
    classifier = Classifier.from_path(out.with_suffix(".h5"))
    probs = classifier.probabilities(np.zeros((2, 32, 32, 3), np.uint8))
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    data = load_image_folder(tiny_dataset)
    independent = (classifier.raw_probabilities(data.x_test).argmax(1) == data.y_test).mean()
    assert meta["test_accuracy"] == pytest.approx(independent, abs=1e-6)


def test_a_small_dataset_trains_with_the_presets_validation_scaled_down(tmp_path, capsys):
    small = write_folder(tmp_path / "small", ["red", "blue"], per_class=30, noise=40)  # 60 images: preset wants 2,000
    assert train.main(["--data", str(small), "--arch", "fast", "--epochs", "1", "--batch-size", "16",
                       "--out", str(tmp_path / "m"), *NARROW["fast"]]) == 0
    assert "54 train, 6 val" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["val_images"] == 6


def test_a_dataset_too_small_to_train_is_one_line(tmp_path, capsys):
    tiny = write_folder(tmp_path / "tiny", ["red", "blue"], per_class=3)
    assert train.main(["--data", str(tiny), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "Too small to train: class 'blue' has 3 training images" in err


@pytest.mark.parametrize("after_an_epoch", [True, False])
def test_ctrl_c_is_one_line_that_says_how_to_continue(tmp_path, monkeypatch, capsys, tiny_dataset, after_an_epoch):
    from cifarlab.ml import resume, run

    def interrupted(args, *rest):
        if after_an_epoch:
            resume.checkpoint_path(args.out).write_bytes(b"a finished epoch")
        raise KeyboardInterrupt
    monkeypatch.setattr(run, "train_run", interrupted)
    out = tmp_path / "m"
    assert train.main(["--data", str(tiny_dataset), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: interrupted")
    assert (f"python train.py --resume {out}" in err) == after_an_epoch


def test_diverging_run_saves_nothing(tmp_path, capsys):
    flat = write_folder(tmp_path / "flat", ["red", "blue"], per_class=12)  # zero-variance channels
    out = tmp_path / "out" / "m"
    assert train.main(["--data", str(flat), "--arch", "fast", "--epochs", "2", "--batch-size", "8",
                       "--val-size", "4", "--out", str(out), *NARROW["fast"]]) == 3
    assert "diverged" in capsys.readouterr().err
    import keras
    assert keras.mixed_precision.global_policy().name == "float32"  # the next model this process builds is as usual
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["m_logs"]  # the logs show it; no model, no checkpoint


def test_bad_override_exits_before_training(tmp_path, tiny_dataset, capsys):
    out = tmp_path / "out" / "m"
    assert train.main(["--data", str(tiny_dataset), "--arch", "fast", "--set", "whiten_eps=big", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "whiten_eps" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_train_without_network_exits_with_one_line(monkeypatch, capsys, tmp_path):
    import keras

    def offline():  # what keras raises: a bare Exception whose message says why
        raise Exception("URL fetch failure on https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz: None --\n"
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    assert train.main(["--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0] and "Temporary failure in name resolution" in err[0]
    assert "(Exception)" not in err[0]


def test_shipped_model_loads_with_its_sidecar():
    model, meta = modelfile.load(Path(__file__).resolve().parents[1] / "model" / "cifar10_cnn.h5")
    assert meta["class_names"] == ["airplane", "automobile", "bird", "cat", "deer",
                                   "dog", "frog", "horse", "ship", "truck"]
    assert model.output_shape == (None, 10)
    assert "cifar10-jpeg" in meta["data_source"] and meta["command"].startswith("python train.py")


def test_evaluate_command_rewrites_report(tmp_path, tiny_dataset, capsys):
    out = tmp_path / "m"
    assert train.main(["--data", str(tiny_dataset), "--epochs", "1", "--val-size", "4", "--out", str(out)]) == 0
    (tmp_path / "m_card.md").unlink()
    (tmp_path / "m_curves.png").unlink()  # e.g. a model trained elsewhere, fetched without its figures
    assert train.main(["evaluate", "--model", str(out) + ".h5", "--data", str(tiny_dataset)]) == 0
    assert "accuracy" in capsys.readouterr().out and (tmp_path / "m_card.md").exists()
    assert (tmp_path / "m_curves.png").exists()  # drawn again from the sidecar's history
    assert train.main(["evaluate", "--model", str(tmp_path / "none.h5"), "--data", str(tiny_dataset)]) == 2


def test_a_run_writes_tensorboard_events_and_a_csv(tmp_path, tiny_dataset):
    out, logdir = tmp_path / "m", tmp_path / "tb"
    assert train.main(["--data", str(tiny_dataset), "--epochs", "2", "--val-size", "4", "--out", str(out),
                       "--logdir", str(logdir)]) == 0
    rows = (logdir / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[0] == "epoch" and "val_loss" in rows[0] and "test_accuracy" in rows[0]
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]  # counted as the console counts
    events = list(logdir.rglob("events.out.tfevents.*"))
    assert {e.parent.name for e in events} == {"train", "validation"} and all(e.stat().st_size > 0 for e in events)
    assert json.loads(out.with_suffix(".json").read_text())["logdir"] == str(logdir)


def test_early_stop_ends_a_run_that_stops_improving(tmp_path):
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise"  # labels unrelated to the pixels: validation loss only gets worse as it memorises
    for split in ("train", "test"):
        for name in ("a", "b"):
            (noise / split / name).mkdir(parents=True)
            for n in range(16):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(noise / split / name / f"{n}.png")
    out = tmp_path / "m"
    assert train.main(["--data", str(noise), "--epochs", "40", "--batch-size", "4", "--val-size", "8",
                       "--early-stop", "2", "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    stop, losses = meta["early_stop"], [h["val_loss"] for h in meta["history"]]
    assert meta["epochs_run"] == len(losses) < 40 and stop["stopped_after_epoch"] == len(losses)
    assert stop["best_epoch"] == 1 + int(np.argmin(losses)) == len(losses) - 2  # patience 2: two epochs without gain
    classifier = Classifier.from_path(out.with_suffix(".h5"))  # the best epoch's weights were kept
    x_val, y_val = load_image_folder(noise).split_validation(8, seed=0)[1]
    probs = classifier.raw_probabilities(x_val)
    assert -np.mean(np.log(probs[np.arange(len(y_val)), y_val])) == pytest.approx(min(losses), rel=2e-2)


@pytest.mark.parametrize("argv, message", [
    (["--arch", "fast", "--early-stop", "3"], "constant step size"),
    (["--early-stop", "0"], "patience of 1 or more"),
    (["--pretrained"], "--pretrained needs a preset with ImageNet weights: --arch transfer"),
    (["--epochs", "0"], "epochs is 1 or more"),
    (["--arch", "transfer", "--set", "backbone=ResNet50"], "backbone is one of"),
    (["--arch", "muon", "--set", "optimizer=rmsprop"], "optimizer is one of adam, sgd, muon"),
    (["--feedback", "export"], "--feedback fine-tunes a model: give --init"),
])
def test_option_mistakes_are_one_line(tmp_path, tiny_dataset, capsys, argv, message):
    assert train.main(["--data", str(tiny_dataset), "--out", str(tmp_path / "m"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("m*"))


def feedback_export(root, classes, per_class, outliers):
    """A folder as `train.py feedback export` writes it: train/<class>/<id>.png, outliers/<id>.png, manifest.json."""
    rng = np.random.default_rng(3)
    for c, name in enumerate(classes):
        (root / "train" / name).mkdir(parents=True)
        for n in range(per_class):
            pixels = np.array([20 * c, 10 * n, 200]) + rng.integers(-40, 41, (32, 32, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / "train" / name / f"id{c}x{n}.png")
    (root / "outliers").mkdir()
    for n in range(outliers):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "outliers" / f"o{n}.png")
    (root / "manifest.json").write_text(json.dumps({"items": []}))
    return root


def test_a_fine_tune_on_a_feedback_export_is_judged_against_its_init(tmp_path, tiny_dataset, capsys):
    init = tmp_path / "init"
    assert train.main(["--data", str(tiny_dataset), "--epochs", "1", "--val-size", "4", "--out", str(init)]) == 0
    export = feedback_export(tmp_path / "export", ["blue", "red"], per_class=10, outliers=3)
    out = tmp_path / "tuned"
    assert train.main(["--data", str(tiny_dataset), "--epochs", "1", "--val-size", "4", "--init", f"{init}.h5",
                       "--feedback", str(export), "--feedback-holdout", "0.3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    feedback = json.loads(out.with_suffix(".json").read_text())["feedback"]
    assert feedback["corrections"] + feedback["held_out"] == 20 and feedback["held_out"] > 0
    assert feedback["outliers"] == 3 and "recipe baseline has no outlier exposure" in printed
    assert set(feedback["accuracy"]) == set(feedback["init_accuracy"]) == {"test", "feedback"}
    worse = [s for s in ("test", "feedback") if feedback["accuracy"][s] < feedback["init_accuracy"][s]]
    assert feedback["worse_on"] == worse and feedback["publishable"] == (not worse)
    assert "## Fine-tuned on users' feedback" in Path(f"{out}_card.md").read_text()
    assert ("Publishable:" if not worse else "Not publishable:") in printed


def test_a_feedback_folder_that_is_not_an_export_is_one_line(tmp_path, tiny_dataset, capsys):
    init = tmp_path / "init"
    assert train.main(["--data", str(tiny_dataset), "--epochs", "1", "--val-size", "4", "--out", str(init)]) == 0
    capsys.readouterr()
    assert train.main(["--data", str(tiny_dataset), "--init", f"{init}.h5", "--feedback", str(tiny_dataset),
                       "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "is not a feedback export" in err and err.count("\n") == 1


@pytest.mark.slow
def test_transfer_preset_trains_and_serves(tmp_path, tiny_dataset, make_app):
    out = tmp_path / "m"
    assert train.main(["--data", str(tiny_dataset), "--arch", "transfer", "--epochs", "2", "--batch-size", "8",
                       "--val-size", "4", "--set", "frozen_epochs=1", "--set", "image_size=32", "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["arch"] == "transfer" and meta["pretrained"] is None and meta["epochs_run"] == 2
    model, _ = modelfile.load(out.with_suffix(".h5"))
    assert model.input_shape == (None, 32, 32, 3) and model.get_layer("backbone").count_params() > 5e6
    client = make_app(MODEL_PATH=str(out.with_suffix(".h5"))).test_client()
    page = client.post("/", data={"file": (io.BytesIO(image_bytes()), "x.png")}, content_type="multipart/form-data")
    assert page.status_code == 200 and "/explain/" not in page.get_data(as_text=True)  # Grad-CAM: baseline/fast only
    assert client.post("/api/predict", data={"file": (io.BytesIO(image_bytes()), "x.png")}).get_json()[
        "predictions"][0]["class"] in ("blue", "red")


def test_pretrained_weights_offline_is_one_line(tmp_path, tiny_dataset, monkeypatch, capsys):
    from keras.src.applications import efficientnet_v2

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- network unreachable")

    monkeypatch.setattr(efficientnet_v2.file_utils, "get_file", offline)  # never download in a test
    assert train.main(["--data", str(tiny_dataset), "--arch", "transfer", "--pretrained", "--set", "image_size=32",
                       "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "ImageNet weights of EfficientNetV2B0" in err and "without --pretrained" in err and err.count("\n") == 1


def test_own_classes_served_end_to_end(tmp_path, make_app):
    """A user's 3-class folder of 64x64 images: train, then the app, API and serving metadata use its classes."""
    folder = write_folder(tmp_path / "fruit", ["plum", "lime", "cherry"], per_class=8, size=(64, 64), noise=30)
    out = tmp_path / "model" / "fruit"
    assert train.main(["--data", str(folder), "--epochs", "2", "--batch-size", "8", "--val-size", "3",
                       "--out", str(out)]) == 0
    assert "cherry" in (tmp_path / "model" / "fruit_card.md").read_text()
    client = make_app(MODEL_PATH=str(out.with_suffix(".h5"))).test_client()
    upload = image_bytes(size=(64, 64))
    page = client.post("/", data={"file": (io.BytesIO(upload), "x.png")}, content_type="multipart/form-data")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "cherry" in text and "airplane" not in text
    prediction = client.post("/api/predict", data={"file": (io.BytesIO(upload), "x.png")}).get_json()["predictions"][0]
    assert list(prediction["probabilities"]) == ["cherry", "lime", "plum"]
    assert prediction["class"] in ("cherry", "lime", "plum") and len(prediction["top3"]) == 3
    metadata = client.get("/v1/models/cifar10/metadata").get_json()["metadata"]
    assert metadata["class_names"] == ["cherry", "lime", "plum"]
    assert metadata["signature_def"]["signature_def"]["serving_default"]["outputs"]["probabilities"][
        "tensor_shape"]["dim"][1]["size"] == "3"


def test_an_option_mistake_answers_before_tensorflow_loads():
    result = subprocess.run([sys.executable, "train.py", "--arch", "fast", "--set", "optimizer=rmsprop"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --set 'optimizer=rmsprop': optimizer is one of adam, sgd, muon, "
                                          "not 'rmsprop'"]


def test_a_finished_model_is_never_overwritten_without_force(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "m"
    (tmp_path / "m.h5").write_bytes(b"a finished model")
    assert train.main(["--data", str(tiny_dataset), "--epochs", "1", "--val-size", "4", "--out", str(out)]) == 2
    assert "never overwritten" in capsys.readouterr().err and (tmp_path / "m.h5").read_bytes() == b"a finished model"


def test_training_writes_under_runs_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "fast.h5").write_bytes(b"a finished model")
    assert train.main(["--arch", "fast"]) == 2
    assert capsys.readouterr().err == "error: runs/fast.h5 is a finished model: it is never overwritten; give another " \
                                      "--out, or --force.\n"


@pytest.mark.slow
def test_transfer_trains_its_head_on_a_frozen_backbone_then_everything(tmp_path, tiny_dataset, capsys, monkeypatch):
    import dataclasses

    from cifarlab.ml import architectures

    seen = []
    catalog = architectures.catalog()
    transfer = catalog.architectures["transfer"]

    def spy(net, phase):
        transfer.enter_phase(net, phase)
        seen.append((phase.name, net.get_layer("backbone").trainable))
    spied = dataclasses.replace(catalog, architectures={**catalog.architectures,
                                                        "transfer": dataclasses.replace(transfer, enter_phase=spy)})
    monkeypatch.setattr(architectures, "catalog", lambda: spied)
    out = tmp_path / "out" / "t"
    assert train.main(["--data", str(tiny_dataset), "--arch", "transfer", "--epochs", "2", "--batch-size", "8",
                       "--val-size", "4", "--set", "image_size=32", "--set", "frozen_epochs=1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Phase 1: frozen backbone, epochs 1-1" in printed and "Phase 2: fine-tuning, epochs 2-2" in printed
    history = json.loads(out.with_suffix(".json").read_text())["history"]
    assert len(history) == 2 and json.loads(out.with_suffix(".json").read_text())["architecture"] == "transfer"
    assert seen == [("frozen backbone", False), ("fine-tuning", True)]
