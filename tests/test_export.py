import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import train
from cifarlab import modelfile, sidecar
from cifarlab.inference import Classifier, PerThreadTFLite
from cifarlab.ml import models
from cifarlab.ml.data import load_image_folder
from cifarlab.web.context import parts
from tests.helpers import free_port, image_bytes

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "static" / "examples" / "cat.png"


@pytest.mark.parametrize("kind", ["float16", "int8"])
def test_a_tta_export_is_its_backbone_with_the_views_made_and_averaged_by_the_reader(exported_tta, kind):
    out, model, data = exported_tta
    meta = json.loads((out / f"tta_{kind}.json").read_text())
    assert meta["tta_views"] == [list(view) for view in models.TTA_VIEWS[2]]
    assert meta["calibration"]["temperature"] == 2.0
    keras_clf, tflite_clf = Classifier.from_path(model), Classifier.from_path(out / f"tta_{kind}.tflite")
    x = load_image_folder(data, use_cache=False).x_test[::3]  # images like those int8 was calibrated on
    expected, got = keras_clf.probabilities(x), tflite_clf.probabilities(x)
    assert got.shape == (len(x), 10) and expected.max(axis=1).mean() > 0.2  # uniform would be 0.1
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, expected, atol=0.05 if kind == "int8" else 0.005)


@pytest.mark.parametrize("count", [1, 2, 5])
def test_a_call_alone_spreads_its_chunks_over_two_interpreters_with_the_same_result(exported_tta, count):
    path = exported_tta[0] / "tta_int8.tflite"
    rows = np.random.default_rng(count).integers(0, 256, (6 * count + 1, 32, 32, 3), dtype=np.uint8)  # a padded chunk
    plain = PerThreadTFLite(path, threads=1, chunk=3)(rows)
    spread = PerThreadTFLite(path, threads=1, chunk=3, borrow_idle_core=True)
    threads, run = set(), spread.run
    spread.run = lambda chunks: threads.add(threading.current_thread().name) or run(chunks)
    assert plain.shape == (6 * count + 1, 10)
    np.testing.assert_array_equal(spread(rows), plain)
    assert len(threads) == 2 and any(name.startswith("tflite-helper") for name in threads)
    with ThreadPoolExecutor(4) as pool:  # calls in flight together do not borrow, and agree too
        for got in pool.map(spread, [rows] * 8):
            np.testing.assert_array_equal(got, plain)


def test_export_writes_every_format_with_tflite_sidecars(exported):
    out, model, _ = exported
    assert (out / "tiny_savedmodel" / "saved_model.pb").is_file()
    for kind in ("float16", "int8"):
        meta = json.loads((out / f"tiny_{kind}.json").read_text())
        assert meta["exported_from"] == str(model) and meta["export_command"].startswith("python train.py export")
        assert meta["export_git_commit"] == sidecar.git_commit()
        assert meta["calibration"]["temperature"] == 1.0 and 0 <= meta["test_accuracy"] <= 1
        assert meta["class_names"][0] == "airplane"


@pytest.mark.parametrize("kind", ["float16", "int8"])
def test_tflite_classifier_agrees_with_keras(exported, kind):
    out, model, _ = exported
    keras_clf, tflite_clf = Classifier.from_path(model), Classifier.from_path(out / f"tiny_{kind}.tflite")
    assert tflite_clf.model is None and tflite_clf.class_names == keras_clf.class_names
    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    expected, got = keras_clf.probabilities(x), tflite_clf.probabilities(x)
    assert got.shape == (16, 10)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=0.02)
    np.testing.assert_allclose(got, expected, atol=0.05 if kind == "int8" else 0.005)


def test_tflite_forward_is_safe_from_many_threads(exported):
    clf = Classifier.from_path(exported[0] / "tiny_int8.tflite")
    batches = [np.full((1 + i % 3, 32, 32, 3), 10 * i, np.uint8) for i in range(24)]
    expected = [clf.probabilities(b) for b in batches]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(clf.probabilities, batches))
    for want, got in zip(expected, results):
        np.testing.assert_array_equal(want, got)


def test_app_serves_a_tflite_model(exported, make_app):
    app = make_app(MODEL_PATH=str(exported[0] / "tiny_int8.tflite"), OOD_THRESHOLD=1e5)  # never unknown: a heatmap
    client = app.test_client()
    r = client.post("/api/predict", data={"file": (io.BytesIO(image_bytes()), "a.png")})
    assert r.status_code == 200 and r.get_json()["predictions"][0]["class"] in parts(app).models.get()[1].classifier.class_names
    page = client.post("/", data={"file": (io.BytesIO(image_bytes()), "a.png")})
    assert page.status_code == 200 and b"Top 3" in page.data and b'class="explain-link"' in page.data  # from the .h5
    assert client.get("/model").status_code == 200


def test_a_tflite_beside_its_h5_offers_explanations_from_the_h5(exported, make_app, tiny_model_path, tmp_path):
    for path in (exported[0] / "tiny_int8.tflite", tiny_model_path):
        for suffix in (path.suffix, ".json"):
            shutil.copy(path.with_suffix(suffix), tmp_path / path.with_suffix(suffix).name)
    app = make_app(MODEL_PATH=str(tmp_path / "tiny_int8.tflite"))
    client = app.test_client()
    page = client.post("/", data={"file": (io.BytesIO(image_bytes()), "a.png")}).get_data(as_text=True)
    link = re.search(r'class="explain-link" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert b"with a Grad-CAM heatmap for" in client.get(link).data


@pytest.mark.parametrize("setting", ["tflite", "remote"])
def test_serving_a_tflite_or_a_remote_backend_never_imports_tensorflow(exported, tmp_path, setting):
    env = {"MODEL_PATH": str(exported[0] / "tiny_int8.tflite")} if setting == "tflite" else {
        "INFERENCE_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens: the front starts anyway
    script = ("import io, sys; from app import create_app; app = create_app({'UPLOAD_FOLDER': sys.argv[1]}); "
              "c = app.test_client(); c.post('/api/predict', data={'file': (io.BytesIO(open(sys.argv[2], 'rb')"
              ".read()), 'a.png')}); c.get('/'); c.get('/model'); "
              "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(EXAMPLE)], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("damage", ["garbage", "no-sidecar", "wrong-classes"])
def test_broken_tflite_file_is_a_model_file_error(exported, tmp_path, damage):
    src = exported[0] / "tiny_int8.tflite"
    path = tmp_path / "m.tflite"
    path.write_bytes(b"not a flatbuffer" if damage == "garbage" else src.read_bytes())
    meta = json.loads(src.with_suffix(".json").read_text())
    if damage == "wrong-classes":
        meta["class_names"] = ["a", "b"]
    if damage != "no-sidecar":
        path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(modelfile.ModelFileError, match=str(path.with_suffix(".json") if damage == "no-sidecar" else path)):
        Classifier.from_path(path)


def test_export_never_overwrites_earlier_exports_without_force(exported, capsys):
    out, model, data = exported
    before = (out / "tiny_int8.tflite").stat().st_mtime_ns
    assert train.main(["export", "--model", str(model), "--data", str(data), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: {out / 'tiny_savedmodel'} exists: exports are never overwritten; "
                                       "give another --out, or --force.\n")
    assert (out / "tiny_int8.tflite").stat().st_mtime_ns == before
