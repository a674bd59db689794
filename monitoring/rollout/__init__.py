"""Rollout statistics: challenger against champion at every look of a ramp, without false alarms piling up.

A canary controller ramps traffic 5 → 25 → 50 → 100 % and looks at the evidence many times per
step. A fixed-level test re-checked at every look (what KServe, Flagger and Argo Rollouts do with
thresholds) rejects a healthy challenger with a probability that grows with the number of looks:
a one-sided 5 % z-test checked at 20 looks fires on about a fifth of identical challengers
(``tests/monitoring/test_rollout_error_rate.py`` measures it). Every check here stays valid at every look:

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
One module a check (:mod:`~monitoring.rollout.error_rate`, :mod:`~monitoring.rollout.latency`,
:mod:`~monitoring.rollout.score_shift`, :mod:`~monitoring.rollout.prauc`) and one for the decision
(:mod:`~monitoring.rollout.decision`); this package re-exports their public names. They sit beside
drift's statistics (PSI is :func:`monitoring.stats.psi`, average precision
:mod:`monitoring.average_precision`). All functions are pure (numpy/scipy, no I/O). Bad arguments
raise ``ValueError`` saying which (``TypeError`` for latency given as samples for one variant and a
histogram for the other).
"""

from __future__ import annotations

from monitoring.rollout.decision import Action, CanaryPolicy, Decision, StepEvidence, VariantEvidence, decide
from monitoring.rollout.error_rate import (
    TAU,
    SequentialResult,
    error_rate_test,
    mixture_halfwidth,
    mixture_log_lr,
    risk_difference,
)
from monitoring.rollout.latency import (
    MAX_LOOKS_LIMIT,
    LatencyHistogram,
    LatencyResult,
    group_sequential_bounds,
    histogram_quantile,
    latency_test,
    mann_whitney_from_counts,
    obf_spending,
)
from monitoring.rollout.prauc import LabelledScores, PrAucResult, prauc_test
from monitoring.rollout.score_shift import score_shift

__all__ = ["MAX_LOOKS_LIMIT", "TAU", "Action", "CanaryPolicy", "Decision", "LabelledScores", "LatencyHistogram",
           "LatencyResult", "PrAucResult", "SequentialResult", "StepEvidence", "VariantEvidence", "decide",
           "error_rate_test", "group_sequential_bounds", "histogram_quantile", "latency_test",
           "mann_whitney_from_counts", "mixture_halfwidth", "mixture_log_lr", "obf_spending", "prauc_test",
           "risk_difference", "score_shift"]
