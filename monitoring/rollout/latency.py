"""Latency of a rollout: is the challenger slower? Mann–Whitney with group-sequential alpha spending.

One-sided Mann–Whitney U (challenger slower, as Kayenta judges) with group-sequential alpha
spending over the looks of one step (Lan & DeMets 1983, O'Brien–Fleming-type spending function),
and an effect-size guard (p99 ratio) so that a tiny but "significant" slowdown on huge samples does
not roll back. Latency comes as samples or as Prometheus histograms (tested exactly as binned data).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special
from scipy import stats as sps

from monitoring.rollout._check import check as _check

__all__ = ["MAX_LOOKS_LIMIT", "LatencyHistogram", "LatencyResult", "group_sequential_bounds", "histogram_quantile",
           "latency_test", "mann_whitney_from_counts", "obf_spending"]

MAX_LOOKS_LIMIT: Final = 200  # the boundary recursion costs ~ max_looks² · 5000 exps (~1 s at 200)
_GRID_STEP: Final = 0.2  # Simpson grid step for the boundary recursion, in units of one look's sd (0.05: same to 1e-5)
_GRID_SDS: Final = 7.0  # the grid spans ±7 sd of the summed statistic (mass outside < 1e-11)


def obf_spending(t: ArrayLike, alpha: float) -> np.ndarray:
    """Lan–DeMets O'Brien–Fleming-type spending: alpha spent by information fraction ``t`` (0..1).

    ``alpha(t) = 2 - 2 Φ(z_{1-alpha/2} / sqrt(t))``; ``alpha(1) = alpha``, almost nothing early.
    """
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(t > 0, 2 * special.ndtr(special.ndtri(alpha / 2) / np.sqrt(np.maximum(t, 0.0))), 0.0)


def group_sequential_bounds(max_looks: int, alpha: float) -> np.ndarray:
    """Upper z boundaries for looks 1..max_looks at equal information steps (one-sided, upper only).

    Look k rejects when ``Z_k >= c_k``; ``c_k`` is set so that the chance of first crossing at look
    k under H0 is exactly ``alpha(k/K) - alpha((k-1)/K)`` of :func:`obf_spending`, for the
    canonical joint distribution of the Z's (a standard Brownian motion seen at k = 1..K), computed
    by the recursive numerical integration of Armitage, McPherson & Rowe (1969) as in Jennison &
    Turnbull, "Group Sequential Methods", ch. 19 (Simpson's rule). A cheaper Bonferroni split of
    the spent increments would be valid too but tests the last look at ~0.006 instead of ~0.04
    (K = 20, alpha = 0.05). +inf where the increment underflows (nothing to spend). Matches
    gsDesign's sfLDOF bounds to 1e-4; the grid drops < 1e-11 of probability per look. Cached.
    """
    _check(isinstance(max_looks, int) and 1 <= max_looks <= MAX_LOOKS_LIMIT,
           f"max_looks must be an int in 1..{MAX_LOOKS_LIMIT}, got {max_looks!r}; look less often")
    _check(0 < alpha < 1, f"alpha must be in (0, 1), got {alpha}")
    return np.array(_bounds(max_looks, float(alpha)))


@functools.lru_cache(maxsize=64)
def _bounds(max_looks: int, alpha: float) -> tuple[float, ...]:
    spent = obf_spending(np.arange(1, max_looks + 1) / max_looks, alpha)
    increments = np.diff(spent, prepend=0.0)
    # State: grid u over the continuation region of S_k = sqrt(k) Z_k, Simpson weights times density.
    bound = float(-special.ndtri(increments[0])) if increments[0] > 0 else math.inf
    u, mass = _grid_density(1, bound, None, None)
    bounds = [bound]
    for k in range(2, max_looks + 1):
        sd_k = math.sqrt(k)
        s_bound = _crossing_bound(u, mass, increments[k - 1]) if increments[k - 1] > 0 else math.inf
        bounds.append(s_bound / sd_k)
        u, mass = _grid_density(k, s_bound, u, mass)
    return tuple(bounds)


def _crossing_bound(u: np.ndarray, mass: np.ndarray, target: float) -> float:
    """The b where P(continue so far, S_k >= b) = target; S_k = S_{k-1} + N(0, 1), S_{k-1} on grid u."""
    log_target = math.log(target)

    def excess(b: float) -> float:  # log P(... >= b) - log target, decreasing in b
        return float(special.logsumexp(special.log_ndtr(u - b), b=mass)) - log_target

    hi = u[-1] + 10.0
    while excess(hi) > 0:
        hi += 10.0
    return float(optimize.brentq(excess, u[0], hi, xtol=1e-10))


def _grid_density(k: int, s_bound: float, prev_u: np.ndarray | None,
                  prev_mass: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Grid over (-7 sqrt(k), min(bound, 7 sqrt(k))) and Simpson weight × sub-density of S_k there."""
    lo, hi = -_GRID_SDS * math.sqrt(k), min(s_bound, _GRID_SDS * math.sqrt(k))
    n = 2 * max(1, math.ceil((hi - lo) / (2 * _GRID_STEP))) + 1
    grid = np.linspace(lo, hi, n)
    simpson = np.ones(n)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    simpson *= (hi - lo) / (n - 1) / 3
    if prev_u is None or prev_mass is None:
        density = sps.norm.pdf(grid)
    else:
        gap = grid[:, None] - prev_u[None, :]
        density = np.exp(-0.5 * gap * gap) @ prev_mass / math.sqrt(2 * math.pi)
    return grid, simpson * density


@dataclass(frozen=True, eq=False)
class LatencyHistogram:
    """Latency as a Prometheus histogram: bucket upper bounds in seconds (increasing; the last may be
    ``inf``) and counts, cumulative like ``_bucket{le="..."}`` unless ``cumulative=False``.

    Prometheus counters grow from process start: pass the increase over the step (counts now
    minus counts when the step started), as ``increase(..._bucket[...])`` gives.
    """

    upper_bounds_s: ArrayLike
    counts: ArrayLike
    cumulative: bool = True

    def bucket_counts(self) -> np.ndarray:
        """Counts per bucket (not cumulative), validated."""
        bounds = np.asarray(self.upper_bounds_s, dtype=np.float64)
        counts = np.asarray(self.counts, dtype=np.float64)
        _check(bounds.ndim == 1 and bounds.shape == counts.shape and len(bounds) > 0,
               f"a histogram needs as many counts as bucket bounds (1-D); got {bounds.shape} and {counts.shape}")
        _check(bool((np.diff(bounds) > 0).all() and not np.isnan(bounds).any()),
               "histogram bucket bounds must be strictly increasing")
        per_bucket = np.diff(counts, prepend=0.0) if self.cumulative else counts
        _check(bool(np.isfinite(per_bucket).all() and (per_bucket >= 0).all()),
               "histogram counts must be finite and non-negative per bucket (cumulative counts non-decreasing)")
        return per_bucket


def histogram_quantile(upper_bounds_s: ArrayLike, bucket_counts: ArrayLike, q: float) -> float:
    """The q-quantile of a histogram as Prometheus' ``histogram_quantile`` computes it (seconds).

    Linear interpolation inside the bucket holding rank ``q·total``, the first bucket starting at 0
    (or at its bound, if that is <= 0); a rank in the ``+Inf`` bucket gives the highest finite bound.
    """
    bounds = np.asarray(upper_bounds_s, dtype=np.float64)
    cum = np.cumsum(np.asarray(bucket_counts, dtype=np.float64))
    if len(cum) == 0 or cum[-1] <= 0:
        return math.nan
    rank = q * cum[-1]
    j = min(int(np.searchsorted(cum, rank, side="left")), len(cum) - 1)
    if math.isinf(bounds[j]):
        return float(bounds[j - 1]) if j > 0 else math.nan
    start = 0.0 if j == 0 else float(bounds[j - 1])
    if j == 0 and bounds[0] <= 0:
        return float(bounds[0])
    below = 0.0 if j == 0 else float(cum[j - 1])
    in_bucket = float(cum[j]) - below
    return start + (float(bounds[j]) - start) * ((rank - below) / in_bucket if in_bucket > 0 else 1.0)


def mann_whitney_from_counts(champion_counts: ArrayLike, challenger_counts: ArrayLike) -> tuple[float, float]:
    """Mann–Whitney U of the challenger and its z (one-sided "challenger slower"), from bucket counts.

    Values in one bucket are ties: ``U = Σ_j b_j (A_{<j} + a_j / 2)``, and z uses the tie-corrected
    variance and the continuity correction of ``scipy.stats.mannwhitneyu(..., method="asymptotic")``,
    so it equals scipy's on the samples expanded from the buckets (any value per bucket).
    """
    a = np.asarray(champion_counts, dtype=np.float64)
    b = np.asarray(challenger_counts, dtype=np.float64)
    n_a, n_b = float(a.sum()), float(b.sum())
    u = float((b * (np.cumsum(a) - a / 2)).sum())
    n = n_a + n_b
    ties = a + b
    var = n_a * n_b / 12 * ((n + 1) - (ties**3 - ties).sum() / (n * (n - 1))) if n > 1 else 0.0
    return u, float((u - n_a * n_b / 2 - 0.5) / math.sqrt(var)) if var > 0 else -math.inf


@dataclass(frozen=True)
class LatencyResult:
    """One look of :func:`latency_test`; latencies in seconds.

    ``z``/``p_value``: Mann–Whitney at this look alone (one-sided); ``critical_z``/``nominal_alpha``:
    the group-sequential boundary at this look; ``spent_alpha``: alpha spent up to this look.
    ``superiority``: P(challenger slower) + ½ P(tie), the common-language effect size (0.5 = same).
    """

    z: float
    p_value: float
    critical_z: float
    nominal_alpha: float
    spent_alpha: float
    significant: bool
    superiority: float
    p99_champion_s: float
    p99_challenger_s: float
    p99_ratio: float
    reject: bool
    n_champion: int
    n_challenger: int


def latency_test(champion: ArrayLike | LatencyHistogram, challenger: ArrayLike | LatencyHistogram, *, look: int,
                 max_looks: int, alpha: float = 0.05, max_p99_ratio: float = 1.2,
                 min_effect: float = 0.0) -> LatencyResult:
    """Is the challenger slower? Mann–Whitney at look ``look`` (1-based) of ``max_looks`` in a step.

    Samples are this step's latencies in seconds (cumulative over the step's looks, one array per
    variant) or :class:`LatencyHistogram` s with the same buckets; histograms are tested exactly as
    binned data (values in a bucket tie, :func:`mann_whitney_from_counts`) rather than expanded to
    made-up samples. The look is significant when z reaches :func:`group_sequential_bounds`, which
    assumes looks about equally far apart in samples (information fraction ``look / max_looks``);
    the chance of any significant look under H0 within the step is then ``alpha``. Rejection needs
    significance AND ``p99_ratio > max_p99_ratio`` AND ``superiority > 0.5 + min_effect``: with
    a million requests a 1 % slowdown is "significant", but not worth a rollback.
    """
    _check(isinstance(look, int) and isinstance(max_looks, int) and 1 <= look <= max_looks,
           f"look must be an int in 1..max_looks={max_looks}, got {look!r}: past max_looks the step's alpha is spent")
    u, z, n_a, n_b, p99_a, p99_b = _rank_test(champion, challenger)
    critical = float(group_sequential_bounds(max_looks, alpha)[look - 1])
    ratio = p99_b / p99_a if p99_a > 0 else (math.inf if p99_b > 0 else 1.0)
    superiority = u / (n_a * n_b)
    significant = bool(z >= critical)
    return LatencyResult(
        z=z, p_value=float(special.ndtr(-z)), critical_z=critical, nominal_alpha=float(special.ndtr(-critical)),
        spent_alpha=float(obf_spending(look / max_looks, alpha)), significant=significant, superiority=superiority,
        p99_champion_s=p99_a, p99_challenger_s=p99_b, p99_ratio=ratio,
        reject=significant and ratio > max_p99_ratio and superiority > 0.5 + min_effect,
        n_champion=n_a, n_challenger=n_b)


def _rank_test(champion: ArrayLike | LatencyHistogram,
               challenger: ArrayLike | LatencyHistogram) -> tuple[float, float, int, int, float, float]:
    """(U of the challenger, z, n champion, n challenger, p99 champion, p99 challenger) of either input form."""
    if isinstance(champion, LatencyHistogram) and isinstance(challenger, LatencyHistogram):
        bounds = np.asarray(champion.upper_bounds_s, dtype=np.float64)
        _check(np.array_equal(bounds, np.asarray(challenger.upper_bounds_s, dtype=np.float64)),
               "champion and challenger histograms must have the same bucket bounds")
        a, b = champion.bucket_counts(), challenger.bucket_counts()
        n_a, n_b = int(a.sum()), int(b.sum())
        _check(n_a > 0 and n_b > 0, f"latency needs samples from both variants, got {n_a} and {n_b}")
        u, z = mann_whitney_from_counts(a, b)
        return u, z, n_a, n_b, histogram_quantile(bounds, a, 0.99), histogram_quantile(bounds, b, 0.99)
    if isinstance(champion, LatencyHistogram) or isinstance(challenger, LatencyHistogram):
        raise TypeError("pass latency of both variants as samples or both as LatencyHistogram, not one of each")
    x, y = _samples(champion, "champion"), _samples(challenger, "challenger")
    res = sps.mannwhitneyu(y, x, alternative="greater", method="asymptotic")
    return (float(res.statistic), float(-special.ndtri(res.pvalue)), len(x), len(y),
            float(np.quantile(x, 0.99)), float(np.quantile(y, 0.99)))


def _samples(values: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    _check(len(x) > 0, f"latency needs samples from both variants; the {name} has none")
    _check(bool(np.isfinite(x).all() and (x >= 0).all()), f"{name} latencies must be finite seconds >= 0")
    return x
