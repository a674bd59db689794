"""The rollout's latency test (monitoring/rollout/latency.py), valid at every look of a step, and
its score-distribution shift (PSI, monitoring.stats.psi). Monte Carlo slack: with N runs the
standard error of a rate near 0.05 is sqrt(0.05 · 0.95 / N).
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
    LatencyHistogram,
    group_sequential_bounds,
    histogram_quantile,
    latency_test,
    mann_whitney_from_counts,
    obf_spending,
    score_shift,
)
from monitoring.stats import psi
from tests.monitoring.rollout_looks import ALPHA, EDGES, LOOKS, binned

# --- latency -------------------------------------------------------------------------------------


def test_spending_boundaries_match_published_lan_demets_values() -> None:
    """gsDesign(k=3 and 5, test.type=1, sfu=sfLDOF, alpha=0.025) upper bounds."""
    np.testing.assert_allclose(group_sequential_bounds(3, 0.025), [3.7103, 2.5114, 1.9930], atol=2e-4)
    np.testing.assert_allclose(group_sequential_bounds(5, 0.025), [4.8769, 3.3569, 2.6803, 2.2898, 2.0310],
                               atol=2e-4)
    assert group_sequential_bounds(1, ALPHA)[0] == pytest.approx(sps.norm.isf(ALPHA))
    assert obf_spending(1.0, ALPHA) == pytest.approx(ALPHA) and obf_spending(0.0, ALPHA) == 0.0


def test_spending_boundaries_hold_alpha_for_a_brownian_motion() -> None:
    rng = np.random.default_rng(3)
    sims = 200_000
    z = np.cumsum(rng.standard_normal((sims, LOOKS)), axis=1) / np.sqrt(np.arange(1, LOOKS + 1))
    crossed = (z >= group_sequential_bounds(LOOKS, ALPHA)).any(axis=1).mean()
    assert abs(crossed - ALPHA) <= 4 * math.sqrt(ALPHA * (1 - ALPHA) / sims)  # exact, not only conservative


def test_latency_test_keeps_false_alarms_at_alpha_over_20_looks() -> None:
    """H0: identical latency, 60 requests per variant per look, Prometheus buckets (many ties)."""
    rng = np.random.default_rng(5)
    sims, per_look = 600, 60
    significant = fixed = 0
    for _ in range(sims):
        a = np.cumsum([binned(rng.lognormal(-2.5, 0.6, per_look)) for _ in range(LOOKS)], axis=0)
        b = np.cumsum([binned(rng.lognormal(-2.5, 0.6, per_look)) for _ in range(LOOKS)], axis=0)
        looks = [latency_test(LatencyHistogram(EDGES, a[k], cumulative=False),
                              LatencyHistogram(EDGES, b[k], cumulative=False), look=k + 1, max_looks=LOOKS)
                 for k in range(LOOKS)]
        significant += any(r.significant for r in looks)
        fixed += any(r.p_value <= ALPHA for r in looks)
    assert significant / sims <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / sims)
    assert fixed / sims > 2.5 * ALPHA


def test_latency_test_detects_a_one_and_a_half_times_slowdown() -> None:
    rng = np.random.default_rng(9)
    first: list[int] = []
    for _ in range(40):
        a: list[float] = []
        b: list[float] = []
        for k in range(1, LOOKS + 1):
            a.extend(rng.lognormal(math.log(0.1), 0.5, 50))
            b.extend(rng.lognormal(math.log(0.15), 0.5, 50))
            if latency_test(a, b, look=k, max_looks=LOOKS).reject:
                first.append(k)
                break
    assert len(first) == 40 and np.median(first) <= 4  # about 200 requests per variant


def test_a_tiny_slowdown_on_a_million_requests_is_significant_but_not_rejected() -> None:
    rng = np.random.default_rng(13)
    a = rng.lognormal(math.log(0.1), 0.5, 1_000_000)
    res = latency_test(a, 1.01 * rng.lognormal(math.log(0.1), 0.5, 1_000_000), look=LOOKS, max_looks=LOOKS)
    assert res.significant and res.z > 5
    assert res.p99_ratio == pytest.approx(1.01, abs=0.01) and 0.5 < res.superiority < 0.51
    assert not res.reject


def test_histograms_and_their_expanded_samples_give_the_same_test() -> None:
    rng = np.random.default_rng(17)
    a, b = binned(rng.lognormal(-2.5, 0.6, 700)), binned(rng.lognormal(-2.3, 0.6, 500))
    upper = np.where(np.isinf(EDGES), 10.0, EDGES)
    hist = latency_test(LatencyHistogram(EDGES, np.cumsum(a)), LatencyHistogram(EDGES, np.cumsum(b)), look=3,
                        max_looks=10)
    raw = latency_test(np.repeat(upper, a), np.repeat(upper, b), look=3, max_looks=10)
    assert hist.z == pytest.approx(raw.z, rel=1e-9) and hist.superiority == pytest.approx(raw.superiority)
    assert (hist.n_champion, hist.n_challenger) == (700, 500)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=8))
def test_binned_mann_whitney_equals_scipy_on_expanded_samples(buckets: list[tuple[int, int]]) -> None:
    a, b = (np.array(v) for v in zip(*buckets, strict=True))
    if a.sum() == 0 or b.sum() == 0 or a.sum() + b.sum() < 2:
        return
    values = np.arange(len(a), dtype=float)
    u, z = mann_whitney_from_counts(a, b)
    ref = sps.mannwhitneyu(np.repeat(values, b), np.repeat(values, a), alternative="greater", method="asymptotic")
    assert u == pytest.approx(ref.statistic)
    assert special.ndtr(-z) == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)


def test_histogram_quantile_follows_prometheus() -> None:
    bounds = [0.1, 0.2, 0.5, math.inf]
    assert histogram_quantile(bounds, [50, 30, 20, 0], 0.5) == pytest.approx(0.1)  # rank 50, top of bucket 1
    assert histogram_quantile(bounds, [50, 30, 20, 0], 0.65) == pytest.approx(0.15)  # halfway through bucket 2
    assert histogram_quantile(bounds, [50, 30, 10, 10], 0.99) == pytest.approx(0.5)  # +Inf: highest finite bound


def test_latency_test_refuses_looks_past_its_budget_and_mixed_inputs() -> None:
    with pytest.raises(ValueError, match="alpha is spent"):
        latency_test([0.1, 0.2], [0.1, 0.3], look=21, max_looks=20)
    with pytest.raises(TypeError, match="both as LatencyHistogram"):
        latency_test([0.1], LatencyHistogram(EDGES, binned(np.array([0.1]))), look=1, max_looks=20)
    with pytest.raises(ValueError, match="same bucket bounds"):
        latency_test(LatencyHistogram([1.0, 2.0], [1, 2]), LatencyHistogram([1.0, 3.0], [1, 2]), look=1, max_looks=2)


# --- score distribution --------------------------------------------------------------------------


def test_psi_matches_a_hand_computation() -> None:
    value, drifted = score_shift([50, 30, 20], [30, 30, 40])
    hand = (0.3 - 0.5) * math.log(0.3 / 0.5) + 0 + (0.4 - 0.2) * math.log(0.4 / 0.2)  # 0.24079
    assert value == pytest.approx(hand, rel=1e-12) and drifted
    value, drifted = score_shift([100, 0], [99, 1])  # an empty bin is floored at 1e-4
    assert value == pytest.approx((0.99 - 1.0) * math.log(0.99) + (0.01 - 1e-4) * math.log(0.01 / 1e-4))
    assert not drifted and score_shift([1, 1], [1, 1]) == (0.0, False)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), min_size=1, max_size=20))
def test_psi_is_a_symmetric_non_negative_divergence(bins: list[tuple[int, int]]) -> None:
    a, b = (np.array(v) for v in zip(*bins, strict=True))
    assert psi(a, b) >= 0 and psi(a, b) == pytest.approx(psi(b, a), abs=1e-12)
    assert psi(a, 3 * a) == pytest.approx(0.0, abs=1e-12)
