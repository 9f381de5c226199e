"""Matplotlib figures saved as PNG (headless: Figure objects, never pyplot's global figures or backend)."""
import contextlib

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..atomic import replace_atomically


@contextlib.contextmanager
def saved_figure(path, dpi, figsize=None, **subplots):
    """(figure, axes) of Figure.subplots for the block; written to path atomically if the block succeeds."""
    fig = Figure(figsize=figsize)
    axes = fig.subplots(**subplots)
    yield fig, axes
    fig.tight_layout()
    replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi))


def training_curves(history, path, title):
    """Loss and accuracy per epoch (train, val, test) against epochs; saved to path."""
    epochs = [row["epoch"] for row in history]
    with saved_figure(path, 100, ncols=2, figsize=(10, 4)) as (fig, (ax_loss, ax_acc)):
        for split in ("train", "val", "test"):
            if f"{split}_loss" in history[0]:
                ax_loss.plot(epochs, [row[f"{split}_loss"] for row in history], marker="o", label=split)
                ax_acc.plot(epochs, [row[f"{split}_accuracy"] for row in history], marker="o", label=split)
        ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
        ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (no TTA)")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend()
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        fig.suptitle(title)


def confusion_matrix(confusion, class_names, path):
    """One large heatmap: each cell the percentage of a true class (row) predicted as a column, counts in brackets."""
    import numpy as np

    confusion = np.asarray(confusion)
    percent = 100 * confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    side = max(6.0, 0.85 * n + 2.5)  # inches: cells stay big enough for two lines of 10 pt text
    with saved_figure(path, 100, figsize=(side + 1.2, side)) as (fig, ax):
        im = ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
        ax.set_xticks(range(n), class_names, rotation=40, ha="right", fontsize=11)
        ax.set_yticks(range(n), class_names, fontsize=11)
        ax.set_xlabel("predicted", fontsize=12)
        ax.set_ylabel("true class", fontsize=12)
        ax.set_title(f"Confusion on {confusion.sum():,} test images: % of each true class (count)", fontsize=13)
        for i in range(n):
            for j in range(n):
                if confusion[i, j] == 0:
                    continue
                ax.text(j, i, f"{percent[i, j]:.0f}%\n({confusion[i, j]:,})", ha="center", va="center",
                        fontsize=10 if n <= 12 else 7, fontweight="bold" if i == j else "normal",
                        color="white" if percent[i, j] > 50 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, label="% of the true class")


def reliability_diagram(curves, path):
    """Accuracy against confidence per bin, one line per (label, (centres, acc, conf, counts), ece)."""
    with saved_figure(path, 100, figsize=(5.5, 5)) as (fig, ax):
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        for label, (centres, acc, conf, counts), ece in curves:
            keep = counts > 0
            ax.plot(conf[keep], acc[keep], marker="o", label=f"{label} (ECE {ece:.3f})")
        ax.set(xlabel="confidence (top probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
               title="Reliability on the test split")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")


def mistakes_grid(images, true_names, pred_names, confidences, path, columns=8):
    """A grid of images titled 'true -> predicted (confidence)'."""
    rows = max(1, -(-len(images) // columns))
    with saved_figure(path, 90, nrows=rows, ncols=columns, figsize=(columns * 1.6, rows * 1.9),
                      squeeze=False) as (fig, axes):
        for ax in axes.flat:
            ax.axis("off")
        for ax, img, t, p, c in zip(axes.flat, images, true_names, pred_names, confidences):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(f"{t}\n→ {p} {c:.0%}", fontsize=8)
        fig.suptitle("Most confident mistakes (true → predicted, calibrated confidence)")
