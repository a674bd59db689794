"""``tidemark train`` and the retrain DAG's task: train, log one MLflow run, register a challenger.

The run (in the experiment named after the model) holds:

    params     data window, label cutoff and maturity, seed, architecture, optimiser, feature list
    metrics    val_roc_auc, val_pr_auc, val_recall_at_1pct_fpr, val_log_loss, val_calibration_error,
               also on the model's LoggedModel with the validation frame as their dataset (so
               ``mlflow.search_logged_models`` ranks versions), beside MLflow's own evaluation
               metrics; fit_loss / tune_loss per epoch (step = epoch); rows and fraud per split; seconds
    inputs     the training and validation frames as MLflow datasets (digest = frame SHA-256), and
               the evaluated validation frame (inputs, label, prediction)
    tags       frame SHA-256, Feast view versions, device
    artifacts  lineage.json (features, Feast view versions and definition hashes, data window),
               reference_profile/profile.bin (monitoring.drift.ReferenceProfile of the model's
               inputs and its score: what drift checks compare against), contract.json, MLflow's
               evaluation plots (ROC, precision-recall, calibration, lift, confusion matrix),
               model/ (pyfunc with a typed signature and input example; spec.json and weights.pt inside)

The signature, input example and evaluation come from the platform's public pieces
(:mod:`pipelines.model_registration`, :mod:`pipelines.model_evaluation`), as any team's training
job can use them; ``register_model`` itself is not used because the model is a pyfunc logged from
code (no pickle) with the example's own run contents above.

Data errors are raised before the run starts; a failure during training ends the run FAILED
with nothing registered; registration itself is all or nothing (:func:`model_registry.register`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from examples.fraud.training import LABEL, SCORE, TrainConfig, TrainingData, TrainResult, fit, prepare
from pipelines import model_registry
from pipelines.model_evaluation import log_evaluation
from pipelines.model_registration import (
    CONTRACT_ARTIFACT,
    PROFILE_ARTIFACT,
    input_types,
    model_signature,
    typed_inputs,
)
from pipelines.training_data import frame_sha256
from serving.model_contract import LabelSource, ModelContract

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from features.sdk import FeatureClient
    from pipelines.project import ProjectModel
    from pipelines.project_training import TrainRequest
    from tidemark.settings import Settings

__all__ = ["PROFILE_ARTIFACT", "TrainOutcome", "fraud_contract", "train_and_register", "train_job"]

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"


@dataclass
class TrainOutcome:
    """A registered challenger and how it was made."""

    version: ModelVersion
    run_id: str
    data: TrainingData
    result: TrainResult

    def summary(self) -> str:
        """A few lines for a terminal."""
        m, w, rows = self.result.metrics, self.data.window, self.data.rows()
        return "\n".join([
            f"registered {self.version.name} v{self.version.version} as challenger (run {self.run_id})",
            (f"  data {w.start:%Y-%m-%d} … {w.end:%Y-%m-%d}, labels known by {w.label_cutoff:%Y-%m-%d %H:%M} UTC; "
             f"validation from {w.train_end:%Y-%m-%d}"),
            (f"  rows fit {rows['rows_fit']:,} ({rows['fraud_fit']:,} fraud), tune {rows['rows_tune']:,}, "
             f"validation {rows['rows_validation']:,} ({rows['fraud_validation']:,} fraud)"),
            (f"  validation: ROC-AUC {m['roc_auc']:.4f}  PR-AUC {m['pr_auc']:.4f}  recall@1%FPR "
             f"{m['recall_at_1pct_fpr']:.3f}  log loss {m['log_loss']:.4f}  ECE {m['calibration_error']:.4f}"),
            (f"  {self.result.best_epoch} of {len(self.result.history)} epochs kept, on {self.result.device}; "
             + ", ".join(f"{k} {v:.1f} s" for k, v in self.result.seconds.items())),
        ])


def train_and_register(settings: Settings, config: TrainConfig | None = None, *, model_name: str | None = None,
                       feature_client: FeatureClient | None = None, progress: bool = True,
                       run_name: str | None = None) -> TrainOutcome:
    """Build the frame, train, log the run and register the model as the new ``challenger``."""
    import mlflow

    from features.sdk import FeatureClient

    config = config or TrainConfig()
    name = model_name or settings.model_name
    fc = feature_client or FeatureClient(settings)
    data = prepare(fc, config)
    contract = fraud_contract(fc, config.features, data.feature_columns, data.categorical)
    client = model_registry.connect(settings)
    experiment = model_registry.experiment_id(client, settings, name)
    window = data.window
    # nested: a notebook or task that already has a run open gets this one as its child
    with mlflow.start_run(experiment_id=experiment, run_name=run_name or f"train to {window.end:%Y-%m-%d}",
                          tags={"tidemark.model": name, "frame_sha256": data.fingerprint},
                          nested=mlflow.active_run() is not None) as run:
        run_id = run.info.run_id
        _log_inputs(settings, config, data)

        def on_epoch(epoch: int, losses: dict[str, float]) -> None:
            mlflow.log_metrics(losses, step=epoch)

        result = fit(data, config, on_epoch=on_epoch, progress=progress)
        mlflow.log_metrics({"best_epoch": result.best_epoch, **{f"seconds_{k}": v for k, v in result.seconds.items()}})
        mlflow.set_tag("device", result.device)
        mlflow.log_dict({"window": window.params(), "features": list(config.features), "views": data.lineage,
                         "frame_sha256": data.fingerprint, "label_coverage": data.label_coverage},
                        "lineage.json")
        _log_profile(result)
        info = _log_model(result, data, contract)
        mlflow.log_dict(json.loads(contract.to_json()), CONTRACT_ARTIFACT)
        _log_evaluation(settings, name, info.model_id, contract, data, result)
        version = model_registry.register(client, name, info.model_uri, run_id=run_id,
                                          tags={**contract.to_tags(), **_version_tags(config, data, result)},
                                          description=_description(data, result))
    return TrainOutcome(version, run_id, data, result)


def train_job(settings: Settings, model: ProjectModel, request: TrainRequest) -> TrainOutcome:
    """The fraud model's ``train_job`` (``examples/fraud/feature_repo/tidemark.yaml``): what
    ``tidemark train`` and the retrain DAG run for it. The request's options replace
    :class:`TrainConfig`'s defaults; the model is registered under ``model.name``."""
    config = dataclasses.replace(TrainConfig(label_cutoff=request.cutoff), **request.given())
    return train_and_register(settings, config, model_name=model.name, progress=request.progress,
                              run_name=request.run_name)


def fraud_contract(fc: FeatureClient, features: Sequence[str], inputs: Sequence[str],
                   categorical: Sequence[str]) -> ModelContract:
    """The fraud model's contract: its features and their join keys from Feast, its ``inputs``
    (request fields and feature columns; ``categorical`` among them are text), the labels table
    (joined on ``transaction_id``, known at ``label_timestamp``) and the payments they label."""
    keys = fc.join_keys(features)
    settings = fc.settings
    return ModelContract(
        features=tuple(features), join_keys=tuple(k for k, _ in keys), key_kinds=tuple(kind for _, kind in keys),
        inputs=tuple(inputs), task="binary", text_columns=tuple(categorical), classes=("0", "1"),
        feast_project=settings.project, output="fraud_probability",
        label=LabelSource(table=str(settings.raw_dir / "labels"), label=LABEL, join_keys=("transaction_id",),
                          prediction_time="transaction_timestamp", known_at="label_timestamp",
                          entities=str(settings.raw_dir / "transactions"), entity_time="event_timestamp"))


def _log_inputs(settings: Settings, config: TrainConfig, data: TrainingData) -> None:
    import warnings

    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    mlflow.log_params({**config.params(), **data.window.params(), "features": ",".join(config.features),
                       "model_inputs": ",".join(data.feature_columns)})
    mlflow.log_metrics({**{k: float(v) for k, v in data.rows().items()},
                        **{f"label_coverage_{k}": v for k, v in data.label_coverage.items()}})
    for view, info in data.lineage.items():
        mlflow.set_tag(f"feast.{view}", f"{info['version'] or 'unversioned'} {info['definition_sha256'][:12]}")
    digest = data.fingerprint[:16]
    for code, context in ((0, "training"), (2, "validation")):
        rows = data.frame[data.split == code]
        with warnings.catch_warnings():  # MLflow's hints about nullable integer columns and source kinds
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_pandas(rows, name=f"{context} frame", targets=LABEL, digest=digest,
                                  source=str(settings.offline_dir))
            mlflow.log_input(dataset, context=context)


def _log_profile(result: TrainResult) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(PROFILE_ARTIFACT).name
        path.write_bytes(result.profile.to_bytes())
        mlflow.log_artifact(str(path), artifact_path=str(Path(PROFILE_ARTIFACT).parent))


def _log_model(result: TrainResult, data: TrainingData, contract: ModelContract) -> Any:
    """The pyfunc from code, with the platform's typed signature: numbers ``double`` (an integer
    store feature too: it can be missing online), text ``string``, store features optional."""
    import mlflow

    from examples.fraud.pyfunc import MODEL_CODE

    types = input_types(contract, data.frame)
    example = typed_inputs(data.frame[data.feature_columns].tail(5), types)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = result.model.save(Path(tmp))
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT, python_model=str(MODEL_CODE), artifacts=artifacts,
            signature=model_signature(contract, types), input_example=example, pip_requirements=_requirements(),
        )


def _log_evaluation(settings: Settings, name: str, model_id: str, contract: ModelContract, data: TrainingData,
                    result: TrainResult) -> None:
    """The validation metrics on the run and on LoggedModel ``model_id`` with the validation frame
    as their dataset, and MLflow's evaluation plots of the scores training already computed."""
    validation = data.split == 2
    frame = data.frame.loc[validation, [*data.feature_columns, LABEL]]
    log_evaluation(model_id=model_id, frame=frame, label=LABEL, task=contract.task, classes=contract.classes,
                   predictions=result.scores[validation], metrics={f"val_{k}": v for k, v in result.metrics.items()},
                   dataset_name=f"{name} validation frame", digest=frame_sha256(frame),
                   source=str(settings.offline_dir))


def _requirements() -> list[str]:
    from importlib.metadata import version

    # Public versions only: "+cpu" would pin a GPU serving node to the CPU build. The model's code
    # (examples.fraud.pyfunc) comes with tidemark, which the serving image installs.
    return [f"{pkg}=={version(pkg).split('+', 1)[0]}" for pkg in ("mlflow", "torch", "numpy", "pandas", "tidemark")]


def _version_tags(config: TrainConfig, data: TrainingData, result: TrainResult) -> dict[str, str]:
    tags = {k: v for k, v in data.window.params().items()}
    tags.update({f"val_{k}": f"{v:.6f}" for k, v in result.metrics.items()})
    tags.update({"frame_sha256": data.fingerprint, "seed": str(config.seed),
                 "feature_views": ",".join(f"{v}@{i['version'] or 'unversioned'}" for v, i in data.lineage.items())})
    return tags


def _description(data: TrainingData, result: TrainResult) -> str:
    w, m = data.window, result.metrics
    return (f"Trained on payments {w.start:%Y-%m-%d} to {w.train_end:%Y-%m-%d}, validated on "
            f"{w.train_end:%Y-%m-%d} to {w.end:%Y-%m-%d} (labels known by {w.label_cutoff:%Y-%m-%d}). "
            f"Validation PR-AUC {m['pr_auc']:.4f}, ROC-AUC {m['roc_auc']:.4f}. "
            f"Inputs: {', '.join(data.feature_columns)}. Output column: fraud_probability; "
            f"the drift reference profile (inputs and {SCORE!r}) is the run artifact {PROFILE_ARTIFACT}.")
