"""Register any fitted model with its contract: ``from pipelines.model_registry import register_model``.

    fitted model + training frame (FeatureClient.training_frame) + label + task + label source
      │  features: a FeatureService name or view:feature references, resolved in the Feast repo;
      │  join keys from Feast; inputs from the model (scikit-learn's feature_names_in_) or the
      │  features + request columns
      ▼
    one MLflow run: params, lineage.json (features, Feast view versions, data window, frame SHA-256), the reference
    profile of inputs and prediction, contract.json, the model in its own flavour
    (scikit-learn, PyTorch, else pyfunc) with a typed signature, input example and public pip pins;
    then, on its LoggedModel with the validation frame as a dataset (model_evaluation): the task
    metrics (on the validation frame, else the training frame) and MLflow's evaluation plots
      ▼
    a model version with the contract as tags, alias ``challenger`` (model_registry.register)

Everything downstream (serving, drift, the gate, the canary) reads the contract from the version,
so a model registered here needs nothing else from tidemark.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines.model_evaluation import log_evaluation
from pipelines.model_metrics import task_metrics
from pipelines.training_data import frame_sha256
from serving.errors import ContractError
from serving.model_contract import TASKS, LabelSource, ModelContract
from serving.predictors import PandasPredictor, Predictor, SklearnPredictor, TorchPredictor, predict

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from features.sdk import FeatureClient
    from tidemark.settings import Settings

__all__ = ["CONTRACT_ARTIFACT", "PROFILE_ARTIFACT", "build_contract", "input_types", "lineage_of", "load_profile",
           "model_signature", "register_model", "typed_inputs"]

log = logging.getLogger(__name__)

CONTRACT_ARTIFACT = "contract.json"
PROFILE_ARTIFACT = "reference_profile/profile.bin"


def register_model(model: Any, name: str, *, features: str | Sequence[str], frame: pd.DataFrame, label: str,
                   task: str, label_source: LabelSource | Mapping[str, Any] | None = None,
                   request_columns: Sequence[str] = (), routing_key: str | None = None,
                   validation_frame: pd.DataFrame | None = None, time_column: str = "event_timestamp",
                   feature_client: FeatureClient | None = None, settings: Settings | None = None,
                   extra: Mapping[str, str] | None = None, extra_pip_requirements: Sequence[str] = (),
                   skops_trusted_types: Sequence[str] = (), params: Mapping[str, Any] | None = None,
                   run_name: str | None = None) -> ModelVersion:
    """Log ``model`` (fitted on ``frame``) with its contract and register it as ``name``'s challenger.

    ``features``: a Feast FeatureService name or ``view:feature`` references of the repo that
    ``feature_client`` opens (default: the configured project). ``frame``: the training frame as
    ``FeatureClient.training_frame`` returned it, with the ``label`` column. ``task``: ``binary``,
    ``multiclass`` or ``regression``. ``request_columns``: model inputs sent with each request
    rather than read from the store (a scikit-learn model fitted on a DataFrame says its inputs
    itself). ``validation_frame``: held-out rows for the metrics and the reference profile (else
    the training frame is used, and the metrics are named ``train_*``). A PyTorch module must
    take a float32 matrix of the inputs and return the prediction (P(positive), probabilities or
    the value). ``params``: more run parameters (``label_maturity_days``: after how many days a
    label is final, which the gate and drift wait for). A scikit-learn model is stored with skops (no pickled code); name the types it holds
    that skops does not trust by default in ``skops_trusted_types`` (the error lists them). Returns
    the registered version (alias ``challenger``).
    """
    import mlflow

    from features.sdk import FeatureClient
    from pipelines import model_registry

    fc = feature_client or FeatureClient(settings)
    settings = fc.settings
    contract = build_contract(model, fc, features=features, frame=frame, label=label, task=task,
                              label_source=label_source, request_columns=request_columns, routing_key=routing_key,
                              extra=extra)
    predictor = _predictor(model, contract)
    judged = frame if validation_frame is None else validation_frame
    prefix = "train_" if validation_frame is None else "val_"
    missing = [c for c in (*contract.inputs, label) if c not in judged.columns]
    if missing:
        raise ContractError(f"the validation frame lacks columns {missing}")
    predictions = predict(predictor, judged)
    metrics = {prefix + k: v for k, v in task_metrics(task, judged[label].to_numpy(), predictions,
                                                       contract.classes).items()}
    client = model_registry.connect(settings)
    experiment = model_registry.experiment_id(client, settings, name)
    digest = frame_sha256(frame)
    with mlflow.start_run(experiment_id=experiment, run_name=run_name or f"register {name}",
                          tags={"tidemark.model": name, "frame_sha256": digest},
                          nested=mlflow.active_run() is not None) as run:
        mlflow.log_params({"task": task, "features": ",".join(contract.features), "label": label,
                           "feature_service": contract.feature_service or "", "model_inputs": ",".join(contract.inputs),
                           "model_class": f"{type(model).__module__}.{type(model).__qualname__}", "rows": len(frame)})
        window = _window(frame, time_column)
        mlflow.log_params({"train_start": window["start"] or "", "train_end": window["end"] or "", **(params or {})})
        lineage = {"features": list(contract.features), "feature_service": contract.feature_service,
                   "views": fc.lineage(contract.features), "frame_sha256": digest, "label": label,
                   "window": window}
        mlflow.log_dict(lineage, "lineage.json")
        mlflow.log_dict(json.loads(contract.to_json()), CONTRACT_ARTIFACT)
        _log_profile(judged, contract, predictions)
        info = _log_model(model, contract, frame, extra_pip_requirements, skops_trusted_types)
        # after the model exists, so the metrics belong to its LoggedModel and rank its versions
        log_evaluation(model_id=info.model_id, frame=judged[[*contract.inputs, label]], label=label, task=task,
                       classes=contract.classes, predictions=predictions, metrics=metrics,
                       dataset_name=f"{name} {'training' if validation_frame is None else 'validation'} frame",
                       digest=frame_sha256(judged))
        # the metrics as tags too: `tidemark models` and the training summary line read them from the version
        tags = {**contract.to_tags(), "frame_sha256": digest, **{k: f"{v:.6f}" for k, v in metrics.items()}}
        version = model_registry.register(
            client, name, info.model_uri, run_id=run.info.run_id, tags=tags,
            description=(f"{task} model on {contract.feature_service or len(contract.features)} "
                         f"{'' if contract.feature_service else 'features '}"
                         f"({', '.join(contract.join_keys)}); registered with register_model"))
    log.info("registered %s v%s (%s, %s)", name, version.version, task,
             ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return version


def build_contract(model: Any, fc: FeatureClient, *, features: str | Sequence[str], frame: pd.DataFrame, label: str,
                   task: str, label_source: LabelSource | Mapping[str, Any] | None = None,
                   request_columns: Sequence[str] = (), routing_key: str | None = None,
                   extra: Mapping[str, str] | None = None) -> ModelContract:
    """The contract of ``model`` as :func:`register_model` stores it, checked against the Feast
    repo and the frame (every error names what is missing and what to pass instead)."""
    if task not in TASKS:
        raise ContractError(f"task {task!r} is not one of {', '.join(TASKS)}")
    refs, service = fc.resolve_features(features)
    keys = fc.join_keys(refs)
    names = [ref.split(":", 1)[1] for ref in refs]
    fitted = getattr(model, "feature_names_in_", None)
    inputs = [str(c) for c in fitted] if fitted is not None else [*names, *request_columns]
    stray = sorted(set(names) - set(inputs))
    if stray:
        raise ContractError(f"the model was fitted without features {stray} that {service or 'the references'} "
                            "name; fit it on every feature it reads, or name only those")
    missing = [c for c in (*inputs, label, *(k for k, _ in keys)) if c not in frame.columns]
    if missing:
        raise ContractError(f"the training frame lacks columns {missing}; pass the frame the model was fitted on "
                            f"(FeatureClient.training_frame's output with the label column {label!r})")
    source = LabelSource.from_dict(label_source) if isinstance(label_source, Mapping) else label_source
    if source is not None and not source.join_keys:
        source = replace(source, join_keys=tuple(k for k, _ in keys))
    fc_settings = fc.settings
    return ModelContract(
        features=tuple(refs), join_keys=tuple(k for k, _ in keys), key_kinds=tuple(kind for _, kind in keys),
        inputs=tuple(inputs), task=task,  # type: ignore[arg-type]  # checked against TASKS above
        routing_key=routing_key or "", text_columns=tuple(c for c in inputs if _is_text(frame[c])),
        classes=_classes(model, frame[label], task), feature_service=service, feast_project=fc.store.project,
        feast_repo=str(getattr(fc, "_repo_path", None) or ""), label=source, output=_output(task),
        extra={"home": str(fc_settings.home), **(extra or {})})


def _classes(model: Any, labels: pd.Series, task: str) -> tuple[str, ...]:
    if task == "regression":
        return ()
    fitted = getattr(model, "classes_", None)
    classes = [str(c) for c in (fitted if fitted is not None else sorted(pd.unique(labels.dropna())))]
    if task == "binary" and len(classes) != 2:
        raise ContractError(f"a binary model needs two classes; the label has {classes[:5]}")
    return tuple(classes)


def _output(task: str) -> str:
    return {"binary": "probability", "multiclass": "probabilities", "regression": "prediction"}[task]


def _is_text(series: pd.Series) -> bool:
    return bool(series.dtype == object or isinstance(series.dtype, pd.StringDtype | pd.CategoricalDtype))


def _predictor(model: Any, contract: ModelContract) -> Predictor:
    """The model as serving will call it, so registration's metrics and profile see what serving sees."""
    if _is_sklearn(model):
        return SklearnPredictor(model, contract)
    if _is_torch(model):
        return TorchPredictor(model, contract, device="cpu")
    import mlflow.pyfunc

    if isinstance(model, mlflow.pyfunc.PythonModel):
        hook = getattr(model, "tidemark_predictor", None)
        if callable(hook):
            return hook(device="cpu")  # type: ignore[no-any-return]
        return PandasPredictor(lambda frame: model.predict(None, frame), contract)
    raise ContractError(f"a {type(model).__module__}.{type(model).__qualname__} is neither a scikit-learn estimator, a "
                        "PyTorch module nor an mlflow.pyfunc.PythonModel; wrap it in a PythonModel")


def _is_sklearn(model: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:
        return False
    return isinstance(model, BaseEstimator)


def _is_torch(model: Any) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(model, torch.nn.Module)


def _log_model(model: Any, contract: ModelContract, frame: pd.DataFrame, extra: Sequence[str],
               trusted: Sequence[str]) -> Any:
    """Log ``model`` in its own flavour, with a signature, an input example and pins of public
    package versions only (installable anywhere: no ``+cpu`` local tags, no tidemark)."""
    import mlflow

    types = input_types(contract, frame)
    example = typed_inputs(frame[list(contract.inputs)].head(5), types)
    # a scikit-learn classifier's pyfunc answers predict_proba: one column per class
    signature = model_signature(contract, types, per_class=_is_sklearn(model) and contract.task != "regression")
    common = {"name": "model", "signature": signature, "input_example": example,
              "metadata": {"tidemark_contract": contract.to_json()}}
    if _is_sklearn(model):
        # skops, MLflow's default format: loading runs no pickled code. A dtype object (an
        # encoder's ``dtype=np.float64``) is data; any other type the model holds must be trusted by
        # the caller, who knows the model (``skops_trusted_types``).
        return mlflow.sklearn.log_model(model, pip_requirements=_pins("mlflow", "scikit-learn", "skops", "numpy",
                                                                      "pandas", "scipy", *extra),
                                        skops_trusted_types=["numpy.dtype", *trusted],
                                        # `mlflow models serve` then answers what tidemark serves: probabilities
                                        pyfunc_predict_fn="predict" if contract.task == "regression" else "predict_proba",
                                        **common)
    if _is_torch(model):
        import mlflow.pytorch

        return mlflow.pytorch.log_model(model, pip_requirements=_pins("mlflow", "torch", "numpy", "pandas", *extra),
                                        **common)
    return mlflow.pyfunc.log_model(python_model=model, pip_requirements=_pins("mlflow", "numpy", "pandas", *extra),
                                   **common)


def _pins(*packages: str) -> list[str]:
    """``pkg==version`` of what is installed, public part only; a requirement that already holds
    a specifier (``xgboost>=2``) is kept as given."""
    out = []
    for spec in packages:
        if any(c in spec for c in "<>=!~ @"):
            out.append(spec)
            continue
        try:
            out.append(f"{spec}=={installed_version(spec).split('+', 1)[0]}")
        except PackageNotFoundError:
            out.append(spec)
    return out


def input_types(contract: ModelContract, frame: pd.DataFrame) -> dict[str, str]:
    """The MLflow type of each model input, from the frame's dtypes: ``string`` (text), ``boolean``,
    ``datetime``, ``long`` or ``double``. An integer column is ``long`` only where it is a request
    column that never lacks a value: MLflow's ``long`` holds no null, and a store feature can be
    missing online (then serving hands it as NaN), so an integer feature is ``double``."""
    out = {}
    requested = set(contract.request_columns)
    for col in contract.inputs:
        dtype = frame[col].dtype
        if col in contract.text_columns:
            out[col] = "string"
        elif pd.api.types.is_bool_dtype(dtype):
            out[col] = "boolean"
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            out[col] = "datetime"
        elif pd.api.types.is_integer_dtype(dtype) and col in requested and not frame[col].isna().any():
            out[col] = "long"
        else:
            out[col] = "double"
    return out


def typed_inputs(rows: pd.DataFrame, types: Mapping[str, str]) -> pd.DataFrame:
    """``rows`` (a frame as the feature store returns it, with nullable integers and string
    dtypes) in the types :func:`input_types` gave, which a typed signature's schema enforcement
    accepts: numbers as float64 (NaN when missing) or int64, text and booleans as objects (None
    when missing), times as naive UTC. What a model's input example holds, and what to hand
    ``mlflow.pyfunc.load_model(...).predict`` from a notebook."""
    out: dict[str, Any] = {}
    for col, kind in types.items():
        values = rows[col]
        if kind in ("string", "boolean"):
            out[col] = values.astype(object).where(values.notna(), None)
        elif kind == "datetime":
            out[col] = pd.to_datetime(values, utc=True).dt.tz_localize(None)
        elif kind == "long":
            out[col] = pd.to_numeric(values).astype("int64")
        else:
            out[col] = pd.to_numeric(values).astype("float64")
    return pd.DataFrame(out).reset_index(drop=True)


def model_signature(contract: ModelContract, types: Mapping[str, str], *, per_class: bool = False) -> Any:
    """The MLflow ``ModelSignature`` of a model with ``contract``: inputs typed as ``types``
    (:func:`input_types`) says, a store feature optional (``required=False``: it can be missing
    online), a request column required (the scorer refuses a request without it); the output is
    the contract's ``output`` column (a double), or one double per class where the model answers
    with per-class probabilities (a multiclass task, or ``per_class``)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    requested = set(contract.request_columns)
    inputs: list[Any] = [ColSpec(kind, col, required=col in requested) for col, kind in types.items()]
    if contract.task == "multiclass" or per_class:
        outputs = Schema([ColSpec("double", c) for c in contract.classes])
    else:
        outputs = Schema([ColSpec("double", contract.output)])
    return ModelSignature(inputs=Schema(inputs), outputs=outputs)


def _log_profile(frame: pd.DataFrame, contract: ModelContract, predictions: np.ndarray) -> None:
    """The reference profile of the inputs and the prediction (``score``: P(positive), the top
    class's probability, or the value), which drift checks compare serving's log against."""
    import mlflow

    from monitoring.profile import ReferenceProfile

    score = predictions if predictions.ndim == 1 else predictions.max(axis=1)
    profiled = frame[list(contract.inputs)].reset_index(drop=True).assign(score=score)
    profile = ReferenceProfile.fit(profiled, categorical=list(contract.text_columns))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(PROFILE_ARTIFACT).name
        path.write_bytes(profile.to_bytes())
        mlflow.log_artifact(str(path), artifact_path=str(Path(PROFILE_ARTIFACT).parent))


def _window(frame: pd.DataFrame, column: str) -> dict[str, str | None]:
    if column not in frame.columns or frame.empty:
        return {"start": None, "end": None}
    when = pd.to_datetime(frame[column], utc=True)
    return {"start": when.min().isoformat(), "end": when.max().isoformat()}


def load_profile(client: MlflowClient, run_id: str) -> Any:
    """The reference profile logged with a training run (``monitoring.drift.ReferenceProfile``)."""
    from monitoring.profile import ReferenceProfile

    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, PROFILE_ARTIFACT, tmp)
        return ReferenceProfile.from_bytes(Path(path).read_bytes())


def lineage_of(client: MlflowClient, run_id: str) -> dict[str, Any]:
    """The ``lineage.json`` artifact of a training run."""
    with tempfile.TemporaryDirectory() as tmp:
        return dict(json.loads(Path(client.download_artifacts(run_id, "lineage.json", tmp)).read_text()))
