"""A team's own scikit-learn models on tidemark: registered with ``register_model`` from a
point-in-time training frame, served by the same server code as the fraud example, on real Spark
(the training frame), Redis (online features) and MLflow (SQLite). Nothing here uses the fraud
model's code: only Feast feature references, a label and a task."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from starlette.testclient import TestClient

from features.errors import UnknownFeatureError, UnknownFeatureServiceError
from features.sdk import FeatureClient
from pipelines import model_registry
from pipelines.model_registry import register_model
from serving.app import create_app
from serving.errors import ContractError
from serving.model_contract import ModelContract
from serving.model_slots import ModelSlots
from serving.scorer import Scorer

# the module-scoped fixtures that build a real feature store (each importing module gets its own)
from tests.integration.test_serving import CUSTOMERS, FEATURES, settings  # noqa: F401
from tidemark.settings import Settings

pytestmark = pytest.mark.integration

NUMERIC = ["amt_sum_24h", "fraud_rate_30d", "amount"]


@pytest.fixture(scope="module")
def frame(settings: Settings) -> pd.DataFrame:  # noqa: F811
    """A team's training frame: entity rows an hour ago (the features' values then), a request
    column, and two labels made from them."""
    rng = np.random.default_rng(5)
    when = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta("5min")
    entities = pd.DataFrame({"customer_id": rng.choice(CUSTOMERS, 400), "merchant_id": rng.integers(1, 6, 400),
                             "event_timestamp": when, "amount": rng.gamma(2.0, 30.0, 400)})
    out = FeatureClient(settings).training_frame(entities, list(FEATURES))
    assert isinstance(out, pd.DataFrame)
    signal = out["amt_sum_24h"].to_numpy(float) / 700 + out["amount"].to_numpy(float) / 60 + rng.normal(0, 0.3, 400)
    out["churned"] = (signal > np.median(signal)).astype(int)
    out["spend"] = signal * 10
    return out


def _binary(frame: pd.DataFrame) -> object:
    encode = ColumnTransformer([("band", OneHotEncoder(handle_unknown="ignore"), ["age_band"]),
                                ("num", SimpleImputer(), NUMERIC)])
    return make_pipeline(encode, LogisticRegression()).fit(frame[["age_band", *NUMERIC]], frame["churned"])


@pytest.fixture(scope="module")
def binary(settings: Settings, frame: pd.DataFrame) -> Iterator[tuple[object, TestClient]]:  # noqa: F811
    """The binary model registered, promoted and served: (model, HTTP client)."""
    model = _binary(frame)
    version = register_model(model, "team-churn", features=list(FEATURES), frame=frame, label="churned",
                             task="binary", feature_client=FeatureClient(settings),
                             label_source={"table": str(settings.home / "labels"), "label": "churned"})
    ml = model_registry.connect(settings)
    model_registry.promote(ml, "team-churn", version.version, first=True)
    with _served(settings, "team-churn") as http:
        yield model, http


class _served:
    """A server for one registered model (champion only), as ``tidemark serve --model NAME`` runs it."""

    def __init__(self, settings: Settings, name: str) -> None:  # noqa: F811
        ml = model_registry.connect(settings)
        self.slots = ModelSlots(ml, name, aliases=("champion",))
        assert self.slots.refresh(), self.slots.errors
        self.scorer = Scorer(self.slots, FeatureClient(settings).online_reader())

    def __enter__(self) -> TestClient:
        self.http = TestClient(create_app(self.scorer))
        return self.http

    def __exit__(self, *exc: object) -> None:
        self.scorer.close()


def _online_inputs(settings: Settings, rows: list[dict]) -> pd.DataFrame:  # noqa: F811
    """The model's inputs as Feast's online read gives them, plus the request's amount."""
    keys = [{"customer_id": r["customer_id"], "merchant_id": r["merchant_id"]} for r in rows]
    online = FeatureClient(settings).online_features(keys, list(FEATURES)).frame
    online["amount"] = [r["amount"] for r in rows]
    online["age_band"] = online["age_band"].astype(object).where(online["age_band"].notna(), None)
    return online[["age_band", *NUMERIC]].astype({c: float for c in NUMERIC})


def test_registration_stores_the_contract_lineage_profile_and_task_metrics(settings: Settings,  # noqa: F811
                                                                           binary: tuple[object, TestClient]) -> None:
    ml = model_registry.connect(settings)
    version = ml.get_model_version_by_alias("team-churn", "champion")
    contract = ModelContract.of_version("team-churn", version.version, version.tags)
    assert contract.features == FEATURES and contract.task == "binary"
    assert contract.join_keys == ("customer_id", "merchant_id") and contract.key_kinds == ("int", "int")
    assert contract.request_columns == ("amount",) and contract.text_columns == ("age_band",)
    assert contract.classes == ("0", "1") and contract.label is not None and contract.label.label == "churned"
    run = ml.get_run(version.run_id)
    assert {"train_roc_auc", "train_pr_auc"} <= set(run.data.metrics) and run.data.metrics["train_roc_auc"] > 0.7
    artifacts = {a.path for a in ml.list_artifacts(version.run_id)}
    assert {"lineage.json", "contract.json", "reference_profile"} <= artifacts
    lineage = json.loads(Path(ml.download_artifacts(version.run_id, "lineage.json", str(settings.home))).read_text())
    assert set(lineage["views"]) == {"customer_txn", "customer_profile", "merchant_stats"}
    assert len(lineage["frame_sha256"]) == 64
    flavors = mlflow.models.Model.load(f"models:/team-churn/{version.version}").flavors
    assert "sklearn" in flavors  # its own flavour, not a pickled pyfunc wrapper
    requirements = Path(mlflow.artifacts.download_artifacts(f"models:/team-churn/{version.version}/requirements.txt",
                                                            dst_path=str(settings.home / "req"))).read_text()
    assert "scikit-learn==" in requirements and "tidemark" not in requirements and "+cpu" not in requirements


def test_served_predictions_equal_the_models_own_on_the_stores_features(settings: Settings,  # noqa: F811
                                                                         binary: tuple[object, TestClient]) -> None:
    model, http = binary
    rows = [{"customer_id": int(c), "merchant_id": int(m), "amount": float(a)}
            for c, m, a in zip(CUSTOMERS[:40], np.arange(40) % 5 + 1, np.linspace(1, 300, 40), strict=True)]
    answer = http.post("/v1/models/team-churn/predict", json={"rows": rows})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "team-churn" and {p["variant"] for p in body["predictions"]} == {"champion"}
    served = np.array([p["score"] for p in body["predictions"]])
    expected = model.predict_proba(_online_inputs(settings, rows))[:, 1]  # type: ignore[attr-defined]
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-9)
    again = http.post("/v1/predict", json={"rows": rows[:3]})  # the only model, by the short path
    assert [p["score"] for p in again.json()["predictions"]] == [p["score"] for p in body["predictions"][:3]]


def test_requests_are_checked_against_that_models_contract(binary: tuple[object, TestClient]) -> None:
    _, http = binary
    missing = http.post("/v1/models/team-churn/predict", json={"rows": [{"customer_id": 1, "amount": 3.0}]})
    assert missing.status_code == 422
    assert {"loc": ["rows", 0, "merchant_id"], "msg": "required (an integer id)"} in missing.json()["detail"]
    no_amount = http.post("/v1/predict", json={"rows": [{"customer_id": 1, "merchant_id": 2}]})
    assert no_amount.status_code == 422 and no_amount.json()["detail"][0]["loc"] == ["rows", 0, "amount"]
    other = http.post("/v1/models/fraud-detector/predict", json={"rows": [{"customer_id": 1}]})
    assert other.status_code == 404 and "team-churn" in other.json()["detail"][0]["msg"]
    schema = http.get("/openapi.json").json()
    row = schema["paths"]["/v1/models/team-churn/predict"]["post"]["requestBody"]["content"]["application/json"]
    item = row["schema"]["properties"]["rows"]["items"]
    assert item["required"] == ["customer_id", "merchant_id", "amount"]


def test_a_regressor_is_served_values_and_judged_by_rmse(settings: Settings, frame: pd.DataFrame) -> None:  # noqa: F811
    model = make_pipeline(SimpleImputer(), Ridge()).fit(frame[NUMERIC], frame["spend"])
    half = len(frame) // 2
    version = register_model(model, "team-spend", features=["customer_txn:amt_sum_24h",
                                                              "merchant_stats:fraud_rate_30d"],
                             frame=frame.iloc[:half], validation_frame=frame.iloc[half:], label="spend",
                             task="regression", feature_client=FeatureClient(settings))
    ml = model_registry.connect(settings)
    metrics = ml.get_run(version.run_id).data.metrics
    assert {"val_rmse", "val_mae", "val_r2"} <= set(metrics) and "val_pr_auc" not in metrics
    model_registry.promote(ml, "team-spend", version.version, first=True)
    rows = [{"customer_id": int(c), "merchant_id": 2, "amount": 10.0 * i} for i, c in enumerate(CUSTOMERS[:10])]
    with _served(settings, "team-spend") as http:
        answer = http.post("/v1/models/team-spend/predict", json={"rows": rows})
    assert answer.status_code == 200, answer.text
    values = np.array([p["value"] for p in answer.json()["predictions"]])
    inputs = _online_inputs(settings, rows)[NUMERIC]
    np.testing.assert_allclose(values, model.predict(inputs), rtol=0, atol=1e-9)


def test_a_lightgbm_model_is_registered_in_the_scikit_learn_flavour_and_served_exactly(
        settings: Settings, frame: pd.DataFrame) -> None:  # noqa: F811
    from lightgbm import LGBMClassifier

    model = LGBMClassifier(n_estimators=40, num_leaves=8, verbose=-1).fit(frame[NUMERIC], frame["churned"])
    version = register_model(model, "team-boost", features=["customer_txn:amt_sum_24h",
                                                              "merchant_stats:fraud_rate_30d"],
                             frame=frame, label="churned", task="binary", feature_client=FeatureClient(settings),
                             # skops loads only the types it is told to trust: the booster's own
                             skops_trusted_types=["collections.OrderedDict", "lightgbm.basic.Booster",
                                                  "lightgbm.sklearn.LGBMClassifier"])
    ml = model_registry.connect(settings)
    model_registry.promote(ml, "team-boost", version.version, first=True)
    pyfunc = mlflow.pyfunc.load_model(f"models:/team-boost/{version.version}")  # what `mlflow models serve` runs
    np.testing.assert_allclose(np.asarray(pyfunc.predict(frame[NUMERIC].head(5)))[:, 1],
                               model.predict_proba(frame[NUMERIC].head(5))[:, 1], rtol=0, atol=1e-12)
    rows = [{"customer_id": int(c), "merchant_id": 3, "amount": 7.5 * i} for i, c in enumerate(CUSTOMERS[:30])]
    server = _served(settings, "team-boost")
    with server as http:
        answer = http.post("/v1/models/team-boost/predict", json={"rows": rows})
    assert answer.status_code == 200, answer.text
    assert server.slots.get("champion").model.compiled  # the booster on one thread, not predict_proba's pool
    served = np.array([p["score"] for p in answer.json()["predictions"]])
    np.testing.assert_allclose(served, model.predict_proba(_online_inputs(settings, rows)[NUMERIC])[:, 1], rtol=0,
                               atol=1e-9)


def test_what_registration_refuses(settings: Settings, frame: pd.DataFrame) -> None:  # noqa: F811
    model = _binary(frame)
    fc = FeatureClient(settings)
    with pytest.raises(UnknownFeatureServiceError, match="unknown feature service 'churn_feature'"):
        register_model(model, "team-bad", features="churn_feature", frame=frame, label="churned", task="binary",
                       feature_client=fc)
    with pytest.raises(UnknownFeatureError, match="did you mean 'customer_txn:amt_sum_24h'"):
        register_model(model, "team-bad", features=["customer_txn:amt_sum_42h"], frame=frame, label="churned",
                       task="binary", feature_client=fc)
    with pytest.raises(ContractError, match=r"lacks columns \['churn'\]"):
        register_model(model, "team-bad", features=list(FEATURES), frame=frame, label="churn", task="binary",
                       feature_client=fc)
    with pytest.raises(ContractError, match="task 'classification'"):
        register_model(model, "team-bad", features=list(FEATURES), frame=frame, label="churned",
                       task="classification", feature_client=fc)
    assert model_registry.alias_version(model_registry.connect(settings), "team-bad", "challenger") is None


def test_a_version_registered_by_hand_is_never_served(settings: Settings, frame: pd.DataFrame,  # noqa: F811
                                                      binary: tuple[object, TestClient]) -> None:
    ml = model_registry.connect(settings)
    champion = ml.get_model_version_by_alias("team-churn", "champion").version
    with mlflow.start_run(experiment_id=model_registry.experiment_id(ml, settings, "team-churn")) as run:
        info = mlflow.sklearn.log_model(_binary(frame), name="model", pip_requirements=["scikit-learn"],
                                        skops_trusted_types=["numpy.dtype"])
    by_hand = model_registry.register(ml, "team-churn", info.model_uri, run_id=run.info.run_id, tags={},
                                      description="registered without a contract")
    slots = ModelSlots(ml, "team-churn", aliases=("challenger",))
    assert slots.refresh() == [] and slots.get("challenger") is None
    assert "no model contract" in slots.errors["challenger"] and "register_model" in slots.errors["challenger"]
    assert ml.get_model_version_by_alias("team-churn", "champion").version == champion
    ml.delete_model_version("team-churn", by_hand.version)
