"""register_model's evaluation on a real MLflow (SQLite in tmp): the task metrics on each
version's LoggedModel rank versions in ``search_logged_models``, MLflow's evaluation plots are run
artifacts, and the signature types every input (which serving's generic pyfunc path then meets)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from features.sdk import FeatureClient
from pipelines import model_registry
from pipelines.model_registration import register_model
from serving.model_contract import ModelContract
from serving.predictors import predict, predictor_for
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration

FEATURES = ["customer_txn:amt_sum_24h", "customer_profile:age_band", "merchant_stats:fraud_rate_30d"]
NUMERIC = ["amt_sum_24h", "fraud_rate_30d", "amount", "items", "is_weekend"]
PLOTS = {"roc_curve_plot.png", "precision_recall_curve_plot.png", "calibration_curve_plot.png", "confusion_matrix.png"}


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = pd.DataFrame({"customer_id": rng.integers(1, 500, n), "merchant_id": rng.integers(1, 20, n),
                        "event_timestamp": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="min"),
                        "amount": rng.gamma(2.0, 30.0, n), "amt_sum_24h": rng.gamma(2, 100, n),
                        "fraud_rate_30d": rng.random(n) / 10, "age_band": rng.choice(["25-34", "45-54"], n),
                        "items": rng.integers(1, 6, n), "is_weekend": rng.random(n) < 0.3})
    signal = out["amt_sum_24h"] / 200 + out["amount"] / 60 + rng.normal(0, 1.0, n)
    out["churned"] = (signal > np.quantile(signal, 0.8)).astype(int)
    return out


def _fit(frame: pd.DataFrame, labels: pd.Series) -> object:
    encode = ColumnTransformer([("band", OneHotEncoder(handle_unknown="ignore"), ["age_band"]),
                                ("num", SimpleImputer(), NUMERIC)])
    return make_pipeline(encode, LogisticRegression(max_iter=500)).fit(frame[["age_band", *NUMERIC]], labels)


def test_versions_rank_by_their_validation_metrics_and_carry_plots_and_a_typed_signature(tmp_path: Path, redis_url: str):
    settings = Settings(home=tmp_path / "home", spark=SparkSettings(), redis_url=redis_url)  # not the embedded one
    fc = FeatureClient(settings)
    fc.apply()
    train, val = _frame(3_000, 1), _frame(1_000, 2)
    shuffled = pd.Series(np.random.default_rng(3).permutation(train["churned"].to_numpy()))
    versions = {quality: register_model(model, "team-churn", features=FEATURES, frame=train, validation_frame=val,
                                        label="churned", task="binary", feature_client=fc)
                for quality, model in (("poor", _fit(train, shuffled)), ("good", _fit(train, train["churned"])))}
    ml = model_registry.connect(settings)
    experiment = ml.get_experiment_by_name("team-churn").experiment_id
    ranked = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list",
                                         order_by=[{"field_name": "metrics.val_pr_auc", "ascending": False}])
    by_id = {str(v.source).removeprefix("models:/"): q for q, v in versions.items()}  # the LoggedModel's id
    assert [by_id[m.model_id] for m in ranked] == ["good", "poor"]
    metrics = {m.key: m for m in ranked[0].metrics}
    poor = {m.key: m.value for m in ranked[1].metrics}
    assert metrics["val_pr_auc"].value > 0.5 > poor["val_pr_auc"]
    assert metrics["val_pr_auc"].dataset_name == "team-churn validation frame" and metrics["val_pr_auc"].dataset_digest
    assert {"val_roc_auc", "val_log_loss", "val_calibration_error", "roc_auc", "precision_recall_auc"} <= set(metrics)
    for version in versions.values():
        assert PLOTS <= {a.path for a in ml.list_artifacts(str(version.run_id))}

    good = versions["good"]
    info = mlflow.models.get_model_info(f"models:/team-churn/{good.version}")
    columns = {c.name: (c.type.name, c.required) for c in info.signature.inputs.inputs}
    assert columns == {"age_band": ("string", False), "amt_sum_24h": ("double", False),
                       "fraud_rate_30d": ("double", False), "amount": ("double", True), "items": ("long", True),
                       "is_weekend": ("boolean", True)}

    # serving's generic pyfunc path meets the typed schema (a missing store feature included)
    contract = ModelContract.of_version("team-churn", str(good.version), good.tags)
    local = mlflow.artifacts.download_artifacts(f"models:/team-churn/{good.version}", dst_path=str(tmp_path / "m"))
    generic = predictor_for(local, {"python_function": {}}, contract)
    rows = val.head(20).copy()
    rows.loc[rows.index[:3], "amt_sum_24h"] = np.nan
    expected = mlflow.sklearn.load_model(local).predict_proba(rows[["age_band", *NUMERIC]])[:, 1]
    np.testing.assert_allclose(predict(generic, rows), expected, rtol=1e-9)
