import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from cifarlab.report import metrics, plots


def draw(kind, path):
    rng = np.random.default_rng(0)
    if kind == "curves":
        history = [{"epoch": e, "train_loss": 2.0 / e, "train_accuracy": 0.3 * e, "val_loss": 2.1 / e,
                    "val_accuracy": 0.28 * e} for e in (1, 2)]
        plots.training_curves(history, path, "tiny")
    elif kind == "confusion":
        plots.confusion_matrix(rng.integers(0, 50, (3, 3)), ["a", "b", "c"], path)
    elif kind == "reliability":
        probs = rng.dirichlet(np.ones(3), 200)
        labels = rng.integers(0, 3, 200)
        plots.reliability_diagram([("raw", metrics.reliability_bins(probs, labels), 0.05),
                                   ("temperature 1.20", metrics.reliability_bins(probs ** 0.8, labels), 0.02)], path)
    else:
        images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
        plots.mistakes_grid(images, ["a"] * 5, ["b"] * 5, [0.9] * 5, path, columns=3)


@pytest.mark.parametrize("kind", ["curves", "confusion", "reliability", "mistakes"])
def test_each_figure_is_a_png_and_no_figure_stays_open(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    draw(kind, str(path))
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) > 100
    assert plt.get_fignums() == []


def test_a_figure_that_fails_to_draw_keeps_the_old_file_and_closes(tmp_path):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    with pytest.raises(KeyError):
        plots.training_curves([{"epoch": 1, "train_loss": 1.0}], str(path), "no accuracy column")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["curves.png"]
    assert plt.get_fignums() == []


def test_a_grid_of_one_image_draws(tmp_path):
    plots.mistakes_grid(np.zeros((1, 32, 32, 3), dtype=np.uint8), ["a"], ["b"], [0.5], tmp_path / "one.png", columns=1)
    with Image.open(tmp_path / "one.png") as img:
        assert img.format == "PNG"
