"""How good a fraud score is, on labelled rows: the metrics a model version is judged by.

    roc_auc            area under the ROC curve
    pr_auc             average precision (area under precision-recall, no interpolation)
    recall_at_1pct_fpr share of fraud caught when 1 % of legitimate payments are flagged
    log_loss           mean binary cross-entropy (nats)
    calibration_error  expected calibration error over 10 equal-mass score bins

Fraud is rare, so PR-AUC and recall at a fixed false-positive rate say more than ROC-AUC; the
calibration error uses equal-mass bins because equal-width bins would put almost every payment
in the first one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["METRICS", "calibration_error", "recall_at_fpr", "score_metrics"]

METRICS = ("roc_auc", "pr_auc", "recall_at_1pct_fpr", "log_loss", "calibration_error")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "recall_at_1pct_fpr": True,
                    "log_loss": False, "calibration_error": False}


def score_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Every metric in :data:`METRICS` for 0/1 ``labels`` and probabilities ``scores``.

    Both classes must be present (a ranking metric means nothing otherwise): raises ValueError.
    """
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    y = np.asarray(labels).astype(np.int8)
    p = np.asarray(scores, dtype=np.float64)
    if y.size != p.size:
        raise ValueError(f"{y.size} labels but {p.size} scores")
    if y.min(initial=1) == y.max(initial=0):
        raise ValueError("the labels hold one class only; metrics need fraud and legitimate rows")
    # Clipped for the log loss only: clipping the ranking metrics' scores would tie distinct tiny scores.
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "recall_at_1pct_fpr": recall_at_fpr(y, p, 0.01),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "calibration_error": calibration_error(y, p),
    }


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Highest recall of any threshold whose false-positive rate is at most ``fpr``."""
    from sklearn.metrics import roc_curve

    # Every threshold: with ties, one that drop_intermediate would drop can be the best under fpr.
    false_pos, true_pos, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(true_pos[false_pos <= fpr].max(initial=0.0))


def calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the row-weighted mean |fraud rate - mean score| over ``bins``
    bins of equal row counts (ties in score stay in one bin)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    if y.size != p.size:
        raise ValueError(f"{y.size} labels but {p.size} scores")
    if y.size == 0:
        raise ValueError("no rows to measure calibration on")
    order = np.argsort(p, kind="stable")
    p, y = p[order], y[order]
    edges = np.unique(np.searchsorted(p, p[np.linspace(0, p.size, bins + 1)[1:-1].astype(np.int64)]))
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [p.size]])
    keep = ends > starts
    sums_p = np.add.reduceat(p, starts[keep])
    sums_y = np.add.reduceat(y, starts[keep])
    return float(np.abs(sums_y - sums_p).sum() / p.size)
