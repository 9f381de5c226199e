"""Out-of-distribution scores on a model's logits, and the rule that turns a score into "unknown".

A score is higher the further an image is from the training data. Scores read the mean test-time-view logits
(or, for a model that ends in softmax, its log-probabilities), so the int8 TFLite path computes them in numpy.
"""
from dataclasses import dataclass

import numpy as np

UNKNOWN_QUANTILE = 0.96  # the threshold leaves this fraction of validation images below it: 4 % of them "unknown"


def _logsumexp(logits):
    top = logits.max(axis=-1)
    return top + np.log(np.exp(logits - top[..., None]).sum(axis=-1))


def msp_score(logits, temperature=1.0):
    """1 - the calibrated top probability (Hendrycks & Gimpel's baseline)."""
    scaled = np.asarray(logits, np.float64) / temperature
    return 1.0 - np.exp(scaled.max(axis=-1) - _logsumexp(scaled))


def energy_score(logits, temperature=1.0):
    """Free energy -logsumexp(logits) (Liu et al. 2020): the logits' total evidence, not only their ratio. The
    temperature is not applied (it is taken for msp_score's signature): energy thresholds are fitted on raw logits."""
    return -_logsumexp(np.asarray(logits, np.float64))


SCORES = {"msp": msp_score, "energy": energy_score}


@dataclass(frozen=True)
class Detector:
    """A score function by name and the threshold above which an image is "unknown" (None: never)."""

    score: str = "msp"
    threshold: float = None

    @classmethod
    def from_meta(cls, meta, threshold=None):
        """The sidecar's fitted detector (ood section), its threshold replaced by `threshold` when given."""
        fitted = meta.get("ood") or {}
        score = fitted.get("score", "msp")
        return cls(score if score in SCORES else "msp", fitted.get("threshold") if threshold is None else threshold)

    def scores(self, logits, temperature=1.0):
        """(N,) scores of (N, classes) logits."""
        return SCORES[self.score](logits, temperature)

    def unknown(self, scores):
        """(N,) booleans: the scores above the threshold."""
        scores = np.asarray(scores)
        return np.zeros(scores.shape, bool) if self.threshold is None else scores > self.threshold


def fit_threshold(validation_scores, quantile=UNKNOWN_QUANTILE):
    """The threshold rule: the `quantile` quantile of in-distribution validation scores."""
    return float(np.quantile(np.asarray(validation_scores, np.float64), quantile))


def auroc(outlier_scores, inlier_scores):
    """Area under the ROC curve of telling outliers (positives) from inliers by score (ties count half)."""
    scores = np.concatenate([outlier_scores, inlier_scores])
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    sorted_scores = scores[order]  # average the ranks of tied scores
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    n_out, n_in = len(outlier_scores), len(inlier_scores)
    return float((ranks[:n_out].sum() - n_out * (n_out + 1) / 2) / (n_out * n_in))


def fpr_at_95_tpr(outlier_scores, inlier_scores):
    """Fraction of outliers scored below the level that keeps 95 % of inliers below it (lower is better)."""
    return float((np.asarray(outlier_scores) <= np.quantile(inlier_scores, 0.95)).mean())
