import os
import re
import subprocess
import sys

import pytest

from cifarlab import REPO, quiet
from tests.helpers import write_folder

# what a user reads as failure (issue 33): TensorFlow's CUDA probing and Keras's advice against .h5
ALARMING = re.compile(r"cuInit|E0000|legacy|cudart_stub|absl::InitializeLog")


def test_filtered_stderr_drops_startup_noise_and_keeps_the_rest(capfd):
    with quiet.filtered_stderr():
        os.write(2, b"E0000 00:00:1 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n")
        os.write(2, b"a warning the user should act on\n")
    assert capfd.readouterr().err == "a warning the user should act on\n"


def test_filtered_stderr_restores_stderr_when_the_block_raises(capfd):
    with pytest.raises(RuntimeError):
        with quiet.filtered_stderr():
            raise RuntimeError("boom")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def run(*args):
    """Run a repository command in a fresh process as a user would (no TF_CPP_MIN_LOG_LEVEL of pytest's)."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_train_evaluate_export_and_a_first_explanation_print_no_alarming_line(tmp_path):
    data = write_folder(tmp_path / "data", ["cat", "dog"], per_class=6, noise=40)
    out = tmp_path / "run" / "m"
    lines = run("train.py", "--data", str(data), "--epochs", "1", "--batch-size", "4", "--val-size", "2",
                "--out", str(out))
    lines += run("train.py", "evaluate", "--model", f"{out}.h5", "--data", str(data))
    lines += run("train.py", "export", "--model", f"{out}.h5", "--data", str(data), "--formats", "int8",
                "--out", str(tmp_path / "exports"))
    lines += run("-c", "from app import create_app; import numpy as np; "
                       f"app = create_app({{'MODEL_PATH': r'{tmp_path}/exports/m_int8.tflite', 'SECRET_KEY': 'x', 'GRADCAM': True}}); "
                       "from cifarlab.web.context import parts; print(parts(app).explain.overlay(np.zeros((32, 32, 3), np.uint8), 0)[:22])")
    assert "data:image/png;base64" in lines
    assert not [line for line in lines.splitlines() if ALARMING.search(line)]
