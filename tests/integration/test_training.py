"""Training end to end: generated data, real Spark features, Feast, a real MLflow (SQLite) store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from examples.fraud import training
from examples.fraud.feature_views import DEFAULT_FEATURES
from examples.fraud.pyfunc import unwrap
from examples.fraud.train_job import TrainOutcome, train_and_register
from examples.fraud.training import TrainConfig, fit, prepare
from features.embedded_redis import EmbeddedRedis
from features.errors import UnknownFeatureError
from features.sdk import FeatureClient
from pipelines import model_registry
from pipelines.errors import (
    GateError,
    ImmatureLabelsError,
    NoChampionError,
    NoLabelsError,
    RegistryError,
    SingleClassError,
)
from pipelines.gate import GateConfig, evaluate_gate
from pipelines.model_metrics import METRICS
from pipelines.model_registration import PROFILE_ARTIFACT, input_types, lineage_of, load_profile, typed_inputs
from serving.model_contract import ModelContract
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration

CONFIG = TrainConfig(epochs=3, patience=2, hidden=(32, 16), batch_size=1024, seed=0)
PLOTS = {"roc_curve_plot.png", "precision_recall_curve_plot.png", "calibration_curve_plot.png", "confusion_matrix.png"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, spark) -> Iterator[Settings]:
    """70k generated payments over 100 days, feature tables built on Spark, definitions applied."""
    from examples.fraud.datagen import DatagenConfig, generate
    from examples.fraud.feature_jobs import build_features

    home = tmp_path_factory.mktemp("train-home")
    s = Settings(home=home, spark=SparkSettings(master="local[2]", shuffle_partitions=4))
    generate(s.raw_dir, DatagenConfig(rows=70_000, seed=3, start=date(2026, 5, 1), days=100))
    build_features(spark, s.raw_dir, s.offline_dir)
    FeatureClient(s).apply()
    try:
        yield s
    finally:
        EmbeddedRedis(s.redis_dir).stop()


@pytest.fixture(scope="module")
def client(settings: Settings) -> FeatureClient:
    return FeatureClient(settings)


@pytest.fixture(scope="module")
def outcome(settings: Settings, client: FeatureClient) -> TrainOutcome:
    return train_and_register(settings, CONFIG, feature_client=client, progress=False)


def _versions(settings: Settings) -> list[str]:
    ml = model_registry.connect(settings)
    return sorted(str(v.version) for v in ml.search_model_versions(f"name = '{settings.model_name}'"))


def test_frame_respects_the_cutoff_and_label_maturity(settings: Settings, outcome: TrainOutcome):
    data = outcome.data
    w = data.window
    assert w.end == w.label_cutoff - CONFIG.label_maturity
    assert data.frame["event_timestamp"].max() <= w.end
    assert data.frame["event_timestamp"].is_monotonic_increasing
    when = data.frame["event_timestamp"]
    # time split, never random: every fit row is older than every tune row, tune older than validation
    assert when[data.split == 0].max() < when[data.split == 1].min()
    assert when[data.split == 1].max() < w.fit_end <= when[data.split == 3].min()
    assert when[data.split == 3].max() < w.train_end <= when[data.split == 2].min()
    assert w.train_end - w.fit_end == CONFIG.validation_gap
    assert data.label_coverage == {"training": 1.0, "validation": 1.0}  # 30 days: every label is final
    # no prediction time before the features' warm-up: 30-day aggregates need 30 days of history
    from examples.fraud.training_data import first_event_time

    assert w.start == first_event_time(settings.raw_dir) + CONFIG.feature_warmup
    assert when.min() >= w.start


def test_a_payment_is_never_in_its_own_training_windows(settings: Settings, outcome: TrainOutcome):
    """Serving scores a payment, then pushes it: its windows at scoring time hold the payments
    before it. Training agrees: the generator records each payment's arrival after its
    authorisation round trip, so the row at the payment's own time does not see it. Checked
    against the raw payments, brute force, on the busiest customers' rows."""
    raw = pd.read_parquet(settings.raw_dir / "transactions",
                          columns=["transaction_id", "customer_id", "amount", "event_timestamp", "arrival_timestamp"])
    assert (raw["arrival_timestamp"] > raw["event_timestamp"]).all()  # every payment arrives after it is made
    frame = outcome.data.frame
    busiest = frame["customer_id"].value_counts().index[:5]
    rows = frame[frame["customer_id"].isin(busiest)]
    by_customer = {c: part for c, part in raw.groupby("customer_id")}
    for row in rows.itertuples(index=False):
        mine, t = by_customer[row.customer_id], row.event_timestamp
        for name, width in (("1h", pd.Timedelta("1h")), ("24h", pd.Timedelta("24h"))):
            seen = mine[(mine["event_timestamp"] > t - width) & (mine["event_timestamp"] <= t)
                        & (mine["arrival_timestamp"] <= t)]
            assert row.transaction_id not in set(seen["transaction_id"])
            assert getattr(row, f"txn_count_{name}") == len(seen), (row, name)
            assert getattr(row, f"amt_sum_{name}") == pytest.approx(seen["amount"].sum(), abs=1e-9), (row, name)
    assert (rows["txn_count_24h"] == 0).any() and (rows["txn_count_24h"] > 0).any()  # both cases were met
    empty = frame[frame["txn_count_1h"] == 0]  # an empty window: count 0, sum 0, no mean or max
    assert len(empty) and (empty["amt_sum_1h"] == 0).all() and empty[["amt_mean_1h", "amt_max_1h"]].isna().all().all()


def test_run_holds_params_metrics_lineage_profile_and_model(settings: Settings, outcome: TrainOutcome):
    ml = model_registry.connect(settings)
    run = ml.get_run(outcome.run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["features"] == ",".join(DEFAULT_FEATURES)
    assert params["hidden"] == "32,16" and params["seed"] == "0"
    assert pd.Timestamp(params["data_end"]) == outcome.data.window.end
    assert ml.get_experiment(run.info.experiment_id).name == settings.model_name
    for name in ("roc_auc", "pr_auc", "recall_at_1pct_fpr", "log_loss", "calibration_error"):
        assert metrics[f"val_{name}"] == pytest.approx(outcome.result.metrics[name])
    assert 0.5 < metrics["val_roc_auc"] <= 1.0
    steps = [m.step for m in ml.get_metric_history(outcome.run_id, "tune_loss")]
    assert steps == list(range(1, len(outcome.result.history) + 1))
    assert run.data.tags["frame_sha256"] == outcome.data.fingerprint
    contexts = {t.value for d in run.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"}
    assert {"training", "validation"} <= contexts
    # the validation metrics also belong to the model's LoggedModel, with the validation frame as
    # their dataset (search_logged_models ranks versions by them), and MLflow drew its plots
    logged = {m.key: m for m in mlflow.get_logged_model(str(outcome.version.source).removeprefix("models:/")).metrics}
    for name in METRICS:
        assert logged[f"val_{name}"].value == pytest.approx(outcome.result.metrics[name])
        assert logged[f"val_{name}"].dataset_name == f"{settings.model_name} validation frame"
    assert {"roc_auc", "precision_recall_auc"} <= set(logged)  # MLflow's own, for the UI
    assert PLOTS <= {a.path for a in ml.list_artifacts(outcome.run_id)}
    lineage = lineage_of(ml, outcome.run_id)
    assert set(lineage["views"]) == {ref.split(":")[0] for ref in DEFAULT_FEATURES}
    for view, info in lineage["views"].items():
        assert len(info["definition_sha256"]) == 64
        assert run.data.tags[f"feast.{view}"].endswith(info["definition_sha256"][:12])
    profile = load_profile(ml, outcome.run_id)
    assert set(profile.columns) == {*outcome.data.feature_columns, "score"}
    # the reference is the out-of-sample validation rows, not the rows the model was fitted on
    assert profile.columns["score"].rows == outcome.data.rows()["rows_validation"]
    assert PROFILE_ARTIFACT in [a.path for a in ml.list_artifacts(outcome.run_id, "reference_profile")]


def test_version_is_challenger_and_serves_raw_frames(settings: Settings, outcome: TrainOutcome):
    ml = model_registry.connect(settings)
    name = settings.model_name
    assert str(model_registry.alias_version(ml, name, "challenger").version) == str(outcome.version.version)
    assert model_registry.alias_version(ml, name, "champion") is None
    tags = ml.get_model_version(name, outcome.version.version).tags
    assert tags["frame_sha256"] == outcome.data.fingerprint and float(tags["val_pr_auc"]) > 0
    data = outcome.data
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@challenger")
    schema = loaded.metadata.get_input_schema()
    assert schema.input_names() == data.feature_columns
    # typed as register_model types a team's model: numbers double (an integer store feature too,
    # it can be missing online), text string; request columns required, store features optional
    columns = {c.name: (c.type.name, c.required) for c in schema.inputs}
    assert columns["amount"] == ("double", True) and columns["channel"] == ("string", True)
    assert columns["txn_count_24h"] == ("double", False) and columns["category"] == ("string", False)
    # The frame as the feature store returns it (nullable ints, string dtype, nulls): serving's
    # native path (the module itself) takes it as it is; the pyfunc's schema enforcement wants it
    # in the signature's types, which typed_inputs gives.
    rows = data.frame[data.feature_columns].tail(300).reset_index(drop=True)
    contract = ModelContract.of_version(name, str(outcome.version.version), tags)
    served = loaded.predict(typed_inputs(rows, input_types(contract, data.frame)))["fraud_probability"].to_numpy()
    np.testing.assert_allclose(served, outcome.result.scores[-300:], rtol=1e-6)
    np.testing.assert_allclose(unwrap(loaded).predict_proba(rows), served)


def test_preprocessing_is_fitted_on_the_fit_rows_only(outcome: TrainOutcome):
    data, spec = outcome.data, outcome.result.model.spec
    amount = next(c for c in spec.numeric if c.name == "amount")
    fitted = np.log1p(data.frame.loc[data.split == 0, "amount"]) if amount.log else data.frame.loc[
        data.split == 0, "amount"]
    everything = np.log1p(data.frame["amount"]) if amount.log else data.frame["amount"]
    assert amount.mean == pytest.approx(float(fitted.mean()), rel=1e-9)
    assert amount.mean != pytest.approx(float(everything.mean()), rel=1e-6)


def test_a_model_loads_in_a_fresh_process(settings: Settings, outcome: TrainOutcome, tmp_path: Path):
    """What serving does: a new interpreter, elsewhere, with nothing of tidemark imported yet."""
    import subprocess
    import sys

    contract = ModelContract.of_version(settings.model_name, str(outcome.version.version), outcome.version.tags)
    rows = outcome.data.frame[outcome.data.feature_columns].tail(50).reset_index(drop=True)
    typed_inputs(rows, input_types(contract, outcome.data.frame)).to_pickle(tmp_path / "rows.pkl")
    script = (
        "import sys, mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri({settings.tracking_uri!r})\n"
        f"m = mlflow.pyfunc.load_model('models:/{settings.model_name}/{outcome.version.version}')\n"
        f"out = m.predict(pd.read_pickle({str(tmp_path / 'rows.pkl')!r}))['fraud_probability']\n"
        f"out.to_frame().to_parquet({str(tmp_path / 'out.parquet')!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    served = pd.read_parquet(tmp_path / "out.parquet")["fraud_probability"].to_numpy()
    np.testing.assert_allclose(served, outcome.result.scores[-50:], rtol=1e-6)


def test_same_seed_same_weights_on_cpu(client: FeatureClient):
    config = replace(CONFIG, epochs=2, max_rows=20_000, device="cpu")
    data = prepare(client, config)
    first, again = (fit(data, config, progress=False) for _ in range(2))
    other = fit(data, replace(config, seed=1), progress=False)
    a, b, c = (r.model.module.state_dict() for r in (first, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    np.testing.assert_array_equal(first.scores, again.scores)


def _runs(settings: Settings) -> int:
    ml = model_registry.connect(settings)
    return len(ml.search_runs([ml.get_experiment_by_name(settings.model_name).experiment_id]))


def test_data_errors_register_nothing(settings: Settings, client: FeatureClient, outcome: TrainOutcome):
    before, runs = _versions(settings), _runs(settings)
    with pytest.raises(UnknownFeatureError, match="customer_txn:amt_sum_24h"):
        train_and_register(settings, replace(CONFIG, features=("customer_txn:amt_sum_24", )),
                           feature_client=client, progress=False)
    first = outcome.data.window.start - CONFIG.feature_warmup  # the first payment
    with pytest.raises(NoLabelsError, match="label known by"):  # no label arrives within 12 hours
        train_and_register(settings, replace(CONFIG, label_cutoff=first + pd.Timedelta(hours=12),
                                             label_maturity=timedelta(0), feature_warmup=timedelta(0)),
                           feature_client=client, progress=False)
    # Legitimate labels take 30 days, fraud only days: with no maturity, the last week's labels
    # known at the cutoff are all fraud.
    cutoff = outcome.data.window.label_cutoff
    with pytest.raises(SingleClassError, match="all fraud"):
        train_and_register(settings, replace(CONFIG, label_maturity=timedelta(0), window=timedelta(days=7),
                                             label_cutoff=cutoff), feature_client=client, progress=False)
    # A maturity shorter than the chargeback window: many legitimate labels are still missing.
    with pytest.raises(ImmatureLabelsError, match="Raise the label maturity"):
        train_and_register(settings, replace(CONFIG, label_maturity=timedelta(days=20), label_cutoff=cutoff),
                           feature_client=client, progress=False)
    with pytest.raises(NoLabelsError, match="days of history"):  # the warm-up eats the whole window
        train_and_register(settings, replace(CONFIG, feature_warmup=timedelta(days=200)), feature_client=client,
                           progress=False)
    assert _versions(settings) == before
    assert _runs(settings) == runs  # data errors are raised before a run is started


def test_a_crash_during_training_leaves_a_failed_run_and_no_version(settings, client, outcome, monkeypatch):
    before = _versions(settings)
    calls = {"n": 0}
    real_epoch = training._epoch

    def crash_on_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("simulated out of memory in epoch 2")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "_epoch", crash_on_second_epoch)
    with pytest.raises(MemoryError):
        train_and_register(settings, CONFIG, feature_client=client, progress=False, run_name="crashes")
    ml = model_registry.connect(settings)
    run = ml.search_runs([ml.get_experiment_by_name(settings.model_name).experiment_id],
                         "attributes.run_name = 'crashes'")[0]
    assert run.info.status == "FAILED"
    assert _versions(settings) == before


def test_a_failed_alias_update_deletes_the_new_version(settings, client, outcome, monkeypatch):
    from mlflow import MlflowClient

    before = _versions(settings)
    challenger = str(model_registry.alias_version(model_registry.connect(settings), settings.model_name,
                                                  "challenger").version)

    def refuse(self, name, alias, version):
        raise RuntimeError("registry went away")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse)
    with pytest.raises(RuntimeError, match="registry went away"):
        train_and_register(settings, CONFIG, feature_client=client, progress=False)
    monkeypatch.undo()
    ml = model_registry.connect(settings)
    assert _versions(settings) == before
    assert str(model_registry.alias_version(ml, settings.model_name, "challenger").version) == challenger


def test_gate_promote_and_rollback(settings: Settings, client: FeatureClient, outcome: TrainOutcome):
    ml = model_registry.connect(settings)
    name = settings.model_name
    first = str(outcome.version.version)
    with pytest.raises(NoChampionError, match="promote --first"):
        model_registry.promote(ml, name, first)
    assert model_registry.promote(ml, name, first, first=True).champion == first
    with pytest.raises(RegistryError, match="already has champion"):
        model_registry.promote(ml, name, first, first=True)

    second = train_and_register(settings, replace(CONFIG, window=timedelta(days=45), seed=1),
                                feature_client=client, progress=False)
    v2 = str(second.version.version)
    with pytest.raises(GateError, match="has not passed"):
        model_registry.promote(ml, name)  # the gate has not run
    with pytest.raises(GateError, match="inside data a model was trained on"):
        evaluate_gate(settings, config=GateConfig(start=outcome.data.window.start), feature_client=client)
    failed = evaluate_gate(settings, config=GateConfig(max_pr_auc_drop=-1.0), feature_client=client)
    assert not failed.passed and "worse than the champion" in failed.reason
    assert failed.start == max(outcome.data.window.train_end, second.data.window.train_end)
    tags = ml.get_model_version(name, v2).tags
    assert tags["gate.verdict"] == "fail" and tags["gate.champion_version"] == first
    assert float(tags["gate.champion.pr_auc"]) == pytest.approx(failed.champion_metrics["pr_auc"], abs=1e-6)
    with pytest.raises(GateError, match="never promoted"):
        model_registry.promote(ml, name)
    too_small = evaluate_gate(settings, config=GateConfig(min_rows=10**9), feature_client=client)
    assert not too_small.passed and "too little labelled data" in too_small.reason

    passed = evaluate_gate(settings, config=GateConfig(max_pr_auc_drop=1.0, max_roc_auc_drop=1.0),
                           feature_client=client)
    assert passed.passed and passed.rows > 0 and set(passed.challenger_metrics) == set(passed.champion_metrics)
    # the verdict, with its rule and margin, follows the training text on the version's page
    described = ml.get_model_version(name, v2).description
    assert described.startswith("Trained on payments") and "Evaluation gate: " in described
    assert "pr_auc" in described.split("Evaluation gate: ", 1)[1]
    done = model_registry.promote(ml, name)
    assert (done.champion, done.previous) == (v2, first)
    assert str(model_registry.alias_version(ml, name, "champion").version) == v2
    assert str(model_registry.alias_version(ml, name, "previous-champion").version) == first
    assert model_registry.alias_version(ml, name, "challenger") is None

    back = model_registry.rollback(ml, name, reason="p99 latency SLO breached")
    assert (back.champion, back.previous) == (first, v2)
    assert str(model_registry.alias_version(ml, name, "champion").version) == first
    assert model_registry.alias_version(ml, name, "previous-champion") is None
    assert ml.get_model_version(name, v2).tags["rolled_back_reason"] == "p99 latency SLO breached"
    # v2's verdict was against v1, which is champion again; a rollback revokes it, so v2 can't
    # slip back in without a fresh gate.
    assert ml.get_model_version(name, v2).tags["gate.verdict"] == "revoked"
    with pytest.raises(GateError, match="revoked"):
        model_registry.promote(ml, name, v2)
    assert Path(settings.mlflow_artifacts_dir).is_dir()


def test_the_bundled_project_trains_through_its_train_job(settings: Settings, outcome: TrainOutcome):
    """`tidemark train` without --repo: the example's tidemark.yaml names its train_job, which the
    platform imports by name and calls with the request's options."""
    from pipelines.project import project_model
    from pipelines.project_training import TrainRequest, train_model

    model = project_model(settings, None)
    assert model.name == settings.model_name == "fraud-detector"
    trained = train_model(settings, model, TrainRequest(epochs=1, max_rows=20_000, seed=3, progress=False,
                                                        run_name="through the train_job"))
    assert isinstance(trained, TrainOutcome) and len(trained.result.history) == 1  # epochs=1 reached the job
    assert trained.version.name == "fraud-detector" and int(trained.version.version) > int(outcome.version.version)
    assert trained.summary().startswith(f"registered fraud-detector v{trained.version.version} as challenger")
