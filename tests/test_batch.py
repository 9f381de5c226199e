import csv
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest

import train
from cifarlab import REPO, batch
from cifarlab.images import preprocess_bytes
from cifarlab.inference import Classifier
from tests.conftest import image_bytes


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
    calls, real = [0], classifier.predict

    def interrupted(images):
        calls[0] += 1
        if calls[0] == 5:  # the third part's first call
            raise KeyboardInterrupt
        return real(images)

    monkeypatch.setattr(classifier, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict(source, out, classifier, part_size=4, batch=2)
    monkeypatch.setattr(classifier, "predict", real)
    parts = batch.parts_folder(out)
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
    assert train.predict_main([str(photos), "--out", str(out), "--model", str(exported[0] / "tiny_int8.tflite"),
                               "--workers", "1"]) == 0
    rows = read_rows(out)
    assert len(rows) == 16 and {"class", "index", "verdict", "ood_score", "probabilities", "top3"} <= set(rows[0])
    report = capsys.readouterr().out
    assert "14 images classified, 2 files refused (error rows)" in report and "per class:" in report
    assert train.predict_main([str(photos), "--out", str(out)]) == 2
    assert "never overwritten" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_command_resumes_to_the_output_of_an_uninterrupted_run(tmp_path, exported):
    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(400):
        (folder / f"{k:04d}.png").write_bytes(image_bytes(size=(32, 32), seed=k))
    model = str(exported[0] / "tiny_int8.tflite")
    command = [sys.executable, "train.py", "predict", str(folder), "--model", model, "--workers", "1",
               "--part-size", "4", "--batch", "4"]
    subprocess.run([*command, "--out", str(tmp_path / "whole.csv")], cwd=REPO, check=True, capture_output=True)
    out = tmp_path / "preds.csv"
    run = subprocess.Popen([*command, "--out", str(out)], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    parts = batch.parts_folder(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("part-*"))) < 3:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not out.exists() and 3 <= len(list(parts.glob("part-*"))) < 100  # killed halfway
    subprocess.run([*command, "--out", str(out), "--resume"], cwd=REPO, check=True, capture_output=True)
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes() and not parts.exists()
