"""Drift statistics as plain functions over counts: PSI, two-sample KS, chi², Benjamini–Hochberg.

Each is defined exactly (see ``docs/drift.md`` and the issue text this implements) and checked
against a direct reading of its definition and against scipy in the tests.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from scipy import stats as sps

__all__ = ["EPS", "benjamini_hochberg", "chi2_homogeneity", "ks_from_counts", "psi", "total_variation"]

EPS: Final = 1e-4


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = EPS) -> float:
    """Population stability index of two binnings of the same bins.

    Proportions per bin, each floored at ``eps`` (no renormalisation), then
    ``sum((p_cur - p_ref) * ln(p_cur / p_ref))``.
    """
    p_ref = np.maximum(ref_counts / max(ref_counts.sum(), 1), eps)
    p_cur = np.maximum(cur_counts / max(cur_counts.sum(), 1), eps)
    return float(np.sum((p_cur - p_ref) * np.log(p_cur / p_ref)))


def ks_from_counts(cum_ref: np.ndarray, n_ref: int, below: np.ndarray, at_or_below: np.ndarray,
                   n_cur: int) -> float:
    """The two-sample KS statistic D = sup |F_ref - F_cur|, exactly as ``scipy.stats.ks_2samp``.

    ``cum_ref[j]``: reference values <= u_j for the sorted distinct reference values u_j;
    ``below[j]``/``at_or_below[j]``: current values < u_j / <= u_j. Between consecutive
    reference points F_ref is flat, so the supremum is reached at a reference point (current CDF
    there: ``at_or_below``) or just before the next one (``below`` of the next point), or in the
    tails: before u_0 (F_ref = 0) and from the last point on (F_ref = 1).
    """
    if n_ref == 0 or n_cur == 0:
        return float("nan")
    f_ref = cum_ref / n_ref
    candidates = [np.abs(f_ref - at_or_below / n_cur)]
    if len(f_ref) > 1:
        candidates.append(np.abs(f_ref[:-1] - below[1:] / n_cur))
    tails = [below[0] / n_cur if len(below) else 1.0, 1.0 - at_or_below[-1] / n_cur if len(below) else 0.0]
    return float(max(max(float(c.max()) for c in candidates) if len(f_ref) else 0.0, *tails))


def ks_pvalue(d: float, n_ref: int, n_cur: int) -> float:
    """Asymptotic two-sided p-value, as ``ks_2samp(..., method="asymp")``."""
    if np.isnan(d):
        return float("nan")
    m, n = sorted([float(n_ref), float(n_cur)], reverse=True)
    return float(np.clip(sps.kstwo.sf(d, np.round(m * n / (m + n))), 0, 1))


def chi2_homogeneity(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Pearson chi² test that two samples share one categorical distribution (2 × K table,
    no continuity correction; bins empty in both samples are dropped). Returns (statistic, p)."""
    table = np.vstack([ref_counts, cur_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return statistic, float(sps.chi2.sf(statistic, table.shape[1] - 1))


def total_variation(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Half the L1 distance between the two category distributions (0..1)."""
    p_ref = ref_counts / max(ref_counts.sum(), 1)
    p_cur = cur_counts / max(cur_counts.sum(), 1)
    return float(np.abs(p_ref - p_cur).sum() / 2)


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (NaN stays NaN and is not counted)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if not m:
        return out
    order = np.argsort(p[ok])
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(0, 1)
    values = np.empty(m)
    values[order] = adjusted
    out[ok] = values
    return out
