"""Train a project's model through its entry point: ``tidemark --repo PATH train --model NAME``.

    label source (rows known by the cutoff, predicted within the window)
      │  entity rows: the model's entity columns, prediction time, request columns, label
      ▼  FeatureClient.training_frame (point in time, the model's features)
    frame, oldest ──────────────────────────────────────────► newest
           │ fit: the entry point (frame) -> fitted model │ validation (metrics, profile) │
      ▼
    register_model: contract, lineage, metrics, challenger

A model with a ``train_job`` (its own job: frame, fit, logging and registration) is trained by
:func:`train_model` through that job instead, given the :class:`TrainRequest`.

A label is used only once known (``known_at`` ≤ cutoff), so a late label never leaks into a frame
that claims an earlier cutoff; the cutoff defaults to the newest known label.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from features.redaction import redact_url
from pipelines.errors import EmptyFrameError, NoLabelsError, SingleClassError, TrainingError
from pipelines.labels import PREDICTION_TIME, labelled_events, read_table
from pipelines.training_data import utc_timestamp

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from features.sdk import FeatureClient
    from pipelines.project import ProjectModel
    from serving.model_contract import LabelSource
    from tidemark.settings import Settings

__all__ = ["TrainRequest", "Trained", "labelled_rows", "train_model", "train_project_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRequest:
    """What ``tidemark train`` or the retrain DAG asks of a model's training. ``cutoff``: labels
    known by then (UTC; None: the newest). The rest is for a ``train_job``, which honours what it
    can; None: the job's own default. Times in UTC; ``window`` None: the job's default window."""

    cutoff: datetime | None = None
    window: timedelta | None = None
    label_maturity: timedelta | None = None
    seed: int | None = None
    epochs: int | None = None
    max_rows: int | None = None
    device: str | None = None
    progress: bool = True
    run_name: str | None = None

    def given(self) -> dict[str, Any]:
        """The training options that were set (cutoff, progress and run name apart)."""
        names = ("window", "label_maturity", "seed", "epochs", "max_rows", "device")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class Trained(Protocol):
    """What a ``train_job`` returns: the registered challenger, its MLflow run, a summary."""

    @property
    def version(self) -> ModelVersion: ...

    @property
    def run_id(self) -> str: ...

    def summary(self) -> str: ...


@dataclass(frozen=True)
class _Registered:
    version: ModelVersion
    run_id: str
    line: str

    def summary(self) -> str:
        return self.line


def train_model(settings: Settings, model: ProjectModel, request: TrainRequest) -> Trained:
    """Train ``model`` and register the challenger: by its ``train_job`` when it declares one,
    else by :func:`train_project_model` (frame, ``train`` entry point, :func:`register_model`)."""
    job = model.job()
    if job is not None:
        trained: Trained = job(settings, model, request)
        return trained
    version = train_project_model(settings, model, cutoff=request.cutoff)
    line = (f"registered {model.name} v{version.version} as challenger ({model.task}, trained by {model.train}; "
            + ", ".join(f"{k} {v}" for k, v in sorted(version.tags.items()) if k.startswith(("val_", "train_")))
            + ")")
    return _Registered(version, str(version.run_id), line)


def train_project_model(settings: Settings, model: ProjectModel, *, cutoff: datetime | None = None,
                        feature_client: FeatureClient | None = None) -> ModelVersion:
    """Build ``model``'s training frame, fit it with its entry point, register the challenger."""
    from features.sdk import FeatureClient
    from pipelines.model_registration import register_model

    fc = feature_client or FeatureClient(settings)
    refs, _ = fc.resolve_features(model.features)
    keys = list(model.entity_columns) or [k for k, _ in fc.join_keys(refs)]
    source = model.label_source
    rows, cutoff_ts = labelled_rows(source, cutoff=cutoff, window=timedelta(days=model.window_days),
                                    columns=[*keys, *model.request_columns], fc=fc)
    wanted = list(dict.fromkeys([*keys, *source.join_keys, *model.request_columns, source.label, PREDICTION_TIME]))
    missing = [c for c in wanted if c not in rows.columns]
    if missing:
        raise TrainingError(f"the label source {redact_url(source.table)} lacks columns {missing} that model {model.name!r} "
                            "needs for its entity rows")
    entities = rows[wanted]
    frame = fc.training_frame(entities.reset_index(drop=True), refs)
    assert isinstance(frame, pd.DataFrame)
    train, validation = _split(frame.sort_values("event_timestamp", kind="stable"), model.validation_share)
    if model.task != "regression":
        for name, part in (("training", train), ("validation", validation)):
            if part[source.label].nunique() < 2:
                raise SingleClassError(f"the {name} rows of {model.name!r} hold one class of {source.label!r}; "
                                       "widen window_days or wait for more labels")
    fitted = model.entry_point()(train.reset_index(drop=True))
    log.info("%s: fitted %s on %d rows by %s", model.name, type(fitted).__name__, len(train), model.train)
    return register_model(
        fitted, model.name, features=model.features, frame=train, validation_frame=validation, label=source.label,
        task=model.task, label_source=source, request_columns=model.request_columns, routing_key=model.routing_key,
        feature_client=fc, run_name=f"{model.train} to {cutoff_ts:%Y-%m-%d %H:%M}",
        extra={"train": model.train, "window_days": f"{model.window_days:g}", "label_cutoff": cutoff_ts.isoformat()},
        params={"label_maturity_days": model.label_maturity_days, "window_days": model.window_days,
                "label_cutoff": cutoff_ts.isoformat()})


def labelled_rows(source: LabelSource, *, cutoff: datetime | None, window: timedelta | None,
                  columns: Sequence[str] = (), fc: FeatureClient | None = None) -> tuple[pd.DataFrame, pd.Timestamp]:
    """The labelled events (:func:`pipelines.labels.labelled_events`: row ids, ``columns``,
    ``event_timestamp``, label) whose label was known by ``cutoff`` (UTC; default: the newest
    ``known_at``) and, with ``window``, predicted within it before the cutoff; and the cutoff."""
    if cutoff is None:
        known_at = pd.to_datetime(read_table(source.table, columns=[source.known_at], fc=fc)[source.known_at], utc=True)
        if known_at.notna().sum() == 0:
            raise NoLabelsError(f"the label source {redact_url(source.table)} holds no known labels")
        cutoff_ts = known_at.max()
    else:
        cutoff_ts = utc_timestamp(cutoff)
    start = cutoff_ts - window if window is not None else None
    rows = labelled_events(source, cutoff=cutoff_ts.to_pydatetime(), start=start, end=cutoff_ts.to_pydatetime(),
                           columns=columns, fc=fc)
    if rows.empty:
        raise EmptyFrameError(f"no row of {redact_url(source.table)} has a label known by {cutoff_ts:%Y-%m-%d %H:%M} UTC"
                              f"{' within the window' if window is not None else ''}; widen window_days or move the cutoff")
    return rows, cutoff_ts


def _split(frame: pd.DataFrame, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The oldest rows to fit, the newest ``share`` of the time span to validate on."""
    when = pd.to_datetime(frame["event_timestamp"], utc=True)
    start, end = when.min(), when.max()
    boundary = end - (end - start) * share
    train, validation = frame[when < boundary], frame[when >= boundary]
    if train.empty or validation.empty:
        raise EmptyFrameError(f"{len(frame)} rows from {start} to {end} can't be split into training and "
                              f"validation by time (share {share}); widen window_days")
    return train, validation
