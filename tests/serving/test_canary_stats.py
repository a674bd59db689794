"""Canary statistics (serving/canary_stats.py): valid at every look, and the decision built on them.

The simulations are the point of the design: under H0 the sequential checks keep the chance of
ever raising a false alarm at or below alpha over 20 looks, while a fixed-threshold z-test re-checked
at every look (what threshold-based canary tools do) exceeds it several times over. Monte Carlo
slack: with N runs the standard error of a rate near 0.05 is sqrt(0.05 · 0.95 / N).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special
from scipy import stats as sps

from serving.canary_stats import (
    CanaryPolicy,
    LabelledScores,
    LatencyHistogram,
    StepEvidence,
    VariantEvidence,
    average_precision,
    decide,
    error_rate_test,
    group_sequential_bounds,
    histogram_quantile,
    latency_test,
    mann_whitney_from_counts,
    mixture_halfwidth,
    mixture_log_lr,
    obf_spending,
    prauc_test,
    psi,
    risk_difference,
    score_shift,
)

ALPHA = 0.05
LOOKS = 20
EDGES = np.r_[np.geomspace(0.005, 5.0, 30), np.inf]  # Prometheus-like latency buckets, seconds


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


def binned(values: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(EDGES, values), minlength=len(EDGES))


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


# --- the decision --------------------------------------------------------------------------------

POLICY = CanaryPolicy(min_dwell_s=300, min_samples=1000, alpha=0.05, max_looks=LOOKS)
SCORES = np.array([400, 300, 200, 100])


def variant(rng: np.random.Generator, n: int = 4000, errors: int = 40, slow: float = 1.0,
            scores: np.ndarray = SCORES) -> VariantEvidence:
    return VariantEvidence(requests=[2000, n], errors=[20, errors], latency=slow * rng.lognormal(-2.5, 0.4, n),
                           score_counts=scores)


def evidence(champion: VariantEvidence, challenger: VariantEvidence, dwell_s: float = 600.0,
             look: int = 10) -> StepEvidence:
    return StepEvidence(champion=champion, challenger=challenger, dwell_s=dwell_s, look=look)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(23)


def test_a_healthy_challenger_advances_with_every_number_in_the_evidence(rng: np.random.Generator) -> None:
    decision = decide(evidence(variant(rng), variant(rng, errors=38)), POLICY)
    assert decision.action == "advance", decision.reasons
    ev = decision.evidence
    assert all(isinstance(v, float) for v in ev.values())
    for key in ("dwell_s", "look", "champion.requests", "challenger.latencies", "error_rate.difference",
                "error_rate.lower", "error_rate.upper", "error_rate.p_value", "error_rate.alpha", "latency.z",
                "latency.critical_z", "latency.p99_ratio", "latency.superiority", "latency.alpha", "score.psi",
                "policy.min_samples"):
        assert key in ev
    assert ev["error_rate.alpha"] == 0.025 and ev["latency.alpha"] == pytest.approx(0.05 / 6)
    assert ev["challenger.requests"] == 4000.0


def test_hold_while_the_step_is_young(rng: np.random.Generator) -> None:
    decision = decide(evidence(variant(rng), variant(rng), dwell_s=120), POLICY)
    assert decision.action == "hold" and any("dwell 120 s" in r for r in decision.reasons)


def test_hold_while_samples_are_few(rng: np.random.Generator) -> None:
    decision = decide(evidence(variant(rng), variant(rng, n=300, errors=3, scores=SCORES // 10)), POLICY)
    assert decision.action == "hold"
    assert {r.split(":")[0] for r in decision.reasons} == {"requests", "latencies", "scores"}


def test_the_full_traffic_step_compares_with_the_champion_of_earlier_steps(rng: np.random.Generator) -> None:
    """At 100 % the champion serves nothing in the current step: no hold for its requests."""
    a, b = variant(rng), variant(rng)
    champion = VariantEvidence([2000, 4000, 0], [20, 40, 0], a.latency, a.score_counts)
    challenger = VariantEvidence([2000, 4000, 5000], [20, 40, 50], b.latency, b.score_counts)
    decision = decide(evidence(champion, challenger), POLICY)
    assert decision.action == "advance", decision.reasons
    assert decision.evidence["champion.requests"] == 6000.0 and decision.evidence["challenger.requests"] == 5000.0


def test_rollback_on_errors_even_before_the_minimums(rng: np.random.Generator) -> None:
    decision = decide(evidence(variant(rng), variant(rng, n=200, errors=30), dwell_s=30, look=1), POLICY)
    assert decision.action == "rollback" and decision.reasons[0].startswith("error rate")
    assert decision.evidence["error_rate.reject"] == 1.0 and decision.evidence["error_rate.p_value"] <= 0.025


def test_rollback_on_latency(rng: np.random.Generator) -> None:
    decision = decide(evidence(variant(rng), variant(rng, slow=1.5)), POLICY)
    assert decision.action == "rollback" and decision.reasons[0].startswith("latency")
    assert decision.evidence["latency.p99_ratio"] > 1.2 and decision.evidence["latency.reject"] == 1.0


def test_rollback_on_a_shifted_score_distribution(rng: np.random.Generator) -> None:
    guarded = replace(POLICY, psi_threshold=0.2)
    decision = decide(evidence(variant(rng), variant(rng, scores=SCORES[::-1])), guarded)
    assert decision.action == "rollback" and decision.reasons == [
        f"score distribution shifted: PSI {decision.evidence['score.psi']:.3f} >= 0.2"]
    unguarded = decide(evidence(variant(rng), variant(rng, scores=SCORES[::-1])), POLICY)  # the default
    assert unguarded.action == "advance" and unguarded.evidence["score.psi"] == decision.evidence["score.psi"]


def test_psi_on_few_scores_does_not_roll_back(rng: np.random.Generator) -> None:
    decision = decide(evidence(variant(rng), variant(rng, scores=np.array([1, 2, 3, 4]))),
                      replace(POLICY, psi_threshold=0.2))
    assert decision.action == "hold" and decision.evidence["score.psi"] > 0.2
    assert decision.evidence["score.drifted"] == 0.0


def test_rollback_when_the_step_runs_out_of_looks(rng: np.random.Generator) -> None:
    decision = decide(evidence(variant(rng), variant(rng), look=LOOKS + 1), POLICY)
    assert decision.action == "rollback" and "past max_looks" in decision.reasons[0]


def test_hold_while_the_evidence_is_inconclusive(rng: np.random.Generator) -> None:
    a = variant(rng, n=1000, errors=10)
    tail = rng.lognormal(-2.5, 0.4, 1000)
    tail[-30:] *= 4  # a slow tail in 3 % of requests: p99 about 2x, the rank test not convinced yet
    slow_tail = decide(evidence(a, VariantEvidence([2000, 1000], [20, 10], tail, SCORES), look=2), POLICY)
    assert slow_tail.action == "hold" and slow_tail.reasons[0].startswith("latency")
    assert slow_tail.evidence["latency.significant"] == 0.0 and slow_tail.evidence["latency.p99_ratio"] > 1.2


def test_errors_hold_until_non_inferiority_is_shown_when_asked(rng: np.random.Generator) -> None:
    """1.4 % vs 1.0 %: not significant. By default that advances (the test can only roll back);
    with error_advance_margin=0.005 it holds until the upper bound rules out +0.5 points."""
    a, b = variant(rng), variant(rng, errors=56)
    assert decide(evidence(a, b), POLICY).action == "advance"
    strict = CanaryPolicy(min_dwell_s=300, min_samples=1000, max_looks=LOOKS, error_advance_margin=0.005)
    held = decide(evidence(a, b), strict)
    assert held.action == "hold" and held.reasons[0].startswith("error rate")
    assert held.evidence["error_rate.upper"] > 0.005 and held.evidence["error_rate.reject"] == 0.0
    big_a = VariantEvidence([2000, 40000], [20, 400], a.latency, a.score_counts)
    big_b = VariantEvidence([2000, 40000], [20, 400], b.latency, b.score_counts)
    assert decide(evidence(big_a, big_b), strict).action == "advance"


def test_decide_accepts_prometheus_histograms(rng: np.random.Generator) -> None:
    def hist(v: VariantEvidence) -> VariantEvidence:
        return VariantEvidence(v.requests, v.errors, LatencyHistogram(EDGES, np.cumsum(binned(np.asarray(v.latency)))),
                               v.score_counts)
    decision = decide(evidence(hist(variant(rng)), hist(variant(rng, slow=1.5))), POLICY)
    assert decision.action == "rollback" and decision.reasons[0].startswith("latency")


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="alpha"):
        CanaryPolicy(alpha=1.5)
    with pytest.raises(ValueError, match="max_looks"):
        CanaryPolicy(max_looks=0)


# --- PR-AUC on delayed labels ------------------------------------------------------------------

# A rollout as the controller sees it: three looks in shadow (paired), then canary looks at growing
# challenger shares (unpaired, stratum = look), fraud prevalence drifting from 4 % to 15 %.
SHARES = (None, None, None, 0.05, 0.05, 0.25, 0.25, 0.5, 0.5, 1.0)


def simulate_labelled_looks(rng: np.random.Generator, challenger_separation: float, rows_per_look: int = 250,
                            separation: float = 2.0) -> list[LabelledScores]:
    """Cumulative labelled traffic at each of len(SHARES) looks; score = separation · fraud + N(0, 1)
    (+ N(0, 0.7²) per model on shadow rows, which the two models score with their own noise)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("pa", "pb", "py", "sa", "ya", "ha", "sb", "yb", "hb")}
    looks = []
    for k, share in enumerate(SHARES):
        y = (rng.random(rows_per_look) < np.linspace(0.04, 0.15, len(SHARES))[k]).astype(np.int8)
        x = rng.normal(size=rows_per_look)
        if share is None:
            parts["pa"].append(separation * y + x + 0.7 * rng.normal(size=rows_per_look))
            parts["pb"].append(challenger_separation * y + x + 0.7 * rng.normal(size=rows_per_look))
            parts["py"].append(y)
        else:
            to_b = rng.random(rows_per_look) < share
            for v, sep, rows in (("a", separation, ~to_b), ("b", challenger_separation, to_b)):
                parts[f"s{v}"].append(sep * y[rows] + x[rows])
                parts[f"y{v}"].append(y[rows])
                parts[f"h{v}"].append(np.full(int(rows.sum()), k))
        cat = {key: np.concatenate(v) if v else np.array([]) for key, v in parts.items()}
        looks.append(LabelledScores(cat["pa"], cat["pb"], cat["py"], cat["sa"], cat["ya"], cat["sb"], cat["yb"],
                                    cat["ha"], cat["hb"]))
    return looks


def prauc_rollbacks(rng: np.random.Generator, sims: int, challenger_separation: float, *, margin: float,
                    alpha: float = ALPHA, n_boot: int = 40) -> tuple[float, float]:
    """(share of runs with a rollback at any look, Bonferroni alpha / looks as decide uses it; the same
    with a fixed one-sided alpha re-checked at every look). Looks below 30 frauds per variant are skipped."""
    sequential = naive = 0
    for _ in range(sims):
        fired = fired_naive = False
        for labelled in simulate_labelled_looks(rng, challenger_separation):
            c = labelled.counts()
            if min(c["positives_champion"], c["positives_challenger"]) < 30:
                continue
            res = prauc_test(labelled, margin=margin, alpha=alpha / len(SHARES), n_boot=n_boot)
            fired |= res.reject
            fired_naive |= res.difference + sps.norm.isf(alpha) * res.se < -margin
            if fired and challenger_separation != 2.0:
                break
        sequential += fired
        naive += fired_naive
    return sequential / sims, naive / sims


def test_prauc_test_keeps_false_rollbacks_under_alpha_over_10_looks_where_a_fixed_test_does_not() -> None:
    """Equal models, judged at margin 0 (the edge of H0, harder than the policy's 0.02), paired then
    unpaired, prevalence drifting: the Bonferroni test rolls back at most alpha of the runs. A 5 %
    one-sided bound re-checked at every look rolls back several times as many."""
    rate, naive = prauc_rollbacks(np.random.default_rng(5), 120, 2.0, margin=0.0, n_boot=60)
    assert rate <= ALPHA
    assert naive > 2 * ALPHA


def test_prauc_test_rolls_back_a_clearly_worse_challenger() -> None:
    """Separation 1.2 instead of 2.0: PR-AUC about 0.45 instead of 0.7 at 10 % fraud."""
    rate, _ = prauc_rollbacks(np.random.default_rng(6), 40, 1.2, margin=0.02)
    assert rate >= 0.9


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 1), st.integers(1, 3)), min_size=2, max_size=60))
@settings(max_examples=60, deadline=None)
def test_average_precision_equals_scikit_learn_with_ties_and_weights(rows: list[tuple[int, int, int]]) -> None:
    from sklearn.metrics import average_precision_score

    scores, labels, weights = (np.array(c, dtype=np.float64) for c in zip(*rows))
    if labels.sum() == 0:
        assert math.isnan(average_precision(scores, labels))
        return
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores))
    assert average_precision(scores, labels, weights) == pytest.approx(
        average_precision_score(labels, scores, sample_weight=weights))


def test_unpaired_payments_are_compared_within_their_stratum() -> None:
    """The same model on both sides, but the challenger served mostly the high-prevalence hour: pooled
    raw rows would differ, stratum weights give both the same mixture, so exactly no difference."""
    rng = np.random.default_rng(3)
    low_y, high_y = (rng.random(200) < 0.05).astype(int), (rng.random(200) < 0.3).astype(int)
    low_s, high_s = low_y + rng.normal(size=200), high_y + rng.normal(size=200)
    champion = (np.r_[np.tile(low_s, 3), high_s], np.r_[np.tile(low_y, 3), high_y], np.r_[[0] * 600, [1] * 200])
    challenger = (np.r_[low_s, np.tile(high_s, 3)], np.r_[low_y, np.tile(high_y, 3)], np.r_[[0] * 200, [1] * 600])
    labelled = LabelledScores(champion_scores=champion[0], champion_labels=champion[1], champion_strata=champion[2],
                              challenger_scores=challenger[0], challenger_labels=challenger[1],
                              challenger_strata=challenger[2])
    res = prauc_test(labelled, n_boot=50)
    assert res.difference == pytest.approx(0.0, abs=1e-12)
    assert average_precision(challenger[0], challenger[1]) - average_precision(champion[0], champion[1]) > 0.05
    only_one = LabelledScores(champion_scores=[0.1, 0.9], champion_labels=[0, 1], champion_strata=[7, 7],
                              challenger_scores=[0.2, 0.8], challenger_labels=[0, 1], challenger_strata=[8, 8])
    assert only_one.counts()["n_champion"] == 0 and only_one.counts()["n_unmatched"] == 4


def test_prauc_test_is_repeatable_and_checks_its_input() -> None:
    looks = simulate_labelled_looks(np.random.default_rng(8), 2.0)
    assert prauc_test(looks[-1]) == prauc_test(looks[-1])  # seeded by the data: same data, same answer
    with pytest.raises(ValueError, match="0 \\(legitimate\\) or 1"):
        LabelledScores(champion_scores=[0.1], champion_labels=[2]).arrays()
    with pytest.raises(ValueError, match="equally"):
        LabelledScores(paired_champion=[0.1, 0.2], paired_challenger=[0.1], paired_labels=[0, 1]).arrays()
    with pytest.raises(ValueError, match="frauds and legitimate"):
        prauc_test(LabelledScores([0.1, 0.2], [0.3, 0.4], [0, 0]))


LABEL_POLICY = CanaryPolicy(min_dwell_s=300, min_samples=1000, max_looks=LOOKS, prauc_bootstrap=100)


def paired_labels(rng: np.random.Generator, n: int, challenger_separation: float) -> LabelledScores:
    y = (rng.random(n) < 0.1).astype(np.int8)
    x = rng.normal(size=n)
    return LabelledScores(2.0 * y + x + 0.5 * rng.normal(size=n), challenger_separation * y + x + 0.5 * rng.normal(size=n), y)


def test_no_labels_yet_is_a_note_and_does_not_block_promotion(rng: np.random.Generator) -> None:
    a, b = variant(rng), variant(rng)
    champion = VariantEvidence([2000, 4000, 0], [20, 40, 0], a.latency, a.score_counts)
    challenger = VariantEvidence([2000, 4000, 5000], [20, 40, 50], b.latency, b.score_counts)
    few = paired_labels(rng, 100, 0.0)  # about 10 frauds, and a useless challenger: not judged yet
    for labels in (None, LabelledScores(), few):
        decision = decide(StepEvidence(champion, challenger, 600.0, 10, labels=labels), LABEL_POLICY)
        assert decision.action == "advance", decision.reasons
        assert decision.evidence["prauc.judged"] == 0.0 and decision.notes[0].startswith("PR-AUC not judged")
    assert "not enough labels yet" in decision.notes[0]


def test_a_significant_prauc_loss_rolls_back_even_while_the_step_holds(rng: np.random.Generator) -> None:
    labels = paired_labels(rng, 3000, 0.8)
    young = evidence(variant(rng), variant(rng), dwell_s=30, look=1)
    decision = decide(StepEvidence(young.champion, young.challenger, 30, 1, labels=labels), LABEL_POLICY)
    assert decision.action == "rollback"
    reason = decision.reasons[0]
    assert reason.startswith("PR-AUC") and "worse by more than the margin 0.02" in reason and "3000 paired" in reason
    ev = decision.evidence
    assert ev["prauc.reject"] == 1.0 and ev["prauc.upper"] < -0.02 and ev["prauc.look"] == 1.0
    assert ev["prauc.look_alpha"] == pytest.approx(0.025 / (LOOKS * 5))
    assert ev["prauc.challenger"] < ev["prauc.champion"] - 0.2


def test_prauc_looks_count_only_new_labels_and_stop_at_the_budget(rng: np.random.Generator) -> None:
    labels = paired_labels(rng, 2000, 2.0)
    base = evidence(variant(rng), variant(rng))
    first = decide(StepEvidence(base.champion, base.challenger, 600, 10, labels=labels), LABEL_POLICY)
    assert first.action == "advance" and first.evidence["prauc.judged"] == 1.0 and first.evidence["prauc.look"] == 1
    assert first.notes[0].startswith("PR-AUC") and first.evidence["prauc.upper"] > -0.02
    fingerprint = int(first.evidence["prauc.fingerprint"])
    again = decide(StepEvidence(base.champion, base.challenger, 600, 11, labels=labels, label_looks=1,
                                label_fingerprint=fingerprint), LABEL_POLICY)
    assert again.evidence["prauc.look"] == 1 and again.evidence["prauc.upper"] == first.evidence["prauc.upper"]
    spent = decide(StepEvidence(base.champion, base.challenger, 600, 12, labels=paired_labels(rng, 2000, 0.5),
                                label_looks=LABEL_POLICY.label_look_budget, label_fingerprint=fingerprint),
                   LABEL_POLICY)
    assert spent.action == "advance" and "alpha is spent" in spent.notes[0]


def test_label_policy_rejects_nonsense() -> None:
    for bad in ({"label_alpha": 0.0}, {"prauc_margin": -0.1}, {"min_label_positives": 0}, {"label_looks": 0},
                {"prauc_bootstrap": 5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CanaryPolicy(**bad)  # type: ignore[arg-type]
    assert CanaryPolicy(label_looks=10, label_alpha=0.05).label_look_alpha == pytest.approx(0.005)
