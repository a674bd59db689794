"""Every flavour's native path gives what the model itself gives, in the task's shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from serving.batcher import MicroBatcher
from serving.errors import ContractError, ModelFormatError, ModelInputError
from serving.model_contract import ModelContract
from serving.predictors import PandasPredictor, SklearnPredictor, TorchPredictor, predict

RNG = np.random.default_rng(7)
FRAME = pd.DataFrame({"conv_rate": RNG.random(300), "trips": RNG.integers(0, 50, 300).astype(np.int64),
                      "city": RNG.choice(["a", "b", "c"], 300)})
LABEL = (FRAME["conv_rate"] + RNG.normal(0, 0.2, 300) > 0.5).astype(int)


def _contract(inputs: tuple[str, ...], task: str = "binary", **more: object) -> ModelContract:
    return ModelContract(features=("stats:conv_rate", "stats:trips"), join_keys=("driver_id",), key_kinds=("int",),
                         inputs=inputs, task=task, **more)  # type: ignore[arg-type]


def test_a_numeric_estimator_gets_a_matrix_and_answers_as_itself() -> None:
    model = make_pipeline(SimpleImputer(), LogisticRegression()).fit(FRAME[["conv_rate", "trips"]], LABEL)
    predictor = SklearnPredictor(model, _contract(("conv_rate", "trips"), classes=("0", "1")))
    columns = {c: FRAME[c].to_numpy() for c in ("conv_rate", "trips")}
    (matrix,) = predictor.encode(columns)
    assert matrix.dtype == np.float64 and matrix.shape == (300, 2)
    np.testing.assert_allclose(predict(predictor, columns), model.predict_proba(FRAME[["conv_rate", "trips"]])[:, 1],
                               rtol=0, atol=1e-12)
    missing = {"conv_rate": np.array([np.nan]), "trips": np.array([None], dtype=object)}
    assert np.isfinite(predict(predictor, missing)).all()  # the pipeline imputes; nulls arrive as NaN


def test_text_inputs_go_to_the_pipeline_as_a_frame() -> None:
    encode = ColumnTransformer([("city", OneHotEncoder(handle_unknown="ignore"), ["city"])], remainder="passthrough")
    model = make_pipeline(encode, LogisticRegression()).fit(FRAME, LABEL)
    predictor = SklearnPredictor(model, _contract(("conv_rate", "trips", "city"), text_columns=("city",)))
    got = predict(predictor, {c: FRAME[c].to_numpy() for c in FRAME.columns})
    np.testing.assert_allclose(got, model.predict_proba(FRAME)[:, 1], rtol=0, atol=1e-12)


def test_multiclass_probabilities_follow_the_contracts_class_order() -> None:
    y = np.array(["slow", "ok", "fast"])[RNG.integers(0, 3, 300)]
    model = LogisticRegression().fit(FRAME[["conv_rate", "trips"]], y)
    predictor = SklearnPredictor(model, _contract(("conv_rate", "trips"), "multiclass", classes=("slow", "ok", "fast")))
    got = predict(predictor, FRAME)
    order = [list(model.classes_).index(c) for c in ("slow", "ok", "fast")]
    np.testing.assert_allclose(got, model.predict_proba(FRAME[["conv_rate", "trips"]])[:, order])
    with pytest.raises(ContractError, match="classes"):
        SklearnPredictor(model, _contract(("conv_rate", "trips"), "multiclass", classes=("slow", "ok", "stopped")))


def test_a_regressor_predicts_values_and_a_classifier_contract_is_refused() -> None:
    model = LinearRegression().fit(FRAME[["conv_rate", "trips"]], FRAME["conv_rate"] * 3)
    predictor = SklearnPredictor(model, _contract(("conv_rate", "trips"), "regression"))
    np.testing.assert_allclose(predict(predictor, FRAME), model.predict(FRAME[["conv_rate", "trips"]]))
    with pytest.raises(ContractError, match="no predict_proba"):
        SklearnPredictor(model, _contract(("conv_rate", "trips"), "binary"))


def test_an_estimator_fitted_on_other_columns_is_refused() -> None:
    model = LogisticRegression().fit(FRAME[["trips", "conv_rate"]], LABEL)
    with pytest.raises(ContractError, match="fitted on columns"):
        SklearnPredictor(model, _contract(("conv_rate", "trips")))


def test_missing_or_non_numeric_input_is_a_typed_error() -> None:
    model = LogisticRegression().fit(FRAME[["conv_rate", "trips"]], LABEL)
    predictor = SklearnPredictor(model, _contract(("conv_rate", "trips")))
    with pytest.raises(ModelInputError, match="'trips'"):
        predictor.encode({"conv_rate": np.zeros(2)})
    with pytest.raises(ModelInputError, match="must hold numbers"):
        predictor.encode({"conv_rate": np.zeros(2), "trips": np.array(["x", "y"], dtype=object)})


def test_a_torch_module_gets_a_float32_matrix() -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Sigmoid())
    predictor = TorchPredictor(module, _contract(("conv_rate", "trips")), device="cpu")
    x = FRAME[["conv_rate", "trips"]].to_numpy(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()[:, 0]
    np.testing.assert_allclose(predict(predictor, FRAME), expected, rtol=1e-6)
    assert not predictor.accelerated


def test_the_pyfunc_fallback_and_its_output_shapes() -> None:
    model = LogisticRegression().fit(FRAME[["conv_rate", "trips"]], LABEL)
    contract = _contract(("conv_rate", "trips"))
    proba = PandasPredictor(model.predict_proba, contract)  # an (n, 2) answer: P(positive) is column 1
    np.testing.assert_allclose(predict(proba, FRAME), model.predict_proba(FRAME[["conv_rate", "trips"]])[:, 1])
    framed = PandasPredictor(lambda f: pd.DataFrame({"p": model.predict_proba(f)[:, 1]}), contract)
    np.testing.assert_allclose(predict(framed, FRAME), predict(proba, FRAME))
    wrong = PandasPredictor(lambda f: np.zeros((len(f), 3)), contract)
    with pytest.raises(ModelFormatError, match="one number per row"):
        predict(wrong, FRAME)


def test_any_predictor_batches_across_threads() -> None:
    model = LogisticRegression().fit(FRAME[["conv_rate", "trips"]], LABEL)
    predictor = SklearnPredictor(model, _contract(("conv_rate", "trips")))
    batcher = MicroBatcher(predictor, max_batch=64)
    try:
        parts = [FRAME.iloc[i:i + 7] for i in range(0, 70, 7)]
        futures = [batcher.submit(*predictor.encode(p)) for p in parts]
        got = np.concatenate([f.result(timeout=5) for f in futures])
    finally:
        batcher.close()
    np.testing.assert_allclose(got, predict(predictor, FRAME.iloc[:70]))
