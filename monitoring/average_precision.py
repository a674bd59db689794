"""PR-AUC as average precision, weighted, and its class-stratified bootstrap, vectorised.

    scores, labels, weights ──► threshold order (highest score first, ties one threshold)
        ──► average precision of one weighting, or of many at once (replicates × rows)
    bootstrap: each class's (or cell's) rows drawn with replacement, as many as it has, as
        counts per row ──► weights × counts ──► one average precision per replicate

A bootstrap replicate is a reweighting of the rows it resamples (a row drawn twice weighs twice,
ties stay one threshold), so all replicates are computed in one pass over the sorted rows instead
of re-sorting each resample. Used by the rollout's PR-AUC test (:mod:`monitoring.rollout.prauc`)
and by the drift job's concept-drift check. Pure numpy, no I/O.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["average_precision", "bootstrap_average_precision", "resample_counts", "threshold_order",
           "weighted_average_precision"]

_CELLS_MAX: int = 4_000_000  # replicates × rows of counts held at once (~100 MB of float64 with the cumsums)


def average_precision(scores: ArrayLike, labels: ArrayLike, weights: ArrayLike | None = None) -> float:
    """PR-AUC as average precision: ``Σ (R_k - R_{k-1}) P_k`` over the distinct scores, highest first.

    Tied scores form one threshold (scikit-learn's ``average_precision_score``, ``sample_weight``
    as ``weights``). NaN without (weighted) frauds.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if not s.shape == y.shape == w.shape:
        raise ValueError(f"scores, labels and weights must be equally long, got {s.shape}, {y.shape} and {w.shape}")
    if not (w * y > 0).any():
        return math.nan
    order, ends = threshold_order(s)
    return float(weighted_average_precision(w[order][None, :], y[order], ends)[0])


def bootstrap_average_precision(scores: ArrayLike, labels: ArrayLike, weights: ArrayLike | None = None, *,
                                replicates: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """Average precision of ``replicates`` class-stratified bootstrap resamples (one value each).

    Each resample draws the frauds (label 1) and the legitimate rows (label 0) apart, with
    replacement, as many as each class has, so every replicate holds the observed frauds and a
    defined PR-AUC; ``weights`` stay with their rows. ``np.std(..., ddof=1)`` of the result is the
    standard error of :func:`average_precision` on the same rows. ``seed``: the replicates' seed
    (the same seed and rows give the same replicates).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if not s.shape == y.shape == w.shape:
        raise ValueError(f"scores, labels and weights must be equally long, got {s.shape}, {y.shape} and {w.shape}")
    if not (isinstance(replicates, int) and replicates >= 1):
        raise ValueError(f"replicates must be an int >= 1, got {replicates!r}")
    rng = np.random.default_rng(seed)
    order, ends = threshold_order(s)
    classes = np.unique(y, return_inverse=True)[1].ravel()
    chunk = max(1, min(replicates, _CELLS_MAX // max(len(s), 1)))
    out = []
    for start in range(0, replicates, chunk):
        counts = resample_counts(rng, classes, min(chunk, replicates - start)) * w
        out.append(weighted_average_precision(counts[:, order], y[order], ends))
    return np.concatenate(out)


def threshold_order(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order by score, highest first, and the last position of each run of tied scores."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    return order, np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]


def weighted_average_precision(weights: np.ndarray, y_sorted: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Average precision per row of ``weights`` (replicates × rows, rows in threshold order)."""
    tp = np.cumsum(weights * y_sorted, axis=1)[:, ends]
    total = np.cumsum(weights, axis=1)[:, ends]
    gained = np.diff(tp, axis=1, prepend=0.0)
    precision = tp / np.where(total > 0, total, 1.0)
    return (gained * precision).sum(axis=1) / tp[:, -1]


def resample_counts(rng: np.random.Generator, cells: np.ndarray, replicates: int) -> np.ndarray:
    """Bootstrap counts per row (replicates × rows): each cell's rows drawn with replacement, as many as it has."""
    n = len(cells)
    if n == 0:
        return np.zeros((replicates, 0))
    by_cell = np.argsort(cells, kind="stable")
    sizes = np.bincount(cells)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    row_cell = cells[by_cell]  # the cell of each position in cell order
    picks = starts[row_cell] + (rng.random((replicates, n)) * sizes[row_cell]).astype(np.int64)
    flat = (np.arange(replicates)[:, None] * n + by_cell[picks]).ravel()
    return np.bincount(flat, minlength=replicates * n).reshape(replicates, n).astype(np.float64)
