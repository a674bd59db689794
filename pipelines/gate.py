"""The evaluation gate: challenger against champion on the same recent labelled window.

The window holds payments neither model was fitted on: it starts where the later of the two
training splits ended (``train_end`` of each version's run) and ends ``label_maturity`` before
the label cutoff, so every label in it is final. Both models score the same point-in-time frame.

The challenger passes when the window is big enough to judge (``min_rows`` payments,
``min_fraud`` of them fraud, ``min_label_coverage`` of its payments labelled) and it is not worse than the champion by more than the tolerances
on PR-AUC and ROC-AUC. The verdict, both models' metrics, the window and the reason are stored
as ``gate.*`` tags on the challenger version, where :func:`model_registry.promote` checks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipelines import model_registry
from pipelines.errors import GateError, NoChampionError
from pipelines.model_metrics import score_metrics
from pipelines.training_data import utc_timestamp

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from features.sdk import FeatureClient
    from features.settings import Settings

__all__ = ["GateConfig", "GateVerdict", "evaluate_gate", "version_scores"]


@dataclass(frozen=True)
class GateConfig:
    """How the challenger is judged. Times are UTC; tolerances are absolute metric differences."""

    label_cutoff: datetime | None = None      # default: the newest payment in the raw data
    label_maturity: timedelta | None = None   # default: the longer of the two runs' label maturity
    start: datetime | None = None             # default: the later train_end of the two versions
    end: datetime | None = None               # default: label_cutoff - label_maturity
    max_pr_auc_drop: float = 0.01
    max_roc_auc_drop: float = 0.005
    min_rows: int = 1_000
    min_fraud: int = 20
    min_label_coverage: float = 0.99          # labelled share of the window's payments


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
    fraud: int
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        """``gate.*`` tags for the model version."""
        tags = {"gate.verdict": "pass" if self.passed else "fail", "gate.reason": self.reason,
                "gate.champion_version": self.champion, "gate.window": f"{self.start.isoformat()}/{self.end.isoformat()}",
                "gate.rows": str(self.rows), "gate.fraud": str(self.fraud),
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
    model_registry.record_gate(client, name, str(challenger.version), verdict.tags())
    return verdict


def _judge(client: MlflowClient, fc: FeatureClient, name: str, challenger: ModelVersion, champion: ModelVersion,
           config: GateConfig) -> GateVerdict:
    from pipelines.training_data import count_transactions, labelled_transactions, last_event_time

    params = {str(v.version): _run_params(client, name, v) for v in (challenger, champion)}
    trained_until = max(utc_timestamp(p["train_end"]) for p in params.values())
    maturity = config.label_maturity or max(timedelta(days=float(p["label_maturity_days"])) for p in params.values())
    cutoff = utc_timestamp(config.label_cutoff or last_event_time(fc.settings.raw_dir))
    end = utc_timestamp(config.end) if config.end else cutoff - maturity
    start = utc_timestamp(config.start) if config.start else trained_until
    if start < trained_until:
        raise GateError(f"the gate window starts {start:%Y-%m-%d %H:%M}, inside data a model was trained on "
                        f"(until {trained_until:%Y-%m-%d %H:%M}); start it at or after that")
    raw = fc.settings.raw_dir
    entities = labelled_transactions(raw, label_cutoff=cutoff.to_pydatetime(), events_from=start.to_pydatetime(),
                                     events_until=end.to_pydatetime()) if start < end else pd.DataFrame(
                                         {"is_fraud": pd.Series([], dtype="int8")})
    rows = len(entities)
    fraud = int(entities["is_fraud"].sum()) if rows else 0

    def verdict(passed: bool, reason: str, new: dict[str, float] | None = None,
                old: dict[str, float] | None = None) -> GateVerdict:
        return GateVerdict(passed, reason, str(challenger.version), str(champion.version), start, end, rows, fraud,
                           new or {}, old or {})

    if start >= end:
        return verdict(False, f"no window to judge on: both models were trained until {trained_until:%Y-%m-%d %H:%M} "
                              f"and labels are mature only until {end:%Y-%m-%d %H:%M}; wait for newer labels")
    total = count_transactions(raw, events_from=start.to_pydatetime(), events_until=end.to_pydatetime())
    if rows < config.min_label_coverage * total:
        return verdict(False, f"only {rows:,} of {total:,} payments in the window have a final label; "
                              f"metrics on them would be biased to fraud (label maturity {maturity})")
    if rows < config.min_rows or fraud < config.min_fraud or fraud == rows:
        return verdict(False, f"too little labelled data after both training windows ({rows:,} payments, "
                              f"{fraud:,} fraud; need {config.min_rows:,} and {config.min_fraud})")
    features = sorted({f for p in params.values() for f in p["features"].split(",")})
    frame = fc.training_frame(entities, features)
    assert isinstance(frame, pd.DataFrame)
    metrics = {v: score_metrics(frame["is_fraud"].to_numpy(), version_scores(name, v, frame))
               for v in (str(challenger.version), str(champion.version))}
    new, old = metrics[str(challenger.version)], metrics[str(champion.version)]
    failures = [f"{k} {new[k]:.4f} vs champion {old[k]:.4f} (allowed drop {drop})"
                for k, drop in (("pr_auc", config.max_pr_auc_drop), ("roc_auc", config.max_roc_auc_drop))
                if new[k] < old[k] - drop]
    reason = ("worse than the champion: " + "; ".join(failures)) if failures else (
        f"pr_auc {new['pr_auc']:.4f} vs {old['pr_auc']:.4f}, roc_auc {new['roc_auc']:.4f} vs {old['roc_auc']:.4f}")
    return verdict(not failures, reason, new, old)


def _run_params(client: MlflowClient, name: str, version: ModelVersion) -> dict[str, str]:
    params = dict(client.get_run(str(version.run_id)).data.params) if version.run_id else {}
    missing = [k for k in ("train_end", "features", "label_maturity_days") if k not in params]
    if missing:
        raise GateError(f"v{version.version} of {name!r} has no {', '.join(missing)} in its run's params: it was not "
                        "registered by `tidemark train`, so the gate can't tell what it was trained on")
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
