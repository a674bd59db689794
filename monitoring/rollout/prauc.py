"""PR-AUC of a rollout on delayed labels: challenger − champion, class-stratified bootstrap, one look.

Once the labels of the canary's payments are known: challenger − champion average precision, its
standard error from a class-stratified bootstrap (paired where both models scored the same
payment, in shadow mode; unpaired rows within their stratum), and a one-sided normal bound at the
look's share of alpha (:attr:`monitoring.rollout.CanaryPolicy.label_look_alpha`). The weighted
average precision and its vectorised bootstrap are :mod:`monitoring.average_precision`'s.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from monitoring.average_precision import resample_counts, threshold_order, weighted_average_precision
from monitoring.rollout._check import check as _check

__all__ = ["LabelledScores", "PrAucResult", "prauc_test"]


@dataclass(frozen=True, eq=False)
class LabelledScores:
    """Scores of the canary's payments whose fraud label is known (1 fraud, 0 not), since it started.

    ``paired_*``: payments scored by both models (shadow mode logs each request once as champion and
    once as shadow), one label each. ``champion_*`` / ``challenger_*``: payments scored by one model
    only (canary mode routes each customer to one of them), with a stratum each (an integer, e.g.
    the hour they were scored; omitted: one stratum). Scores: higher means more likely fraud.

    Unpaired payments are compared within their stratum only: the challenger's share of traffic
    changes from step to step while fraud prevalence (which PR-AUC depends on) drifts over the
    days, so pooling raw rows would compare the challenger's late traffic with the champion's early
    traffic. Each unpaired row is weighted so that both variants give every stratum the same total
    weight, ``n_a n_b / (n_a + n_b)`` (as :func:`risk_difference` does): a champion row by the
    challenger's share of the stratum and vice versa; a stratum that only one variant served
    weighs nothing. Paired rows weigh 1 for both.
    """

    paired_champion: ArrayLike = ()
    paired_challenger: ArrayLike = ()
    paired_labels: ArrayLike = ()
    champion_scores: ArrayLike = ()
    champion_labels: ArrayLike = ()
    challenger_scores: ArrayLike = ()
    challenger_labels: ArrayLike = ()
    champion_strata: ArrayLike = ()
    challenger_strata: ArrayLike = ()

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The nine arrays validated, in field order: scores float64, labels int8 in {0, 1}, strata int64."""
        out: list[np.ndarray] = []
        for name in ("paired_champion", "paired_challenger", "paired_labels", "champion_scores", "champion_labels",
                     "challenger_scores", "challenger_labels"):
            x = np.asarray(getattr(self, name), dtype=np.float64).ravel()
            _check(bool(np.isfinite(x).all()), f"{name} must be finite")
            if name.endswith("labels"):
                _check(bool(np.isin(x, (0.0, 1.0)).all()), f"{name} must be 0 (legitimate) or 1 (fraud)")
                x = x.astype(np.int8)
            out.append(x)
        for name, n in (("champion_strata", len(out[3])), ("challenger_strata", len(out[5]))):
            strata = np.asarray(getattr(self, name), dtype=np.int64).ravel()
            out.append(np.zeros(n, dtype=np.int64) if strata.size == 0 else strata)
        _check(len(out[0]) == len(out[1]) == len(out[2]) and len(out[3]) == len(out[4]) == len(out[7])
               and len(out[5]) == len(out[6]) == len(out[8]),
               "each score array needs its label (and stratum) array, paired scores one per variant, all equally "
               f"long; got lengths {[len(x) for x in out]}")
        return tuple(out)

    def counts(self) -> dict[str, int]:
        """Labelled payments and frauds per variant that enter the comparison (paired ones counted for
        both; unpaired ones in strata both variants served), pairs, and unpaired rows left out."""
        _, _, y_p, _, y_a, _, y_b, h_a, h_b = self.arrays()
        w_a, w_b = _stratum_weights(h_a, h_b)
        used_a, used_b = w_a > 0, w_b > 0
        return {"n_champion": len(y_p) + int(used_a.sum()), "n_challenger": len(y_p) + int(used_b.sum()),
                "positives_champion": int(y_p.sum() + y_a[used_a].sum()),
                "positives_challenger": int(y_p.sum() + y_b[used_b].sum()), "n_paired": len(y_p),
                "n_unmatched": int((~used_a).sum() + (~used_b).sum())}

    def fingerprint(self) -> int:
        """CRC-32 of the data: the same labelled traffic at two looks gives the same number (and seed)."""
        crc = 0
        for x in self.arrays():
            crc = zlib.crc32(np.int64(len(x)).tobytes(), crc)
            crc = zlib.crc32(np.ascontiguousarray(x).tobytes(), crc)
        return crc


def _stratum_weights(h_a: np.ndarray, h_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row weights of unpaired rows: champion rows get the challenger's share of their stratum, and
    the other way round, so each variant puts ``n_a n_b / (n_a + n_b)`` on every stratum."""
    strata, inverse = np.unique(np.r_[h_a, h_b], return_inverse=True)
    inv_a, inv_b = inverse[:len(h_a)], inverse[len(h_a):]
    n_a = np.bincount(inv_a, minlength=len(strata)).astype(np.float64)
    n_b = np.bincount(inv_b, minlength=len(strata)).astype(np.float64)
    total = np.maximum(n_a + n_b, 1.0)
    return (n_b / total)[inv_a], (n_a / total)[inv_b]


@dataclass(frozen=True)
class PrAucResult:
    """One look of :func:`prauc_test`. PR-AUC values are average precisions in [0, 1].

    ``difference``: challenger − champion. ``se``: its bootstrap standard error. ``lower``/``upper``:
    one-sided ``1 - alpha`` bounds ``difference ∓ critical_z · se``. ``z``: ``(difference + margin) / se``;
    ``reject`` (``upper < -margin``, i.e. ``z < -critical_z``): the challenger is worse by more than
    ``margin``. Counts as :meth:`LabelledScores.counts`.
    """

    champion: float
    challenger: float
    difference: float
    se: float
    lower: float
    upper: float
    z: float
    critical_z: float
    alpha: float
    margin: float
    reject: bool
    n_champion: int
    n_challenger: int
    positives_champion: int
    positives_challenger: int
    n_paired: int


@dataclass(frozen=True)
class _Variant:
    """One variant's rows, paired first: scores, labels, fixed weights, in threshold order."""

    order: np.ndarray
    ends: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    unpaired_cells: np.ndarray  # stratum × class cell of each unpaired row (bootstrap resamples within)

    @classmethod
    def of(cls, s_p: np.ndarray, y_p: np.ndarray, s: np.ndarray, y: np.ndarray, h: np.ndarray,
           w: np.ndarray) -> _Variant:
        order, ends = threshold_order(np.r_[s_p, s])
        _, cells = np.unique(np.c_[h, y], axis=0, return_inverse=True)
        return cls(order, ends, np.r_[y_p, y][order], np.r_[np.ones(len(y_p)), w], cells.ravel())

    def ap(self, paired_counts: np.ndarray, unpaired_counts: np.ndarray) -> np.ndarray:
        counts = np.hstack([paired_counts, unpaired_counts]) * self.weights
        return weighted_average_precision(counts[:, self.order], self.labels, self.ends)


def prauc_test(labelled: LabelledScores, *, margin: float = 0.02, alpha: float = 0.05, n_boot: int = 200,
               seed: int | None = None) -> PrAucResult:
    """Is the challenger's PR-AUC lower than the champion's by more than ``margin``? One look, level ``alpha``.

    Each variant's average precision is computed on its labelled payments, paired and unpaired
    (weighted by stratum, see :class:`LabelledScores`). The standard error of the difference comes
    from ``n_boot`` bootstrap replicates that resample paired payments jointly (both models' scores
    of a payment stay together, so the large positive correlation of two models on the same
    payments cancels) and each variant's unpaired payments independently within their stratum;
    every resample is stratified by class (frauds and legitimate payments apart, so each replicate
    has the observed frauds and a defined PR-AUC). The bound is normal, ``difference + z_{1-alpha}
    · se``: with a Bonferroni share of alpha per look (:attr:`CanaryPolicy.label_look_alpha`) the
    quantile lies far in the tail, which a few hundred replicates estimate poorly as a percentile
    but well as a standard error. ``seed``: the replicates' seed, by default
    :meth:`LabelledScores.fingerprint` (the same data gives the same answer, so reading it again at
    a later look spends no further alpha). Needs frauds and legitimate payments in each variant.
    """
    s_p, t_p, y_p, s_a, y_a, s_b, y_b, h_a, h_b = labelled.arrays()
    _check(0 < alpha < 0.5, f"alpha must be in (0, 0.5), got {alpha}")
    _check(0 <= margin < 1, f"margin must be a PR-AUC difference in [0, 1), got {margin}")
    _check(isinstance(n_boot, int) and n_boot >= 20, f"n_boot must be an int >= 20, got {n_boot!r}")
    counts = labelled.counts()
    for name in ("champion", "challenger"):
        pos, n = counts[f"positives_{name}"], counts[f"n_{name}"]
        _check(0 < pos < n, f"PR-AUC of the {name} needs frauds and legitimate payments, got {pos} of {n}")
    w_a, w_b = _stratum_weights(h_a, h_b)
    a, b = _Variant.of(s_p, y_p, s_a, y_a, h_a, w_a), _Variant.of(t_p, y_p, s_b, y_b, h_b, w_b)
    ap_a = float(a.ap(np.ones((1, len(y_p))), np.ones((1, len(y_a))))[0])
    ap_b = float(b.ap(np.ones((1, len(y_p))), np.ones((1, len(y_b))))[0])
    rng = np.random.default_rng(labelled.fingerprint() if seed is None else seed)
    paired_cells = y_p.astype(np.int64)
    chunk = max(1, min(n_boot, 4_000_000 // max(len(y_p) * 2 + len(y_a) + len(y_b), 1)))  # ~100 MB at most
    boot = []
    for start in range(0, n_boot, chunk):
        c = min(chunk, n_boot - start)
        paired = resample_counts(rng, paired_cells, c)
        boot.append(b.ap(paired, resample_counts(rng, b.unpaired_cells, c))
                    - a.ap(paired, resample_counts(rng, a.unpaired_cells, c)))
    diff, se = ap_b - ap_a, float(np.std(np.concatenate(boot), ddof=1))
    crit = float(-special.ndtri(alpha))
    z = (diff + margin) / se if se > 0 else (math.copysign(math.inf, diff + margin) if diff + margin else 0.0)
    upper = diff + crit * se
    return PrAucResult(ap_a, ap_b, diff, se, diff - crit * se, upper, z, crit, alpha, margin, upper < -margin,
                       counts["n_champion"], counts["n_challenger"], counts["positives_champion"],
                       counts["positives_challenger"], counts["n_paired"])
