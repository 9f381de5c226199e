"""Evaluation report: accuracy, per-class metrics, confusion matrix, calibration and temperature scaling."""
import numpy as np

from ..inference import calibrate

ECE_BINS = 15  # equal-width confidence bins for the expected calibration error
UNSURE_PRECISION = 0.95  # predictions at or above the unsure threshold are right this often on validation


def classification_report(y_true, probs, class_names):
    """Accuracy, top-2/3 accuracy, per-class precision/recall/F1/support, macro averages, confusion."""
    y_true = np.asarray(y_true)
    n = len(class_names)
    pred = probs.argmax(axis=1)
    ranked = np.argsort(-probs, axis=1)
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (y_true, pred), 1)
    tp = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    return {
        "images": int(len(y_true)),
        "accuracy": float((pred == y_true).mean()),
        "top2_accuracy": float((ranked[:, :2] == y_true[:, None]).any(axis=1).mean()),
        "top3_accuracy": float((ranked[:, :3] == y_true[:, None]).any(axis=1).mean()),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(class_names)},
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "confusion_matrix": confusion.tolist(),
    }


def expected_calibration_error(probs, y_true, bins=ECE_BINS):
    """Sum over equal-width confidence bins of |accuracy - confidence| weighted by the bin's share."""
    _, acc, conf, counts = reliability_bins(probs, y_true, bins)
    return float((counts / counts.sum() * np.abs(acc - conf)).sum())


def reliability_bins(probs, y_true, bins=ECE_BINS):
    """(bin centres, accuracy per bin, confidence per bin, count per bin) for a reliability diagram."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    acc = np.bincount(which, weights=correct, minlength=bins) / np.maximum(counts, 1)
    mean_conf = np.bincount(which, weights=conf, minlength=bins) / np.maximum(counts, 1)
    return (edges[:-1] + edges[1:]) / 2, acc, mean_conf, counts


def negative_log_likelihood(probs, y_true):
    """Mean -log p(true class)."""
    return float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0)).mean())


def fit_temperature(probs, y_true):
    """The temperature T minimising the NLL of softmax(log p / T) (grid search in log space, then refined)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    best = min(grid, key=lambda t: negative_log_likelihood(calibrate(probs, t), y_true))
    fine = best * np.exp(np.linspace(-0.06, 0.06, 61))
    return float(min(fine, key=lambda t: negative_log_likelihood(calibrate(probs, t), y_true)))


def unsure_threshold(probs, y_true, target_precision=UNSURE_PRECISION):
    """Smallest calibrated top-probability above which predictions are right >= target_precision of the time."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    for t in np.linspace(0.0, 0.99, 100):
        kept = conf >= t
        if kept.any() and correct[kept].mean() >= target_precision:
            return float(round(t, 2))
    return 0.99
