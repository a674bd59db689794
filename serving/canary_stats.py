"""Canary statistics: challenger against champion at every look of a ramp, without false alarms piling up.

A canary controller ramps traffic 5 → 25 → 50 → 100 % and looks at the evidence many times per
step. A fixed-level test re-checked at every look (what KServe, Flagger and Argo Rollouts do with
thresholds) rejects a healthy challenger with a probability that grows with the number of looks:
a one-sided 5 % z-test checked at 20 looks fires on about a fifth of identical challengers
(``tests/serving/test_canary_stats.py`` measures it). Every check here stays valid at every look:

- **Error rate** (:func:`error_rate_test`): a one-sided mixture sequential probability ratio test
  (mSPRT; Johari, Koomen, Pekelis & Walsh, "Always valid inference", 2017/2022) on the difference
  of the two error rates, normal approximation, with the one-sided normal-mixture boundary of
  Howard, Ramdas, McAuliffe & Sekhon ("Time-uniform, nonparametric, nonasymptotic confidence
  sequences", Ann. Statist. 2021). Ville's inequality bounds the chance that it *ever* rejects a
  challenger no worse than the margin by ``alpha`` (up to the normal approximation), however
  often it is checked, for the whole rollout, so counts are cumulative since the canary started
  (stratified by ramp step).
- **Latency** (:func:`latency_test`): one-sided Mann–Whitney U (challenger slower, as Kayenta
  judges) with group-sequential alpha spending over the looks of one step (Lan & DeMets 1983,
  O'Brien–Fleming-type spending function), and an effect-size guard (p99 ratio) so that a tiny
  but "significant" slowdown on huge samples does not roll back.
- **Score distribution** (:func:`score_shift`): PSI of the challenger's score bins against the
  champion's, recorded at every look; a rollback rule only with ``CanaryPolicy.psi_threshold``
  (off by default: two healthy models differ in calibration). An effect size, not a p-value.
- **PR-AUC on delayed labels** (:func:`prauc_test`): once fraud labels of the canary's payments are
  known, challenger − champion average precision, its standard error from a class-stratified
  bootstrap (paired where both models scored the same payment, in shadow mode), and a one-sided
  normal bound at a Bonferroni share of ``label_alpha`` per look: ``label_alpha / K`` for a budget of
  ``K`` looks over the whole rollout. A union bound needs no model of how the looks depend on each
  other (labels arrive in bursts, days late, so information grows unevenly and the Brownian-motion
  assumption behind alpha spending does not hold); the chance that *any* of the ``K`` looks rolls back
  a challenger no worse than the margin is at most ``K · label_alpha / K``. A look whose labelled
  data is unchanged repeats the previous look's answer (seeded by the data) and takes no new share.

:func:`decide` turns one look's :class:`StepEvidence` into advance / hold / rollback under a
:class:`CanaryPolicy`, and puts every number it used into ``Decision.evidence`` (for MLflow).
All functions are pure (numpy/scipy, no I/O). Bad arguments raise ``ValueError`` saying which
(``TypeError`` for latency given as samples for one variant and a histogram for the other).
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special
from scipy import stats as sps

__all__ = ["EPS", "TAU", "CanaryPolicy", "Decision", "LabelledScores", "LatencyHistogram", "LatencyResult",
           "PrAucResult", "SequentialResult", "StepEvidence", "VariantEvidence", "average_precision", "decide",
           "error_rate_test", "group_sequential_bounds", "histogram_quantile", "latency_test",
           "mann_whitney_from_counts", "mixture_halfwidth", "mixture_log_lr", "obf_spending", "prauc_test", "psi",
           "risk_difference", "score_shift"]

EPS: Final = 1e-4  # PSI floors each bin's proportion here (as monitoring.stats.psi does)
TAU: Final = 0.01  # mixture scale: an absolute error-rate difference of one percentage point
MAX_LOOKS_LIMIT: Final = 200  # the boundary recursion costs ~ max_looks² · 5000 exps (~1 s at 200)
_GRID_STEP: Final = 0.2  # Simpson grid step for the boundary recursion, in units of one look's sd (0.05: same to 1e-5)
_GRID_SDS: Final = 7.0  # the grid spans ±7 sd of the summed statistic (mass outside < 1e-11)

Action = Literal["advance", "hold", "rollback"]

# --- error rate: one-sided normal-mixture mSPRT -------------------------------------------------


def risk_difference(champion_errors: ArrayLike, champion_n: ArrayLike, challenger_errors: ArrayLike,
                    challenger_n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Challenger minus champion error rate, stratified over ramp steps, and its variance.

    The last axis holds strata (one entry per ramp step, counts within that step); leading axes
    broadcast. Strata are combined with Cochran–Mantel–Haenszel weights ``n_a n_b / (n_a + n_b)``:
    traffic shares change from step to step while the base error rate may drift over the day, and
    pooling the raw counts would then compare the challenger's late hours with the champion's
    early ones (Simpson's paradox). The variance of each stratum is the unpooled binomial one with
    rates shrunk by half an error (``(x + 0.5) / (n + 1)``) so that zero errors give no zero
    variance. Where no stratum has traffic in both variants: difference NaN, variance inf.
    """
    xa, na, xb, nb = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64))
                                           for v in (champion_errors, champion_n, challenger_errors, challenger_n)))
    both = (na > 0) & (nb > 0)
    safe_na, safe_nb = np.where(na > 0, na, 1.0), np.where(nb > 0, nb, 1.0)
    weight = np.where(both, safe_na * safe_nb / (safe_na + safe_nb), 0.0)
    pa, pb = (xa + 0.5) / (na + 1), (xb + 0.5) / (nb + 1)
    stratum_var = pa * (1 - pa) / safe_na + pb * (1 - pb) / safe_nb
    total = weight.sum(axis=-1)
    safe_total = np.where(total > 0, total, 1.0)
    diff = (weight * (xb / safe_nb - xa / safe_na)).sum(axis=-1) / safe_total
    var = (weight**2 * stratum_var).sum(axis=-1) / safe_total**2
    return np.where(total > 0, diff, np.nan), np.where(total > 0, var, np.inf)


def mixture_log_lr(difference: ArrayLike, variance: ArrayLike, *, margin: float = 0.0, tau: float = TAU) -> np.ndarray:
    """Log of the one-sided normal-mixture likelihood ratio for "difference > margin" (vectorised).

    With ``d = difference - margin``, ``V = variance`` and a half-normal mixing density of scale
    ``tau`` on the alternatives above the margin, the mixture of Gaussian likelihood ratios is

        Λ = 2 sqrt(V / (V + τ²)) · exp(s² / 2) · Φ(s),   s = d τ / sqrt(V (V + τ²)),

    (Johari et al.'s two-sided mSPRT statistic times ``2Φ(s)``; Howard et al. 2021, one-sided
    normal mixture). Under "difference <= margin" Λ is a non-negative supermartingale in the
    information ``1/V``, so P(Λ ever >= 1/alpha) <= alpha (Ville). Λ increases with ``d``.
    """
    d = np.asarray(difference, dtype=np.float64) - margin
    v = np.asarray(variance, dtype=np.float64)
    s = d * tau / np.sqrt(v * (v + tau**2))
    return math.log(2.0) - 0.5 * np.log1p(tau**2 / v) + 0.5 * s**2 + special.log_ndtr(s)


def mixture_halfwidth(variance: ArrayLike, *, tau: float = TAU, alpha: float = 0.05) -> np.ndarray:
    """How far above the margin the estimate must lie for :func:`mixture_log_lr` to reach log(1/alpha).

    ``h(s) = s²/2 + log Φ(s)`` is increasing and convex, so ``h(s) = log(1/alpha) + ½ log(1 + τ²/V)
    - log 2`` has one root ``s*``; Newton from ``sqrt(2 (c + log 2))`` (which lies right of it)
    converges monotonically. The half-width is ``s* sqrt(V (V + τ²)) / τ``: ``estimate - halfwidth``
    is an always-valid one-sided lower confidence bound at level ``1 - alpha``.
    """
    v = np.asarray(variance, dtype=np.float64)
    c = math.log(1 / alpha) + 0.5 * np.log1p(tau**2 / v) - math.log(2.0)
    s = np.sqrt(2 * (c + math.log(2.0)))
    for _ in range(100):
        log_cdf = special.log_ndtr(s)
        slope = s + np.exp(-0.5 * s * s - 0.5 * math.log(2 * math.pi) - log_cdf)
        step = (0.5 * s * s + log_cdf - c) / slope
        s = s - step
        if np.all(np.abs(step) <= 1e-13 * np.maximum(1.0, np.abs(s))):
            break
    return s * np.sqrt(v * (v + tau**2)) / tau


@dataclass(frozen=True)
class SequentialResult:
    """One look of :func:`error_rate_test`. Rates and bounds are fractions of requests (0.01 = 1 %).

    ``statistic``: log mixture likelihood ratio at this look. ``p_value_always_valid``: the running
    minimum of ``1/Λ`` over the looks so far (``previous_p_value`` folded in), valid however often
    it is read. ``lower``/``upper``: always-valid one-sided (1 - alpha) bounds of the difference
    challenger − champion at this look (together a 1 - 2·alpha interval). ``difference``: the
    stratified estimate (NaN without traffic in both variants).
    """

    statistic: float
    p_value_always_valid: float
    reject: bool
    lower: float
    upper: float
    difference: float
    margin: float
    alpha: float


def error_rate_test(champion_errors: ArrayLike, champion_n: ArrayLike, challenger_errors: ArrayLike,
                    challenger_n: ArrayLike, *, margin: float = 0.0, alpha: float = 0.05, tau: float = TAU,
                    previous_p_value: float = 1.0) -> SequentialResult:
    """Always-valid test that the challenger's error rate exceeds the champion's by more than ``margin``.

    Counts are cumulative since the canary started: a number each, or one entry per ramp step
    (see :func:`risk_difference`). ``margin`` is an absolute difference of rates (0.002 = 0.2
    percentage points); ``tau`` the mixture scale, best near the smallest worsening worth catching
    (the test stays valid for any ``tau``; a poor choice only costs samples). Pass the previous
    look's ``p_value_always_valid`` as ``previous_p_value`` (1.0 at the first look): the p-value is
    then non-increasing and ``reject`` (p <= alpha) stays true once it has been true. On its own a
    look rejects exactly when ``lower > margin``.
    """
    counts = [np.atleast_1d(np.asarray(v, dtype=np.float64))
              for v in (champion_errors, champion_n, challenger_errors, challenger_n)]
    _check_counts(*counts)
    _check(-1 < margin < 1, f"margin must be an error-rate difference in (-1, 1), got {margin}")
    _check(0 < alpha < 1, f"alpha must be in (0, 1), got {alpha}")
    _check(tau > 0, f"tau must be > 0, got {tau}")
    _check(0 <= previous_p_value <= 1, f"previous_p_value must be in [0, 1], got {previous_p_value}")
    diff, var = (float(x) for x in risk_difference(*counts))
    if not math.isfinite(var):
        return SequentialResult(0.0, previous_p_value, previous_p_value <= alpha, -1.0, 1.0, math.nan, margin, alpha)
    log_lr = float(mixture_log_lr(diff, var, margin=margin, tau=tau))
    half = float(mixture_halfwidth(var, tau=tau, alpha=alpha))
    p = min(previous_p_value, math.exp(-max(log_lr, 0.0)))
    return SequentialResult(log_lr, p, p <= alpha, max(diff - half, -1.0), min(diff + half, 1.0), diff, margin, alpha)


def _check_counts(xa: np.ndarray, na: np.ndarray, xb: np.ndarray, nb: np.ndarray) -> None:
    _check(xa.ndim == 1 and xa.shape == na.shape == xb.shape == nb.shape,
           f"error counts must be numbers or 1-D, one entry per ramp step, all the same length; got shapes "
           f"{xa.shape}, {na.shape}, {xb.shape}, {nb.shape}")
    ok = np.isfinite(xa).all() and np.isfinite(xb).all() and np.isfinite(na).all() and np.isfinite(nb).all()
    _check(bool(ok and (xa >= 0).all() and (xb >= 0).all() and (xa <= na).all() and (xb <= nb).all()),
           "error counts must be finite with 0 <= errors <= requests in every ramp step")


# --- latency: Mann–Whitney with O'Brien–Fleming-type alpha spending -----------------------------


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


# --- score distribution --------------------------------------------------------------------------


def psi(ref_counts: ArrayLike, cur_counts: ArrayLike, eps: float = EPS) -> float:
    """Population stability index of two binnings of the same bins.

    Proportions per bin, each floored at ``eps`` (no renormalisation), then
    ``sum((p_cur - p_ref) * ln(p_cur / p_ref))`` (the definition of ``monitoring.stats.psi``,
    which serving may not import).
    """
    ref = np.asarray(ref_counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    p_ref = np.maximum(ref / max(ref.sum(), 1), eps)
    p_cur = np.maximum(cur / max(cur.sum(), 1), eps)
    return float(np.sum((p_cur - p_ref) * np.log(p_cur / p_ref)))


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


# --- PR-AUC on delayed labels: class-stratified bootstrap, Bonferroni over the rollout's looks ----


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


def average_precision(scores: ArrayLike, labels: ArrayLike, weights: ArrayLike | None = None) -> float:
    """PR-AUC as average precision: ``Σ (R_k - R_{k-1}) P_k`` over the distinct scores, highest first.

    Tied scores form one threshold (scikit-learn's ``average_precision_score``, ``sample_weight``
    as ``weights``). NaN without (weighted) frauds.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    _check(s.shape == y.shape == w.shape, f"scores, labels and weights must be equally long, got {s.shape}, "
                                          f"{y.shape} and {w.shape}")
    if not (w * y > 0).any():
        return math.nan
    order, ends = _threshold_order(s)
    return float(_weighted_ap(w[order][None, :], y[order], ends)[0])


def _threshold_order(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order by score, highest first, and the last position of each run of tied scores."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    return order, np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]


def _weighted_ap(weights: np.ndarray, y_sorted: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Average precision per row of ``weights`` (replicates × rows, rows in threshold order)."""
    tp = np.cumsum(weights * y_sorted, axis=1)[:, ends]
    total = np.cumsum(weights, axis=1)[:, ends]
    gained = np.diff(tp, axis=1, prepend=0.0)
    precision = tp / np.where(total > 0, total, 1.0)
    return (gained * precision).sum(axis=1) / tp[:, -1]


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
        order, ends = _threshold_order(np.r_[s_p, s])
        _, cells = np.unique(np.c_[h, y], axis=0, return_inverse=True)
        return cls(order, ends, np.r_[y_p, y][order], np.r_[np.ones(len(y_p)), w], cells.ravel())

    def ap(self, paired_counts: np.ndarray, unpaired_counts: np.ndarray) -> np.ndarray:
        counts = np.hstack([paired_counts, unpaired_counts]) * self.weights
        return _weighted_ap(counts[:, self.order], self.labels, self.ends)


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
        paired = _resample_counts(rng, paired_cells, c)
        boot.append(b.ap(paired, _resample_counts(rng, b.unpaired_cells, c))
                    - a.ap(paired, _resample_counts(rng, a.unpaired_cells, c)))
    diff, se = ap_b - ap_a, float(np.std(np.concatenate(boot), ddof=1))
    crit = float(-special.ndtri(alpha))
    z = (diff + margin) / se if se > 0 else (math.copysign(math.inf, diff + margin) if diff + margin else 0.0)
    upper = diff + crit * se
    return PrAucResult(ap_a, ap_b, diff, se, diff - crit * se, upper, z, crit, alpha, margin, upper < -margin,
                       counts["n_champion"], counts["n_challenger"], counts["positives_champion"],
                       counts["positives_challenger"], counts["n_paired"])


def _resample_counts(rng: np.random.Generator, cells: np.ndarray, replicates: int) -> np.ndarray:
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


# --- the decision --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VariantEvidence:
    """What one variant (champion or challenger) did, as seen at one look.

    ``requests``/``errors``: one entry per ramp step since the canary started, each the count *within*
    that step (not a running total: :func:`risk_difference` stratifies by step), the last entry the
    current step so far; a single number if there was one step. At 100 % the champion's last entry
    is 0: the error test then rests on the earlier steps, which had a concurrent champion.
    ``latency``: this step's latencies in seconds, or a :class:`LatencyHistogram` of them.
    ``score_counts``: this step's scores counted per bin (the same bins for both variants).
    """

    requests: ArrayLike
    errors: ArrayLike
    latency: ArrayLike | LatencyHistogram
    score_counts: ArrayLike


@dataclass(frozen=True, eq=False)
class StepEvidence:
    """One look at one ramp step. ``look``: 1-based count of looks in this step, this one included.
    ``dwell_s``: seconds since the step started. ``error_p_value``: the previous look's
    ``error_rate.p_value`` from ``Decision.evidence`` (1.0 at the first look of the canary).
    ``labels``: the canary's labelled payments since it started, labels known by this look (None:
    not read). ``label_looks`` / ``label_fingerprint``: the previous look's ``prauc.look`` and
    ``prauc.fingerprint`` (0 before PR-AUC was first judged)."""

    champion: VariantEvidence
    challenger: VariantEvidence
    dwell_s: float
    look: int
    error_p_value: float = 1.0
    labels: LabelledScores | None = None
    label_looks: int = 0
    label_fingerprint: int = 0


@dataclass(frozen=True)
class CanaryPolicy:
    """How a canary is judged. Rates are fractions, times seconds, counts per variant.

    ``alpha`` is the chance that a test rolls back a challenger that is no worse, for the whole rollout:
    half for the error test (always valid over all steps), half for latency split evenly over
    ``ramp_steps`` compared steps (Bonferroni; the 100 % step has no champion traffic), each step
    spending its share over ``max_looks`` looks. PSI has no alpha (an effect-size threshold).

    ``psi_threshold`` (None: PSI is recorded, never acted on; the default) rolls back when the two
    *models'* score distributions differ by that much. Off by default, because two healthy models
    differ in calibration: trained on overlapping windows with two and three epochs, both passing
    the gate (PR-AUC 0.38 and 0.39), they scored live traffic with PSI 0.64 between them in the
    score bins (paired, in shadow) and 1.23 at 5 % (the challenger's customers only), where the
    input-drift rule of thumb is 0.2. Such a PSI can't tell a broken challenger from a different
    one; the gate, the error test and PR-AUC on labelled traffic judge its quality.
    A step that is still holding after ``max_looks`` looks is rolled back: size ``max_looks`` (times
    the look interval) to give ``min_dwell_s`` and ``min_samples`` room at the slowest traffic.

    ``error_margin``: roll back once the challenger's error rate is shown worse by more than this
    (absolute). ``error_advance_margin``: if set, also hold until the always-valid upper bound shows
    it worse by at most this (non-inferiority; must exceed 0 to be reachable on equal rates). Unset,
    the error test only rolls back: holding whenever the estimate is merely above the margin would
    hold a healthy challenger about half the time, and then roll it back when its looks run out.

    PR-AUC on labelled traffic (:func:`prauc_test`) has its own ``label_alpha`` for the whole
    rollout, on top of ``alpha`` (so a rollout's chance of any false rollback is at most
    ``alpha + label_alpha``; folding it into ``alpha`` would have weakened the existing tests):
    ``label_alpha / label_look_budget`` per look that judges new labels. ``label_looks``: that budget;
    by default ``max_looks · (ramp_steps + 2)``, every look the controller can take (shadow, the
    compared steps and 100 %, each at most ``max_looks``). Roll back once the challenger's PR-AUC is
    shown lower by more than ``prauc_margin``; judged only with ``min_label_positives`` labelled
    frauds per variant. It never holds: labels take days, and a step must not wait for them.
    ``prauc_bootstrap``: bootstrap replicates per look.
    """

    min_dwell_s: float = 300.0
    min_samples: int = 1000
    alpha: float = 0.05
    error_margin: float = 0.0
    error_advance_margin: float | None = None
    error_tau: float = TAU
    max_looks: int = 20
    ramp_steps: int = 3
    max_p99_ratio: float = 1.2
    min_latency_effect: float = 0.0
    psi_threshold: float | None = None
    label_alpha: float = 0.025
    prauc_margin: float = 0.02
    min_label_positives: int = 30
    label_looks: int | None = None
    prauc_bootstrap: int = 200

    def __post_init__(self) -> None:
        _check(self.min_dwell_s >= 0, f"min_dwell_s must be >= 0 seconds, got {self.min_dwell_s}")
        _check(self.min_samples >= 1, f"min_samples must be >= 1, got {self.min_samples}")
        _check(0 < self.alpha < 1, f"alpha must be in (0, 1), got {self.alpha}")
        _check(-1 < self.error_margin < 1, f"error_margin must be in (-1, 1), got {self.error_margin}")
        _check(self.error_advance_margin is None or self.error_margin <= self.error_advance_margin < 1,
               f"error_advance_margin must be None or in [error_margin, 1), got {self.error_advance_margin}")
        _check(self.error_tau > 0, f"error_tau must be > 0, got {self.error_tau}")
        _check(1 <= self.max_looks <= MAX_LOOKS_LIMIT, f"max_looks must be in 1..{MAX_LOOKS_LIMIT}")
        _check(self.ramp_steps >= 1, f"ramp_steps must be >= 1, got {self.ramp_steps}")
        _check(self.max_p99_ratio >= 1, f"max_p99_ratio must be >= 1, got {self.max_p99_ratio}")
        _check(0 <= self.min_latency_effect < 0.5, "min_latency_effect must be in [0, 0.5)")
        _check(self.psi_threshold is None or self.psi_threshold > 0,
               f"psi_threshold must be None or > 0, got {self.psi_threshold}")
        _check(0 < self.label_alpha < 1, f"label_alpha must be in (0, 1), got {self.label_alpha}")
        _check(0 <= self.prauc_margin < 1, f"prauc_margin must be a PR-AUC difference in [0, 1), got {self.prauc_margin}")
        _check(self.min_label_positives >= 1, f"min_label_positives must be >= 1, got {self.min_label_positives}")
        _check(self.label_looks is None or self.label_looks >= 1, f"label_looks must be None or >= 1, got {self.label_looks}")
        _check(self.prauc_bootstrap >= 20, f"prauc_bootstrap must be >= 20 replicates, got {self.prauc_bootstrap}")

    @property
    def error_alpha(self) -> float:
        """Alpha of the error-rate test over the whole rollout."""
        return self.alpha / 2

    @property
    def latency_alpha(self) -> float:
        """Alpha of the latency test within one step."""
        return self.alpha / (2 * self.ramp_steps)

    @property
    def label_look_budget(self) -> int:
        """How many looks over the whole rollout may judge PR-AUC on new labels."""
        return self.label_looks if self.label_looks is not None else self.max_looks * (self.ramp_steps + 2)

    @property
    def label_look_alpha(self) -> float:
        """Alpha of the PR-AUC test at one look (Bonferroni over :attr:`label_look_budget`)."""
        return self.label_alpha / self.label_look_budget


@dataclass(frozen=True)
class Decision:
    """What to do at this look, why (one line per reason), and every number used (MLflow metrics).
    ``notes``: what was looked at without deciding anything (PR-AUC not judged yet, or its estimate)."""

    action: Action
    reasons: list[str]
    evidence: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def decide(evidence: StepEvidence, policy: CanaryPolicy) -> Decision:
    """Advance, hold or roll back at one look.

    Rollback when a test rejects in the challenger's disfavour: the error test, the latency test
    (both valid at any look and any sample size, so a challenger failing every request goes on its
    first look), or PSI >= threshold (only once both variants have ``min_samples`` scores: PSI is
    biased upward on few); also when the step is past ``max_looks`` looks without having advanced,
    since its latency alpha is spent. Hold while dwell or samples are below the minimum (requests:
    the challenger's in this step, the champion's over the canary; latencies and scores: both
    variants' as passed), or while the evidence is inconclusive: the
    p99 ratio above its limit without a significant slowdown yet, or (with ``error_advance_margin``)
    the error rate's upper bound above that margin. PR-AUC on labelled traffic rolls back when
    :func:`prauc_test` shows the challenger worse by more than ``prauc_margin``; too few labels yet
    (or no labels read) is a note, never a hold, so a rollout is not blocked by labels that take days.
    Advance otherwise. Evidence keys are ``<check>.<number>``; booleans are 0.0/1.0.
    """
    _check(isinstance(evidence.look, int) and evidence.look >= 1, f"look must be an int >= 1, got {evidence.look!r}")
    ev: dict[str, float] = {"look": evidence.look, "dwell_s": evidence.dwell_s, "policy.min_dwell_s": policy.min_dwell_s,
                            "policy.min_samples": policy.min_samples, "policy.alpha": policy.alpha,
                            "policy.max_looks": policy.max_looks, "policy.ramp_steps": policy.ramp_steps}
    rollback: list[str] = []
    hold: list[str] = []
    short = _short_samples(evidence, ev, policy.min_samples)
    _judge_errors(evidence, policy, ev, rollback, hold)
    if evidence.look > policy.max_looks:
        rollback.append(f"look {evidence.look} is past max_looks={policy.max_looks} without evidence to advance: "
                        "the step's latency alpha is spent")
    else:
        _judge_latency(evidence, policy, ev, rollback, hold)
    _judge_scores(evidence, policy, ev, rollback, "scores" not in short)
    notes: list[str] = []
    _judge_prauc(evidence, policy, ev, rollback, notes)
    if evidence.dwell_s < policy.min_dwell_s:
        hold.append(f"dwell {evidence.dwell_s:.0f} s < min_dwell_s {policy.min_dwell_s:.0f} s")
    hold.extend(f"{what}: {n_a} champion / {n_b} challenger < min_samples {policy.min_samples}"
                for what, (n_a, n_b) in short.items())
    ev = {k: float(v) for k, v in ev.items()}
    if rollback:
        return Decision("rollback", rollback, ev, notes)
    if hold:
        return Decision("hold", hold, ev, notes)
    summary = (f"no test rejects after {evidence.dwell_s:.0f} s with at least {policy.min_samples} samples per "
               "variant, and no estimate is above its limit")
    return Decision("advance", [summary], ev, notes)


def _short_samples(evidence: StepEvidence, ev: dict[str, float], minimum: int) -> dict[str, tuple[int, int]]:
    """Sample counts per check (champion, challenger), recorded; those below ``minimum`` returned."""
    # the challenger must have served min_samples at this traffic level; the champion is the baseline
    # over the whole canary (at 100 % it serves nothing in the current step)
    counts = {"requests": [int(np.sum(np.asarray(evidence.champion.requests))),
                           int(np.atleast_1d(np.asarray(evidence.challenger.requests))[-1])],
              "latencies": [_n_latency(v.latency) for v in (evidence.champion, evidence.challenger)],
              "scores": [int(np.asarray(v.score_counts, dtype=np.float64).sum())
                         for v in (evidence.champion, evidence.challenger)]}
    short = {}
    for what, (n_a, n_b) in counts.items():
        ev[f"champion.{what}"], ev[f"challenger.{what}"] = n_a, n_b
        if min(n_a, n_b) < minimum:
            short[what] = (n_a, n_b)
    return short


def _n_latency(latency: ArrayLike | LatencyHistogram) -> int:
    if isinstance(latency, LatencyHistogram):
        return int(latency.bucket_counts().sum())
    return int(np.asarray(latency).size)


def _judge_errors(evidence: StepEvidence, policy: CanaryPolicy, ev: dict[str, float], rollback: list[str],
                  hold: list[str]) -> None:
    a, b = evidence.champion, evidence.challenger
    res = error_rate_test(a.errors, a.requests, b.errors, b.requests, margin=policy.error_margin,
                          alpha=policy.error_alpha, tau=policy.error_tau, previous_p_value=evidence.error_p_value)
    rate_a, rate_b = _rate(a), _rate(b)
    ev.update({"error_rate.champion": rate_a, "error_rate.challenger": rate_b, "error_rate.difference": res.difference,
               "error_rate.lower": res.lower, "error_rate.upper": res.upper, "error_rate.log_lr": res.statistic,
               "error_rate.p_value": res.p_value_always_valid, "error_rate.reject": float(res.reject),
               "error_rate.margin": policy.error_margin, "error_rate.alpha": policy.error_alpha,
               "error_rate.tau": policy.error_tau, "error_rate.previous_p_value": evidence.error_p_value})
    if res.reject:
        rollback.append(f"error rate {rate_b:.4%} vs champion {rate_a:.4%}: worse by more than {policy.error_margin:.4%} "
                        f"(always-valid p {res.p_value_always_valid:.3g} <= {policy.error_alpha:g})")
    elif policy.error_advance_margin is not None and res.upper > policy.error_advance_margin:
        ev["error_rate.advance_margin"] = policy.error_advance_margin
        hold.append(f"error rate {rate_b:.4%} vs champion {rate_a:.4%}: a worsening up to {res.upper:.4%} is not "
                    f"ruled out yet (error_advance_margin {policy.error_advance_margin:.4%})")


def _rate(v: VariantEvidence) -> float:
    n = float(np.sum(np.asarray(v.requests, dtype=np.float64)))
    return float(np.sum(np.asarray(v.errors, dtype=np.float64))) / n if n > 0 else math.nan


def _judge_latency(evidence: StepEvidence, policy: CanaryPolicy, ev: dict[str, float], rollback: list[str],
                   hold: list[str]) -> None:
    if min(_n_latency(evidence.champion.latency), _n_latency(evidence.challenger.latency)) == 0:
        return  # held for samples
    res = latency_test(evidence.champion.latency, evidence.challenger.latency, look=evidence.look,
                       max_looks=policy.max_looks, alpha=policy.latency_alpha, max_p99_ratio=policy.max_p99_ratio,
                       min_effect=policy.min_latency_effect)
    ev.update({f"latency.{k}": float(getattr(res, k)) for k in (
        "z", "p_value", "critical_z", "nominal_alpha", "spent_alpha", "significant", "superiority",
        "p99_champion_s", "p99_challenger_s", "p99_ratio", "reject")})
    ev.update({"latency.alpha": policy.latency_alpha, "latency.max_p99_ratio": policy.max_p99_ratio,
               "latency.min_effect": policy.min_latency_effect})
    p99 = f"p99 {res.p99_challenger_s * 1e3:.1f} ms vs champion {res.p99_champion_s * 1e3:.1f} ms"
    if res.reject:
        rollback.append(f"latency: challenger slower (z {res.z:.2f} >= {res.critical_z:.2f} at look "
                        f"{evidence.look}/{policy.max_looks}), {p99}, ratio {res.p99_ratio:.2f} > {policy.max_p99_ratio}")
    elif res.p99_ratio > policy.max_p99_ratio:
        hold.append(f"latency: {p99}, ratio {res.p99_ratio:.2f} > {policy.max_p99_ratio}, "
                    f"not yet significant (z {res.z:.2f} < {res.critical_z:.2f})")


def _judge_scores(evidence: StepEvidence, policy: CanaryPolicy, ev: dict[str, float], rollback: list[str],
                  enough: bool) -> None:
    threshold = policy.psi_threshold
    value, drifted = score_shift(evidence.champion.score_counts, evidence.challenger.score_counts,
                                 threshold=threshold if threshold is not None else math.inf)
    ev.update({"score.psi": value, "score.drifted": float(drifted and enough)})
    if threshold is not None:
        ev["score.threshold"] = threshold
    if drifted and enough:
        rollback.append(f"score distribution shifted: PSI {value:.3f} >= {policy.psi_threshold}")


def _judge_prauc(evidence: StepEvidence, policy: CanaryPolicy, ev: dict[str, float], rollback: list[str],
                 notes: list[str]) -> None:
    budget = policy.label_look_budget
    ev.update({"prauc.judged": 0.0, "prauc.margin": policy.prauc_margin, "prauc.alpha": policy.label_alpha,
               "prauc.look_budget": budget, "prauc.min_positives": policy.min_label_positives,
               "prauc.look": evidence.label_looks, "prauc.fingerprint": evidence.label_fingerprint})
    if evidence.labels is None:
        notes.append("PR-AUC not judged: no labelled traffic was read")
        return
    counts = evidence.labels.counts()
    ev.update({f"prauc.{k}": v for k, v in counts.items()})
    pos_a, pos_b = counts["positives_champion"], counts["positives_challenger"]
    if min(pos_a, pos_b) < policy.min_label_positives or counts["n_champion"] <= pos_a or counts["n_challenger"] <= pos_b:
        notes.append(f"PR-AUC not judged: not enough labels yet ({pos_a} champion / {pos_b} challenger labelled "
                     f"frauds, min_label_positives {policy.min_label_positives})")
        return
    fingerprint = evidence.labels.fingerprint()
    same = evidence.label_looks > 0 and fingerprint == evidence.label_fingerprint
    look = evidence.label_looks if same else evidence.label_looks + 1  # unchanged data: the same answer again
    ev.update({"prauc.look": look, "prauc.fingerprint": fingerprint})
    if look > budget:
        notes.append(f"PR-AUC not judged: its alpha is spent over {budget} looks with new labels (label_looks)")
        return
    res = prauc_test(evidence.labels, margin=policy.prauc_margin, alpha=policy.label_look_alpha,
                     n_boot=policy.prauc_bootstrap, seed=fingerprint)
    ev.update({"prauc.judged": 1.0, "prauc.champion": res.champion, "prauc.challenger": res.challenger,
               "prauc.difference": res.difference, "prauc.se": res.se, "prauc.lower": res.lower,
               "prauc.upper": res.upper, "prauc.z": res.z, "prauc.critical_z": res.critical_z,
               "prauc.look_alpha": res.alpha, "prauc.reject": float(res.reject)})
    line = (f"PR-AUC {res.challenger:.3f} vs champion {res.champion:.3f} on labelled traffic: difference "
            f"{res.difference:+.3f}, bounds [{res.lower:+.3f}, {res.upper:+.3f}] at per-look alpha {res.alpha:.2g} "
            f"(look {look}/{budget}); n {res.n_challenger} challenger / {res.n_champion} champion payments, "
            f"{res.positives_challenger} / {res.positives_champion} frauds, {res.n_paired} paired")
    if res.reject:
        rollback.append(f"{line}: worse by more than the margin {policy.prauc_margin:g}")
    else:
        notes.append(line)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
