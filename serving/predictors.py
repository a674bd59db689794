"""Models as serving calls them: encode a request's columns, then one forward call per batch.

    request columns ──encode()──► row-aligned arrays ──(micro-batcher: concatenated across
                                                        concurrent requests)──► forward() ──►
    binary: P(positive) (n,) · multiclass: probabilities (n, k) in the contract's class order ·
    regression: values (n,)

Which path a model version takes, fastest first (:func:`predictor_for`):
    native hook    the pyfunc's Python model has ``tidemark_predictor()`` returning a
                   :class:`Predictor` (the bundled fraud example's PyTorch module does; so can
                   any team's model)
    scikit-learn   a pipeline's preprocessing compiled to array steps (:mod:`serving.sklearn_plan`,
                   checked against the pipeline at load), then the final estimator's own
                   ``predict_proba`` / ``predict`` on a float64 matrix; an estimator or step the
                   plan lacks is called itself (a DataFrame when some inputs are text)
    PyTorch        the ``nn.Module`` on a float32 matrix of the inputs; its output is the
                   prediction (binary: P(positive), multiclass: probabilities, regression: value)
    pyfunc         ``PyFuncModel.predict`` on a DataFrame: any flavour, ~1–3 ms of overhead per call
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from serving.errors import ContractError, ModelFormatError, ModelInputError
from serving.sklearn_plan import compile_pipeline

if TYPE_CHECKING:
    from serving.model_contract import ModelContract

__all__ = ["PandasPredictor", "Predictor", "SklearnPredictor", "TorchPredictor", "predict", "predictor_for"]


@runtime_checkable
class Predictor(Protocol):
    """A loaded model version as serving runs it. ``encode`` turns request columns into arrays
    whose first axis is the row (the micro-batcher concatenates them across requests);
    ``forward`` scores such arrays. ``accelerated``: forward runs on a GPU, where waiting a
    little for a bigger batch pays."""

    @property
    def accelerated(self) -> bool: ...

    def encode(self, inputs: Mapping[str, np.ndarray] | pd.DataFrame) -> tuple[np.ndarray, ...]: ...

    def forward(self, *arrays: np.ndarray) -> np.ndarray: ...


def predict(predictor: Predictor, inputs: Mapping[str, np.ndarray] | pd.DataFrame) -> np.ndarray:
    """One call without batching: ``forward(*encode(inputs))``."""
    return predictor.forward(*predictor.encode(inputs))


def predictor_for(local: Any, flavors: Mapping[str, Any], contract: ModelContract, *,
                  device: str | None = None) -> Predictor:
    """The fastest :class:`Predictor` for the MLflow model stored in folder ``local`` with
    ``flavors`` (its MLmodel file's), checked against ``contract``."""
    if "sklearn" in flavors:
        import mlflow.sklearn

        return SklearnPredictor(mlflow.sklearn.load_model(str(local)), contract)
    if "pytorch" in flavors:
        import mlflow.pytorch

        return TorchPredictor(mlflow.pytorch.load_model(str(local), map_location="cpu"), contract, device=device)
    if "python_function" not in flavors:
        raise ModelFormatError(f"the model has flavours {sorted(flavors)} and no python_function; log it with an "
                               "MLflow flavour that has one (every built-in flavour does)")
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(local))
    try:
        inner = model.unwrap_python_model()
    except Exception:  # noqa: BLE001  (not a custom PythonModel: use the generic wrapper)
        inner = None
    hook = getattr(inner, "tidemark_predictor", None)
    if callable(hook):
        native = hook(device=device)
        if not isinstance(native, Predictor):
            raise ModelFormatError(f"{type(inner).__name__}.tidemark_predictor() returned a {type(native).__name__}, "
                                   "which lacks accelerated / encode / forward")
        return native
    schema = model.metadata.get_input_schema()
    types = ({c.name: str(getattr(c.type, "name", "")) for c in schema.inputs if c.name}
             if schema is not None and schema.has_input_names() else {})
    return PandasPredictor(model.predict, contract, types=types)


class _Columns:
    """Encoding shared by the generic predictors: the contract's inputs, in its order."""

    def __init__(self, contract: ModelContract) -> None:
        self.contract = contract
        self.inputs = contract.inputs
        self.text = frozenset(contract.text_columns)
        self.numeric_only = not self.text

    def matrix(self, inputs: Mapping[str, np.ndarray] | pd.DataFrame, dtype: Any) -> np.ndarray:
        """Numeric inputs as one (n, k) matrix, NaN where a value is missing."""
        columns = [_numeric(name, _get(inputs, name)) for name in self.inputs]
        return np.column_stack(columns).astype(dtype, copy=False) if columns else np.empty((0, 0), dtype)

    def arrays(self, inputs: Mapping[str, np.ndarray] | pd.DataFrame) -> tuple[np.ndarray, ...]:
        """One array per input: float64 numbers (NaN missing), object text (None missing)."""
        return tuple(_text(_get(inputs, n)) if n in self.text else _numeric(n, _get(inputs, n)) for n in self.inputs)

    def frame(self, arrays: tuple[np.ndarray, ...]) -> pd.DataFrame:
        return pd.DataFrame(dict(zip(self.inputs, arrays, strict=True)), copy=False)

    def shaped(self, out: Any) -> np.ndarray:
        """A model's raw output as the task's prediction: (n,) float64, or (n, k) for multiclass."""
        values = np.asarray(out.to_numpy() if isinstance(out, pd.DataFrame | pd.Series) else out, dtype=np.float64)
        if self.contract.task == "multiclass":
            if values.ndim != 2 or values.shape[1] != self.contract.width:
                raise ModelFormatError(f"a multiclass model must return {self.contract.width} probabilities per row "
                                       f"(classes {list(self.contract.classes)}); it returned shape {values.shape}")
            return values
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise ModelFormatError(f"a {self.contract.task} model must return one number per row; it returned shape "
                                   f"{values.shape}")
        return values


class SklearnPredictor(_Columns):
    """A scikit-learn estimator (or pipeline) called natively: no pyfunc wrapper, no DataFrame
    when every input is a number."""

    accelerated = False

    def __init__(self, estimator: Any, contract: ModelContract) -> None:
        super().__init__(contract)
        self.estimator = estimator
        method = "predict" if contract.task == "regression" else "predict_proba"
        if not hasattr(estimator, method):
            raise ContractError(f"the contract says {contract.task}, but the {type(estimator).__name__} has no "
                                f"{method}(); register it with the task it was fitted for")
        self._plan = compile_pipeline(estimator, contract.inputs, self.text, method=method)
        self._call = self._plan.predict if self._plan is not None else getattr(estimator, method)
        self._order = self._class_order(estimator, contract)
        names = getattr(estimator, "feature_names_in_", None)
        if names is not None and tuple(names) != contract.inputs:
            raise ContractError(f"the estimator was fitted on columns {list(names)}, the contract lists inputs "
                                f"{list(contract.inputs)}; register it again from the frame it was fitted on")
        if names is not None and self.numeric_only and self._plan is None:
            # The matrix holds exactly the fitted columns in the fitted order (checked just above), so
            # scikit-learn's "fitted with feature names" warning is noise on every call.
            warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)

    @staticmethod
    def _class_order(estimator: Any, contract: ModelContract) -> np.ndarray | None:
        """Columns of ``predict_proba`` in the contract's class order (None: regression)."""
        if contract.task == "regression":
            return None
        fitted = [str(c) for c in getattr(estimator, "classes_", [])]
        wanted = list(contract.classes) or fitted
        missing = [c for c in wanted if c not in fitted]
        if missing or len(fitted) != len(wanted):
            raise ContractError(f"the estimator's classes {fitted} are not the contract's {wanted}")
        order = np.array([fitted.index(c) for c in wanted])
        return order[1:] if contract.task == "binary" else order

    @property
    def compiled(self) -> bool:
        """Whether the pipeline's preprocessing runs as its compiled plan."""
        return self._plan is not None

    def encode(self, inputs: Mapping[str, np.ndarray] | pd.DataFrame) -> tuple[np.ndarray, ...]:
        if self._plan is not None:
            return (self._plan.matrix(self.arrays(inputs)),)
        if self.numeric_only:
            return (self.matrix(inputs, np.float64),)
        return self.arrays(inputs)

    def forward(self, *arrays: np.ndarray) -> np.ndarray:
        x = arrays[0] if self._plan is not None or self.numeric_only else self.frame(arrays)
        out = np.asarray(self._call(x))
        if self._order is not None:
            out = out[:, self._order]
        return self.shaped(out)


class TorchPredictor(_Columns):
    """A PyTorch ``nn.Module`` (MLflow's pytorch flavour) on a float32 matrix of the inputs."""

    def __init__(self, module: Any, contract: ModelContract, *, device: str | None = None) -> None:
        import torch

        super().__init__(contract)
        if not self.numeric_only:
            raise ContractError(f"a plain PyTorch module takes numbers; inputs {sorted(self.text)} are text. Encode "
                                "them inside a pyfunc model (with a tidemark_predictor() hook for speed)")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module = module.to(self.device).eval()
        self._torch = torch

    @property
    def accelerated(self) -> bool:
        return bool(self.device.type == "cuda")

    def encode(self, inputs: Mapping[str, np.ndarray] | pd.DataFrame) -> tuple[np.ndarray, ...]:
        return (self.matrix(inputs, np.float32),)

    def forward(self, *arrays: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(arrays[0])).to(self.device))
        return self.shaped(out.double().cpu().numpy())


class PandasPredictor(_Columns):
    """Any model behind a ``predict(DataFrame)`` (MLflow's generic pyfunc wrapper): the fallback."""

    accelerated = False

    def __init__(self, predict_frame: Any, contract: ModelContract, *, types: Mapping[str, str] | None = None) -> None:
        """``types``: the MLflow type of each input (the model's signature) where it is not ``double``
        or ``string``: those inputs are handed over in that type, as MLflow's schema enforcement wants."""
        super().__init__(contract)
        self._predict = predict_frame
        self._types = {k: v for k, v in (types or {}).items() if v in ("long", "boolean")}

    def encode(self, inputs: Mapping[str, np.ndarray] | pd.DataFrame) -> tuple[np.ndarray, ...]:
        return self.arrays(inputs)

    def forward(self, *arrays: np.ndarray) -> np.ndarray:
        frame = self.frame(arrays)
        for col, kind in self._types.items():
            values = frame[col].to_numpy()
            if kind == "long" and not np.isnan(values).any():  # a missing long is left for MLflow to refuse
                frame[col] = values.astype(np.int64)
            elif kind == "boolean":
                frame[col] = pd.Series(values.astype(bool), dtype=object).where(~np.isnan(values), None)
        out = self._predict(frame)
        if self.contract.task == "binary":
            values = np.asarray(out.to_numpy() if isinstance(out, pd.DataFrame | pd.Series) else out)
            if values.ndim == 2 and values.shape[1] == 2:  # predict_proba-like output: P(positive)
                out = values[:, 1]
        return self.shaped(out)


def _get(inputs: Mapping[str, np.ndarray] | pd.DataFrame, name: str) -> Any:
    try:
        return inputs[name]
    except KeyError:
        raise ModelInputError(f"the model needs input {name!r}, which neither the request nor the store gave") from None


def _numeric(name: str, values: Any) -> np.ndarray:
    array = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if array.dtype.kind in "fiub":
        return array.astype(np.float64, copy=False)
    try:  # nullable or object columns: None / pd.NA are missing
        return pd.to_numeric(pd.Series(array, copy=False), errors="raise").to_numpy(np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise ModelInputError(f"input {name!r} must hold numbers (or nulls); it holds {array[:3]!r:.60}") from None


def _text(values: Any) -> np.ndarray:
    array = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if array.dtype == object:
        return array
    out = array.astype(object)
    out[pd.isna(array)] = None
    return out
