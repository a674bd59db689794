"""MLflow's ``pyfunc`` view of :class:`examples.fraud.model.FraudModel`.

The logged model holds ``spec.json`` and ``weights.pt`` as artifacts and, as its code,
:data:`MODEL_CODE` (MLflow's "models from code": nothing is pickled). ``mlflow.pyfunc.load_model``
runs that file, which needs tidemark importable, then calls :meth:`FraudPyfunc.load_context`,
which rebuilds the module on CUDA when available.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from examples.fraud.model import FraudModel

__all__ = ["MODEL_CODE", "FraudPyfunc", "unwrap"]

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
"""What to pass as ``python_model`` to ``mlflow.pyfunc.log_model`` (models from code, no pickle)."""


class FraudPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """``predict(frame) -> DataFrame[fraud_probability]`` over the raw input columns."""

    model: FraudModel | None = None

    def load_context(self, context: Any) -> None:
        self.model = FraudModel.load(context.artifacts["spec"], context.artifacts["weights"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return pd.DataFrame({"fraud_probability": self.fraud_model.predict_proba(model_input)})

    def tidemark_predictor(self, device: str | None = None) -> FraudModel:
        """Serving's native path (``serving.predictors``): the module itself, on ``device``
        (default: CUDA when available), skipping the pyfunc wrapper's 1-3 ms per call."""
        model = self.fraud_model
        return model.to(device) if device else model

    @property
    def fraud_model(self) -> FraudModel:
        """The loaded :class:`FraudModel` (serving batches through it directly)."""
        if self.model is None:
            raise RuntimeError("FraudPyfunc used before MLflow called load_context")
        return self.model


def unwrap(pyfunc_model: Any) -> FraudModel:
    """The :class:`FraudModel` inside what ``mlflow.pyfunc.load_model`` returned."""
    inner = pyfunc_model.unwrap_python_model()
    if not isinstance(inner, FraudPyfunc):
        from serving.errors import ModelFormatError

        raise ModelFormatError(f"the model is a {type(inner).__name__}, not a tidemark FraudPyfunc; "
                               "register models with `tidemark train`")
    return inner.fraud_model
