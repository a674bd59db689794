"""The ``retrain`` DAG's work: a challenger from a sliding window, gated, then a canary.

    check    no canary running (a new challenger would replace the one under test)
    train    the model's project job (label cutoff = the interval's end, window = ``window``) ──► MLflow run,
             registered as ``challenger``, tagged with what asked for it (the drift summary)
    gate     pipelines.gate.evaluate_gate against the champion (recorded on the version)
    canary   only if the gate passed: pipelines.canary.start (shadow first); the
             ``canary_rollout`` DAG takes it from there

The label cutoff is the end of the interval that asked for the retrain (the drift run's), never
the wall clock, so a re-run trains on the same labels.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidemark.settings import Settings

__all__ = ["RetrainOutcome", "RetrainRequest", "canary_running", "retrain", "settings_for_model", "start_canary"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainRequest:
    """What to train on. ``label_cutoff``: labels known by then (UTC). ``window``: the training
    window before ``cutoff - label_maturity`` (None: all history). ``trigger``: why (logged)."""

    label_cutoff: datetime
    window: timedelta | None = timedelta(days=60)
    max_rows: int | None = 200_000
    epochs: int = 20
    seed: int = 0
    trigger: dict[str, Any] | None = None

    @classmethod
    def from_conf(cls, conf: dict[str, Any], *, label_cutoff: datetime) -> RetrainRequest:
        """From a DAG run's conf: ``window_days`` (0: all), ``max_rows``, ``epochs``, ``seed``,
        ``label_cutoff`` (ISO 8601, UTC); anything else is refused with the list of known keys."""
        known = {"window_days", "max_rows", "epochs", "seed", "label_cutoff", "trigger"}
        unknown = sorted(set(conf) - known)
        if unknown:
            raise ValueError(f"unknown retrain conf keys {unknown}; known: {sorted(known)}")
        days = conf.get("window_days", 60)
        cutoff = datetime.fromisoformat(conf["label_cutoff"]) if conf.get("label_cutoff") else label_cutoff
        return cls(label_cutoff=cutoff, window=timedelta(days=float(days)) if days else None,
                   max_rows=conf.get("max_rows", 200_000), epochs=int(conf.get("epochs", 20)),
                   seed=int(conf.get("seed", 0)), trigger=conf.get("trigger"))


@dataclass
class RetrainOutcome:
    """The challenger, its gate verdict, and the canary if one was started."""

    version: str
    run_id: str
    gate_passed: bool
    gate_reason: str
    canary_id: str | None = None
    model: str = ""

    def summary(self) -> dict[str, Any]:
        return {"version": self.version, "run_id": self.run_id, "gate_passed": self.gate_passed,
                "gate_reason": self.gate_reason, "canary_id": self.canary_id, "model": self.model}


def settings_for_model(settings: Settings, requested: str | None, trigger: dict[str, Any] | None) -> Settings:
    """``settings`` for the model a retrain is about: ``requested`` (the run's ``model`` param),
    else the one the drift event names, else the deployment's only model. A name the project does
    not declare is a :class:`ProjectError` (a retry cannot heal it)."""
    import dataclasses

    from pipelines.errors import ProjectError
    from pipelines.project import model_names

    names = model_names(settings)
    name = requested or (trigger or {}).get("model")
    if not name:
        if len(names) != 1:
            raise ProjectError(f"the deployment has models {names}; name one in the run's conf: {{\"model\": ...}}")
        name = names[0]
    if name not in names:
        raise ProjectError(f"a retrain of {name!r}, which the project does not have (its models: {names}); "
                           "name one of them in the run's conf: {\"model\": ...}")
    return dataclasses.replace(settings, model_name=name)


def canary_running(settings: Settings) -> str | None:
    """A line saying which canary is running, or None when none is."""
    from pipelines import canary

    state = canary.status(settings)
    if state.mode == "off":
        return None
    return f"a canary of v{state.challenger_version} is running ({state.mode}, step {state.step})"


def retrain(settings: Settings, request: RetrainRequest) -> RetrainOutcome:
    """Train and register a challenger of ``settings.model_name`` (its project's ``train_job``, or
    its ``train`` entry point on labels known at the cutoff), then gate it against the champion."""
    from pipelines import model_registry
    from pipelines.gate import evaluate_gate
    from pipelines.project import project_model
    from pipelines.project_training import TrainRequest, train_model

    model = project_model(settings, settings.model_name)
    trained = train_model(settings, model, TrainRequest(
        cutoff=request.label_cutoff, window=request.window, max_rows=request.max_rows, epochs=request.epochs,
        seed=request.seed, progress=False, run_name=f"retrain to {request.label_cutoff:%Y-%m-%d %H:%M}"))
    version = str(trained.version.version)
    if request.trigger:
        model_registry.connect(settings).set_model_version_tag(
            model.name, version, "retrain.trigger", json.dumps(request.trigger, default=str)[:5_000])
    log.info("%s", trained.summary())
    verdict = evaluate_gate(settings, version=version)
    log.info("gate v%s vs champion v%s: %s (%s)", version, verdict.champion, verdict.passed, verdict.reason)
    return RetrainOutcome(version, str(trained.run_id), verdict.passed, verdict.reason, model=settings.model_name)


def start_canary(settings: Settings, outcome: RetrainOutcome) -> RetrainOutcome:
    """Start the canary (shadow first) of a challenger that passed the gate."""
    from pipelines import canary

    if not outcome.gate_passed:
        raise ValueError(f"v{outcome.version} failed the gate ({outcome.gate_reason}); no canary")
    state = canary.start(settings, shadow=True)
    outcome.canary_id = state.canary_id
    return outcome
