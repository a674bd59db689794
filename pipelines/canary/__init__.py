"""The canary's pipelines side: the controller that the ``canary_rollout`` DAG and ``tidemark canary``
call, and the canary's labelled traffic that its PR-AUC check reads.

    controller   start | step | status | rollback | promote: evidence ──► monitoring.rollout.decide
    labels       prediction log ⋈ labels known at a look ──► monitoring.rollout.LabelledScores

The statistics are :mod:`monitoring.rollout`'s; the state, the evidence counters and the routing
live with the servers (``serving.canary_state``, ``serving.canary_evidence``, ``serving.routing``).
This package re-exports the controller's public names: ``from pipelines import canary;
canary.step(settings)``.
"""

from __future__ import annotations

from pipelines.canary.controller import (
    ACTION_CODES,
    LOOKS_TABLE,
    RAMP,
    CanaryAdmin,
    CanaryError,
    StepOutcome,
    default_policy,
    promote_now,
    rollback,
    start,
    status,
    step,
)

__all__ = ["ACTION_CODES", "LOOKS_TABLE", "RAMP", "CanaryAdmin", "CanaryError", "StepOutcome", "default_policy", "promote_now", "rollback", "start", "status", "step"]
