"""The evaluation gate: challenger against champion on the same recent labelled window.

The window holds events neither model was fitted on: it starts where the later of the two
training splits ended (``train_end`` of each version's run) and ends ``label_maturity`` before
the label cutoff, so every label in it is final. The rows are the labelled events of the models'
label source (their contract's); both models score the same point-in-time frame, each through
the path serving uses.

The challenger passes when the window is big enough to judge (``min_rows`` rows; for a binary
model ``min_positives`` of the positive class; ``min_label_coverage`` of the window's events
labelled, where the label source names its events table) and it is not worse than the champion
by more than the task's tolerances: PR-AUC and ROC-AUC drops (absolute) for binary, the log loss
(multiclass) or RMSE (regression) increase (relative). The verdict, both models' metrics, the
window and the reason (the rule and margin of each metric, pass or fail) are stored as ``gate.*``
tags on the challenger version, where :func:`model_registry.promote` checks them, and appended to
the version's description, which the MLflow UI's version page shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.redaction import redact_url
from pipelines import model_registry
from pipelines.errors import GateError, NoChampionError
from pipelines.labels import labelled_events, read_table
from pipelines.model_metrics import task_metrics
from pipelines.training_data import utc_timestamp
from serving.model_contract import LabelSource, ModelContract

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from features.sdk import FeatureClient
    from tidemark.settings import Settings

__all__ = ["GateConfig", "GateVerdict", "evaluate_gate", "version_scores"]


@dataclass(frozen=True)
class GateConfig:
    """How the challenger is judged. Times are UTC; tolerances are absolute metric differences."""

    label_cutoff: datetime | None = None      # default: the newest event (prediction time) in the data
    label_maturity: timedelta | None = None   # default: the longer of the two runs' label maturity (else 0)
    start: datetime | None = None             # default: the later train_end of the two versions
    end: datetime | None = None               # default: label_cutoff - label_maturity
    max_pr_auc_drop: float = 0.01
    max_roc_auc_drop: float = 0.005
    max_loss_increase: float = 0.02           # multiclass log loss, regression RMSE: relative increase allowed
    min_rows: int = 1_000
    min_positives: int = 20                   # binary: rows of the positive class
    min_label_coverage: float = 0.99          # labelled share of the window's events (with an events table)


@dataclass(frozen=True)
class GateVerdict:
    """The outcome, as recorded on the challenger version."""

    passed: bool
    reason: str
    challenger: str
    champion: str
    start: pd.Timestamp
    end: pd.Timestamp
    rows: int
    positives: int  # binary: rows of the positive class; 0 for the other tasks
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)

    def description(self) -> str:
        """The verdict as the model version page shows it: verdict and rule, window and rows."""
        return (f"v{self.challenger} against champion v{self.champion}: {self.reason} "
                f"(window {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC, {self.rows:,} labelled rows"
                + (f", {self.positives:,} positive" if self.positives else "") + ").")

    def tags(self) -> dict[str, str]:
        """``gate.*`` tags for the model version."""
        tags = {"gate.verdict": "pass" if self.passed else "fail", "gate.reason": self.reason,
                "gate.champion_version": self.champion, "gate.window": f"{self.start.isoformat()}/{self.end.isoformat()}",
                "gate.rows": str(self.rows), "gate.positives": str(self.positives),
                "gate.evaluated_at": datetime.now(UTC).isoformat(timespec="seconds")}
        for who, metrics in (("challenger", self.challenger_metrics), ("champion", self.champion_metrics)):
            tags.update({f"gate.{who}.{k}": f"{v:.6f}" for k, v in metrics.items()})
        return tags


def evaluate_gate(settings: Settings, *, model_name: str | None = None, version: str | int | None = None,
                  config: GateConfig | None = None, feature_client: FeatureClient | None = None) -> GateVerdict:
    """Judge ``version`` (default: the challenger) against the champion and record the verdict."""
    from features.sdk import FeatureClient

    config = config or GateConfig()
    name = model_name or settings.model_name
    client = model_registry.connect(settings)
    champion = model_registry.alias_version(client, name, model_registry.CHAMPION)
    if champion is None:
        raise NoChampionError(f"{name!r} has no champion to compare with; promote its first version "
                              "with `tidemark promote --first`")
    challenger = model_registry.resolve_version(client, name, version)
    fc = feature_client or FeatureClient(settings)
    verdict = _judge(client, fc, name, challenger, champion, config)
    model_registry.record_gate(client, name, str(challenger.version), verdict.tags(), description=verdict.description())
    return verdict


def _judge(client: MlflowClient, fc: FeatureClient, name: str, challenger: ModelVersion, champion: ModelVersion,
           config: GateConfig) -> GateVerdict:
    contract = _same_task(name, challenger, champion)
    source = contract.label
    if source is None:
        raise GateError(f"{name!r} has no label source in its model contract; register it with one "
                        "(register_model(label_source=...)) so the gate can judge it")
    params = {str(v.version): _run_params(client, name, v) for v in (challenger, champion)}
    trained_until = max(utc_timestamp(p["train_end"]) for p in params.values())
    maturity = config.label_maturity or max(
        (timedelta(days=float(p["label_maturity_days"])) for p in params.values() if "label_maturity_days" in p),
        default=timedelta(0))
    cutoff = utc_timestamp(config.label_cutoff) if config.label_cutoff else _newest_event(source, fc)
    end = utc_timestamp(config.end) if config.end else cutoff - maturity
    start = utc_timestamp(config.start) if config.start else trained_until
    if start < trained_until:
        raise GateError(f"the gate window starts {start:%Y-%m-%d %H:%M}, inside data a model was trained on "
                        f"(until {trained_until:%Y-%m-%d %H:%M}); start it at or after that")
    columns = list(dict.fromkeys([*contract.join_keys, *contract.request_columns]))
    rows = labelled_events(source, cutoff=cutoff.to_pydatetime(), start=start.to_pydatetime(), end=end.to_pydatetime(),
                           columns=columns, fc=fc) if start < end else pd.DataFrame({source.label: []})
    y = rows[source.label].to_numpy()
    positives = _positives(y, contract)

    def verdict(passed: bool, reason: str, new: dict[str, float] | None = None,
                old: dict[str, float] | None = None) -> GateVerdict:
        return GateVerdict(passed, reason, str(challenger.version), str(champion.version), start, end, len(rows),
                           positives, new or {}, old or {})

    if start >= end:
        return verdict(False, f"no window to judge on: both models were trained until {trained_until:%Y-%m-%d %H:%M} "
                              f"and labels are mature only until {end:%Y-%m-%d %H:%M}; wait for newer labels")
    total = _events_between(source, start, end, fc)
    if total is not None and len(rows) < config.min_label_coverage * total:
        return verdict(False, f"only {len(rows):,} of {total:,} events in the window have a final label; "
                              f"metrics on them would be biased (label maturity {maturity})")
    binary = contract.task == "binary"
    if len(rows) < config.min_rows or (binary and (positives < config.min_positives or positives == len(rows))):
        return verdict(False, f"too little labelled data after both training windows ({len(rows):,} rows"
                              + (f", {positives:,} positive" if binary else "")
                              + f"; need {config.min_rows:,}" + (f" and {config.min_positives}" if binary else "") + ")")
    features = sorted({f for v in (challenger, champion) for f in _contract(name, v).features})
    frame = fc.training_frame(rows, features)
    assert isinstance(frame, pd.DataFrame)
    metrics = {v: task_metrics(contract.task, frame[source.label].to_numpy(), version_scores(name, v, frame),
                               contract.classes)
               for v in (str(challenger.version), str(champion.version))}
    new, old = metrics[str(challenger.version)], metrics[str(champion.version)]
    failures = _failures(contract.task, new, old, config)
    reason = (("worse than the champion: " + "; ".join(failures)) if failures
              else "pass: " + "; ".join(_comparisons(contract.task, new, old, config)))
    return verdict(not failures, reason, new, old)


#: What each task's challenger is compared on: (metric, the GateConfig field with its tolerance,
#: whether higher is better: then the tolerance is an absolute drop, else a relative increase).
_TOLERANCES: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "binary": (("pr_auc", "max_pr_auc_drop", True), ("roc_auc", "max_roc_auc_drop", True)),
    "multiclass": (("log_loss", "max_loss_increase", False),),
    "regression": (("rmse", "max_loss_increase", False),)}


def _failures(task: str, new: dict[str, float], old: dict[str, float], config: GateConfig) -> list[str]:
    """What makes the challenger worse: a score lower than the champion's by more than its absolute
    tolerance, or a loss higher by more than its relative one."""
    out = []
    for metric, field_name, higher in _TOLERANCES[task]:
        tolerance = getattr(config, field_name)
        if higher:
            if new[metric] < old[metric] - tolerance:
                out.append(f"{metric} {new[metric]:.4f} vs champion {old[metric]:.4f} (allowed drop {tolerance})")
        elif new[metric] > old[metric] * (1 + tolerance):
            out.append(f"{metric} {new[metric]:.4f} vs champion {old[metric]:.4f} (allowed increase {tolerance:.0%})")
    return out


def _comparisons(task: str, new: dict[str, float], old: dict[str, float], config: GateConfig) -> list[str]:
    """Each judged metric against the champion with the rule it met, e.g. ``pr_auc 0.4724 vs
    champion 0.4752, drop 0.0028 within allowed 0.01`` (or ``no drop``)."""
    out = []
    for metric, field_name, higher in _TOLERANCES[task]:
        tolerance = getattr(config, field_name)
        head = f"{metric} {new[metric]:.4f} vs champion {old[metric]:.4f}, "
        if higher:
            drop = old[metric] - new[metric]
            out.append(head + (f"drop {drop:.4f} within allowed {tolerance}" if drop > 0 else "no drop"))
        else:
            rise = new[metric] / old[metric] - 1 if old[metric] else 0.0
            out.append(head + (f"increase {rise:.1%} within allowed {tolerance:.0%}" if rise > 0 else "no increase"))
    return out


def _contract(name: str, version: ModelVersion) -> ModelContract:
    return ModelContract.of_version(name, str(version.version), version.tags)


def _same_task(name: str, challenger: ModelVersion, champion: ModelVersion) -> ModelContract:
    new, old = _contract(name, challenger), _contract(name, champion)
    if (new.task, new.classes) != (old.task, old.classes):
        raise GateError(f"v{challenger.version} predicts {new.task} {list(new.classes)}, the champion v{champion.version} "
                        f"{old.task} {list(old.classes)}: they can't be compared; register it under another name")
    return new


def _positives(y: np.ndarray, contract: ModelContract) -> int:
    """Rows of the positive class (``classes[1]``) of a binary model; 0 for the other tasks."""
    if contract.task != "binary" or len(y) == 0:
        return 0
    return int(contract.is_positive(y).sum())


def _newest_event(source: LabelSource, fc: FeatureClient) -> pd.Timestamp:
    """The default label cutoff: the newest event (the newest prediction time the data holds)."""
    table, column = (source.entities, source.entity_time) if source.entities else (source.table, source.prediction_time)
    times = pd.to_datetime(read_table(table, columns=[column], fc=fc)[column], utc=True)
    if times.notna().sum() == 0:
        raise GateError(f"{redact_url(table)} holds no events; generate or load data first")
    return times.max()


def _events_between(source: LabelSource, start: pd.Timestamp, end: pd.Timestamp, fc: FeatureClient) -> int | None:
    """Events predicted in ``[start, end]`` with or without a label (None without an events table:
    then every row of the label table has a label, and coverage can't be told)."""
    if not source.entities:
        return None
    import pyarrow.dataset as ds

    at = ds.field(source.entity_time)
    where = (at >= start.to_pydatetime()) & (at <= end.to_pydatetime())
    return len(read_table(source.entities, columns=list(source.join_keys), where=where, fc=fc))


def _run_params(client: MlflowClient, name: str, version: ModelVersion) -> dict[str, str]:
    params = dict(client.get_run(str(version.run_id)).data.params) if version.run_id else {}
    if "train_end" not in params:
        raise GateError(f"v{version.version} of {name!r} has no train_end in its run's params: it was not registered "
                        "by register_model or `tidemark train`, so the gate can't tell what it was trained on")
    return params


def version_scores(name: str, version: str, frame: pd.DataFrame) -> np.ndarray:
    """Predictions of registered ``version`` of ``name`` on a point-in-time ``frame`` (the model
    loaded from MLflow's registry as serving loads it, through its contract and fastest path; the
    registry the last ``model_registry.connect`` pointed at), as the gate and the drift job's
    offline label check use them: P(positive), class probabilities or values by task."""
    from mlflow import MlflowClient

    from serving.model_slots import load_version
    from serving.predictors import predict

    model, _ = load_version(MlflowClient(), name, version, device="cpu")
    return predict(model, frame)
