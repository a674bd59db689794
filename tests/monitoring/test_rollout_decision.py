"""One look of a rollout (monitoring/rollout/decision.py) and its PR-AUC test on delayed labels
(monitoring/rollout/prauc.py): advance, hold or roll back, with every number in the evidence.
Monte Carlo slack: with N runs the standard error of a rate near 0.05 is sqrt(0.05 · 0.95 / N).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from monitoring.average_precision import average_precision
from monitoring.rollout import (
    CanaryPolicy,
    LabelledScores,
    LatencyHistogram,
    StepEvidence,
    VariantEvidence,
    decide,
    prauc_test,
)
from tests.monitoring.rollout_looks import ALPHA, EDGES, LOOKS, binned

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
    assert ev["error_rate.alpha"] == 0.025 and ev["latency.alpha"] == pytest.approx(0.05 / 8)  # shadow + 3 ramp steps
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


def test_the_full_traffic_step_does_not_judge_latency_against_another_step(rng: np.random.Generator) -> None:
    """At 100 % the champion's latencies are another step's, taken under another load: a challenger
    whose p99 there is 1.3x (the host got busier) is neither held nor rolled back on latency, and
    its latencies need no minimum; the same numbers within one step do roll back."""
    a, b = variant(rng), variant(rng, slow=1.3)
    champion = VariantEvidence([2000, 4000, 0], [20, 40, 0], a.latency, a.score_counts)
    challenger = VariantEvidence([2000, 4000, 5000], [20, 40, 50], b.latency[:10], b.score_counts)
    at_full = replace(evidence(champion, challenger), latency_compared=False)
    decision = decide(at_full, POLICY)
    assert decision.action == "advance", decision.reasons
    assert decision.evidence["latency.compared"] == 0.0 and "latency.z" not in decision.evidence
    assert any(n.startswith("latency not judged") for n in decision.notes)
    compared = decide(replace(at_full, challenger=VariantEvidence([2000, 4000, 5000], [20, 40, 50], b.latency,
                                                                  b.score_counts), latency_compared=True), POLICY)
    assert compared.action == "rollback" and compared.reasons[0].startswith("latency")  # as within a step


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
