"""How good a model version is, on labelled rows: the metrics it is judged by. A binary
classifier's (the fraud example's), below; :func:`task_metrics` covers multiclass and regression.

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

__all__ = ["METRICS", "PRIMARY_METRIC", "calibration_error", "recall_at_fpr", "score_metrics", "task_metrics"]

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


#: The metric each task's model versions are compared on (gate, canary, label-based drift), and
#: whether higher is better.
PRIMARY_METRIC: dict[str, tuple[str, bool]] = {"binary": ("pr_auc", True), "multiclass": ("log_loss", False),
                                               "regression": ("rmse", False)}


def task_metrics(task: str, labels: np.ndarray, predictions: np.ndarray,
                 classes: tuple[str, ...] = ()) -> dict[str, float]:
    """The validation metrics of a ``task``'s predictions: binary, every metric of
    :func:`score_metrics` (ROC-AUC and PR-AUC among them; ``labels`` 0/1 or ``classes`` names,
    ``classes[1]`` positive); multiclass, ``log_loss`` (nats) and ``accuracy`` (``predictions``
    (n, k) in the order of ``classes``); regression, ``rmse``, ``mae`` (in the label's unit) and ``r2``."""
    if task == "binary":
        y = np.asarray(labels)
        if classes and y.dtype.kind not in "biu":
            y = (y.astype(str) == classes[1]).astype(np.int8)
        return score_metrics(y, predictions)
    if task == "multiclass":
        from sklearn.metrics import log_loss

        p = np.clip(np.asarray(predictions, dtype=np.float64), 1e-15, 1.0)
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index.get(str(v), -1) for v in labels])
        if (y < 0).any():
            raise ValueError(f"labels {sorted(set(map(str, np.asarray(labels)[y < 0])))[:5]} are not among the "
                             f"classes {list(classes)}")
        return {"log_loss": float(log_loss(y, p / p.sum(axis=1, keepdims=True), labels=list(range(len(classes))))),
                "accuracy": float((p.argmax(axis=1) == y).mean())}
    if task == "regression":
        y, f = np.asarray(labels, dtype=np.float64), np.asarray(predictions, dtype=np.float64)
        if y.size != f.size or y.size == 0:
            raise ValueError(f"{y.size} labels and {f.size} predictions; need equal, non-zero counts")
        error = f - y
        spread = float(((y - y.mean()) ** 2).sum())
        return {"rmse": float(np.sqrt((error ** 2).mean())), "mae": float(np.abs(error).mean()),
                "r2": 1.0 - float((error ** 2).sum()) / spread if spread > 0 else float("nan")}
    raise ValueError(f"unknown task {task!r}")
