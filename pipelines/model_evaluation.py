"""A registered model's validation evaluation, logged against its MLflow 3 LoggedModel.

    validation frame + the predictions serving's path gave (register_model, or a team's own training job, computed them)
      │  mlflow.data.from_pandas: the frame as a named dataset, digest = its SHA-256
      ▼
    mlflow.log_metrics(task metrics, model_id=…, dataset=…)   the numbers the gate and drift use
    mlflow.models.evaluate(model_id=…, evaluators=["tidemark"])  what the MLflow UI draws:
        binary       ROC, precision-recall, lift and calibration curves, confusion matrix
        multiclass   per-class metrics, ROC / PR curves, calibration curve, confusion matrix
        regression   MLflow's regression metrics (the default evaluator draws no plots)

The task metrics (:mod:`pipelines.model_metrics`) land on the LoggedModel with the dataset, so
``mlflow.search_logged_models(order_by=[{"field_name": "metrics.val_pr_auc", "ascending": False}])``
ranks a model's versions. MLflow's own metrics (``roc_auc``, ``precision_recall_auc``, …) sit
beside them for the UI; they are not what the gate judges.

The evaluator is MLflow's classifier evaluator fed the probabilities already computed instead of
calling the model again (MLflow only finds probabilities in scikit-learn, XGBoost and CatBoost
models; any flavour tidemark registers gets its curves this way). SHAP is never run: it is slow
and an extra dependency.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["EVALUATOR", "PREDICTION_COLUMN", "log_evaluation"]

EVALUATOR = "tidemark"
PREDICTION_COLUMN = "tidemark_prediction"
_MODEL_TYPES = {"binary": "classifier", "multiclass": "classifier", "regression": "regressor"}


def log_evaluation(*, model_id: str, frame: pd.DataFrame, label: str, task: str, classes: tuple[str, ...],
                   predictions: np.ndarray, metrics: Mapping[str, float], dataset_name: str, digest: str,
                   source: str = "") -> dict[str, float]:
    """Log ``metrics`` and MLflow's evaluation of ``predictions`` on ``frame`` against LoggedModel
    ``model_id`` in the active run; returns MLflow's evaluation metrics.

    ``predictions``: P(positive) (binary), (n, k) probabilities in the order of ``classes``
    (multiclass) or values (regression). ``frame``: the model's inputs and the ``label`` column.
    """
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    evaluated, probabilities, labels = _evaluation_frame(frame, label, task, classes, predictions)
    with warnings.catch_warnings():  # MLflow's hints about nullable integer columns and source kinds
        warnings.simplefilter("ignore", UserWarning)
        dataset = from_pandas(evaluated, name=dataset_name, targets=label, predictions=PREDICTION_COLUMN,
                              digest=digest[:16], source=source or None)  # type: ignore[arg-type]  # None: MLflow infers it
    mlflow.log_metrics(dict(metrics), model_id=model_id, dataset=dataset)
    _register_evaluator()
    config: dict[str, Any] = {"log_model_explainability": False}
    if probabilities is not None:
        config.update(label_list=labels, pos_label=classes[1] if task == "binary" else None,
                      probabilities=probabilities)
    # a regression needs no probabilities: MLflow's own evaluator reads the prediction column
    evaluator = "regressor" if task == "regression" else EVALUATOR
    result = mlflow.models.evaluate(data=dataset, model_type=_MODEL_TYPES[task], evaluators=evaluator,
                                    evaluator_config=config, model_id=model_id)
    return {k: float(v) for k, v in result.metrics.items()}


def _evaluation_frame(frame: pd.DataFrame, label: str, task: str, classes: tuple[str, ...],
                      predictions: np.ndarray) -> tuple[pd.DataFrame, np.ndarray | None, list[str]]:
    """The frame with its label as class names and a prediction column (the predicted class, or
    the value), the probabilities in sorted class order (MLflow's), and that order."""
    out = frame.reset_index(drop=True)
    if task == "regression":
        return out.assign(**{PREDICTION_COLUMN: np.asarray(predictions, dtype=np.float64)}), None, []
    p = np.asarray(predictions, dtype=np.float64)
    p = np.column_stack([1.0 - p, p]) if task == "binary" else p
    order = sorted(range(len(classes)), key=lambda i: classes[i])  # MLflow's column order: sorted labels
    names = [classes[i] for i in order]
    label_values = out[label]
    if task == "binary" and label_values.dtype.kind in "biu":
        label_values = label_values.astype(np.int64).map(dict(enumerate(classes)))
    return (out.assign(**{label: label_values.astype(str),
                          PREDICTION_COLUMN: np.asarray(classes, dtype=object)[p.argmax(axis=1)]}),
            p[:, order], names)


def _register_evaluator() -> None:
    """Add :class:`_PrecomputedClassifier` to MLflow's evaluator registry (idempotent)."""
    from mlflow.models.evaluation.evaluator_registry import _model_evaluation_registry

    _model_evaluation_registry.register(EVALUATOR, _evaluator_class())


def _evaluator_class() -> type:
    """MLflow's built-in classifier evaluator reading the predicted classes from the dataset and
    the probabilities from the ``probabilities`` config entry rather than from a model; built
    lazily because MLflow's evaluators import matplotlib."""
    from mlflow.models.evaluation.evaluators.classifier import ClassifierEvaluator

    class _PrecomputedClassifier(ClassifierEvaluator):  # type: ignore[misc]
        name = EVALUATOR

        def _generate_model_predictions(self, model: Any, input_df: pd.DataFrame) -> Any:
            return self.dataset.predictions_data, self.evaluator_config.get("probabilities")

    return _PrecomputedClassifier
