"""The canary controller: ``tidemark canary start|step|status|rollback|promote`` and what the
``canary_rollout`` DAG calls every few minutes.

    start:  challenger passed the gate ──► state "shadow" (or "canary" at 5 %) in Redis, and an
            MLflow run in the experiment "<model>-canary" whose id is the canary id
    step:   evidence of the current step (summed by the servers in Redis) ──► monitoring.rollout
            .decide() ──► advance (shadow → 5 → 25 → 50 → 100 %, then promote), hold, or roll back
            plus, once delayed labels are known, PR-AUC on the canary's labelled payments
            (pipelines.canary.labels: prediction log ⋈ labels known at the look's time)
            every look is logged to the run (see "The run in MLflow" below)
    rollback / promote: by hand, the same transitions

The run in MLflow: one step axis, the look's index over the whole rollout (1, 2, 3, … across ramp
steps). At each look: metrics ``canary.weight_pct`` (after the look), ``canary.action``
(:data:`ACTION_CODES`: hold 0, advance 1, promote 2, roll back -1), ``canary.ramp_step`` and the
decision's measured evidence; one row appended to the table ``canary_looks.json`` (the whole story
in one file: look, time, mode, weight before and after, action, reasons, notes) and the full
evidence in ``decisions/stepNN-lookNNN.json``; the tag ``canary.state`` follows the state. The
policy is logged once as params (``policy.*``), not as metrics. When the rollout ends the run is
terminated with its end time: FINISHED when promoted, FAILED when the evidence rolled it back,
KILLED when rolled back by hand; the outcome (``canary.outcome``, ``canary.ended_at``,
``canary.reason``, ``canary.run_id``) goes on the run and on the challenger's model version, and
into the model's alias history (:mod:`pipelines.alias_history`).

State moves are compare-and-set writes of the canary state (two controllers can't both act on
one look); promotion is the registry's alias swap (:func:`pipelines.model_registry.promote`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines import alias_history, model_registry
from pipelines.errors import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from monitoring.rollout import CanaryPolicy, Decision
    from serving.canary_state import CanaryState, CanaryStateStore
    from tidemark.settings import Settings

__all__ = ["ACTION_CODES", "LOOKS_TABLE", "RAMP", "CanaryAdmin", "CanaryError", "StepOutcome", "promote_now", "rollback", "start", "status", "step"]

log = logging.getLogger(__name__)

RAMP: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
ACTION_CODES: dict[str, float] = {"hold": 0.0, "advance": 1.0, "promoted": 2.0, "rollback": -1.0}  # canary.action
LOOKS_TABLE = "canary_looks.json"  # one row per look, appended (MlflowClient.log_table)
# Evidence entries that echo the policy: logged once as params, not as a constant metric per look.
_POLICY_ECHOES = frozenset({"error_rate.margin", "error_rate.alpha", "error_rate.tau", "error_rate.advance_margin",
                            "latency.alpha", "latency.max_p99_ratio", "latency.min_effect", "score.threshold",
                            "prauc.margin", "prauc.alpha", "prauc.look_budget", "prauc.min_positives"})


class CanaryError(RegistryError):
    """A canary operation can't be done now; the message says why and what to do."""


@dataclass(frozen=True)
class StepOutcome:
    """What one controller look did."""

    action: str                 # advance | hold | rollback | promoted | idle
    state: CanaryState
    reasons: list[str]
    evidence: dict[str, float]
    notes: list[str] = field(default_factory=list)  # looked at, decided nothing (e.g. PR-AUC not judged yet)


@dataclass
class _Parts:
    ml: MlflowClient
    store: CanaryStateStore
    redis: Any
    name: str


def _parts(settings: Settings) -> _Parts:
    from features.online_store import connect
    from features.sdk import FeatureClient
    from serving.canary_state import CanaryStateStore

    # the Redis the servers use: the online store of tidemark's Feast project
    redis_client = connect(FeatureClient(settings).store.config.online_store).writer
    name = settings.model_name
    return _Parts(model_registry.connect(settings), CanaryStateStore(redis_client, name, cache_s=0), redis_client, name)


def start(settings: Settings, *, shadow: bool = True) -> CanaryState:
    """Start a canary of the challenger against the champion (shadow first, unless ``shadow`` is
    False: then straight to 5 %). The challenger must have passed the gate against this champion."""
    p = _parts(settings)
    champion = model_registry.alias_version(p.ml, p.name, model_registry.CHAMPION)
    challenger = model_registry.alias_version(p.ml, p.name, model_registry.CHALLENGER)
    if champion is None or challenger is None:
        raise CanaryError(f"{p.name!r} needs a champion and a challenger for a canary (champion: "
                          f"{champion and champion.version}, challenger: {challenger and challenger.version})")
    model_registry.require_gate(challenger, champion)
    current, degraded = p.store.read()
    if degraded:
        raise CanaryError("the canary state in Redis can't be read; fix Redis first (see the server logs)")
    if current.mode != "off":
        raise CanaryError(f"a canary of v{current.challenger_version} is running (step {current.step}); "
                          "roll it back or let it finish first")
    experiment = model_registry.experiment_id(p.ml, settings, f"{p.name}-canary")
    run = p.ml.create_run(experiment, run_name=f"canary v{challenger.version} vs v{champion.version}",
                          tags={"champion_version": str(champion.version),
                                "challenger_version": str(challenger.version), "tidemark.model": p.name})
    now = _now()
    state = replace(current, mode="shadow" if shadow else "canary", weight_pct=0.0 if shadow else RAMP[0],
                    champion_version=str(champion.version), challenger_version=str(challenger.version),
                    canary_id=run.info.run_id, step=1, started_at=now, step_started_at=now)
    written = p.store.write(state, expected_revision=current.revision)
    p.ml.set_tag(run.info.run_id, "canary.state", _state_label(written, "started"))
    return written


def status(settings: Settings) -> CanaryState:
    """The canary state as the servers read it."""
    state, degraded = _parts(settings).store.read()
    if degraded:
        raise CanaryError("the canary state in Redis can't be read; servers are routing to the champion only")
    return state


def default_policy(settings: Settings) -> CanaryPolicy:
    """The policy a canary of ``settings.model_name`` is judged by: the defaults with the settings'
    dwell, sample minimum and p99 ratio, then the fields its project file declares (``canary:``)."""
    import dataclasses

    from monitoring.rollout import CanaryPolicy
    from pipelines.project import declared_model

    base = CanaryPolicy(min_dwell_s=settings.canary_min_dwell_s, min_samples=settings.canary_min_samples,
                        max_p99_ratio=settings.canary_max_p99_ratio)
    declared = declared_model(settings)
    return dataclasses.replace(base, **declared.canary) if declared is not None and declared.canary else base


def step(settings: Settings, policy: CanaryPolicy | None = None, *, now: datetime | None = None) -> StepOutcome:
    """One look: judge the current step's evidence and advance, hold or roll back. Without
    ``policy``: :func:`default_policy`."""
    from monitoring.rollout import decide

    policy = policy or default_policy(settings)
    p = _parts(settings)
    state, degraded = p.store.read()
    if degraded:
        raise CanaryError("the canary state in Redis can't be read; no decision taken")
    if state.mode == "off":
        return StepOutcome("idle", state, ["no canary is running"], {})
    moment = now or datetime.now(UTC)
    memory = _memory_key(p.name, state.canary_id)
    look = int(p.redis.hincrby(memory, f"looks:{state.step}", 1))
    seq = int(p.redis.hincrby(memory, "looks", 1))  # the run's step axis: looks over the whole rollout
    previous_p = float(p.redis.hget(memory, "error_p_value") or 1.0)
    evidence = _evidence(p, state, look, previous_p, moment, policy)
    evidence = replace(evidence, labels=_labels(settings, state, moment),
                       label_looks=int(p.redis.hget(memory, "label_looks") or 0),
                       label_fingerprint=int(p.redis.hget(memory, "label_fingerprint") or 0))
    decision = decide(evidence, policy)
    if "error_rate.p_value" in decision.evidence:
        p.redis.hset(memory, "error_p_value", min(previous_p, decision.evidence["error_rate.p_value"]))
    if decision.evidence.get("prauc.judged"):  # the PR-AUC looks spent so far, and the data of the last
        p.redis.hset(memory, mapping={"label_looks": int(decision.evidence["prauc.look"]),
                                      "label_fingerprint": int(decision.evidence["prauc.fingerprint"])})
    p.redis.expire(memory, 30 * 86_400)
    outcome = _act(p, state, decision, moment, f"canary run {state.canary_id}, look {seq}")
    _log(p.ml, state, (seq, look), decision, outcome, policy)
    if outcome.action == "promoted":
        _finish(p, state, "promoted", "; ".join(decision.reasons), "FINISHED")
    elif outcome.action == "rollback":
        _finish(p, state, "rolled back", "; ".join(decision.reasons), "FAILED")
    return outcome


def _labels(settings: Settings, state: CanaryState, moment: datetime) -> Any:
    """The canary's labelled payments at ``moment``; None (PR-AUC not judged) if they can't be read."""
    import pyarrow as pa

    from pipelines.canary.labels import labelled_canary_traffic

    try:
        return labelled_canary_traffic(settings, state, moment)
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:  # a bad file must not stop the other checks
        log.warning("canary %s: labelled traffic unreadable, PR-AUC not judged at this look: %s", state.canary_id, exc)
        return None


def rollback(settings: Settings, reason: str) -> CanaryState:
    """Stop the canary: every row to the champion; the challenger version is tagged with ``reason``."""
    p = _parts(settings)
    state, degraded = p.store.read()
    if degraded or state.mode == "off":
        raise CanaryError("no canary is running" if not degraded else "the canary state in Redis can't be read")
    done = _rolled_back(p, state, reason, f"canary run {state.canary_id}, by hand")
    _log_story(p.ml, state, _next_look(p, state), "rollback", done, [f"by hand: {reason}"], [])
    _finish(p, state, "rolled back", f"by hand: {reason}", "KILLED")
    return done


def promote_now(settings: Settings) -> CanaryState:
    """End the canary by promoting the challenger now (it must have passed the gate)."""
    p = _parts(settings)
    state, degraded = p.store.read()
    if degraded or state.mode == "off":
        raise CanaryError("no canary is running" if not degraded else "the canary state in Redis can't be read")
    done = p.store.write(replace(state, mode="off", weight_pct=0.0, champion_version=state.challenger_version,
                                 step_started_at=_iso(datetime.now(UTC))), expected_revision=state.revision)
    why = f"by hand at {state.mode} {state.weight_pct:g}%"
    _promote(p, state.challenger_version, f"canary run {state.canary_id}: promoted {why}")
    _log_story(p.ml, state, _next_look(p, state), "promoted", done, [why], [])
    _finish(p, state, "promoted", why, "FINISHED")
    return done


def _promote(p: _Parts, version: str | None, reason: str) -> None:
    """The registry's alias swap; already champion (a retried step) is fine. ``reason`` (the
    canary's evidence) goes into the alias history."""
    champion = model_registry.alias_version(p.ml, p.name, model_registry.CHAMPION)
    if champion is not None and str(champion.version) == str(version):
        return
    model_registry.promote(p.ml, p.name, version, reason=reason, action="canary-promote")


class CanaryAdmin:
    """The controller behind the server's ``/v1/canary`` endpoints (``serving.app.CanaryAdmin``)."""

    def __init__(self, settings: Settings, policy: CanaryPolicy | None = None) -> None:
        self.settings, self.policy = settings, policy

    def status(self) -> dict[str, Any]:
        return _as_dict(status(self.settings))

    def start(self, shadow: bool) -> dict[str, Any]:
        return _as_dict(start(self.settings, shadow=shadow))

    def step(self) -> dict[str, Any]:
        outcome = step(self.settings, self.policy)
        return {"action": outcome.action, "reasons": outcome.reasons, "notes": outcome.notes,
                "state": _as_dict(outcome.state), "evidence": outcome.evidence}

    def rollback(self, reason: str) -> dict[str, Any]:
        return _as_dict(rollback(self.settings, reason))

    def promote(self) -> dict[str, Any]:
        return _as_dict(promote_now(self.settings))


def _as_dict(state: CanaryState) -> dict[str, Any]:
    return dict(json.loads(state.to_json()))


def _act(p: _Parts, state: CanaryState, decision: Decision, moment: datetime, where: str) -> StepOutcome:
    """Carry out ``decision``; ``where`` (run and look) prefixes the alias history's reason."""
    if decision.action == "hold":
        return StepOutcome("hold", state, decision.reasons, decision.evidence, decision.notes)
    if decision.action == "rollback":
        return StepOutcome("rollback", _rolled_back(p, state, "; ".join(decision.reasons), where), decision.reasons,
                           decision.evidence, decision.notes)
    if state.mode == "canary" and state.weight_pct >= RAMP[-1]:
        # The state first (compare-and-set: a concurrent rollback wins), then the alias swap.
        # champion = challenger in the state tells the servers to switch now, not at their next poll.
        done = p.store.write(replace(state, mode="off", weight_pct=0.0, step=state.step + 1,
                                     champion_version=state.challenger_version, step_started_at=_iso(moment)),
                             expected_revision=state.revision)
        _promote(p, state.challenger_version, f"{where}: promoted at 100%: {'; '.join(decision.reasons)}")
        return StepOutcome("promoted", done, decision.reasons, decision.evidence, decision.notes)
    weight = RAMP[0] if state.mode == "shadow" else next(w for w in RAMP if w > state.weight_pct)
    moved = p.store.write(replace(state, mode="canary", weight_pct=weight, step=state.step + 1,
                                  step_started_at=_iso(moment)), expected_revision=state.revision)
    return StepOutcome("advance", moved, decision.reasons, decision.evidence, decision.notes)


def _rolled_back(p: _Parts, state: CanaryState, reason: str, where: str) -> CanaryState:
    """Every row to the champion; the challenger keeps its alias, the history records the canary's end."""
    done = p.store.write(replace(state, mode="off", weight_pct=0.0), expected_revision=state.revision)
    if state.challenger_version:
        p.ml.set_model_version_tag(p.name, state.challenger_version, "canary.rolled_back_at", _iso(datetime.now(UTC)))
        p.ml.set_model_version_tag(p.name, state.challenger_version, "canary.rolled_back_reason", reason[:4_000])
        moved = alias_history.Move(model_registry.CHALLENGER, state.challenger_version, state.challenger_version)
        alias_history.record(p.ml, p.name, [moved], action="canary-rollback",
                             reason=f"{where}: rolled back at {state.mode} {state.weight_pct:g}%: {reason}")
    log.warning("canary of v%s rolled back: %s", state.challenger_version, reason)
    return done


def _evidence(p: _Parts, state: CanaryState, look: int, previous_p: float, moment: datetime,
              policy: CanaryPolicy) -> Any:
    from monitoring.rollout import LatencyHistogram, StepEvidence, VariantEvidence
    from serving.canary_evidence import LATENCY_BOUNDS, SHADOW_BASELINE, read_step

    challenger_variant = "shadow" if state.mode == "shadow" else "challenger"
    steps = [read_step(p.redis, p.name, state.canary_id, s) for s in range(1, state.step + 1)]
    bounds = (*LATENCY_BOUNDS, math.inf)
    # In shadow, the shadow's latency is judged against the champion's copy of the same calls, timed
    # on the shadow's own thread (serving.scorer.Scorer._shadow_score), not against the request
    # thread's champion calls: under load the two threads' CPU times differ for the same work.
    baseline = steps[-1].get(SHADOW_BASELINE) if state.mode == "shadow" else None
    if baseline is not None and not baseline.latency_counts.any():
        baseline = None  # replicas that don't time a baseline (older versions): the champion's own calls

    def variant(name: str) -> VariantEvidence:
        per_step = [s.get(name) for s in steps]
        requests = np.array([c.requests if c else 0 for c in per_step])  # per ramp step (strata)
        errors = np.array([c.errors if c else 0 for c in per_step])
        now = per_step[-1]
        if name == "champion" and state.weight_pct >= RAMP[-1] and len(per_step) > 1:
            now = per_step[-2]  # at 100 % the champion serves nothing: compare with its last step
        timed = baseline if name == "champion" and baseline is not None else now
        latency = timed.latency_counts if timed else np.zeros(len(bounds), dtype=np.int64)
        scores = now.score_counts if now else np.zeros(10, dtype=np.int64)
        return VariantEvidence(requests, errors, LatencyHistogram(bounds, latency, cumulative=False), scores)

    started = datetime.fromisoformat(state.step_started_at) if state.step_started_at else moment
    return StepEvidence(variant("champion"), variant(challenger_variant), (moment - started).total_seconds(), look,
                        previous_p, latency_compared=latency_compared(state, policy))


def latency_compared(state: CanaryState, policy: CanaryPolicy) -> bool:
    """Whether this step's latencies are compared: in shadow (every request is scored by both),
    and at a ramp step from ``policy.min_latency_share_pct`` up to, not including, 100 %."""
    if state.mode == "shadow":
        return True
    return policy.min_latency_share_pct <= state.weight_pct < RAMP[-1]


def _log(ml: MlflowClient, state: CanaryState, at_look: tuple[int, int], decision: Decision, outcome: StepOutcome,
         policy: CanaryPolicy) -> None:
    """One look on the run: the policy once (params), the measured evidence (metrics at step
    ``seq``, the look over the whole rollout), the full decision as JSON, and the story row."""
    from mlflow.entities import Metric, Param

    seq, look = at_look
    run = state.canary_id
    if "policy.min_dwell_s" not in ml.get_run(run).data.params:
        ml.log_batch(run, params=[Param(f"policy.{k}", str(v)) for k, v in dataclasses.asdict(policy).items()]
                     + [Param("canary.ramp_pct", ",".join(f"{w:g}" for w in RAMP))])
    at = int(datetime.now(UTC).timestamp() * 1000)
    ml.log_batch(run, metrics=[Metric(_metric_name(k), float(v), at, seq) for k, v in decision.evidence.items()
                               if isinstance(v, int | float) and math.isfinite(float(v))
                               and not k.startswith("policy.") and k not in _POLICY_ECHOES])
    ml.log_dict(run, {"look": seq, "step": state.step, "look_in_step": look, "mode": state.mode,
                      "weight_pct": state.weight_pct, "action": outcome.action, "reasons": outcome.reasons,
                      "notes": decision.notes, "evidence": decision.evidence,
                      "new_state": json.loads(outcome.state.to_json())},
                f"decisions/step{state.step:02d}-look{look:03d}.json")
    _log_story(ml, state, seq, outcome.action, outcome.state, outcome.reasons, decision.notes)


def _log_story(ml: MlflowClient, state: CanaryState, seq: int, action: str, new: CanaryState, reasons: list[str],
               notes: list[str]) -> None:
    """What a reader of the run follows: ``canary.weight_pct`` / ``canary.action`` /
    ``canary.ramp_step`` at step ``seq``, a row of :data:`LOOKS_TABLE`, and the state tag."""
    from mlflow.entities import Metric

    now = datetime.now(UTC)
    at = int(now.timestamp() * 1000)
    ml.log_batch(state.canary_id, metrics=[Metric("canary.weight_pct", new.weight_pct, at, seq),
                                           Metric("canary.action", ACTION_CODES.get(action, 0.0), at, seq),
                                           Metric("canary.ramp_step", float(state.step), at, seq)])
    ml.log_table(state.canary_id, {"look": [seq], "at": [_iso(now)], "ramp_step": [state.step], "mode": [state.mode],
                                   "weight_pct": [state.weight_pct], "action": [action],
                                   "new_weight_pct": [new.weight_pct], "reasons": ["; ".join(reasons)],
                                   "notes": ["; ".join(notes)]}, LOOKS_TABLE)
    ml.set_tag(state.canary_id, "canary.state", _state_label(new, action))
    ml.set_tag(state.canary_id, "canary.last_action", f"{action} at look {seq} (ramp step {state.step})")


def _finish(p: _Parts, state: CanaryState, outcome: str, reason: str, status: str) -> None:
    """The rollout ended: its outcome on the run and on the challenger's version, then the run
    terminated (``status``: FINISHED, FAILED or KILLED) with its end time."""
    ended = datetime.now(UTC)
    tags = {"canary.outcome": outcome, "canary.ended_at": _iso(ended), "canary.reason": reason[:4_000],
            "canary.run_id": state.canary_id}
    for key, value in tags.items():
        p.ml.set_tag(state.canary_id, key, value)
        if state.challenger_version:
            p.ml.set_model_version_tag(p.name, state.challenger_version, key, value)
    p.ml.set_terminated(state.canary_id, status, end_time=int(ended.timestamp() * 1000))


def _next_look(p: _Parts, state: CanaryState) -> int:
    """The next index on the run's step axis, for an action taken by hand."""
    return int(p.redis.hincrby(_memory_key(p.name, state.canary_id), "looks", 1))


def _state_label(state: CanaryState, action: str) -> str:
    """The ``canary.state`` tag: ``shadow 0%``, ``canary 25%``, ``off (promoted)``, ``off (rolled back)``."""
    if state.mode == "off":
        return "off (promoted)" if action == "promoted" else "off (rolled back)"
    return f"{state.mode} {state.weight_pct:g}%"


def _metric_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "._-/ " else "_" for c in key)[:250]


def _memory_key(model: str, canary_id: str) -> str:
    return f"tidemark:canary:{model}:controller:{canary_id}"


def _now() -> str:
    return _iso(datetime.now(UTC))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
