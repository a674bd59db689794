"""One look of a rollout: the evidence of a ramp step, the policy, and advance / hold / rollback.

    StepEvidence (champion and challenger: requests, errors, latency, score bins; labelled scores)
        ──► error_rate_test, latency_test, score_shift, prauc_test under a CanaryPolicy
        ──► Decision: action, one reason a line, every number used (``<check>.<number>``, for MLflow)

:func:`decide` is pure; the controller that reads the servers' evidence and acts on the decision
is ``pipelines.canary.controller``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from monitoring.rollout._check import check as _check
from monitoring.rollout.error_rate import TAU, error_rate_test
from monitoring.rollout.latency import MAX_LOOKS_LIMIT, LatencyHistogram, latency_test
from monitoring.rollout.prauc import LabelledScores, prauc_test
from monitoring.rollout.score_shift import score_shift

__all__ = ["Action", "CanaryPolicy", "Decision", "StepEvidence", "VariantEvidence", "decide"]

Action = Literal["advance", "hold", "rollback"]


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
    ``prauc.fingerprint`` (0 before PR-AUC was first judged). ``latency_compared``: False where the
    champion served none of this step's traffic (100 %): latency is judged only within a step where
    both variants serve side by side, never against another step's champion, since a host's load
    changes between steps (an identical challenger at 100 % measured p99 1.20x the champion's of
    the 50 % step, 4 s earlier on a shared 2-core host, and was held until its looks ran out)."""

    champion: VariantEvidence
    challenger: VariantEvidence
    dwell_s: float
    look: int
    error_p_value: float = 1.0
    labels: LabelledScores | None = None
    label_looks: int = 0
    label_fingerprint: int = 0
    latency_compared: bool = True


@dataclass(frozen=True)
class CanaryPolicy:
    """How a canary is judged. Rates are fractions, times seconds, counts per variant.

    ``alpha`` is the chance that a test rolls back a challenger that is no worse, for the whole rollout:
    half for the error test (always valid over all steps), half for latency split evenly over the
    ``ramp_steps + 1`` steps that compare it, shadow and the ramp's (Bonferroni; at 100 % the
    champion serves nothing, so latency is not judged there), each step
    spending its share over ``max_looks`` looks. PSI has no alpha (an effect-size threshold).

    ``min_latency_share_pct``: a ramp step judges latency only where the challenger serves at
    least this share (shadow always does: the shadow scores every request). Below it the
    challenger's calls are too sparse to keep its code and arrays in the CPU's caches on a busy
    host, and their CPU time runs slow for reasons that are not the model's: an identical
    challenger at 5 % measured p99 0.4 ms against the champion's 0.3 ms (z 6) in a full test run
    on a 2-core host and was rolled back, where at 25 % and in shadow it ran level. Errors, scores
    and PR-AUC are judged at every step.

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
    min_latency_share_pct: float = 25.0
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
        _check(0 <= self.min_latency_share_pct <= 100, "min_latency_share_pct must be in [0, 100]")
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
        """Alpha of the latency test within one step (shadow or a ramp step)."""
        return self.alpha / (2 * (self.ramp_steps + 1))

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
    Latency is judged only where ``evidence.latency_compared`` (both variants served this step).
    Advance otherwise. Evidence keys are ``<check>.<number>``; booleans are 0.0/1.0.
    """
    _check(isinstance(evidence.look, int) and evidence.look >= 1, f"look must be an int >= 1, got {evidence.look!r}")
    ev: dict[str, float] = {"look": evidence.look, "dwell_s": evidence.dwell_s, "policy.min_dwell_s": policy.min_dwell_s,
                            "policy.min_samples": policy.min_samples, "policy.alpha": policy.alpha,
                            "policy.max_looks": policy.max_looks, "policy.ramp_steps": policy.ramp_steps}
    rollback: list[str] = []
    hold: list[str] = []
    short = _short_samples(evidence, ev, policy.min_samples)
    notes: list[str] = []
    ev["latency.compared"] = float(evidence.latency_compared)
    _judge_errors(evidence, policy, ev, rollback, hold)
    if evidence.look > policy.max_looks:
        rollback.append(f"look {evidence.look} is past max_looks={policy.max_looks} without evidence to advance: "
                        "the step's latency alpha is spent")
    elif evidence.latency_compared:
        _judge_latency(evidence, policy, ev, rollback, hold)
    else:
        short.pop("latencies", None)
        notes.append("latency not judged at this step: at 100 % the champion serves none of its traffic (and a "
                     "step is never compared with another: the host's load differs), and below "
                     "policy.min_latency_share_pct the challenger's calls are too sparse to run warm; shadow "
                     "and the steps where both served at a comparable share judged it")
    _judge_scores(evidence, policy, ev, rollback, "scores" not in short)
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
