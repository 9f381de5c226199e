"""Matplotlib figures saved as PNG (headless)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def training_curves(history, path, title):
    """Loss and accuracy per epoch (train, val, test) against epochs; saved to path."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val", "test"):
        if f"{split}_loss" in history[0]:
            ax_loss.plot(epochs, [row[f"{split}_loss"] for row in history], marker="o", label=split)
            ax_acc.plot(epochs, [row[f"{split}_accuracy"] for row in history], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (no TTA)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
