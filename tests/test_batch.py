import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import Counter

import numpy as np
import pytest

import train
from cifarlab import REPO, batch
from cifarlab.children import descendants
from cifarlab.images import preprocess_bytes
from cifarlab.inference import Classifier
from tests.helpers import image_bytes
from tests.processes import interruptible, wait_gone


@pytest.fixture
def photos(tmp_path):
    return write_photos(tmp_path / "photos")


def write_photos(root):
    """A folder of images in sub-folders, a truncated PNG, a text file and a hidden file (skipped)."""
    for k in range(14):
        path = root / ("a" if k % 2 else "b/c") / f"{k:02d}.{'png' if k % 3 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(fmt="PNG" if k % 3 else "JPEG", size=(20 + k, 30), seed=k))
    (root / "a" / "broken.png").write_bytes(image_bytes()[:200])
    (root / "notes.txt").write_text("not a picture")
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root


@pytest.fixture(scope="module")
def classifier(tiny_model_path):
    return Classifier.from_path(tiny_model_path)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f)) if path.suffix == ".csv" else [json.loads(line) for line in f]


def test_a_folder_gives_a_row_per_file_with_the_apps_predictions_and_error_rows(photos, tmp_path, classifier):
    out = tmp_path / "preds.csv"
    summary = batch.predict_folder(batch.open_source(photos), out, classifier, workers=2, part_size=5, batch=3)
    rows = read_rows(out)
    assert [r["path"] for r in rows] == sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*")
                                               if p.is_file() and p.name != ".DS_Store")
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"a/broken.png", "notes.txt"} and "not an image" in errors["notes.txt"]
    assert "could not be decoded" in errors["a/broken.png"]
    good = [r for r in rows if not r["error"]]
    expected = classifier.predict(np.stack([preprocess_bytes((photos / r["path"]).read_bytes()) for r in good]))
    for row, prediction in zip(good, expected):
        assert row["class"] == prediction.label and int(row["index"]) == prediction.index
        assert row["verdict"] == prediction.verdict and row["unknown"] == str(prediction.unknown)
        np.testing.assert_allclose([float(row[name]) for name in classifier.class_names], prediction.probs, atol=1e-6)
        assert row["top3"].split(";")[0] == f"{prediction.label}:{prediction.confidence:.4f}"
    assert summary.refused == 2 and sum(summary.classes.values()) == 14 and summary.images_now == 16
    assert not batch.parts_folder(out).exists()


def test_archives_and_a_list_of_paths_give_the_same_predictions_as_the_folder(photos, tmp_path, classifier):
    names = sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*") if p.is_file() and p.name[0] != ".")
    with tarfile.open(tmp_path / "photos.tar.gz", "w:gz") as archive:
        for name in names:
            archive.add(photos / name, arcname=name)
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        for name in names:
            archive.write(photos / name, name)
    (tmp_path / "list.txt").write_text("# my files\n" + "".join(f"{photos / name}\n" for name in names)
                                       + f"{photos / 'gone.png'}\n")
    folder = read_rows(predict(batch.open_source(photos), tmp_path / "folder.jsonl", classifier))
    for source in ("photos.tar.gz", "photos.zip", "list.txt"):
        rows = read_rows(predict(batch.open_source(tmp_path / source), tmp_path / f"{source}.jsonl", classifier))
        if source == "list.txt":
            assert rows[-1]["path"].endswith("gone.png") and "cannot read the file" in rows[-1]["error"]
            rows = [{**r, "path": os.path.relpath(r["path"], photos)} for r in rows[:-1]]
        assert rows == folder, source


def predict(source, out, classifier, **options):
    batch.predict_folder(source, out, classifier, workers=1, **options)
    return out


def test_an_interrupted_run_resumes_to_the_same_output_and_never_leaves_half_a_file(photos, tmp_path, classifier,
                                                                                   monkeypatch):
    source = batch.open_source(photos)
    whole = read_rows(predict(source, tmp_path / "whole.csv", classifier, part_size=4, batch=2))
    out = tmp_path / "preds.csv"
    parts = interrupted_run(source, out, classifier, monkeypatch)  # stopped in the third part's first call
    assert not out.exists() and sorted(p.name for p in parts.iterdir()) == [
        "manifest.json", "part-000000.csv", "part-000001.csv"]
    with pytest.raises(batch.BatchError, match="holds an interrupted run: --resume"):
        predict(source, out, classifier, part_size=4, batch=2)
    with pytest.raises(batch.BatchError, match="another run's"):
        predict(source, out, classifier, part_size=5, resume=True)
    assert read_rows(predict(source, out, classifier, part_size=4, batch=2, resume=True)) == whole
    assert not parts.exists()


@pytest.mark.parametrize("out,message", [("preds.txt", "one of .csv, .jsonl"), ("exists.csv", "never overwritten")])
def test_an_output_in_the_way_is_refused_in_one_line(photos, tmp_path, classifier, out, message):
    (tmp_path / "exists.csv").write_text("keep me")
    with pytest.raises(batch.BatchError, match=message):
        predict(batch.open_source(photos), tmp_path / out, classifier)
    assert (tmp_path / "exists.csv").read_text() == "keep me"


@pytest.mark.parametrize("make_input,message", [
    (lambda tmp: tmp / "missing", "no such folder"),
    (lambda tmp: (tmp / "bad.tar.gz").write_bytes(b"not gzip") and tmp / "bad.tar.gz", "not a readable archive"),
    (lambda tmp: (tmp / "bin.lst").write_bytes(b"\xff\xfe\x00") and tmp / "bin.lst", "not a folder, an archive"),
])
def test_an_input_that_is_none_of_the_three_is_refused_in_one_line(tmp_path, make_input, message):
    with pytest.raises(batch.BatchError, match=message):
        batch.open_source(make_input(tmp_path))


def test_the_command_writes_json_lines_and_a_summary(photos, tmp_path, exported, capsys):
    out = tmp_path / "preds.jsonl"
    assert train.main(["predict", str(photos), "--out", str(out), "--model", str(exported[0] / "tiny_int8.tflite"),
                               "--workers", "1"]) == 0
    rows = read_rows(out)
    assert len(rows) == 16 and {"class", "index", "verdict", "ood_score", "probabilities", "top3"} <= set(rows[0])
    report = capsys.readouterr().out
    assert "14 images classified, 2 files refused (error rows)" in report and "per class:" in report
    assert train.main(["predict", str(photos), "--out", str(out)]) == 2
    assert "never overwritten" in capsys.readouterr().err


@pytest.fixture
def predict_command(tmp_path, exported):
    """train.py predict over 400 small images in parts of 4, without its --out."""
    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(400):
        (folder / f"{k:04d}.png").write_bytes(image_bytes(size=(32, 32), seed=k))
    model = str(exported[0] / "tiny_int8.tflite")
    return [sys.executable, "train.py", "predict", str(folder), "--model", model, "--workers", "1",
            "--part-size", "4", "--batch", "4"]


def wait_for_parts(parts, count, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(list(parts.glob("part-*"))) < count:
        time.sleep(0.01)


@pytest.mark.slow
def test_a_killed_command_resumes_to_the_output_of_an_uninterrupted_run(tmp_path, predict_command):
    command = predict_command
    subprocess.run([*command, "--out", str(tmp_path / "whole.csv")], cwd=REPO, check=True, capture_output=True)
    out = tmp_path / "preds.csv"
    run = subprocess.Popen([*command, "--out", str(out)], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    parts = batch.parts_folder(out)
    wait_for_parts(parts, 3)
    helpers = descendants(run.pid)
    assert helpers  # the decoding worker and multiprocessing's resource tracker
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not out.exists() and 3 <= len(list(parts.glob("part-*"))) < 100  # killed halfway
    assert wait_gone(helpers) == []  # they die with the command, kill -9 included
    subprocess.run([*command, "--out", str(out), "--resume"], cwd=REPO, check=True, capture_output=True)
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes() and not parts.exists()


@pytest.mark.slow
def test_ctrl_c_stops_the_command_with_one_line_that_says_how_to_continue(tmp_path, predict_command):
    out = tmp_path / "preds.csv"
    run = subprocess.Popen([*predict_command, "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True,
                           preexec_fn=interruptible)
    wait_for_parts(batch.parts_folder(out), 3)
    helpers = descendants(run.pid)
    os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: to the whole process group
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: interrupted: the finished parts are kept; continue with python train.py predict")
    assert last.endswith("--resume") and wait_gone(helpers) == []
    again = subprocess.run([sys.executable, *shlex.split(last.split("continue with ", 1)[1])[1:]], cwd=REPO,
                           capture_output=True, text=True)
    assert again.returncode == 0 and "resuming:" in again.stderr and len(read_rows(out)) == 400


def test_a_list_naming_a_device_or_a_pipe_gives_error_rows_without_reading_or_waiting(photos, tmp_path, classifier):
    os.mkfifo(tmp_path / "pipe")  # nobody ever writes to it
    (tmp_path / "list.txt").write_text(f"/dev/zero\n{tmp_path / 'pipe'}\n{photos / 'a' / '01.png'}\n")
    rows = read_rows(predict(batch.open_source(tmp_path / "list.txt"), tmp_path / "out.csv", classifier))
    assert [r["error"] for r in rows[:2]] == ["not a regular file (a device, pipe or folder): not read"] * 2
    assert rows[2]["class"] and not rows[2]["error"]


def test_file_names_that_a_spreadsheet_would_run_as_formulas_are_written_as_text(tmp_path, classifier):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("=HYPERLINK(x).png", "+1.png", "@SUM(A1).png", "plain.png"):
        (folder / name).write_bytes(image_bytes())
    (folder / "=bad.txt").write_text("not a picture")
    rows = read_rows(predict(batch.open_source(folder), tmp_path / "out.csv", classifier))
    assert [r["path"] for r in rows] == ["'+1.png", "'=HYPERLINK(x).png", "'=bad.txt", "'@SUM(A1).png", "plain.png"]
    assert "not an image" in rows[2]["error"]
    jsonl = read_rows(predict(batch.open_source(folder), tmp_path / "out.jsonl", classifier))
    assert jsonl[1]["path"] == "=HYPERLINK(x).png"  # JSON is no spreadsheet: names stay as they are


def interrupted_run(source, out, classifier, monkeypatch, parts_done=2):
    """Start a run in parts of 4 and stop it once parts_done parts are finished."""
    calls, real = [0], classifier.predict

    def interrupted(images):
        calls[0] += 1
        if calls[0] > parts_done * 2:
            raise KeyboardInterrupt
        return real(images)

    monkeypatch.setattr(classifier, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict(source, out, classifier, part_size=4, batch=2)
    monkeypatch.setattr(classifier, "predict", real)
    return batch.parts_folder(out)


@pytest.mark.parametrize("tamper", ["forge", "symlink"])
def test_resume_classifies_again_a_part_it_did_not_write(photos, tmp_path, classifier, monkeypatch, tamper):
    source = batch.open_source(photos)
    whole = predict(source, tmp_path / "whole.csv", classifier, part_size=4, batch=2).read_text()
    out = tmp_path / "preds.csv"
    parts = interrupted_run(source, out, classifier, monkeypatch)
    secret = tmp_path / "secret"
    secret.write_text("root:SECRET:19000:0:99999:7:::\n")
    first = parts / "part-000000.csv"
    first.unlink()
    if tamper == "forge":
        first.write_text("a/01.png,airplane,0,known,False,False,0,airplane:1.0,1,0,0,0,0,0,0,0,0,0,\n")
    else:
        first.symlink_to(secret)
    predict(source, out, classifier, part_size=4, batch=2, resume=True)
    assert out.read_text() == whole and "SECRET" not in out.read_text()


@pytest.mark.parametrize("spoil,message", [
    (lambda parts: (parts / "manifest.json").write_text("{not json"), "manifest.json cannot be read"),
    (lambda parts: (parts / "manifest.json").write_text("[1, 2]"), "not this command's manifest"),
    (lambda parts: shutil.rmtree(parts) or parts.symlink_to(parts.parent), "a symlink or a file"),
])
def test_resume_refuses_a_parts_folder_it_cannot_trust_in_one_line(photos, tmp_path, classifier, monkeypatch, spoil,
                                                                   message):
    source = batch.open_source(photos)
    out = tmp_path / "preds.csv"
    spoil(interrupted_run(source, out, classifier, monkeypatch))
    with pytest.raises(batch.BatchError, match=message):
        predict(source, out, classifier, part_size=4, batch=2, resume=True)


class RecordingPool:
    """A stand-in for the process pool that runs each job when its result is asked for, tracking bytes in flight."""

    def __init__(self):
        self.in_flight, self.most = 0, 0

    def submit(self, fn, chunk):
        size = sum(len(payload) for _, payload in chunk)
        self.in_flight += size
        self.most = max(self.most, self.in_flight)
        pool = self

        class Job:
            def result(self):
                pool.in_flight -= size
                return [(name, None, "x") for name, _ in chunk]
        return Job()


def test_archive_members_in_flight_stay_within_the_byte_budget(monkeypatch):
    monkeypatch.setattr(batch, "IN_FLIGHT_BYTES", 10_000)
    monkeypatch.setattr(batch, "CHUNK_BYTES", 3_000)
    pool = RecordingPool()
    members = ((f"m{k}", bytes(1_000 + 37 * k)) for k in range(200))  # 200 members, 4.5 MB in all
    names = [name for name, _, _ in batch.decoded(pool, members)]
    assert names == [f"m{k}" for k in range(200)]  # every member, in order
    assert pool.most <= 10_000 + 3_000 + 1_000 + 37 * 200  # the budget, one chunk and one member over at most


def test_the_summary_says_one_file_not_one_files():
    summary = batch.Summary(Counter({"cat": 1}), Counter({"known": 1}), refused=1, images_now=2, seconds=1.0)
    assert summary.lines()[0].startswith("1 image classified, 1 file refused (error rows); this run: 2 files in")
