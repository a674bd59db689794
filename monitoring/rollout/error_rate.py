"""Error rate of a rollout: a one-sided normal-mixture mSPRT on challenger − champion, valid at every look.

A one-sided mixture sequential probability ratio test (mSPRT; Johari, Koomen, Pekelis & Walsh,
"Always valid inference", 2017/2022) on the difference of the two error rates, normal
approximation, with the one-sided normal-mixture boundary of Howard, Ramdas, McAuliffe & Sekhon
("Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021). Ville's
inequality bounds the chance that it *ever* rejects a challenger no worse than the margin by
``alpha`` (up to the normal approximation), however often it is checked, for the whole rollout, so
counts are cumulative since the canary started (stratified by ramp step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from monitoring.rollout._check import check as _check

__all__ = ["TAU", "SequentialResult", "error_rate_test", "mixture_halfwidth", "mixture_log_lr", "risk_difference"]

TAU: Final = 0.01  # mixture scale: an absolute error-rate difference of one percentage point


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
