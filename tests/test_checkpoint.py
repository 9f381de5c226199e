import json

import pytest

from cifarlab import atomic, checkpoint
from cifarlab.checkpoint import ModelFileError


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
        atomic.write_json(checkpoint.sidecar_path(path), {"class_names": ["a", "b"], "input_size": 32})
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
        checkpoint.preflight(path)
    assert str(tmp_path) in str(exc.value)


def test_preflight_accepts_a_well_formed_pair(tmp_path):
    assert checkpoint.preflight(write_model_file(tmp_path, "m.tflite", b"1234TFL3"))["input_size"] == 32


def test_a_corrupt_h5_is_a_model_file_error_not_a_crash(tmp_path):
    with pytest.raises(ModelFileError, match="cannot load model"):
        checkpoint.load(write_model_file(tmp_path, "m.h5", b"\x89HDF\r\n\x1a\n"))


def test_an_export_finds_its_source_model_beside_it(tmp_path):
    export = tmp_path / "net_int8.tflite"
    meta = {"exported_from": "/elsewhere/model/net.h5"}
    assert checkpoint.source_model_path(export, meta) is None  # not copied beside the export
    (tmp_path / "net.h5").write_bytes(b"x")
    assert checkpoint.source_model_path(export, meta) == tmp_path / "net.h5"
    assert checkpoint.source_model_path(export, {}) is None


def test_check_shapes_refuses_a_model_that_disagrees_with_its_sidecar():
    meta = {"class_names": ["a", "b", "c"], "input_size": 32}
    checkpoint.check_shapes("m", (None, 32, 32, 3), (None, 3), meta)
    with pytest.raises(ModelFileError, match="3 outputs|outputs"):
        checkpoint.check_shapes("m", (None, 32, 32, 3), (None, 10), meta)
    with pytest.raises(ModelFileError, match="does not match input_size"):
        checkpoint.check_shapes("m", (None, 64, 64, 3), (None, 3), meta)


def test_an_export_elsewhere_finds_its_source_model_where_it_was_read(tmp_path):
    source = tmp_path / "model" / "net.h5"
    source.parent.mkdir()
    source.write_bytes(b"x")
    assert checkpoint.source_model_path(tmp_path / "exports" / "net_int8.tflite", {"exported_from": str(source)}) \
        == source


def test_a_large_sparse_model_file_is_hashed_in_chunks_not_held_in_memory(tmp_path):
    import subprocess
    import sys

    sparse = tmp_path / "model.h5"
    with open(sparse, "wb") as f:
        f.truncate(768 * 2**20)  # 768 MiB of holes: no disk, but a whole read would take as much memory
    probe = ("import re, sys; from cifarlab import checkpoint; checkpoint.model_digest(sys.argv[1]); "  # VmHWM: the
             "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")  # peak since exec
    result = subprocess.run([sys.executable, "-c", probe, str(sparse)], capture_output=True, text=True, check=True)
    assert int(result.stdout) < 200 * 1024  # kB at the peak, the interpreter included


def test_a_model_digest_is_the_sha256_of_the_file(tmp_path):
    import hashlib

    data = bytes(range(256)) * 5000
    (tmp_path / "model.h5").write_bytes(data)
    assert checkpoint.model_digest(tmp_path / "model.h5") == hashlib.sha256(data).hexdigest()


def test_a_file_past_the_size_cap_is_refused_unhashed(tmp_path, monkeypatch):
    big = tmp_path / "model.h5"
    big.write_bytes(b"\0" * 2000)
    monkeypatch.setattr(checkpoint, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(ModelFileError, match="larger than a model file may be"):
        checkpoint.model_digest(big)
