import json

import keras
import numpy as np
import pytest

from cifarlab import atomic, modelfile
from cifarlab.ml import models
from cifarlab.ml.presets import FastRecipe
from cifarlab.modelfile import ModelFileError

TINY = FastRecipe(widths=(8, 16, 16))


@pytest.fixture(scope="module")
def with_views():
    keras.utils.set_random_seed(0)
    return models.with_tta(models.build_fast_backbone(TINY, 10), level=2)


@pytest.fixture(scope="module")
def baseline():
    keras.utils.set_random_seed(0)
    return models.build_baseline(10)


def pixels(n=3):
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("level", [0, 2])
def test_a_model_with_views_gives_its_backbone_and_views_with_their_weights(level):
    model = models.with_tta(models.build_fast_backbone(TINY, 10), level=level)
    assert modelfile.backbone(model).name == "fast_backbone"
    assert modelfile.views(model) == ([(False, 0, 0, 1.0)] if level == 0 else models.TTA_VIEWS[level])


def test_a_single_view_model_is_its_own_backbone(baseline):
    assert modelfile.views(baseline) == [] and modelfile.backbone(baseline) is baseline
    assert modelfile.ends_in_softmax(baseline)


def test_the_backbone_of_a_model_with_views_outputs_logits(with_views):
    assert not modelfile.ends_in_softmax(modelfile.backbone(with_views)) and modelfile.ends_in_softmax(with_views)


@pytest.mark.parametrize("kind", ["with_views", "baseline"])
def test_the_logits_of_either_kind_give_back_its_probabilities(kind, request):
    model = request.getfixturevalue(kind)
    network, to_logits = modelfile.logits_model(model)
    logits = to_logits(np.asarray(network(pixels())))
    probabilities = np.asarray(model(pixels()))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), probabilities, atol=1e-5)
    symbolic = keras.Model(model.inputs[0], modelfile.symbolic_logits(model, model.inputs[0]))
    np.testing.assert_allclose(np.asarray(symbolic(pixels())), logits, atol=1e-4)


def test_log_probabilities_clip_zero_and_keep_the_order():
    out = modelfile.log_probabilities([[0.0, 0.25, 0.75]])
    assert out.dtype == np.float32 and out[0, 0] == pytest.approx(np.log(1e-12)) and out[0, 1] < out[0, 2]


def test_the_sidecar_record_states_the_contract_in_json(with_views, baseline):
    assert modelfile.describe(with_views) == {
        "output": "probabilities (softmax), from raw 0..255 RGB pixels",
        "logits": "input of layer 'probabilities' (mean of the views' logits)", "backbone": "fast_backbone",
        "views": 6}
    assert modelfile.describe(baseline)["views"] == 1 and modelfile.describe(baseline)["backbone"] is None
    assert json.loads(json.dumps(modelfile.describe(with_views))) == modelfile.describe(with_views)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.json"
    atomic.write_json(path, {"v": 1})

    def half_write(tmp):
        tmp.write_text('{"v": ')
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic.replace_atomically(path, half_write)
    assert json.loads(path.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["model.json"]


def write_model_file(folder, name, head, meta=True):
    path = folder / name
    path.write_bytes(head + b"\0" * 64)
    if meta:
        atomic.write_json(modelfile.sidecar_path(path), {"class_names": ["a", "b"], "input_size": 32})
    return path


@pytest.mark.parametrize("name, head, meta, reason", [
    ("m.h5", b"not hdf5", True, "not an HDF5"),
    ("m.tflite", b"1234XXXX", True, "not a TFLite"),
    ("m.onnx", b"1234TFL3", True, "expected a .h5 or .tflite"),
    ("m.h5", b"\x89HDF\r\n\x1a\n", False, "sidecar not found"),
])
def test_preflight_names_the_file_and_what_is_wrong(tmp_path, name, head, meta, reason):
    path = write_model_file(tmp_path, name, head, meta)
    with pytest.raises(ModelFileError, match=reason) as exc:
        modelfile.preflight(path)
    assert str(tmp_path) in str(exc.value)


def test_preflight_accepts_a_well_formed_pair(tmp_path):
    assert modelfile.preflight(write_model_file(tmp_path, "m.tflite", b"1234TFL3"))["input_size"] == 32


def test_a_corrupt_h5_is_a_model_file_error_not_a_crash(tmp_path):
    with pytest.raises(ModelFileError, match="cannot load model"):
        modelfile.load(write_model_file(tmp_path, "m.h5", b"\x89HDF\r\n\x1a\n"))


def test_an_export_finds_its_source_model_beside_it(tmp_path):
    export = tmp_path / "net_int8.tflite"
    meta = {"exported_from": "/elsewhere/model/net.h5"}
    assert modelfile.source_model_path(export, meta) is None  # not copied beside the export
    (tmp_path / "net.h5").write_bytes(b"x")
    assert modelfile.source_model_path(export, meta) == tmp_path / "net.h5"
    assert modelfile.source_model_path(export, {}) is None


def test_check_shapes_refuses_a_model_that_disagrees_with_its_sidecar():
    meta = {"class_names": ["a", "b", "c"], "input_size": 32}
    modelfile.check_shapes("m", (None, 32, 32, 3), (None, 3), meta)
    with pytest.raises(ModelFileError, match="3 outputs|outputs"):
        modelfile.check_shapes("m", (None, 32, 32, 3), (None, 10), meta)
    with pytest.raises(ModelFileError, match="does not match input_size"):
        modelfile.check_shapes("m", (None, 64, 64, 3), (None, 3), meta)


def test_an_export_elsewhere_finds_its_source_model_where_it_was_read(tmp_path):
    source = tmp_path / "model" / "net.h5"
    source.parent.mkdir()
    source.write_bytes(b"x")
    assert modelfile.source_model_path(tmp_path / "exports" / "net_int8.tflite", {"exported_from": str(source)}) \
        == source


def test_a_large_sparse_model_file_is_hashed_in_chunks_not_held_in_memory(tmp_path):
    import subprocess
    import sys

    sparse = tmp_path / "model.h5"
    with open(sparse, "wb") as f:
        f.truncate(768 * 2**20)  # 768 MiB of holes: no disk, but a whole read would take as much memory
    probe = ("import re, sys; from cifarlab import modelfile; modelfile.model_digest(sys.argv[1]); "  # VmHWM: the
             "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")  # peak since exec
    result = subprocess.run([sys.executable, "-c", probe, str(sparse)], capture_output=True, text=True, check=True)
    assert int(result.stdout) < 200 * 1024  # kB at the peak, the interpreter included


def test_a_model_digest_is_the_sha256_of_the_file(tmp_path):
    import hashlib

    data = bytes(range(256)) * 5000
    (tmp_path / "model.h5").write_bytes(data)
    assert modelfile.model_digest(tmp_path / "model.h5") == hashlib.sha256(data).hexdigest()


def test_a_file_past_the_size_cap_is_refused_unhashed(tmp_path, monkeypatch):
    big = tmp_path / "model.h5"
    big.write_bytes(b"\0" * 2000)
    monkeypatch.setattr(modelfile, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(ModelFileError, match="larger than a model file may be"):
        modelfile.model_digest(big)
