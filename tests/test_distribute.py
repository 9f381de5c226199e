import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train
from cifarlab.ml import distribute
from cifarlab.inference import Classifier
from tests.helpers import free_port
from tests.helpers import write_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text", [
    "",
    "not json",
    json.dumps({"cluster": {"worker": ["localhost:1"]}}),
    json.dumps({"task": {"type": "worker", "index": 0}}),
    json.dumps({"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}),
    json.dumps({"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}),
    json.dumps(["worker"]),
])
def test_bad_tf_config_is_refused_with_its_shape(text):
    with pytest.raises(distribute.StrategyError, match="TF_CONFIG"):
        distribute.check_tf_config(text)


def test_multiworker_without_tf_config_exits_with_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert train.main(["--strategy", "multiworker", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TF_CONFIG" in err[0]
    assert not list(tmp_path.iterdir())


def test_one_device_needs_no_tensorflow(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as on a JAX machine: importing it fails
    with distribute.multiworker_fit_fix(None) as fixed:
        assert fixed is None
    assert sys.modules["tensorflow"] is None  # nothing tried to import it


def test_single_device_is_chief_with_one_replica():
    assert distribute.replicas(None) == 1 and distribute.is_chief(None)


@pytest.mark.slow
def test_two_worker_processes_train_one_model(tmp_path):
    data = write_folder(tmp_path / "data", ["red", "blue"], per_class=16, noise=40)
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, "train.py", "--data", str(data), "--arch", "fast", "--epochs", "2",
                   "--batch-size", "4", "--val-size", "4", "--strategy", "multiworker",
                   "--out", str(tmp_path / f"worker{index}" / "m")]
        workers.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [w.communicate(timeout=240)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, out in zip(workers, outputs):
        assert w.returncode == 0, out[-3000:]
        assert "MultiWorkerMirroredStrategy, 2 replica(s)" in out
    assert all(np.isfinite(row["train_loss"]) for row in json.loads(
        (tmp_path / "worker0" / "m.json").read_text())["history"])
    digests = [re.search(r"Final weights sha256 ([0-9a-f]{64})", out).group(1) for out in outputs]
    assert digests[0] == digests[1]

    assert not (tmp_path / "worker1").exists()  # only the chief writes
    model_path = tmp_path / "worker0" / "m.h5"
    meta = json.loads(model_path.with_suffix(".json").read_text())
    assert meta["replicas"] == 2 and meta["strategy"] == "MultiWorkerMirroredStrategy"
    assert meta["hyperparameters"]["batch_size"] == 8  # 4 per replica
    assert len(meta["history"]) == 2 and meta["history"][-1]["train_seconds"] > 0
    classifier = Classifier.from_path(model_path)
    probs = classifier.probabilities(np.full((3, 32, 32, 3), 128, np.uint8))
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_mirrored_strategy_on_one_cpu_records_itself(tmp_path):
    data = write_folder(tmp_path / "data", ["red", "blue"], per_class=8, noise=40)
    out = tmp_path / "m"
    assert train.main(["--data", str(data), "--epochs", "1", "--batch-size", "4", "--val-size", "4",
                       "--strategy", "mirrored", "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["strategy"] == "MirroredStrategy" and meta["replicas"] == 1
    assert meta["hyperparameters"]["batch_size"] == 4
