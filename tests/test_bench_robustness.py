from pathlib import Path

import numpy as np

import train
from app import create_app
from benchmarks import bench_robustness
from cifarlab import modelfile
from cifarlab.inference import Classifier
from tests.helpers import write_folder


def test_the_benchmark_runs_every_corruption_on_a_tiny_set_and_summarises_it(tiny_model_path, photos):
    classifier = Classifier.from_path(tiny_model_path)
    labels = np.arange(len(photos)) % 10
    result = bench_robustness.benchmark(classifier, photos, labels, progress=lambda line: None)
    assert len(result["rows"]) == 19 and all(len(r["severities"]) == 5 for r in result["rows"])
    summary = result["summary"]
    accuracies = [s["accuracy"] for r in result["rows"] if not r["held_out"] for s in r["severities"]]
    assert summary["mean_corrupted_accuracy"] == np.mean(accuracies) and len(accuracies) == 75
    assert 0 <= summary["corrupted_ece"] <= 1 and 0 <= summary["corrupted_unsure"] <= 1
    assert summary["worst"]["accuracy"] == min(s["accuracy"] for r in result["rows"] for s in r["severities"])


def test_the_benchmark_writes_its_table_into_the_sidecar_card_and_model_page(tmp_path, capsys):
    data = write_folder(tmp_path / "data", ["cherry", "lime"], per_class=6, noise=60)
    out = tmp_path / "m"
    assert train.main(["--data", str(data), "--epochs", "1", "--val-size", "2", "--out", str(out)]) == 0
    model = f"{out}.h5"
    assert bench_robustness.main(["--model", model, "--data", str(data), "--images", "8",
                                  "--corruptions", "fog,saturate", "--write"]) == 0
    written = modelfile.read_meta(model)["robustness"]
    assert written["images"] == 8 and [r["corruption"] for r in written["rows"]] == ["fog", "saturate"]
    assert written["command"].startswith("python benchmarks/bench_robustness.py --model")
    assert "| fog |" in capsys.readouterr().out
    assert "## Robustness to corruptions" in Path(modelfile.artefact_paths(model)["card"]).read_text()
    app = create_app({"TESTING": True, "MODEL_PATH": model, "UPLOAD_FOLDER": str(tmp_path / "uploads"),
                      "SECRET_KEY": "test-only"})
    page = app.test_client().get("/model").get_data(as_text=True)
    assert "Robustness to corruptions" in page and "<td>fog</td>" in page and "Held out (4 × 5)" in page
