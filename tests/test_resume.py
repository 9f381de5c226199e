"""Interrupted runs: a hard kill after an epoch, then --resume, ends where an uninterrupted run ends."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import train
from cifarlab.children import descendants
from cifarlab.ml import resume
from tests.processes import interruptible, wait_gone
from tests.helpers import write_folder

ROOT = Path(__file__).resolve().parent.parent
KILL_AFTER = """
import os, sys
from cifarlab.ml import resume
save = resume.RunCheckpoint.on_epoch_end

def save_then_die(self, epoch, logs=None):
    save(self, epoch, logs)
    if epoch + 1 == {epochs}:
        os._exit(137)  # as abrupt as a kill -9 or a power cut: no cleanup runs

resume.RunCheckpoint.on_epoch_end = save_then_die
import train
sys.exit(train.main({argv!r}))
"""


def run_train(argv, kill_after=None):
    """train.py in its own process (a fresh TensorFlow); killed hard after epoch `kill_after` when given."""
    code = KILL_AFTER.format(epochs=kill_after, argv=argv) if kill_after else \
        f"import sys, train; sys.exit(train.main({argv!r}))"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)


def h5_weights(path):
    """Every array in a saved model file, by its HDF5 path."""
    arrays = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data"), ["red", "green", "blue"], per_class=16, size=(32, 32),
                        noise=60)


def options(dataset, out, *extra):
    """A small fast-recipe run: lookahead, schedule, augmentation and shuffling all carry state across epochs."""
    return ["--data", str(dataset), "--arch", "fast", "--epochs", "4", "--batch-size", "8", "--val-size", "6",
            "--set", "widths=(16, 32, 32)", "--seed", "3", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, dataset):
    """A baseline net trained for one epoch on the same classes, to distil from."""
    out = tmp_path_factory.mktemp("teacher") / "t"
    assert run_train(["--data", str(dataset), "--epochs", "1", "--val-size", "6", "--out", str(out)]).returncode == 0
    return out.with_suffix(".h5")


@pytest.mark.slow
@pytest.mark.parametrize("distilled", [False, True], ids=["plain", "distilled-with-outliers"])
def test_killed_run_resumes_to_the_same_final_weights(tmp_path, dataset, request, distilled):
    extra = ["--teacher", str(request.getfixturevalue("teacher")), "--set", "outlier_fraction=0.25",
             "--set", "outlier_bank=40", "--set", "outlier_exclude=noise"] if distilled else []
    whole = run_train(options(dataset, tmp_path / "whole" / "m", *extra))
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "cut" / "m"
    killed = run_train(options(dataset, out, *extra), kill_after=2)
    assert killed.returncode == 137, killed.stderr
    assert resume.checkpoint_path(out).is_file() and not out.with_suffix(".h5").exists()
    stored = resume.RunState.read(out).config["options"]  # the typed options, not an argv to parse again
    assert stored["overrides"][0] == "widths=(16, 32, 32)" and stored["epochs"] == 4 and stored["seed"] == 3

    resumed = run_train(["--resume", str(out)])
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming" in resumed.stdout and "after epoch 2" in resumed.stdout

    reference, continued = h5_weights(tmp_path / "whole" / "m.h5"), h5_weights(out.with_suffix(".h5"))
    assert reference.keys() == continued.keys() and len(reference) > 10
    for name in reference:
        np.testing.assert_array_equal(continued[name], reference[name], err_msg=name)
    digest = [line for line in whole.stdout.splitlines() if line.startswith("Final weights")]
    assert digest and digest[0] in resumed.stdout

    meta = json.loads(out.with_suffix(".json").read_text())
    expected = json.loads((tmp_path / "whole" / "m.json").read_text())
    assert [r["at_epoch"] for r in meta["resumes"]] == [2] and expected["resumes"] == []
    assert [h["train_loss"] for h in meta["history"]] == [h["train_loss"] for h in expected["history"]]
    assert meta["command"] == expected["command"].replace("/whole/", "/cut/")
    assert not resume.checkpoint_path(out).exists()  # a finished run leaves nothing to resume
    with open(f"{out}_logs/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]  # counted as the console counts
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "test_accuracy"} <= rows[0].keys()


@pytest.mark.slow
def test_a_fresh_run_will_not_overwrite_an_interrupted_one(tmp_path, dataset, capsys):
    out = tmp_path / "m"
    assert run_train(options(dataset, out), kill_after=1).returncode == 137
    assert train.main(options(dataset, out)) == 2
    assert f"--resume {out}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--resume", "nowhere/run"], "no checkpoint at nowhere/run_checkpoint.npz"),
    (["--resume", "nowhere/run", "--epochs", "3"], "give it alone"),
])
def test_bad_resume_is_one_line(argv, message, capsys):
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_checkpoint_whose_options_the_code_no_longer_takes_is_refused(tmp_path, capsys):
    config = {"format": resume.FORMAT, "options": {"arch": "fast", "colour": "red"}, "argv": []}
    np.savez(resume.checkpoint_path(tmp_path / "m"), config=np.array(json.dumps(config)))
    assert train.main(["--resume", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err == "error: the interrupted run's options no longer fit the code: options this " \
                                      "version does not take: colour\n"


def test_damaged_checkpoint_is_refused(tmp_path, capsys):
    resume.checkpoint_path(tmp_path / "m").write_bytes(b"PK\x03\x04 not really a zip")
    assert train.main(["--resume", str(tmp_path / "m")]) == 2
    assert "cannot be read" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_stops_training_with_one_line_that_says_how_to_continue(tmp_path, dataset):
    out = tmp_path / "m"
    command = [sys.executable, "train.py", *options(dataset, out, "--epochs", "40")]
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, preexec_fn=interruptible)
    try:
        deadline = time.monotonic() + 300
        while not resume.checkpoint_path(out).exists():  # an epoch has finished: there is something to continue
            if run.poll() is not None or time.monotonic() > deadline:  # patience for the first epoch, not a latency
                pytest.fail(f"no checkpoint: {run.stderr.read()}")
            time.sleep(0.05)
        helpers = descendants(run.pid)
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
        stdout, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130
    assert stderr.splitlines() == [f"error: interrupted: continue where the last finished epoch left off with "
                                   f"python train.py --resume {out}"]
    assert "Traceback" not in stdout
    assert wait_gone(helpers) == []
