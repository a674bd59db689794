"""The rollout's error-rate test (monitoring/rollout/error_rate.py): valid at every look.

Under H0 the sequential test keeps the chance of ever raising a false alarm at or below alpha over
20 looks, while a fixed-threshold z-test re-checked at every look (what threshold-based canary
tools do) exceeds it several times over. Monte Carlo slack: with N runs the standard error of a
rate near 0.05 is sqrt(0.05 · 0.95 / N).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special
from scipy import stats as sps

from monitoring.rollout import (
    error_rate_test,
    mixture_halfwidth,
    mixture_log_lr,
    risk_difference,
)
from tests.monitoring.rollout_looks import ALPHA, LOOKS


def simulate_error_counts(rng: np.random.Generator, sims: int, n_a: np.ndarray, n_b: np.ndarray, p_a: np.ndarray,
                          p_b: np.ndarray, stratum: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative per-stratum counts at each look, shape (sims, looks, strata).

    Look k adds ``n_a[k]``/``n_b[k]`` requests with error rates ``p_a[k]``/``p_b[k]`` to stratum
    ``stratum[k]`` (the ramp step it belongs to).
    """
    looks, strata = len(n_a), int(stratum.max()) + 1
    one_hot = np.zeros((looks, strata))
    one_hot[np.arange(looks), stratum] = 1.0
    xa = rng.binomial(n_a, p_a, size=(sims, looks))[..., None] * one_hot
    xb = rng.binomial(n_b, p_b, size=(sims, looks))[..., None] * one_hot
    na = np.broadcast_to(n_a[:, None] * one_hot, xa.shape)
    nb = np.broadcast_to(n_b[:, None] * one_hot, xb.shape)
    return np.cumsum(xa, axis=1), np.cumsum(na, axis=1), np.cumsum(xb, axis=1), np.cumsum(nb, axis=1)


def sequential_rejects(xa: np.ndarray, na: np.ndarray, xb: np.ndarray, nb: np.ndarray, alpha: float = ALPHA,
                       margin: float = 0.0) -> np.ndarray:
    """Per simulation and look: has the error test rejected by then? (what error_rate_test computes)."""
    diff, var = risk_difference(xa, na, xb, nb)
    return np.maximum.accumulate(mixture_log_lr(diff, var, margin=margin) >= math.log(1 / alpha), axis=1)


def naive_rejects(xa: np.ndarray, na: np.ndarray, xb: np.ndarray, nb: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """A fixed one-sided z-test on the pooled counts, re-checked at every look."""
    ra, rb = xa.sum(-1) / na.sum(-1), xb.sum(-1) / nb.sum(-1)
    se = np.sqrt(ra * (1 - ra) / na.sum(-1) + rb * (1 - rb) / nb.sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (rb - ra) / se, 0.0)
    return np.maximum.accumulate(z >= sps.norm.isf(alpha), axis=1)


# --- error rate ----------------------------------------------------------------------------------


def test_error_test_keeps_false_alarms_at_alpha_over_20_looks_where_a_fixed_test_does_not() -> None:
    rng = np.random.default_rng(20240601)
    sims = 4000
    flat = np.full(LOOKS, 0.02)
    xa, na, xb, nb = simulate_error_counts(rng, sims, np.full(LOOKS, 500), np.full(LOOKS, 500), flat, flat,
                                           np.zeros(LOOKS, dtype=int))
    sequential = sequential_rejects(xa, na, xb, nb)[:, -1].mean()
    naive = naive_rejects(xa, na, xb, nb)[:, -1].mean()
    slack = 3 * math.sqrt(ALPHA * (1 - ALPHA) / sims)  # 0.010
    assert sequential <= ALPHA + slack
    assert naive > 2.5 * ALPHA  # about 0.21: the false alarms of re-checked thresholds
    # the same simulated runs, checked one at a time through the public function
    for i in range(25):
        p = 1.0
        for k in range(LOOKS):
            p = error_rate_test(xa[i, k], na[i, k], xb[i, k], nb[i, k], previous_p_value=p).p_value_always_valid
        assert (p <= ALPHA) == sequential_rejects(xa[i:i + 1], na[i:i + 1], xb[i:i + 1], nb[i:i + 1])[0, -1]


def test_error_test_stays_valid_over_a_ramp_with_a_drifting_base_rate() -> None:
    """5 → 25 → 50 % over 20 looks, 2000 requests a look, base error rate 1 %, 3 %, 2 % by step.

    The stratified test holds alpha; pooling each variant's counts over steps would not, since the
    challenger's requests come mostly from the late, high-error steps.
    """
    rng = np.random.default_rng(7)
    sims = 3000
    stratum = np.repeat([0, 1, 2], [6, 7, 7])
    share = np.array([0.05, 0.25, 0.5])[stratum]
    rate = np.array([0.01, 0.03, 0.02])[stratum]
    counts = simulate_error_counts(rng, sims, np.round(2000 * (1 - share)).astype(int),
                                   np.round(2000 * share).astype(int), rate, rate, stratum)
    sequential = sequential_rejects(*counts)[:, -1].mean()
    assert sequential <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / sims)
    assert naive_rejects(*counts)[:, -1].mean() > 4 * ALPHA  # pooled and re-checked: both mistakes


def test_error_test_detects_a_doubled_error_rate() -> None:
    """1 % → 2 %, 500 requests per variant per look: found in every run by 10,000 per variant."""
    rng = np.random.default_rng(11)
    counts = simulate_error_counts(rng, 1000, np.full(LOOKS, 500), np.full(LOOKS, 500), np.full(LOOKS, 0.01),
                                   np.full(LOOKS, 0.02), np.zeros(LOOKS, dtype=int))
    rejected = sequential_rejects(*counts)
    assert rejected[:, -1].mean() >= 0.99
    first_look = np.argmax(rejected, axis=1) + 1
    assert np.median(first_look) * 500 <= 5000  # median requests per variant at detection


def test_a_challenger_failing_every_request_is_rejected_at_once() -> None:
    res = error_rate_test(3, 950, 50, 50)
    assert res.reject and res.lower > 0.5 and res.p_value_always_valid < 1e-6


def test_error_test_without_traffic_in_both_variants_says_nothing() -> None:
    res = error_rate_test([0, 0], [100, 0], [0, 0], [0, 0])
    assert (res.reject, res.statistic, res.p_value_always_valid, res.lower, res.upper) == (False, 0.0, 1.0, -1.0, 1.0)
    assert math.isnan(res.difference)


def test_error_test_stratifies_by_ramp_step() -> None:
    """Equal rates within each step, very different pooled rates: no difference is estimated."""
    res = error_rate_test([10, 300], [1000, 10000], [1, 300], [100, 10000])
    assert res.difference == pytest.approx(0.0, abs=1e-12) and not res.reject


@pytest.mark.parametrize("bad", [
    {"champion_errors": 5, "champion_n": 4, "challenger_errors": 0, "challenger_n": 10},
    {"champion_errors": -1, "champion_n": 4, "challenger_errors": 0, "challenger_n": 10},
    {"champion_errors": [1, 2], "champion_n": [4, 4], "challenger_errors": [0], "challenger_n": [10]},
])
def test_error_test_rejects_bad_counts(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="error counts"):
        error_rate_test(**bad)  # type: ignore[arg-type]


COUNTS = st.integers(0, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(COUNTS, COUNTS), min_size=1, max_size=12), st.sampled_from([0.0, 0.005, 0.02]))
def test_always_valid_p_never_rises_when_counts_only_grow(increments: list, margin: float) -> None:
    xa = na = xb = nb = 0
    p, rejected = 1.0, False
    for (ea, ma), (eb, mb) in increments:
        xa, na, xb, nb = xa + ea, na + ma, xb + eb, nb + mb
        res = error_rate_test(xa, na, xb, nb, margin=margin, previous_p_value=p)
        assert 0.0 <= res.p_value_always_valid <= p
        assert res.reject == (res.p_value_always_valid <= ALPHA) and (res.reject or not rejected)
        p, rejected = res.p_value_always_valid, res.reject


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(COUNTS, COUNTS), min_size=1, max_size=4), st.floats(-0.05, 0.05),
       st.sampled_from([0.001, 0.01, 0.1]), st.sampled_from([0.01, 0.05, 0.2]))
def test_one_look_rejects_exactly_when_the_lower_bound_clears_the_margin(strata: list, margin: float, tau: float,
                                                                         alpha: float) -> None:
    xa, na, xb, nb = (np.array(v, dtype=float) for v in zip(*[(a[0], a[1], b[0], b[1]) for a, b in strata],
                                                             strict=True))
    res = error_rate_test(xa, na, xb, nb, margin=margin, tau=tau, alpha=alpha)
    if math.isnan(res.difference):
        return
    assert res.lower <= res.difference <= res.upper
    if abs(res.lower - margin) > 1e-9:
        assert res.reject == (res.lower > margin)
    # never more eager than the fixed-sample one-sided z-test on the same estimate
    diff, var = (float(v) for v in risk_difference(xa, na, xb, nb))
    assert res.p_value_always_valid >= special.ndtr(-(diff - margin) / math.sqrt(var)) - 1e-12


def test_halfwidth_solves_the_boundary_equation() -> None:
    var = np.geomspace(1e-9, 1e-1, 40)
    half = mixture_halfwidth(var, tau=0.01, alpha=0.05)
    np.testing.assert_allclose(mixture_log_lr(half, var, tau=0.01), math.log(20), rtol=1e-9)
