"""Score distribution of a rollout: PSI of the challenger's score bins against the champion's.

Recorded at every look; a rollback rule only with ``CanaryPolicy.psi_threshold`` (off by default:
two healthy models differ in calibration). An effect size, not a p-value. The PSI is drift
monitoring's own (:func:`monitoring.stats.psi`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from monitoring.rollout._check import check as _check
from monitoring.stats import EPS, psi

__all__ = ["score_shift"]


def score_shift(champion_counts: ArrayLike, challenger_counts: ArrayLike, *, threshold: float = 0.2,
                eps: float = EPS) -> tuple[float, bool]:
    """(PSI of the challenger's scores against the champion's, drifted = PSI >= threshold).

    Counts are per score bin, the same bins for both. 0.2 is the customary "significant shift".
    The threshold bounds an effect size, not a tail probability, so reading it at every look
    inflates nothing; but PSI is biased upward on few samples (about (bins - 1)(1/n_a + 1/n_b)),
    so judge it only with enough scores in both variants (:class:`CanaryPolicy` ``min_samples``).
    """
    a = np.asarray(champion_counts, dtype=np.float64)
    b = np.asarray(challenger_counts, dtype=np.float64)
    _check(a.ndim == 1 and a.shape == b.shape and len(a) > 0,
           f"score bin counts must be 1-D over the same bins; got shapes {a.shape} and {b.shape}")
    _check(bool(np.isfinite(a).all() and np.isfinite(b).all() and (a >= 0).all() and (b >= 0).all()),
           "score bin counts must be finite and >= 0")
    value = psi(a, b, eps)
    return value, value >= threshold
