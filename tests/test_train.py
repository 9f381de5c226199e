import json
from pathlib import Path

import numpy as np
import pytest

import train
from cifarlab import checkpoint
from cifarlab.inference import Classifier
from tests.test_data import write_folder


@pytest.fixture
def tiny_dataset(tmp_path):
    """Two classes of noisy single-colour images of another size than 32x32."""
    return write_folder(tmp_path / "data", ["red", "blue"], per_class=12, size=(40, 40), noise=40)


@pytest.mark.parametrize("arch", ["baseline", "fast"])
def test_train_writes_model_sidecar_and_curves(tmp_path, tiny_dataset, arch):
    out = tmp_path / "out" / "m"
    rc = train.main(["--data", str(tiny_dataset), "--arch", arch, "--epochs", "1", "--batch-size", "8",
                     "--val-size", "4", "--out", str(out)])
    assert rc == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["class_names"] == ["blue", "red"]
    assert meta["arch"] == arch and meta["epochs"] == 1 and meta["input_size"] == 32
    assert meta["command"].startswith("python train.py --data")
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
    from cifarlab.data import load_image_folder

    data = load_image_folder(tiny_dataset)
    independent = (classifier.raw_probabilities(data.x_test).argmax(1) == data.y_test).mean()
    assert meta["test_accuracy"] == pytest.approx(independent, abs=1e-6)


def test_diverging_run_saves_nothing(tmp_path, capsys):
    flat = write_folder(tmp_path / "flat", ["red", "blue"], per_class=12)  # zero-variance channels
    out = tmp_path / "out" / "m"
    assert train.main(["--data", str(flat), "--arch", "fast", "--epochs", "2", "--batch-size", "8",
                       "--val-size", "4", "--out", str(out)]) == 3
    assert "diverged" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["m_logs"]  # the logs show it; no model, no checkpoint


def test_bad_override_exits_before_training(tmp_path, tiny_dataset, capsys):
    out = tmp_path / "out" / "m"
    assert train.main(["--data", str(tiny_dataset), "--arch", "fast", "--set", "whiten_eps=big", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "whiten_eps" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_train_without_network_exits_with_one_line(monkeypatch, capsys, tmp_path):
    import keras

    def offline():
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    assert train.main(["--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0]


def test_shipped_model_loads_with_its_sidecar():
    model, meta = checkpoint.load(Path(__file__).resolve().parents[1] / "model" / "cifar10_cnn.h5")
    assert meta["class_names"] == ["airplane", "automobile", "bird", "cat", "deer",
                                   "dog", "frog", "horse", "ship", "truck"]
    assert model.output_shape == (None, 10)
    assert "cifar10-jpeg" in meta["data_source"] and meta["command"].startswith("python train.py")


def test_evaluate_command_rewrites_report(tmp_path, tiny_dataset, capsys):
    out = tmp_path / "m"
    assert train.main(["--data", str(tiny_dataset), "--epochs", "1", "--val-size", "4", "--out", str(out)]) == 0
    (tmp_path / "m_card.md").unlink()
    assert train.evaluate_main(["--model", str(out) + ".h5", "--data", str(tiny_dataset)]) == 0
    assert "accuracy" in capsys.readouterr().out and (tmp_path / "m_card.md").exists()
    assert train.evaluate_main(["--model", str(tmp_path / "none.h5"), "--data", str(tiny_dataset)]) == 2
