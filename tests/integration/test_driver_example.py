"""The driver example, a project unrelated to payments, through the platform with the same
commands as fraud: its own Feast repo (``feast init -t spark``'s layout) and ``tidemark.yaml``,
applied and materialized into real Redis on real Spark, both models trained through their entry
points and registered in MLflow (SQLite), promoted and served; a binary classifier and a
regressor, judged by their task's metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from examples.driver.datagen import generate
from examples.driver.training import INPUTS
from features.sdk import FeatureClient
from pipelines import model_registry
from pipelines.cli import main as tidemark
from pipelines.project import load_project
from pipelines.project_training import train_project_model
from serving.model_contract import ModelContract
from serving.server import Server, build_server
from tests.integration.redis_servers import RedisProc
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2] / "examples" / "driver" / "feature_repo"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, spark, module_redis: RedisProc) -> Iterator[Settings]:
    """The example's data generated up to now, its repo applied and materialized."""
    home = tmp_path_factory.mktemp("driver-home")
    with pytest.MonkeyPatch.context() as env:  # what feature_store.yaml and tidemark.yaml read
        env.setenv("TIDEMARK_HOME", str(home))
        env.setenv("TIDEMARK_REDIS_URL", module_redis.url)
        now = pd.Timestamp.now(tz="UTC").floor("h")
        # 600 trips a day: the rows the label checks judge (a few hours after the models' training
        # split, final after 2 days) are at least ~75 whatever the hour of day the test runs at
        generate(home / "driver_example" / "data", end=now.to_pydatetime(), days=12, drivers=30, customers=80,
                 trips_per_day=600)
        s = Settings(home=home, spark=SparkSettings(master="local[2]", shuffle_partitions=4),
                     redis_url=module_redis.url, feast_repo=REPO, model_name="driver-completion")
        client = FeatureClient(s)
        client.apply()
        client.materialize_incremental(pd.Timestamp.now(tz="UTC").to_pydatetime(), progress=False)
        yield s


@pytest.fixture(scope="module")
def completion(settings: Settings) -> Iterator[Server]:
    """driver-completion trained by its entry point, promoted, served as `tidemark serve` does."""
    version = train_project_model(settings, load_project(REPO).model("driver-completion"))
    model_registry.promote(model_registry.connect(settings), "driver-completion", version.version, first=True)
    server = build_server(settings, refresh_s=3600)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def http(completion: Server) -> Iterator[TestClient]:
    """One client for the module: leaving a client's block shuts the app down (the log closes)."""
    with TestClient(completion.app) as client:
        yield client


def _rows(n: int) -> list[dict]:
    rng = np.random.default_rng(3)
    return [{"driver_id": int(d), "customer_id": int(c), "trip_distance_km": float(k), "trip_id": 9_000_000 + i}
            for i, (d, c, k) in enumerate(zip(rng.integers(1001, 1031, n), rng.integers(201, 281, n),
                                              rng.gamma(2.0, 3.0, n), strict=True))]


def _traffic(settings: Settings, n: int, seed: int) -> list[dict]:
    """Requests like the example's trips (drivers, riders and distances drawn from them), under new
    trip ids: no label is known for them."""
    import pyarrow.dataset as ds

    trips = ds.dataset(settings.home / "driver_example" / "data" / "trips", partitioning="hive").to_table(
        columns=["driver_id", "customer_id", "trip_distance_km"]).to_pandas().sample(n, random_state=seed)
    return [{"driver_id": int(d), "customer_id": int(c), "trip_distance_km": float(k), "trip_id": 8_000_000 + seed + i}
            for i, (d, c, k) in enumerate(trips.itertuples(index=False))]


def _ask(http: TestClient, row: dict) -> None:
    """One trip scored, as a client does it: a 503 (a Redis read past its 50 ms budget on a
    starved host opens the breaker, which probes every 50 ms) is asked again shortly."""
    for _ in range(50):
        answer = http.post("/v1/predict", json={"rows": [row]})
        if answer.status_code != 503:
            assert answer.status_code == 200, answer.text
            return
        time.sleep(0.1)
    raise AssertionError(f"still 503 after 5 s: {answer.text}")


def _inputs(settings: Settings, rows: list[dict]) -> pd.DataFrame:
    """The model's inputs as Feast's online read gives them, plus the request's distance."""
    keys = [{"driver_id": r["driver_id"], "customer_id": r["customer_id"]} for r in rows]
    refs, _ = FeatureClient(settings).resolve_features("driver_activity")
    online = FeatureClient(settings).online_features(keys, refs).frame
    online["trip_distance_km"] = [r["trip_distance_km"] for r in rows]
    return online[list(INPUTS)].astype(float)


def test_the_binary_model_is_trained_by_its_entry_point_and_served_exactly(settings: Settings, completion: Server,
                                                                           http: TestClient) -> None:
    ml = model_registry.connect(settings)
    version = ml.get_model_version_by_alias("driver-completion", "champion")
    contract = ModelContract.of_version("driver-completion", version.version, version.tags)
    assert contract.feature_service == "driver_activity" and contract.task == "binary"
    assert contract.join_keys == ("customer_id", "driver_id") and contract.request_columns == ("trip_distance_km",)
    assert contract.extra["train"] == "examples.driver.training:fit_completion"
    metrics = ml.get_run(version.run_id).data.metrics
    assert metrics["val_roc_auc"] > 0.65, metrics  # learnable only from point-in-time features
    rows = _rows(60)
    answer = http.post("/v1/models/driver-completion/predict", json={"rows": rows})
    assert answer.status_code == 200, answer.text
    served = np.array([p["score"] for p in answer.json()["predictions"]])
    model = mlflow.sklearn.load_model(f"models:/driver-completion/{version.version}")
    np.testing.assert_allclose(served, model.predict_proba(_inputs(settings, rows))[:, 1], rtol=0, atol=1e-9)
    assert completion.slots.get("champion").model.compiled  # the fast path, not the pipeline's own code


def test_the_prediction_log_is_the_models_own(settings: Settings, completion: Server, http: TestClient) -> None:
    assert http.post("/v1/predict", json={"rows": _rows(5)}).status_code == 200
    completion.scorer.log_sink.flush()
    import pyarrow.dataset as ds

    logged = ds.dataset(settings.offline_dir / "prediction_log", format="parquet", partitioning="hive").to_table()
    frame = logged.to_pandas()
    assert set(frame["model"]) == {"driver-completion"}
    assert {"driver_id", "customer_id", "trip_distance_km", "conv_rate", "score", "trip_id"} <= set(frame.columns)
    assert "customer_id" in frame and frame["trip_id"].dropna().astype(int).min() >= 9_000_000


def test_a_request_is_checked_against_this_models_keys(http: TestClient) -> None:
    answer = http.post("/v1/predict", json={"rows": [{"driver_id": 1001, "trip_distance_km": 3.0}]})
    assert answer.status_code == 422
    assert answer.json()["detail"] == [{"loc": ["rows", 0, "customer_id"], "msg": "required (an integer id)"}]


def test_a_model_without_a_champion_does_not_hold_back_the_others_retrain(
        settings: Settings, completion: Server, http: TestClient, airflow_db: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """drift_monitor before driver-duration has a champion (the next test trains it): its check
    skips, nothing to monitor yet, and driver-completion's drift, on trips five times as long as
    the example's, is still asked to be retrained (the DAG run by hand, as below)."""
    from pipelines.dag_runs import load_dags, run_dag

    longer = [{**row, "trip_distance_km": 5 * row["trip_distance_km"]} for row in _traffic(settings, 600, 20_000)]
    for i in range(0, len(longer), 200):
        assert http.post("/v1/predict", json={"rows": longer[i:i + 200]}).status_code == 200
    completion.scorer.log_sink.flush()
    monkeypatch.setenv("TIDEMARK_FEAST_REPO", str(REPO))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    ran = run_dag(load_dags(retries=0)["drift_monitor"])
    assert ran.states == {"models": "success", "compare[0]": "success", "compare[1]": "skipped",
                          "request_retrain[0]": "success"}, ran.states
    asked = ran.values["request_retrain[0]"]
    assert (asked["model"], asked["decision"]) == ("driver-completion", "drift"), asked["reasons"]
    assert "trip_distance_km" in asked["drifted_columns"], asked["reasons"]


def test_the_regressor_trains_through_the_cli_and_is_judged_by_rmse(settings: Settings,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TIDEMARK_HOME", str(settings.home))
    monkeypatch.setenv("TIDEMARK_REDIS_URL", str(settings.redis_url))
    assert tidemark(["--repo", str(REPO), "train", "--model", "driver-duration"]) == 0
    assert "registered driver-duration v1 as challenger (regression" in capsys.readouterr().out
    assert tidemark(["--repo", str(REPO), "promote", "--model", "driver-duration", "--first"]) == 0
    ml = model_registry.connect(settings)
    version = ml.get_model_version_by_alias("driver-duration", "champion")
    metrics = ml.get_run(version.run_id).data.metrics
    assert {"val_rmse", "val_mae", "val_r2"} <= set(metrics) and "val_pr_auc" not in metrics
    assert metrics["val_r2"] > 0.5, metrics
    assert tidemark(["--repo", str(REPO), "train"]) == 2  # two models: which one?
    assert "declares 2 models (driver-completion, driver-duration); pick one with --model" in capsys.readouterr().err


def test_one_process_serves_both_models_each_by_its_contract(settings: Settings) -> None:
    """`tidemark serve` of the project: both models behind one app, over one online store."""
    server = build_server(settings, models=["driver-completion", "driver-duration"], refresh_s=3600,
                          prediction_log=False)
    rows = _rows(20)
    with TestClient(server.app) as http:
        duration = http.post("/v1/models/driver-duration/predict", json={"rows": rows})
        assert duration.status_code == 200, duration.text
        assert duration.json()["model"] == "driver-duration"
        regressor = mlflow.sklearn.load_model("models:/driver-duration@champion")
        np.testing.assert_allclose([p["value"] for p in duration.json()["predictions"]],
                                   regressor.predict(_inputs(settings, rows)), rtol=0, atol=1e-9)
        default = http.post("/v1/predict", json={"rows": rows}).json()
        assert default["model"] == "driver-completion" and "score" in default["predictions"][0]
        unknown = http.post("/v1/models/driver-eta/predict", json={"rows": rows})
        assert unknown.status_code == 404
        assert "'driver-completion', 'driver-duration'" in unknown.json()["detail"][0]["msg"]
        paths = http.get("/openapi.json").json()["paths"]
        answer = paths["/v1/models/driver-duration/predict"]["post"]["responses"]["200"]
        item = answer["content"]["application/json"]["schema"]["properties"]["predictions"]["items"]
        assert "value" in item["properties"] and "score" not in item["properties"]
        assert http.get("/readyz").json() == {"ready": True, "reasons": []}
        metrics = http.get("/metrics").text
        assert 'tidemark_scored_rows_total{model="driver-duration",variant="champion"} 20.0' in metrics


def test_drift_reads_this_models_log_and_judges_its_labels_by_its_task(settings: Settings, completion: Server,
                                                                       http: TestClient) -> None:
    """Served rows are compared with the champion's profile; the labelled trips after its training
    split are scored offline (the log's trips are new, unlabelled) and PR-AUC is judged."""
    from dataclasses import replace

    from pipelines.drift_job import DriftPolicy, monitor

    for part in np.array_split(np.arange(600), 3):
        assert http.post("/v1/predict", json={"rows": _traffic(settings, len(part), int(part[0]))}).status_code == 200
    completion.scorer.log_sink.flush()
    now = pd.Timestamp.now(tz="UTC")
    policy = DriftPolicy(min_rows=300, label_maturity=pd.Timedelta(days=2), label_window=pd.Timedelta(days=8),
                         min_positives=20)
    out = monitor(replace(settings, model_name="driver-completion"), now - pd.Timedelta(hours=1), now, policy=policy)
    assert out.model == "driver-completion" and out.rows >= 600, out.reasons
    # the inputs are judged against the champion's profile (whether 30 drivers' current rates look
    # drifted next to their history depends on the hour: not asserted), and so are the labels
    assert out.reasons[0].startswith("input") and len(out.column_psi) == 8, out.reasons
    prauc = out.prauc
    assert prauc["judged"] == 1.0 and prauc["metric"] == "pr_auc" and prauc["source"] == "offline", prauc
    assert prauc["scored"] == prauc["labelled"] >= prauc["positives"] >= 20 and prauc["upper"] >= prauc["pr_auc"], prauc
    assert prauc["pr_auc"] > prauc["positives"] / prauc["scored"], prauc  # it ranks: better than the base rate
    assert out.decision in ("drift", "no_drift") and (settings.home / "reports" / "drift" / "driver-completion").is_dir()
    # and for Prometheus: node_exporter's textfile under the home's reports, with the run's share
    from prometheus_client.parser import text_string_to_metric_families

    text = (settings.textfile_dir / "tidemark_drift_driver-completion.prom").read_text()
    shares = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "tidemark_drift_share"]
    assert shares == [pytest.approx(out.drift_share)], text


def test_the_drift_dag_checks_each_model_of_the_project(settings: Settings, completion: Server,
                                                      airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's drift_monitor maps one check over the project's two models, each judged against
    its own champion and log; a drift decision, and only that, asks for that model's retrain. The
    run is by hand (``airflow dags trigger drift_monitor``): no logical date, so no data interval
    from Airflow 3; it judges the hour up to its ``run_after``."""
    from datetime import UTC, datetime, timedelta

    from pipelines.dag_runs import load_dags, run_dag

    monkeypatch.setenv("TIDEMARK_FEAST_REPO", str(REPO))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    before = datetime.now(UTC)
    ran = run_dag(load_dags(retries=0)["drift_monitor"])
    assert ran.state == "success", ran.states
    end = datetime.fromisoformat(ran.values["compare[0]"]["interval_end"])
    assert before <= end <= datetime.now(UTC), (before, end)
    assert datetime.fromisoformat(ran.values["compare[0]"]["interval_start"]) == end - timedelta(hours=1)
    assert ran.values["models"] == ["driver-completion", "driver-duration"]
    for i, name in enumerate(("driver-completion", "driver-duration")):
        summary = ran.values[f"compare[{i}]"]
        assert summary["model"] == name and ran.states[f"compare[{i}]"] == "success", summary
        asked = ran.states[f"request_retrain[{i}]"]
        assert asked == ("success" if summary["decision"] == "drift" else "skipped"), (summary, asked)


def test_the_regressor_is_judged_by_rmse_and_retrained_through_its_entry_point(settings: Settings) -> None:
    from pipelines.drift_job import DriftPolicy, monitor
    from pipelines.retrain_job import RetrainRequest, retrain, settings_for_model

    mine = settings_for_model(settings, "driver-duration", None)
    now = pd.Timestamp.now(tz="UTC")
    policy = DriftPolicy(label_maturity=pd.Timedelta(days=2), label_window=pd.Timedelta(days=8), min_positives=20)
    out = monitor(mine, now - pd.Timedelta(hours=1), now, policy=policy)
    assert out.prauc["metric"] == "rmse" and out.prauc["judged"] == 1.0, out.reasons
    assert out.prauc["lower"] <= out.prauc["rmse"] and "rmse" in out.reasons[-1], out.prauc
    again = retrain(mine, RetrainRequest(label_cutoff=now.to_pydatetime(), trigger=out.summary()))
    ml = model_registry.connect(settings)
    challenger = ml.get_model_version_by_alias("driver-duration", "challenger")
    assert str(challenger.version) == again.version == "2" and not again.gate_passed
    assert "retrain.trigger" in challenger.tags and challenger.tags["gate.verdict"] == "fail"
    # gated on RMSE against the champion, in the window after both training splits whose labels
    # are final (label_maturity_days: 2): a few hours of trips here, too few to judge
    assert again.gate_reason.startswith("too little labelled data after both training windows"), again.gate_reason


def test_the_gate_judges_a_regressor_by_rmse_and_a_pass_lets_it_be_promoted(settings: Settings) -> None:
    from pipelines.gate import GateConfig, evaluate_gate
    from pipelines.retrain_job import settings_for_model

    mine = settings_for_model(settings, "driver-duration", None)
    verdict = evaluate_gate(mine, version="2", config=GateConfig(min_rows=30))
    assert verdict.passed and verdict.reason.startswith("pass: rmse "), verdict.reason  # the same fit on the same rows
    assert set(verdict.challenger_metrics) == {"rmse", "mae", "r2"} and verdict.rows >= 30
    ml = model_registry.connect(settings)
    assert ml.get_model_version("driver-duration", "2").tags["gate.verdict"] == "pass"
    done = model_registry.promote(ml, "driver-duration", "2")
    assert (done.champion, done.previous) == ("2", "1")


def test_a_retrained_challenger_is_canaried_to_champion_on_served_traffic(settings: Settings, completion: Server,
                                                                           http: TestClient) -> None:
    """driver-completion retrained through its entry point, gated, then ramped 5 → 25 → 50 → 100 %
    by the canary controller on evidence the server recorded from one-trip requests, and promoted."""
    from dataclasses import replace

    from pipelines import canary
    from pipelines.gate import GateConfig, evaluate_gate

    mine = replace(settings, model_name="driver-completion")
    ml = model_registry.connect(settings)
    champion = str(ml.get_model_version_by_alias("driver-completion", "champion").version)
    challenger = str(train_project_model(mine, load_project(REPO).model("driver-completion")).version)
    verdict = evaluate_gate(mine, version=challenger, config=GateConfig(min_rows=30, min_positives=5))
    assert verdict.passed and "pr_auc" in verdict.challenger_metrics, verdict.reason
    assert completion.slots.refresh() == [f"challenger: vNone -> v{challenger}"]
    # both variants on the fast path, or the latency comparison compares two code paths
    assert completion.slots.get("challenger").model.compiled and completion.slots.get("champion").model.compiled
    state = canary.start(mine, shadow=False)
    assert (state.mode, state.weight_pct, state.challenger_version) == ("canary", 5.0, challenger)
    # calls per variant and step: one-trip requests, as trips are requested (the controller compares
    # per-call times, and rows batched per request would weigh a variant's calls by its share)
    # alpha: the chance the latency and error tests roll back a challenger that is no worse (this
    # one is the same fit), spent over the rollout; 5 % by default, so small here that no random
    # draw decides the test
    policy = replace(canary.default_policy(mine), min_dwell_s=0, min_samples=40, alpha=0.001)
    moves, holds, looks = [], [], 0
    while state.mode != "off" and looks < 25:
        completion.scorer.canary.invalidate()  # as the 1-second cache would, at once
        for i, row in enumerate(_traffic(settings, 200, 10_000 + 200 * looks)):
            # riders new to the store: the split is sticky by rider and drawn afresh per canary, and
            # the 5 % of the data's 80 riders may be one rider or none; real traffic has thousands
            _ask(http, {**row, "customer_id": 100_000 + 200 * looks + i})
        assert completion.scorer.evidence.flush()
        outcome = canary.step(mine, policy)
        looks += 1
        if outcome.action == "hold":
            holds.append((outcome.state.weight_pct, outcome.reasons))
        else:
            moves.append((outcome.action, outcome.state.weight_pct))
        state = outcome.state
    assert moves == [("advance", 25.0), ("advance", 50.0), ("advance", 100.0), ("promoted", 0.0)], (moves, holds[-3:])
    assert str(ml.get_model_version_by_alias("driver-completion", "champion").version) == challenger
    assert str(ml.get_model_version_by_alias("driver-completion", "previous-champion").version) == champion
    completion.scorer.canary.invalidate()
    answer = http.post("/v1/predict", json={"rows": _rows(3)}).json()
    assert {p["model_version"] for p in answer["predictions"]} == {challenger}
