"""The scoring server end to end: real Redis (online features, canary state), real Spark
materialization, a real MLflow (SQLite) registry, the ASGI app through Starlette's test client."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import torch
from starlette.testclient import TestClient

from examples.fraud.model import FraudModel, ModelSpec, build_module
from examples.fraud.pyfunc import MODEL_CODE
from features.sdk import FeatureClient
from pipelines import model_registry
from pipelines.canary import CanaryAdmin
from serving import scorer as scorer_module
from serving.app import create_app
from serving.canary_evidence import SHADOW_BASELINE, read_step
from serving.canary_state import CanaryState, CanaryStateStore
from serving.metric_names import missing_from
from serving.routing import to_challenger
from serving.server import Server, build_server
from tests.integration.model_contracts import fraud_contract_tags
from tests.integration.offline_tables import write_by_date, write_transactions
from tests.integration.redis_servers import RedisProc
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration

FEATURES = ("customer_txn:amt_sum_24h", "customer_profile:age_band", "merchant_stats:fraud_rate_30d")
MODEL = Settings.model_name  # the test world serves the default model name (a class default)
CUSTOMERS = np.arange(1, 201, dtype=np.int64)
TOKEN = "s3cret-admin-token"


def _offline_tables(home: Path, now: pd.Timestamp) -> None:
    """The raw payments the customer windows are computed from (one per customer, 30 minutes ago)
    and the other two offline tables, recent enough for every view's TTL."""
    n = len(CUSTOMERS)
    t = now - pd.Timedelta("30min")
    write_transactions(pd.DataFrame({"customer_id": CUSTOMERS, "event_timestamp": [t] * n,
                                     "amount": CUSTOMERS * 3.5}), home / "raw")
    offline = home / "offline"
    profile = pd.DataFrame({"customer_id": CUSTOMERS, "event_timestamp": [now - pd.Timedelta("10D")] * n,
                            "created_timestamp": [now - pd.Timedelta("10D")] * n, "income": 40_000.0,
                            "age_band": np.where(CUSTOMERS % 2 == 0, "25-34", "45-54"), "home_country": "DE"})
    write_by_date(profile, offline / "customer_profile")
    merchant = pd.DataFrame({"merchant_id": np.arange(1, 6, dtype=np.int64), "event_timestamp": [t] * 5,
                             "created_timestamp": [t] * 5, "category": "grocery", "country": "DE",
                             "txn_count_30d": 100, "amt_mean_30d": 22.5, "fraud_rate_30d": [0.01, 0.02, 0.03, 0.04, 0.05]})
    write_by_date(merchant, offline / "merchant_stats")


def _register(settings: Settings, seed: int) -> str:
    """A small fraud model over FEATURES plus amount and channel, registered as the challenger."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"amount": rng.gamma(2, 30, 500), "channel": rng.choice(["pos", "ecom"], 500),
                          "amt_sum_24h": rng.gamma(2, 100, 500), "age_band": rng.choice(["25-34", "45-54"], 500),
                          "fraud_rate_30d": rng.random(500) / 10})
    spec = ModelSpec.fit(frame, ["amount", "amt_sum_24h", "fraud_rate_30d"], ["channel", "age_band"],
                         hidden=(8,), min_count=1)
    torch.manual_seed(seed)
    model = FraudModel(spec, build_module(spec))
    ml = model_registry.connect(settings)
    with mlflow.start_run(experiment_id=model_registry.experiment_id(ml, settings, settings.model_name)) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE), pip_requirements=["tidemark"],
                                       artifacts=model.save(settings.home / f"model-{seed}"))
        version = model_registry.register(ml, settings.model_name, info.model_uri, run_id=run.info.run_id,
                                          tags=fraud_contract_tags(spec, FEATURES), description="test model")
    return str(version.version)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, spark, module_redis: RedisProc) -> Settings:
    home = tmp_path_factory.mktemp("serving-home")
    s = Settings(home=home, spark=SparkSettings(master="local[2]", shuffle_partitions=4), redis_url=module_redis.url,
                 admin_token=TOKEN)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    _offline_tables(home, now)
    client = FeatureClient(s)
    client.apply()
    client.materialize_incremental(now.to_pydatetime(), progress=False)
    first = _register(s, 1)
    model_registry.promote(model_registry.connect(s), s.model_name, first, first=True)
    return s


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[Server]:
    srv = build_server(settings, refresh_s=3600, admin=CanaryAdmin(settings))
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[TestClient]:
    with TestClient(server.app, raise_server_exceptions=True) as client:
        yield client


def _rows(customers: np.ndarray, merchant: int = 3) -> list[dict]:
    return [{"customer_id": int(c), "merchant_id": merchant, "amount": 25.0 + i, "channel": "ecom"}
            for i, c in enumerate(customers)]


def _expected(server: Server, alias: str, rows: list[dict]) -> np.ndarray:
    """The score computed by hand: the feature store's online values plus the request fields."""
    loaded = server.slots.get(alias)
    assert loaded is not None
    online = FeatureClient(server.settings).online_features(
        [{"customer_id": r["customer_id"], "merchant_id": r["merchant_id"]} for r in rows], list(FEATURES)).frame
    frame = pd.concat([pd.DataFrame(rows)[["amount", "channel"]], online], axis=1)
    return loaded.model.predict_proba(frame)


def test_predict_scores_with_online_features(server: Server, http: TestClient):
    rows = _rows(CUSTOMERS[:20])
    answer = http.post("/v1/predict", json={"rows": rows})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["request_id"] and len(body["predictions"]) == 20
    assert {p["variant"] for p in body["predictions"]} == {"champion"}
    assert {p["model_version"] for p in body["predictions"]} == {"1"}
    assert all(p["features_found"] for p in body["predictions"])
    np.testing.assert_allclose([p["score"] for p in body["predictions"]], _expected(server, "champion", rows),
                               rtol=1e-6)
    unknown = http.post("/v1/predict", json={"rows": _rows(np.array([99_999]))}).json()["predictions"][0]
    assert unknown["features_found"] is False and 0 < unknown["score"] < 1


def test_worker_thread_mode_batches_the_champion_and_scores_the_same(settings: Settings, server: Server):
    """What a GPU node runs (requests in worker threads, every model behind its micro-batcher), here
    on the CPU; the default on a CPU scores on the event loop and calls the champion directly."""
    assert (server.slots.get("champion").batcher is None) == (not torch.cuda.is_available())
    # a `tidemark serve` process has never pointed MLflow's process-wide URIs at tidemark's store:
    # the server must load its models through its own client (a "models:/" URI did not)
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    exported = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(f"sqlite:///{settings.home / 'elsewhere.db'}")
    mlflow.set_registry_uri(f"sqlite:///{settings.home / 'elsewhere.db'}")
    try:
        threaded = build_server(settings, refresh_s=3600, prediction_log=False, inline=False)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
        for key, value in exported.items():  # set_tracking_uri exports the URI to the environment too
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        champion = threaded.slots.get("champion")
        assert champion is not None and champion.batcher is not None
        rows = _rows(CUSTOMERS[:20])
        with TestClient(threaded.app) as client:
            answers = [client.post("/v1/predict", json={"rows": rows[i:i + 5]}) for i in range(0, 20, 5)]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        scores = [p["score"] for a in answers for p in a.json()["predictions"]]
        np.testing.assert_allclose(scores, _expected(server, "champion", rows), rtol=1e-6)
        assert champion.batcher.stats.rows >= 20
    finally:
        threaded.close()


@pytest.mark.parametrize(("body", "status", "loc"), [
    (b"{not json", 400, []),
    (json.dumps({"rows": []}).encode(), 422, ["rows"]),
    (json.dumps({"rows": [{"merchant_id": 1, "amount": 1.0, "channel": "pos"}]}).encode(), 422, ["rows", 0, "customer_id"]),
    (json.dumps({"rows": [{"customer_id": "7", "merchant_id": 1, "amount": 1.0, "channel": "pos"}]}).encode(), 422,
     ["rows", 0, "customer_id"]),
    (json.dumps({"rows": [{"customer_id": 7, "merchant_id": 1, "amount": "lots", "channel": "pos"}]}).encode(), 422,
     ["rows", 0, "amount"]),
    (json.dumps({"rows": [{"customer_id": 7, "merchant_id": 1, "amount": 1.0}]}).encode(), 422, ["rows", 0, "channel"]),
    (json.dumps({"rows": [{"customer_id": 2**64, "merchant_id": 1, "amount": 1.0, "channel": "pos"}]}).encode(), 422,
     ["rows", 0, "customer_id"]),
    (json.dumps({"rows": _rows(np.arange(1_001))}).encode(), 422, ["rows"]),
    (json.dumps([1, 2]).encode(), 422, ["rows"]),
])
def test_bad_input_is_a_4xx_with_the_field(http: TestClient, body: bytes, status: int, loc: list):
    answer = http.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"][0]["loc"] == loc


@pytest.mark.parametrize("body", [
    b'{"rows": [{"customer_id": 1, "merchant_id": 1, "amount": 1' + b"0" * 400 + b', "channel": "pos"}]}',
    b'{"rows": [{"customer_id": 1, "merchant_id": 1, "amount": ' + b"9" * 5_000 + b', "channel": "pos"}]}',
    b"[" * 50_000 + b"]" * 50_000,
    b'{"rows": [{"customer_id": 1, "merchant_id": 1, "amount": 1e999, "channel": "pos"}]}',
    "{\"rows\": [\"\udcff\"]}".encode("utf-8", "surrogatepass"),
])
def test_hostile_json_is_a_4xx_never_a_5xx(http: TestClient, body: bytes):
    answer = http.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text[:300]


def test_a_challenger_returning_nan_is_answered_by_the_champion(server: Server, http: TestClient):
    from dataclasses import replace as swap

    from serving.canary_state import CanaryState as State

    champion = server.slots.get("champion")
    assert champion is not None

    class Broken(FraudModel):
        def forward(self, numeric, codes):  # type: ignore[override]
            return np.full(len(numeric), np.nan)

    broken = swap(champion, alias="challenger", version="99", batcher=None,
                  model=Broken(champion.model.spec, champion.model.module))
    saved = dict(server.slots._slots)
    store = server.scorer.canary
    current, _ = store.read()
    store.write(State(model=current.model, mode="canary", weight_pct=100.0, champion_version=champion.version,
                      challenger_version="99", canary_id="c-nan", step=1), expected_revision=current.revision)
    server.slots._slots["challenger"] = broken
    try:
        answer = http.post("/v1/predict", json={"rows": _rows(CUSTOMERS[:5])})
        assert answer.status_code == 200
        assert {p["variant"] for p in answer.json()["predictions"]} == {"champion"}
        assert server.scorer.evidence.flush()
        assert read_step(store.redis, current.model, "c-nan", 1)["challenger"].errors == 5
    finally:
        server.slots._slots.update(saved)
        now, _ = store.read()
        store.write(State.off(current.model), expected_revision=now.revision)


def test_an_oversized_body_is_refused(http: TestClient):
    answer = http.post("/v1/predict", content=b" " * 2_000_000, headers={"content-type": "application/json"})
    assert answer.status_code == 413


def test_health_readiness_metrics_and_openapi(server: Server, http: TestClient):
    from prometheus_client.parser import text_string_to_metric_families

    assert http.get("/healthz").json() == {"status": "alive"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = http.get("/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    before = samples()
    for _ in range(3):
        assert http.post("/v1/predict", json={"rows": _rows(CUSTOMERS[:4])}).status_code == 200
    assert http.post("/v1/predict", json={"rows": []}).status_code == 422
    after = samples()
    assert not missing_from(http.get("/metrics").text)  # every metric the alerts and the dashboard read

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted({"model": MODEL, **labels}.items())))
        return after[key] - before.get(key, 0.0)

    assert grew("tidemark_scored_rows_total", variant="champion") == 12
    # end-to-end latency of POST /v1/predict, by status class: every request counted once, in seconds
    assert grew("tidemark_predict_request_seconds_count", status="2xx") == 3
    assert grew("tidemark_predict_request_seconds_count", status="4xx") == 1
    assert ("tidemark_predict_request_seconds_count", (("model", MODEL), ("status", "5xx"))) in after
    assert 0 < grew("tidemark_predict_request_seconds_sum", status="2xx") < 3 * 5.0
    assert grew("tidemark_predict_request_seconds_bucket", status="2xx", le="+Inf") == 3
    # failed rows per variant, read from the scorer when scraped (an earlier test broke a challenger)
    for variant, stats in server.scorer.stats.items():
        assert after[("tidemark_variant_errors_total", (("model", MODEL), ("variant", variant)))] == stats.errors
    assert after[("tidemark_variant_errors_total", (("model", MODEL), ("variant", "champion")))] == 0
    for reason in ("overflow", "closed", "unconvertible", "unwritable", "unwritten_at_close", "writer_error"):
        assert after[("tidemark_prediction_log_dropped_rows_total", (("model", MODEL), ("reason", reason)))] == 0
    assert server.scorer.log_sink.dropped_rows == 0
    assert after[("tidemark_shadow_dropped_batches_total", (("model", MODEL),))] == server.scorer.shadow_dropped == 0
    # the online store's state, and the champion alias is where it should be
    assert after[("tidemark_online_store_up", ())] == 1 and after[("tidemark_online_store_slow", ())] == 0
    assert after[("tidemark_model_alias_missing", (("alias", "champion"), ("model", MODEL)))] == 0
    assert ("tidemark_online_corrupt_values_total", ()) in after
    assert ("tidemark_client_disconnects_total", (("model", MODEL),)) in after
    # which version each alias serves, and the process's own metrics (CPU, memory, GC)
    champion = server.slots.get("champion")
    assert champion is not None
    assert after[("tidemark_model_version_info", (("alias", "champion"), ("model", MODEL),
                                                  ("version", str(champion.version))))] == 1
    assert after[("process_cpu_seconds_total", ())] > 0 and after[("process_resident_memory_bytes", ())] > 0
    assert any(name == "python_gc_collections_total" for name, _ in after)

    spec = http.get("/openapi.json").json()
    row = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(row["properties"]["rows"]["items"]["required"]) == {"customer_id", "merchant_id", "amount", "channel"}
    canary = spec["paths"]["/v1/canary/{action}"]["post"]
    bearer = spec["components"]["securitySchemes"]["bearerAuth"]
    assert canary["security"] == [{"bearerAuth": []}] and (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert canary["parameters"][0]["schema"]["enum"] == ["start", "step", "rollback", "promote"]


def test_canary_routes_sticky_by_customer_and_shadow_never_answers(settings: Settings, server: Server,
                                                                   http: TestClient):
    second = _register(settings, 2)  # the new challenger
    assert server.slots.refresh() == [f"challenger: vNone -> v{second}"]
    store = CanaryStateStore(server.scorer.canary.redis, settings.model_name)  # what a controller uses
    current, _ = store.read()
    state = CanaryState(model=settings.model_name, mode="canary", weight_pct=25.0, champion_version="1",
                        challenger_version=second, canary_id="c-test", step=1, started_at=None,
                        step_started_at=None, revision=current.revision)
    store.write(state, expected_revision=current.revision)
    server.scorer.canary.invalidate()
    rows = _rows(CUSTOMERS)
    predictions = http.post("/v1/predict", json={"rows": rows}).json()["predictions"]
    routed = to_challenger(CUSTOMERS, "c-test", 25.0)
    assert [p["variant"] == "challenger" for p in predictions] == list(routed)
    assert 0 < routed.sum() < len(rows)
    assert {p["model_version"] for p in predictions if p["variant"] == "challenger"} == {second}
    expected = np.where(routed, _expected(server, "challenger", rows), _expected(server, "champion", rows))
    np.testing.assert_allclose([p["score"] for p in predictions], expected, rtol=1e-6)
    again = http.post("/v1/predict", json={"rows": rows}).json()["predictions"]
    assert [p["variant"] for p in again] == [p["variant"] for p in predictions]  # sticky
    # what the controller will judge on: both requests' rows, per variant, summed in Redis
    assert server.scorer.evidence.flush()
    counts = read_step(store.redis, settings.model_name, "c-test", 1)
    assert counts["challenger"].requests == 2 * int(routed.sum())
    assert counts["champion"].requests == 2 * int((~routed).sum())
    assert counts["challenger"].score_counts.sum() == counts["challenger"].requests
    assert counts["champion"].latency_counts.sum() == 2 and counts["champion"].errors == 0

    store.write(replace(state, mode="shadow"), expected_revision=state.revision + 1)
    server.scorer.canary.invalidate()
    answer = http.post("/v1/predict", json={"rows": rows[:10]}).json()
    assert {p["variant"] for p in answer["predictions"]} == {"champion"}
    server.scorer.drain_shadow()
    server.scorer.log_sink.flush()
    logged = ds.dataset(settings.offline_dir / "prediction_log", format="parquet", partitioning="hive").to_table(
        filter=ds.field("request_id") == answer["request_id"]).to_pandas()
    assert sorted(logged["variant"].value_counts().items()) == [("champion", 10), ("shadow", 10)]
    shadow_scores = logged.loc[logged["variant"] == "shadow"].sort_values("customer_id")["score"].to_numpy()
    np.testing.assert_allclose(shadow_scores, _expected(server, "challenger", rows[:10]), rtol=1e-6)
    # the shadow call's latency baseline: the champion's copy of it, timed on the shadow thread, never logged
    assert server.scorer.evidence.flush()
    counts = read_step(store.redis, settings.model_name, "c-test", 1)
    assert counts["shadow"].latency_counts.sum() == counts[SHADOW_BASELINE].latency_counts.sum() == 1
    assert counts[SHADOW_BASELINE].requests == 10 and counts[SHADOW_BASELINE].score_counts.sum() == 0


def test_predictions_are_logged(settings: Settings, server: Server, http: TestClient):
    rows = _rows(CUSTOMERS[:5])
    for i, row in enumerate(rows[:3]):
        row["transaction_id"] = 7_000_000_000 + i  # the payment id delayed labels will join on
    rows[3]["transaction_id"] = None
    answer = http.post("/v1/predict", json={"rows": rows}).json()
    server.scorer.log_sink.flush()
    logged = ds.dataset(settings.offline_dir / "prediction_log", format="parquet", partitioning="hive").to_table()
    assert logged.schema.field("transaction_id").type == pa.int64()
    frame = logged.to_pandas()
    assert {"request_id", "customer_id", "amount", "amt_sum_24h", "score", "variant", "model_version"} <= set(frame)
    assert len(frame) >= 5 and set(frame["variant"]) >= {"champion"}
    mine = frame.loc[(frame["request_id"] == answer["request_id"]) & (frame["variant"] != "shadow")]
    mine = mine.sort_values("customer_id")  # a shadow run (earlier test) logs its own copy of each row
    ids = mine["transaction_id"].astype("Int64").tolist()
    assert ids[:3] == [7_000_000_000, 7_000_000_001, 7_000_000_002] and pd.isna(ids[3]) and pd.isna(ids[4])
    bad = http.post("/v1/predict", json={"rows": [{**rows[0], "transaction_id": "x1"}]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["rows", 0, "transaction_id"]


def test_canary_endpoints_need_the_bearer_token(server: Server, http: TestClient):
    assert http.get("/v1/canary").status_code == 401
    assert http.post("/v1/canary/step", headers={"authorization": "Bearer wrong"}).status_code == 401
    auth = {"authorization": f"Bearer {TOKEN}"}
    status = http.get("/v1/canary", headers=auth)
    assert status.status_code == 200 and status.json()["model"] == server.settings.model_name
    # the challenger never passed the gate: the controller refuses, the API says why (409, not 500)
    refused = http.post("/v1/canary/start", headers=auth, json={"shadow": True})
    assert refused.status_code == 409 and "gate" in refused.json()["detail"][0]["msg"]
    assert http.post("/v1/canary/launch", headers=auth).status_code == 404
    open_server = create_app(server.scorer, admin=CanaryAdmin(server.settings), admin_token=None)
    with TestClient(open_server) as anonymous:
        assert anonymous.post("/v1/canary/rollback").status_code == 403  # no token configured: writes are off
        assert anonymous.get("/v1/canary").status_code == 200


def test_redis_down_is_a_503_and_recovers(settings: Settings, module_redis: RedisProc, http: TestClient):
    module_redis.stop()
    try:
        answer = http.post("/v1/predict", json={"rows": _rows(CUSTOMERS[:2])})
        assert answer.status_code == 503 and "request_id" in answer.json()
        assert answer.json()["detail"][0]["msg"].startswith("the online feature store is unavailable")
        assert http.get("/readyz").status_code == 503
        # a server that starts while the store is down starts all the same, not ready
        late = build_server(settings, refresh_s=3600, prediction_log=False)
        with TestClient(late.app) as client:
            assert client.get("/readyz").status_code == 503
            assert client.post("/v1/predict", json={"rows": _rows(CUSTOMERS[:2])}).status_code == 503
    finally:
        module_redis.restart()
    # the read breaker opened on the refused reads; its probe (every 50 ms) closes it once Redis answers
    breaker = late.scorer.reader.redis.breaker
    assert breaker is not None and breaker.wait_closed(5.0)
    with TestClient(late.app) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/predict", json={"rows": _rows(CUSTOMERS[:2])}).status_code == 200
    late.close()
    # the test server keeps no data: the features are gone, but the server answers again
    answer = http.post("/v1/predict", json={"rows": _rows(CUSTOMERS[:2])})
    assert answer.status_code == 200 and answer.json()["predictions"][0]["features_found"] is False


def test_a_promotion_switches_the_champion_before_the_next_alias_poll(settings: Settings, server: Server,
                                                                       http: TestClient):
    """The controller writes the promotion to the canary state, then moves the alias. Until the
    refresh has loaded the new champion, the challenger slot answers as champion (a promotion from
    100 % never sends traffic back to the old model), and the refresh is woken at once, not at its
    next poll (an hour here)."""
    old, new = server.slots.get("champion"), server.slots.get("challenger")
    assert old is not None and new is not None and old.version != new.version
    store = CanaryStateStore(server.scorer.canary.redis, settings.model_name)
    current, _ = store.read()
    woken: list[float] = []
    server.scorer.on_stale = lambda: woken.append(1.0)
    rows = _rows(CUSTOMERS[:20])

    def answered() -> set[tuple[str, str]]:
        server.scorer.canary.invalidate()
        predictions = http.post("/v1/predict", json={"rows": rows}).json()["predictions"]
        return {(p["variant"], p["model_version"]) for p in predictions}

    try:
        promoted = replace(current, mode="off", weight_pct=0.0, champion_version=new.version,
                           challenger_version=new.version, canary_id="c-promote",
                           step_started_at=pd.Timestamp.now(tz="UTC").isoformat())
        store.write(promoted, expected_revision=current.revision)
        assert answered() == {("champion", new.version)} and answered() == {("champion", new.version)}
        assert woken == [1.0]  # once, not per request
        # a promotion older than the grace is not trusted over the registry's alias
        stale = replace(promoted, step_started_at=(pd.Timestamp.now(tz="UTC") - pd.Timedelta(
            seconds=scorer_module.PROMOTION_GRACE_S + 1)).isoformat())
        store.write(stale, expected_revision=current.revision + 1)
        assert answered() == {("champion", old.version)}
        # the woken refresh: the alias moved, the new champion is loaded, warmed and swapped in
        ml = model_registry.connect(settings)
        model_registry.record_gate(ml, settings.model_name, new.version, {
            "gate.verdict": "pass", "gate.reason": "test", "gate.champion_version": old.version})
        model_registry.promote(ml, settings.model_name, new.version)
        assert f"champion: v{old.version} -> v{new.version}" in server.slots.refresh()
        store.write(promoted, expected_revision=current.revision + 2)
        assert answered() == {("champion", new.version)} and len(woken) == 1
        scores = [p["score"] for p in http.post("/v1/predict", json={"rows": rows}).json()["predictions"]]
        np.testing.assert_allclose(scores, _expected(server, "champion", rows), rtol=1e-6)
    finally:
        server.scorer.on_stale = None
