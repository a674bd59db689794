"""A compiled pipeline answers as the pipeline does, and anything it does not translate falls back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, PoissonRegressor, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)

from serving import sklearn_plan
from serving.errors import ModelInputError
from serving.model_contract import ModelContract
from serving.predictors import SklearnPredictor, predict
from serving.sklearn_plan import compile_pipeline

RNG = np.random.default_rng(11)
N = 400
NUMERIC = ("conv_rate", "trips", "rating")
TEXT = ("city", "vehicle")
INPUTS = (*NUMERIC, *TEXT)


def _frame(n: int, *, unseen: bool = False) -> pd.DataFrame:
    frame = pd.DataFrame({"conv_rate": RNG.random(n), "trips": RNG.integers(0, 50, n).astype(np.float64),
                          "rating": RNG.normal(4, 1, n),
                          "city": RNG.choice(["oslo", "lima", "pune", "kyiv"], n).astype(object),
                          "vehicle": RNG.choice(["car", "bike", "van"], n).astype(object)})
    frame.loc[RNG.random(n) < 0.1, "rating"] = np.nan
    frame.loc[RNG.random(n) < 0.1, "city"] = None
    if unseen:
        frame.loc[RNG.random(n) < 0.1, "vehicle"] = "scooter"
    return frame


TRAIN = _frame(N)
LABEL = ((TRAIN["conv_rate"] + (TRAIN["city"] == "oslo") * 0.4 + RNG.normal(0, 0.2, N)) > 0.7).astype(int)


def _contract(task: str = "binary") -> ModelContract:
    return ModelContract(features=tuple(f"stats:{c}" for c in INPUTS), join_keys=("driver_id",), key_kinds=("int",),
                         inputs=INPUTS, task=task, text_columns=TEXT,  # type: ignore[arg-type]
                         classes=("0", "1") if task == "binary" else ())


def _text_steps() -> list[object]:
    return [SimpleImputer(missing_values=None, strategy="constant", fill_value="unknown"),
            OneHotEncoder(handle_unknown="ignore")]


PIPELINES = {
    "impute, scale, one-hot": lambda: make_pipeline(ColumnTransformer([
        ("text", make_pipeline(*_text_steps()), list(TEXT)),
        ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), list(NUMERIC))]), LogisticRegression()),
    "ordinal, min-max with clip, remainder passthrough": lambda: make_pipeline(ColumnTransformer([
        ("text", make_pipeline(SimpleImputer(missing_values=None, strategy="most_frequent"),
                               OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)), list(TEXT)),
        ("scaled", make_pipeline(SimpleImputer(strategy="median"), MinMaxScaler(clip=True)), ["conv_rate", "rating"])],
        remainder="passthrough"), LogisticRegression()),
    "one-hot with drop, robust and max-abs, positions": lambda: make_pipeline(ColumnTransformer([
        ("text", make_pipeline(SimpleImputer(missing_values=None, strategy="constant", fill_value="unknown"),
                               OneHotEncoder(drop="first", handle_unknown="ignore")), [3, 4]),
        ("robust", make_pipeline(SimpleImputer(), RobustScaler(), MaxAbsScaler()), [0, 2]),
        ("dropped", "drop", ["trips"])]), FunctionTransformer(), LogisticRegression(C=0.5)),
    "boosted trees at the end": lambda: make_pipeline(ColumnTransformer([
        ("text", make_pipeline(*_text_steps()), list(TEXT))], remainder="passthrough"),
        HistGradientBoostingClassifier(max_iter=20)),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_the_plan_answers_as_the_pipeline_on_unseen_and_missing_values(name: str) -> None:
    model = PIPELINES[name]().fit(TRAIN, LABEL)
    predictor = SklearnPredictor(model, _contract())
    assert predictor.compiled, name
    served = _frame(300, unseen=True)
    got = predict(predictor, {c: served[c].to_numpy() for c in INPUTS})
    np.testing.assert_allclose(got, model.predict_proba(served)[:, 1], rtol=0, atol=1e-12)


def test_a_regressor_pipeline_compiles_too() -> None:
    numeric = TRAIN[list(NUMERIC)]
    model = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), Ridge()).fit(numeric, TRAIN["trips"])
    contract = ModelContract(features=tuple(f"stats:{c}" for c in NUMERIC), join_keys=("driver_id",),
                             key_kinds=("int",), inputs=NUMERIC, task="regression")
    predictor = SklearnPredictor(model, contract)
    assert predictor.compiled
    np.testing.assert_allclose(predict(predictor, numeric), model.predict(numeric), rtol=0, atol=1e-9)


def test_a_step_the_plan_lacks_keeps_the_pipeline_serving() -> None:
    model = make_pipeline(ColumnTransformer([("text", make_pipeline(*_text_steps()), list(TEXT)),
                                             ("pca", make_pipeline(SimpleImputer(), PCA(2)), list(NUMERIC))]),
                          LogisticRegression()).fit(TRAIN, LABEL)
    predictor = SklearnPredictor(model, _contract())
    assert not predictor.compiled
    served = _frame(50, unseen=True)
    np.testing.assert_allclose(predict(predictor, {c: served[c].to_numpy() for c in INPUTS}),
                               model.predict_proba(served)[:, 1], rtol=0, atol=1e-12)


def test_a_plan_that_disagrees_with_the_pipeline_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    model = PIPELINES["impute, scale, one-hot"]().fit(TRAIN, LABEL)
    assert compile_pipeline(model, INPUTS, frozenset(TEXT), method="predict_proba") is not None
    translate = sklearn_plan._scaler
    monkeypatch.setattr(sklearn_plan, "_scaler", lambda scaler: (lambda x: translate(scaler)(x) * 1.001))
    assert compile_pipeline(model, INPUTS, frozenset(TEXT), method="predict_proba") is None
    predictor = SklearnPredictor(model, _contract())
    assert not predictor.compiled
    served = _frame(20)
    np.testing.assert_allclose(predict(predictor, {c: served[c].to_numpy() for c in INPUTS}),
                               model.predict_proba(served)[:, 1], rtol=0, atol=1e-12)


def test_an_unknown_value_the_encoder_refuses_is_a_typed_error() -> None:
    model = make_pipeline(ColumnTransformer([
        ("text", make_pipeline(SimpleImputer(missing_values=None, strategy="constant", fill_value="unknown"),
                               OneHotEncoder(handle_unknown="error")), list(TEXT)),
        ("numbers", SimpleImputer(), list(NUMERIC))]), LogisticRegression()).fit(TRAIN, LABEL)
    predictor = SklearnPredictor(model, _contract())
    assert predictor.compiled  # checked on probe rows without the unseen value
    row = {c: TRAIN[c].to_numpy()[:1].copy() for c in INPUTS}
    row["vehicle"] = np.array(["scooter"], dtype=object)
    with pytest.raises(ModelInputError, match="scooter"):
        predict(predictor, row)


def test_linear_models_are_computed_here_and_a_glm_by_its_own_predict() -> None:
    numeric = TRAIN[list(NUMERIC)].fillna(0.0)
    labels = np.array(["slow", "ok", "fast"])[RNG.integers(0, 3, N)]
    multiclass = make_pipeline(StandardScaler(), LogisticRegression()).fit(numeric, labels)
    plan = compile_pipeline(multiclass, NUMERIC, frozenset(), method="predict_proba")
    assert plan is not None and plan.predict.__module__ == sklearn_plan.__name__  # softmax, computed here
    served = _frame(50)[list(NUMERIC)].fillna(1.0)
    np.testing.assert_allclose(plan.predict(plan.matrix([served[c].to_numpy() for c in NUMERIC])),
                               multiclass.predict_proba(served), rtol=0, atol=1e-12)
    glm = make_pipeline(StandardScaler(), PoissonRegressor()).fit(numeric, TRAIN["trips"])
    plan = compile_pipeline(glm, NUMERIC, frozenset(), method="predict")
    assert plan is not None and plan.predict == glm[-1].predict  # exp(X @ coef): not linear, its own method
    np.testing.assert_allclose(plan.predict(plan.matrix([served[c].to_numpy() for c in NUMERIC])),
                               glm.predict(served), rtol=0, atol=1e-12)


def test_a_lightgbm_model_is_served_by_its_booster_on_one_thread() -> None:
    from lightgbm import LGBMClassifier, LGBMRegressor

    numeric = TRAIN[list(NUMERIC)]
    served = _frame(60)[list(NUMERIC)]
    columns = [served[c].to_numpy() for c in NUMERIC]
    bare = LGBMClassifier(n_estimators=25, verbose=-1).fit(numeric, LABEL)
    piped = make_pipeline(SimpleImputer(), LGBMClassifier(n_estimators=25, verbose=-1)).fit(numeric, LABEL)
    regressor = LGBMRegressor(n_estimators=25, verbose=-1).fit(numeric, TRAIN["conv_rate"])
    for model, method in ((bare, "predict_proba"), (piped, "predict_proba"), (regressor, "predict")):
        plan = compile_pipeline(model, NUMERIC, frozenset(), method=method)
        assert plan is not None and plan.predict.__module__ == sklearn_plan.__name__, model
        np.testing.assert_allclose(plan.predict(plan.matrix(columns)), getattr(model, method)(served), rtol=0,
                                   atol=1e-12)
