"""The Apache Beam pipeline (cifarlab/beam_predict.py) on the DirectRunner, in its own venv (`make beam-venv`)."""
import csv
import os
import subprocess

import pytest

from cifarlab import REPO, batch
from cifarlab.inference import Classifier
from tests.test_batch import write_photos

BEAM_PYTHON = REPO / ".venv-beam" / "bin" / "python"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def beam_python():
    if not BEAM_PYTHON.exists():
        if os.environ.get("REQUIRE_BEAM") == "1":  # CI builds the venv and sets this
            pytest.fail("REQUIRE_BEAM=1 but .venv-beam is missing: run make beam-venv")
        pytest.skip(".venv-beam is missing (make beam-venv)")
    return str(BEAM_PYTHON)


def rows(path, strip=""):
    """{path relative to the photos: row with that path} of a CSV output."""
    with open(path, newline="") as f:
        return {row["path"].removeprefix(strip): {**row, "path": row["path"].removeprefix(strip)}
                for row in csv.DictReader(f)}


def test_the_beam_pipeline_gives_the_predictions_of_the_predict_command(beam_python, tmp_path, exported):
    photos = write_photos(tmp_path / "photos")
    model = exported[0] / "tiny_int8.tflite"
    batch.predict_folder(batch.open_source(photos), tmp_path / "command.csv", Classifier.from_path(model), workers=1)
    result = subprocess.run([beam_python, "-m", "cifarlab.beam_predict", "--input", f"{photos}/**",
                             "--out", str(tmp_path / "beam" / "preds"), "--model", str(model), "--batch", "4",
                             "--direct_num_workers", "2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    shards = sorted((tmp_path / "beam").glob("preds-*-of-*.csv"))
    assert shards
    from_beam = {}
    for shard in shards:
        from_beam.update(rows(shard, strip=f"{photos}/"))
    assert from_beam.pop(".DS_Store")["error"]  # a file pattern matches hidden files too; the command skips them
    command = rows(tmp_path / "command.csv")
    assert from_beam == command and sum(1 for row in command.values() if row["error"]) == 2
