"""The ``drift_monitor`` DAG's work: is the champion's world drifting, and should it be retrained?

    champion (alias) ──► its training run's reference profile (inputs + score, validation rows)
    prediction log, champion rows scored in [start, end) ──► monitoring.drift.compare ──► covariate
        and score drift (PSI, KS, chi²) per column
    prediction log, champion rows of payments old enough that their label is final at ``end``
        (``label_maturity``), ⋈ labels known at ``end`` ──► PR-AUC vs the champion's validation
        PR-AUC, with a bootstrap bound ──► concept drift
        (too few frauds in the log, as for a champion younger than ``label_maturity``: the same
        mature labelled payments scored offline by the champion on their point-in-time features)
    decision: "drift" (retrain), "no_drift", or "insufficient_data"; logged to the day's MLflow run
    in the experiment "<model>-monitoring" (``pipelines.drift_runs``: one per champion version and
    UTC day, metrics at the window's step) with the report under windows/<HHMM-HHMM>/
    (decision.json always; with any rows, report.json, drift.png and Evidently's report.html headed
    by tidemark's verdicts), the same files under $TIDEMARK_HOME/reports/drift/<model>/<interval end>/
    and, for Prometheus, the share, decision and column statistics in a node_exporter textfile
    ($TIDEMARK_HOME/reports/prometheus/tidemark_drift_<model>.prom) and, if set, the Pushgateway

Everything is a function of the interval and of what was known at its end: a re-run of a past
interval gives the same decision (labels that arrived later are not used).

Why only mature payments for PR-AUC: a fraud label arrives with its chargeback, days after the
payment, but a legitimate one only when the chargeback window closes (30 days). Payments younger
than that have their frauds labelled and most of their legitimate payments not, which inflates
the fraud share and with it PR-AUC; the validation PR-AUC was measured on a frame with full labels.

Why scores may come from offline: a payment's label is final ``label_maturity`` after it, so a
champion that has served for less than that has no mature payment in the log, and the label check
would wait a month before it could see concept drift (fraud that changed while inputs barely
moved). The feature store holds every payment's features as they were when it was made, so the
champion's score on them is the score it would have served. Those payments exclude the ones it
was fitted on (before its run's ``train_end``). ``prauc["source"]`` says which scores were used.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from monitoring.average_precision import average_precision, bootstrap_average_precision
from pipelines.drift_runs import DriftWindow, day_run, window_tags
from pipelines.errors import ModelVersionError, NoChampionError
from pipelines.labels import PREDICTION_TIME, known_labels, labelled_events
from pipelines.model_metrics import PRIMARY_METRIC
from pipelines.project import declared_model
from pipelines.training_data import utc_timestamp
from serving.model_contract import ModelContract
from serving.prediction_log_schema import (
    CHAMPION,
    SCORE,
    model_log_root,
    prediction_column_names,
    prediction_columns,
    read_log,
)
from tidemark.errors import TidemarkError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from monitoring.drift import DriftReport, DriftThresholds
    from monitoring.profile import ReferenceProfile
    from tidemark.settings import Settings

__all__ = ["DriftOutcome", "DriftPolicy", "champion_log", "log_window", "monitor"]

log = logging.getLogger(__name__)

Decision = Literal["drift", "no_drift", "insufficient_data"]
@dataclass(frozen=True)
class DriftPolicy:
    """When the interval counts as drift. Inputs: at least ``min_rows`` champion rows, and a share
    of at least ``drift_share`` of the profiled columns (inputs and score) drifted under
    ``monitoring.drift.DriftThresholds``, or (``score_drift``) the score column drifted: the
    model's output moved, whichever inputs moved it. (0.2: in the bundled fraud example, whose
    windows are stream feature views computed alike for training and serving, healthy traffic
    drifts few columns; ``docs/drift.md`` has the measured share.) Labels: predictions made from
    ``end - label_maturity - label_window`` on, at least ``label_maturity`` before ``end`` (their
    labels are final), at least ``min_positives`` of them positive, and PR-AUC shown below the
    validation PR-AUC by more than ``prauc_margin`` (one-sided class-stratified bootstrap bound at
    ``alpha``). With fewer than ``min_positives`` positives among the rows the champion served, the
    mature labelled rows are scored offline, at most ``offline_label_rows`` of them (every positive
    up to half of that, the rest negatives, weighted back to the full set); 0 turns offline scoring off."""

    min_rows: int = 500
    drift_share: float = 0.2
    score_drift: bool = True
    label_window: timedelta = timedelta(days=30)
    label_maturity: timedelta = timedelta(days=30)
    min_positives: int = 30
    prauc_margin: float = 0.05
    loss_margin: float = 0.1   # log loss or RMSE: drift when shown worse than validation by this share
    alpha: float = 0.01
    bootstrap: int = 300
    html_rows: int = 5_000
    offline_label_rows: int = 20_000

    def __post_init__(self) -> None:
        if self.min_rows < 1 or not 0 < self.drift_share <= 1 or self.min_positives < 1:
            raise ValueError("min_rows and min_positives must be >= 1 and drift_share in (0, 1]")
        if not (self.offline_label_rows == 0 or self.offline_label_rows >= 2 * self.min_positives):
            raise ValueError("offline_label_rows must be 0 (no offline scoring) or at least 2 * min_positives")
        if not 0 < self.alpha < 1 or not 0 <= self.prauc_margin < 1 or self.bootstrap < 50:
            raise ValueError("alpha must be in (0, 1), prauc_margin in [0, 1), bootstrap >= 50")


@dataclass
class DriftOutcome:
    """One interval's verdict, and what it rests on (``summary()`` is what the Asset carries)."""

    decision: Decision
    reasons: list[str]
    start: datetime
    end: datetime
    champion_version: str
    rows: int
    drifted_columns: list[str] = field(default_factory=list)
    drift_share: float = 0.0
    column_psi: dict[str, float] = field(default_factory=dict)
    prauc: dict[str, float | str] = field(default_factory=dict)  # "source": "log" or "offline"
    run_id: str | None = None
    report_dir: Path | None = None
    model: str = ""
    drift_judged: bool = False  # the inputs were judged (at least ``min_rows`` rows)
    artifact_path: str | None = None  # the window's files in the MLflow run

    def summary(self) -> dict[str, Any]:
        """JSON-safe, for the ``tidemark://retrain-request`` Asset event and XCom."""
        from monitoring.drift import json_safe

        return json_safe({
            "model": self.model, "decision": self.decision, "reasons": self.reasons, "interval_start": self.start.isoformat(),
            "interval_end": self.end.isoformat(), "champion_version": self.champion_version, "rows": self.rows,
            "drifted_columns": self.drifted_columns, "drift_share": self.drift_share, "psi": self.column_psi,
            "prauc": self.prauc, "mlflow_run_id": self.run_id, "mlflow_artifact_path": self.artifact_path,
            "report_dir": str(self.report_dir) if self.report_dir else None})


def monitor(settings: Settings, start: datetime, end: datetime, *, policy: DriftPolicy | None = None,
            thresholds: DriftThresholds | None = None) -> DriftOutcome:
    """Judge ``[start, end)`` (UTC) for the current champion of ``settings.model_name``; log it to
    MLflow; return the outcome. ``policy`` and ``thresholds`` default to the project file's
    ``label_maturity_days`` and ``drift:`` for a project's model, else to today's defaults.

    The MLflow run is the day's (``pipelines.drift_runs``): one per model, champion version and
    UTC day, the window's metrics at its step and its files under ``windows/<HHMM-HHMM>/``."""
    from monitoring.drift import compare
    from pipelines import model_registry
    from pipelines.model_registration import load_profile

    declared = declared_model(settings)
    if policy is None:
        policy = DriftPolicy(label_maturity=timedelta(days=declared.label_maturity_days)) if declared else DriftPolicy()
    thresholds = thresholds or (declared.drift if declared else None)
    lo, hi = utc_timestamp(start), utc_timestamp(end)
    ml = model_registry.connect(settings)
    champion = model_registry.alias_version(ml, settings.model_name, model_registry.CHAMPION)
    if champion is None:
        raise NoChampionError(f"{settings.model_name!r} has no champion to monitor; train and promote one "
                              "first (`tidemark train`, then `tidemark promote --first`)")
    version, run_id = str(champion.version), champion.run_id
    if not run_id:
        raise ModelVersionError(f"champion v{version} has no training run: it has no reference "
                                "profile to compare with; register models with `tidemark train`")
    contract = ModelContract.of_version(settings.model_name, version, champion.tags)
    profile = load_profile(ml, run_id)
    current = champion_log(settings, profile, lo, hi, version, contract)
    outcome = DriftOutcome("no_drift", [], lo.to_pydatetime(), hi.to_pydatetime(), version, len(current),
                           model=settings.model_name)
    report = compare(profile, current[list(profile.columns)], thresholds=thresholds) if len(current) else None
    if report is not None and len(current) >= policy.min_rows:
        _judge_inputs(outcome, report, policy)
    else:
        outcome.reasons.append(f"inputs not judged: {len(current)} champion rows in the interval < min_rows "
                               f"{policy.min_rows}")
    run_data = ml.get_run(run_id).data
    _judge_labels(outcome, settings, contract, profile, version, hi, run_data.metrics, run_data.params, policy)
    if not outcome.drift_judged and not outcome.prauc.get("judged"):
        outcome.decision = "insufficient_data"
    experiment = model_registry.experiment_id(ml, settings, f"{settings.model_name}-monitoring")
    folder = settings.home / "reports" / "drift" / settings.model_name / hi.strftime("%Y-%m-%dT%H%M%SZ")
    window = DriftWindow(lo, hi)
    sample = current.sample(min(len(current), policy.html_rows), random_state=0)[list(profile.columns)]
    log_window(ml, day_run(ml, experiment, settings.model_name, version, window), window, outcome, report,
                sample, profile, policy, folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "decision.json").write_text(json.dumps(outcome.summary(), indent=2), encoding="utf-8")
    _export_metrics(settings, outcome, report if outcome.drift_judged else None, policy)
    log.info("drift %s .. %s for v%s: %s (%s)", lo, hi, version, outcome.decision, "; ".join(outcome.reasons))
    return outcome


def log_window(ml: MlflowClient, run_id: str, window: DriftWindow, outcome: DriftOutcome,
                report: DriftReport | None, sample: pd.DataFrame, profile: ReferenceProfile, policy: DriftPolicy,
                folder: Path) -> None:
    """The window's metrics (at its step), files (under its artifact path, and in ``folder``) and
    tags in the day's run ``run_id``, resumed for it and ended again (FINISHED)."""
    import mlflow
    from mlflow.entities import Metric

    from monitoring.evidently_report import Verdict
    from monitoring.mlflow_log import mlflow_log

    outcome.run_id, outcome.report_dir, outcome.artifact_path = run_id, folder, window.artifact_path
    values = {"rows": float(outcome.rows), **{f"prauc.{k}": float(v) for k, v in outcome.prauc.items()
                                              if isinstance(v, float | int) and math.isfinite(v)}}
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        ml.log_batch(run_id, metrics=[Metric(k, v, window.timestamp_ms, window.step) for k, v in values.items()])
        if report is not None:
            verdict = Verdict(outcome.decision, policy.drift_share, outcome.drift_judged, tuple(outcome.reasons))
            mlflow_log(report, run_id, html_current=sample, profile=profile, keep_in=folder, step=window.step,
                       timestamp_ms=window.timestamp_ms, artifact_path=window.artifact_path, verdict=verdict)
        mlflow.log_dict(outcome.summary(), f"{window.artifact_path}/decision.json")
        newest = {"interval_start": window.start.isoformat(), "interval_end": window.end.isoformat(),
                  "drift.window": window.label, "drift.decision": outcome.decision,
                  "drift.share_drifted": f"{outcome.drift_share:.4f}",
                  "drift.label_source": str(outcome.prauc.get("source", "none"))}
        mlflow.set_tags(window_tags(ml.get_run(run_id), window, outcome.decision, newest))


def _export_metrics(settings: Settings, outcome: DriftOutcome, report: DriftReport | None,
                    policy: DriftPolicy) -> None:
    """The run's share, decision and per-column statistics for Prometheus: the textfile under
    ``settings.textfile_dir``, and a push when ``TIDEMARK_PUSHGATEWAY_URL`` is set. A failure is a
    logged warning, never a failed run (the decision and MLflow run above stand)."""
    from monitoring.prometheus_export import DriftRun, publish

    run = DriftRun(settings.model_name, outcome.decision, outcome.rows, policy.drift_share, time.time(), report)
    publish(run, textfile_dir=settings.textfile_dir, pushgateway_url=settings.pushgateway_url)


def champion_log(settings: Settings, profile: ReferenceProfile, start: pd.Timestamp, end: pd.Timestamp,
                 version: str, contract: ModelContract) -> pd.DataFrame:
    """Prediction-log rows that ``version`` answered as champion in ``[start, end)``: the profile's
    columns (missing ones null), the log's metadata columns, the label source's row ids and, for a
    multiclass model, its class probabilities."""
    from monitoring.profile import NumericProfile

    types = {name: pa.float64() if isinstance(col, NumericProfile) else pa.string()
             for name, col in profile.columns.items()}
    ids = {k: pa.int64() for k in (contract.label.join_keys if contract.label else ())}
    probabilities = {c: pa.float64() for c in prediction_column_names(contract) if c != SCORE}
    wanted = (ds.field("variant") == CHAMPION) & (ds.field("model_version") == version)
    return read_log(model_log_root(settings.offline_dir, settings.model_name), start, end,
                    {**ids, **probabilities, **types}, wanted).to_pandas()


def _judge_inputs(outcome: DriftOutcome, report: DriftReport, policy: DriftPolicy) -> None:
    outcome.drift_judged = True
    outcome.drifted_columns, outcome.drift_share = report.drifted_columns, report.drift_share
    outcome.column_psi = {c.column: float(c.psi) for c in report.columns if c.psi is not None}
    line = (f"{len(report.drifted_columns)} of {len(report.columns)} columns drifted "
            f"({', '.join(report.drifted_columns) or 'none'}) on {report.rows_current:,} rows")
    if report.drift_share >= policy.drift_share:
        outcome.decision = "drift"
        outcome.reasons.append(f"input drift: {line}, share {report.drift_share:.2f} >= {policy.drift_share}")
    elif policy.score_drift and SCORE in report.drifted_columns:
        outcome.decision = "drift"
        outcome.reasons.append(f"score drift: the champion's scores moved ({line})")
    else:
        outcome.reasons.append(f"inputs: {line}, share {report.drift_share:.2f} < {policy.drift_share}")


def _judge_labels(outcome: DriftOutcome, settings: Settings, contract: ModelContract, profile: ReferenceProfile,
                  version: str, end: pd.Timestamp, metrics: dict[str, float], params: dict[str, str],
                  policy: DriftPolicy) -> None:
    """The champion's task metric (PR-AUC, log loss or RMSE: :data:`PRIMARY_METRIC`) on labelled
    rows whose label is final, against its validation value."""
    metric, higher = PRIMARY_METRIC[contract.task]
    outcome.prauc = {"judged": 0.0}
    validation = metrics.get(f"val_{metric}")
    if contract.label is None or validation is None:
        outcome.reasons.append("labels not judged: " + ("the champion's contract has no label source"
                                                        if contract.label is None else f"its run has no val_{metric}"))
        return
    since = end - policy.label_maturity - policy.label_window
    rows, source = _mature_scores(outcome.prauc, settings, contract, profile, version, params, since, end, policy)
    if rows is None:
        outcome.reasons.append(f"labels not judged: {source}")
        return
    y, w = _outcome(rows, contract), rows["weight"].to_numpy(np.float64)
    positives, labelled = _positives(y, contract), round(float(w.sum()))
    outcome.prauc.update({"validation": float(validation), "labelled": float(labelled), "positives": float(positives),
                          "scored": float(len(rows))})
    if positives < policy.min_positives or (contract.task == "binary" and positives == len(rows)):
        what = "positive labels" if contract.task == "binary" else "labelled rows"
        outcome.reasons.append(f"labels not judged: {positives} {what} among {labelled} mature rows since "
                               f"{since:%Y-%m-%d} < min_positives {policy.min_positives} ({source})")
        return
    value, se, bound = _metric_bound(contract, _predictions(rows, contract), y, w, policy)
    margin = policy.prauc_margin if higher else policy.loss_margin * float(validation)
    dropped = bound < validation - margin if higher else bound > validation + margin
    outcome.prauc.update({"judged": 1.0, "metric": metric, metric: value, "se": se, "upper" if higher else "lower": bound,
                          "drop": float(validation - value if higher else value - validation),
                          "concept_drift": float(dropped)})
    line = (f"{metric} {value:.3f} ({'upper' if higher else 'lower'} bound {bound:.3f}) on {labelled:,} mature "
            f"labelled rows ({positives} {'positive' if contract.task == 'binary' else 'scored'}) vs validation "
            f"{validation:.3f}, margin {margin:.3g} ({source})")
    if dropped:
        outcome.decision = "drift"
        outcome.reasons.append(f"concept drift: {line}")
    else:
        outcome.reasons.append(f"labels: {line}")


def _mature_scores(counts: dict[str, float | str], settings: Settings, contract: ModelContract,
                   profile: ReferenceProfile, version: str, params: dict[str, str], since: pd.Timestamp,
                   end: pd.Timestamp, policy: DriftPolicy) -> tuple[pd.DataFrame | None, str]:
    """The champion's predictions on mature labelled rows (the row ids, the label, the prediction
    columns, ``weight``) and a note on where they came from: the prediction log, or offline where
    the log holds fewer than ``min_positives``. None, and why, where the offline scoring could not
    run. Sets ``counts["source"]`` and the log's counts."""
    logged = _logged_rows(settings, contract, profile, version, since, end, policy)
    found = _positives(_outcome(logged, contract), contract)
    counts.update({"source": "log", "logged": float(len(logged)), "logged_positives": float(found)})
    if found >= policy.min_positives or policy.offline_label_rows == 0:
        return logged, "scores served, from the prediction log"
    counts["source"] = "offline"
    short = (f"the prediction log holds {found} labelled {'positives' if contract.task == 'binary' else 'rows'} "
             f"among the {len(logged)} mature rows the champion served, < min_positives {policy.min_positives}")
    from feast.errors import FeastError

    try:
        rows, where = _offline_rows(settings, contract, version, params, since, end, policy)
    except (TidemarkError, FeastError) as exc:  # no feature tables, a feature view gone, ...
        log.warning("drift: scoring mature rows offline failed", exc_info=True)
        return None, f"{short}, and scoring offline failed ({type(exc).__name__}: {exc})"
    return rows, f"scored offline {where}: {short}"


def _metric_bound(contract: ModelContract, predictions: np.ndarray, y: np.ndarray, w: np.ndarray,
                  policy: DriftPolicy) -> tuple[float, float, float]:
    """The task's metric, its bootstrap standard error (seeded by the row count: same rows, same
    answer) and its one-sided bound at ``policy.alpha`` on the side that would mean "worse": the
    upper bound of PR-AUC, the lower bound of log loss or RMSE."""
    from scipy.special import ndtri

    if contract.task == "binary":
        return _prauc_bound(predictions, y, w, policy)
    rng = np.random.default_rng(len(y))
    if contract.task == "multiclass":
        index = {c: i for i, c in enumerate(contract.classes)}
        truth = np.array([index.get(str(v), -1) for v in y])
        p = np.clip(predictions[np.arange(len(y)), np.maximum(truth, 0)], 1e-15, 1.0)
        loss = np.where(truth >= 0, -np.log(p), np.log(1e15))  # an unknown class: the worst loss

        def statistic(idx: np.ndarray) -> float:
            return float(np.average(loss[idx], weights=w[idx]))
    else:
        squared = (predictions - y.astype(np.float64)) ** 2

        def statistic(idx: np.ndarray) -> float:
            return float(np.sqrt(np.average(squared[idx], weights=w[idx])))
    every = np.arange(len(y))
    boot = np.array([statistic(rng.choice(every, len(every))) for _ in range(policy.bootstrap)])
    value, se = statistic(every), float(np.std(boot, ddof=1))
    return value, se, value - float(-ndtri(policy.alpha)) * se


def _prauc_bound(s: np.ndarray, y: np.ndarray, w: np.ndarray, policy: DriftPolicy) -> tuple[float, float, float]:
    """Weighted PR-AUC, its standard error from a class-stratified bootstrap (seeded by the row
    count: same rows, same answer) and its one-sided upper bound at ``policy.alpha``."""
    from scipy.special import ndtri

    boot = bootstrap_average_precision(s, y, w, replicates=policy.bootstrap, seed=len(y))
    ap, se = average_precision(s, y, w), float(np.std(boot, ddof=1))
    return ap, se, ap + float(-ndtri(policy.alpha)) * se


def _logged_rows(settings: Settings, contract: ModelContract, profile: ReferenceProfile, version: str,
                 since: pd.Timestamp, end: pd.Timestamp, policy: DriftPolicy) -> pd.DataFrame:
    """Mature rows the champion served since ``since``, with the label known at ``end``: the row
    ids, the label, the prediction columns and ``weight`` (1). A retried request counts once."""
    assert contract.label is not None
    source, ids = contract.label, list(contract.label.join_keys)
    scored = champion_log(settings, profile, since, end, version, contract)
    scored = scored.dropna(subset=ids).sort_values("event_timestamp", kind="stable").drop_duplicates(ids)
    labels = known_labels(source, cutoff=end.to_pydatetime(), since=since.to_pydatetime())
    labels = labels.rename(columns={PREDICTION_TIME: "predicted_at"})[[*ids, source.label, "predicted_at"]]
    rows = scored.drop(columns=[source.label], errors="ignore").merge(labels, on=ids)
    rows = rows[rows["predicted_at"] <= end - policy.label_maturity]  # labels final: no over-share of fast ones
    return rows.assign(weight=1.0)[[*ids, source.label, *prediction_column_names(contract), "weight"]]


def _offline_rows(settings: Settings, contract: ModelContract, version: str, params: dict[str, str],
                  since: pd.Timestamp, end: pd.Timestamp, policy: DriftPolicy) -> tuple[pd.DataFrame, str]:
    """Mature labelled events predicted in ``[since, end - label_maturity]`` and after the champion's
    ``train_end`` (it was fitted on the ones before), labelled as known at ``end``, predicted by the
    champion now on their point-in-time features (the values the online store held at each event);
    at most ``offline_label_rows`` of them (:func:`_capped`). Also says which rows, for the reasons."""
    from features.sdk import FeatureClient
    from pipelines.gate import version_scores

    assert contract.label is not None
    source, ids = contract.label, list(contract.label.join_keys)
    if "train_end" not in params:
        raise ModelVersionError("the champion's training run has no train_end param: what it was fitted on, and so "
                                "what to score it on, is unknown; register it with register_model or `tidemark train`")
    first, last = max(since, utc_timestamp(params["train_end"])), end - policy.label_maturity
    where = f"on rows predicted {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} (after its training split)"
    columns = list(dict.fromkeys([*contract.join_keys, *contract.request_columns]))
    entities = pd.DataFrame({**{k: [] for k in ids}, source.label: []}) if first >= last else labelled_events(
        source, cutoff=end.to_pydatetime(), start=first.to_pydatetime(), end=last.to_pydatetime(), columns=columns)
    entities = _capped(entities, policy.offline_label_rows, ids, source.label, contract)
    if entities.empty:
        return entities.assign(**{SCORE: 0.0}), where
    frame = FeatureClient(settings).training_frame(entities, list(contract.features))
    assert isinstance(frame, pd.DataFrame)
    predictions = version_scores(settings.model_name, version, frame)
    frame = frame.assign(**prediction_columns(contract, np.asarray(predictions, dtype=np.float64)))
    return frame[[*ids, source.label, *prediction_column_names(contract), "weight"]], where


def _predictions(rows: pd.DataFrame, contract: ModelContract) -> np.ndarray:
    if contract.task == "multiclass":
        return rows[prediction_column_names(contract)].to_numpy(np.float64)
    return rows[SCORE].to_numpy(np.float64)


def _outcome(rows: pd.DataFrame, contract: ModelContract) -> np.ndarray:
    """The labels: 0/1 for binary (``classes[1]`` is 1), the class names for multiclass, values for regression."""
    assert contract.label is not None
    y = rows[contract.label.label].to_numpy()
    return contract.is_positive(y) if contract.task == "binary" else y


def _positives(y: np.ndarray, contract: ModelContract) -> int:
    """Positive labels for a binary model; labelled rows for the others."""
    return int(y.sum()) if contract.task == "binary" else len(y)


def _capped(entities: pd.DataFrame, cap: int, ids: list[str], label: str,
            contract: ModelContract | None = None) -> pd.DataFrame:
    """At most ``cap`` of ``entities``: for a binary model every positive (up to half the cap) and
    negatives for the rest, for the others a uniform pick; ``weight``: how many rows of its class
    each kept row stands for, so that a weighted metric is that of them all. Rows are picked by a
    hash of their ids: a re-run keeps the same rows, and so does an overlapping interval."""
    binary = contract is None or contract.task == "binary"
    positive = (entities[label].to_numpy() == 1) if binary else np.zeros(len(entities), bool)
    rank = (pd.util.hash_array(entities[ids[0]].to_numpy()) if len(ids) == 1
            else pd.util.hash_pandas_object(entities[ids], index=False).to_numpy())
    keep, weight = np.zeros(len(entities), bool), np.ones(len(entities))
    quota = min(int(positive.sum()), cap // 2)
    for members, room in ((positive, quota), (~positive, cap - quota)):
        idx = np.flatnonzero(members)
        chosen = idx[np.argsort(rank[idx], kind="stable")[:room]]
        keep[chosen], weight[chosen] = True, len(idx) / max(len(chosen), 1)
    return entities.assign(weight=weight)[keep].reset_index(drop=True)
