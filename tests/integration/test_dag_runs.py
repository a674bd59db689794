"""The four DAGs run end to end with ``dag.test()`` on a temporary SQLite metadata DB, against real
Spark, Redis and MLflow (SQLite) on small generated data, and their effects asserted. Tasks read
their settings from the environment, as on a worker; ``dag.test()`` runs them in this process.

One world per module, in the order the platform lives it: payments generated up to tomorrow, the
daily feature DAG, a first champion, live traffic through the real server (the payments of the
next hours, sent now, with the online store materialized to now: each request sees its customer
as of now, as a live one would, and not itself), the drift DAG (no retrain), a wave of new customers with larger amounts, the
drift DAG again (retrain requested), the retrain DAG, the canary
DAG.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import redis

from features.settings import Settings
from pipelines import model_registry
from tests.conftest import DAGS_FOLDER
from tests.integration.redis_servers import RedisProc

pytestmark = pytest.mark.integration

DAYS, ROWS = 110, 150_000
TODAY = datetime.now(UTC).date()
FIRST_DAY = TODAY - timedelta(days=DAYS - 2)  # up to tomorrow: the next hours' payments are the live traffic


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, spark, module_redis: RedisProc, airflow_db: Path) -> Iterator[Settings]:
    from features.feature_jobs import build_features
    from pipelines.datagen import DatagenConfig, generate

    home = tmp_path_factory.mktemp("dag-home")
    env = {"TIDEMARK_HOME": str(home), "TIDEMARK_REDIS_URL": module_redis.url, "TIDEMARK_SPARK_MASTER": "local[2]",
           "TIDEMARK_SPARK_SHUFFLE_PARTITIONS": "4"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    settings = Settings.from_env()
    generate(settings.raw_dir, DatagenConfig(rows=ROWS, seed=5, start=FIRST_DAY, days=DAYS))
    # the history the daily DAG would have built on earlier days; its own run builds the last four
    build_features(spark, settings.raw_dir, settings.offline_dir, start=FIRST_DAY, end=TODAY - timedelta(days=5))
    try:
        yield settings
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def dags(airflow_db: Path) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    for dag in bag.dags.values():  # a failing task fails the test now, not after minutes of retry delays
        for task in dag.tasks:
            task.retries = 0
    return bag.dags


@dataclass
class Ran:
    """One ``dag.test()`` run, read at once (a later run of the same logical date replaces it)."""

    run_id: str
    state: str
    states: dict[str, str]  # task id -> state
    values: dict[str, Any]  # task id -> return value (XCom)


def _run(dag: Any, logical_date: datetime | None = None, **kwargs: Any) -> Ran:
    run = dag.test(logical_date=logical_date, **kwargs)
    tis = run.get_task_instances()
    return Ran(run.run_id, str(run.state), {ti.task_id: str(ti.state) for ti in tis},
               {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in tis})


# --- feature_pipeline ----------------------------------------------------------------------------


def test_feature_pipeline_builds_checks_materializes_and_agrees_online(world: Settings, dags: dict[str, Any]):
    yesterday = TODAY - timedelta(days=1)
    new_days = [yesterday - timedelta(days=i) for i in range(4)]
    assert not any((world.offline_dir / "customer_txn_agg" / f"date={d}").exists() for d in new_days)
    ran = _run(dags["feature_pipeline"], datetime.combine(TODAY, datetime.min.time(), UTC) + timedelta(hours=1))
    assert ran.state == "success", ran.states
    built = ran.values["build_features"]
    assert built["start"] == str(yesterday - timedelta(days=3)) and built["end"] == str(TODAY)
    assert built["tables"]["customer_txn_agg"] > 0
    for table in ("customer_txn_agg", "merchant_stats"):  # profiles change on a few days only
        assert all((world.offline_dir / table / f"date={d}").is_dir() for d in new_days), table
    loaded = ran.values["materialize"]
    assert sum(loaded.values()) > 0
    assert redis.Redis.from_url(world.redis_url).dbsize() > 100
    check = ran.values["check_online"]
    assert check["mismatches"] == 0 and check["stale_views"] == [] and check["entities"] > 50, check
    # pairs with rows that arrived after the interval's end (here: today's payments, as the test runs
    # hours after the interval) are left out as pending; the rest are compared, 20 features each
    compared = check["entities"] - check["pending"]
    assert compared >= 30 and check["values"] == compared * 20, check


def test_feature_pipeline_stops_at_a_failed_check_and_publishes_nothing(world: Settings, dags: dict[str, Any]):
    """A day with negative amounts: the build fails its checks, nothing is written or loaded."""
    import pyarrow.parquet as pq

    day = TODAY - timedelta(days=1)
    folder = world.raw_dir / "transactions" / f"date={day}"
    (part, *_) = sorted(folder.glob("*.parquet"))
    original = pq.read_table(part)
    before = {p: p.stat().st_mtime_ns for p in (world.offline_dir / "customer_txn_agg").rglob("*.parquet")}
    amounts = original["amount"].to_numpy().copy()
    amounts[:5] = -1.0
    pq.write_table(original.set_column(original.schema.get_field_index("amount"), "amount",
                                       pa.array(amounts)), part)
    try:
        ran = _run(dags["feature_pipeline"], datetime.combine(TODAY, datetime.min.time(), UTC) + timedelta(hours=1))
    finally:
        pq.write_table(original, part)
    assert ran.state == "failed"
    assert ran.states == {"build_features": "failed", "materialize": "upstream_failed",
                            "check_online": "upstream_failed"}
    after = {p: p.stat().st_mtime_ns for p in (world.offline_dir / "customer_txn_agg").rglob("*.parquet")}
    assert after == before


def test_drift_monitor_without_a_champion_is_skipped(world: Settings, dags: dict[str, Any]):
    """Before the first champion there is nothing to monitor: skipped, not failed (and retried) every hour."""
    ran = _run(dags["drift_monitor"], datetime.now(UTC).replace(minute=15, second=0, microsecond=0))
    assert ran.state == "success" and ran.states == {"compare": "skipped", "request_retrain": "skipped"}


# --- a champion, and live traffic through the real server -------------------------------------------


@pytest.fixture(scope="module")
def champion(world: Settings) -> str:
    from pipelines.train_job import train_and_register
    from pipelines.training import TrainConfig

    config = TrainConfig(label_cutoff=datetime.now(UTC), epochs=3, patience=2, hidden=(32, 16), seed=0,
                         max_rows=40_000)
    version = str(train_and_register(world, config, progress=False).version.version)
    model_registry.promote(model_registry.connect(world), world.model_name, version, first=True)
    return version


@pytest.fixture(scope="module")
def server(world: Settings, champion: str) -> Iterator[Any]:
    """The scoring server on the world's stores, the online store materialized to now."""
    from starlette.testclient import TestClient

    from features.sdk import FeatureClient
    from pipelines.feature_pipeline import build_interval
    from serving.server import build_server

    now = datetime.now(UTC)
    build_interval(world, now - timedelta(days=1), now)  # today's partitions, as the next daily run would
    FeatureClient(world).materialize_incremental(now, progress=False)
    srv = build_server(world, refresh_s=3600)
    with TestClient(srv.app) as http:
        yield srv, http
    srv.close()


def _live_payments(world: Settings, at_least: int = 600) -> pd.DataFrame:
    """The payments of the next hours (6, or more until ``at_least``): live traffic, as of now."""
    now = pd.Timestamp.now(tz="UTC")
    when = ds.field("event_timestamp")
    for hours in (6, 9, 12, 18, 24):
        until = now + pd.Timedelta(hours=hours)
        days = sorted({now.date(), until.date()})
        files = [str(f) for d in days for f in sorted((world.raw_dir / "transactions" / f"date={d}").glob("*.parquet"))]
        frame = ds.dataset(files, format="parquet").to_table(
            columns=["transaction_id", "customer_id", "merchant_id", "amount", "channel"],
            filter=(when >= now.to_pydatetime()) & (when < until.to_pydatetime())).to_pandas()
        if len(frame) >= at_least:
            return frame
    raise AssertionError(f"only {len(frame)} payments in the next 24 h")


def _replay(server: Any, payments: pd.DataFrame) -> None:
    """Post ``payments`` through the server, 50 per request; the log is flushed after."""
    srv, http = server
    for i in range(0, len(payments), 50):
        rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                for row in payments.iloc[i:i + 50].to_dict("records")]
        answer = http.post("/v1/predict", json={"rows": rows})
        assert answer.status_code == 200, answer.text[:300]
    srv.scorer.log_sink.flush()


def _this_hour() -> datetime:
    """The logical date whose hourly interval (:15 to :15) holds now; waits out the last two
    minutes before a :15 so that a replay and its drift run fall in one interval."""
    now = datetime.now(UTC)
    tick = now.replace(minute=15, second=0, microsecond=0)
    if timedelta(0) <= tick - now < timedelta(minutes=2):
        time.sleep((tick - now).total_seconds() + 1)
        now = datetime.now(UTC)
    return tick + timedelta(hours=1) if now >= tick else tick


def _asset_events(run_id: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from pipelines.dags.common import RETRAIN_REQUEST

    with create_session() as session:
        events = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetModel.uri == RETRAIN_REQUEST.uri, AssetEvent.source_run_id == run_id)).all()
        return [dict(e.extra or {}) for e in events]


# --- drift_monitor, retrain, canary_rollout --------------------------------------------------------


@pytest.fixture(scope="module")
def drift_runs(world: Settings, dags: dict[str, Any], server: Any) -> dict[str, Any]:
    """The drift DAG over the hour of live traffic, then again once a wave of new customers paid
    2.5 times the usual amounts (the live payments again, under unknown customer ids): 1 part
    live, 3 parts shifted."""
    payments = _live_payments(world).sample(frac=1.0, random_state=0).head(1_000)
    out: dict[str, Any] = {"live_rows": len(payments)}
    logical = _this_hour()
    _replay(server, payments)
    out["baseline"] = _run(dags["drift_monitor"], logical)
    shifted = pd.concat([payments] * 3, ignore_index=True)
    shifted["amount"] = (shifted["amount"] * 2.5).round(2)
    shifted["customer_id"] += 10_000_000  # customers the store has never seen: their features are missing
    shifted["transaction_id"] = None  # not these payments any more: labels must not join
    _replay(server, shifted)
    out["drifted"] = _run(dags["drift_monitor"], logical)
    return out


def test_drift_monitor_on_live_traffic_asks_for_nothing(world: Settings, drift_runs: dict[str, Any]):
    ran = drift_runs["baseline"]
    summary = ran.values["compare"]
    assert ran.states == {"compare": "success", "request_retrain": "skipped"}, summary
    assert summary["decision"] == "no_drift" and summary["rows"] == drift_runs["live_rows"], summary
    assert _asset_events(ran.run_id) == []
    logged = model_registry.connect(world).get_run(summary["mlflow_run_id"])
    assert logged.data.tags["drift.decision"] == "no_drift" and logged.data.metrics["rows"] == summary["rows"]


def test_drift_monitor_on_shifted_traffic_emits_the_retrain_request(world: Settings, drift_runs: dict[str, Any]):
    ran = drift_runs["drifted"]
    summary = ran.values["compare"]
    assert ran.states == {"compare": "success", "request_retrain": "success"}, summary
    assert summary["decision"] == "drift" and {"amount", "score"} <= set(summary["drifted_columns"]), summary
    (event,) = _asset_events(ran.run_id)
    assert event["decision"] == "drift" and event["interval_end"] == summary["interval_end"]
    report = Path(summary["report_dir"])
    assert (report / "report.html").stat().st_size > 10_000 and (report / "decision.json").exists()
    artifacts = {a.path for a in model_registry.connect(world).list_artifacts(summary["mlflow_run_id"], "drift")}
    assert {"drift/report.json", "drift/report.html", "drift/drift.png"} <= artifacts


@pytest.fixture(scope="module")
def retrain_run(dags: dict[str, Any], drift_runs: dict[str, Any]) -> Ran:
    """The retrain DAG as the drift event starts it, with its interval end as the label cutoff
    (given as conf: a ``dag.test()`` run is manual and carries no Asset events)."""
    summary = drift_runs["drifted"].values["compare"]
    return _run(dags["retrain"], None, run_conf={"label_cutoff": summary["interval_end"], "epochs": 3,
                                                 "max_rows": 40_000, "window_days": 45})


def test_retrain_registers_a_gated_challenger(world: Settings, champion: str, retrain_run: Ran):
    from pipelines import canary_job

    outcome = retrain_run.values["train_and_gate"]
    assert retrain_run.state == "success", retrain_run.states
    version = model_registry.connect(world).get_model_version(world.model_name, outcome["version"])
    assert outcome["version"] != champion and version.tags["gate.champion_version"] == champion
    assert version.tags["gate.verdict"] == ("pass" if outcome["gate_passed"] else "fail")
    state = canary_job.status(world)
    if outcome["gate_passed"]:  # a shadow canary of it, for the canary DAG
        assert retrain_run.states["start_canary"] == "success"
        assert (state.mode, state.challenger_version) == ("shadow", outcome["version"])
    else:
        assert retrain_run.states["start_canary"] == "skipped" and state.mode == "off"


def test_canary_rollout_skips_without_a_canary_and_takes_one_step_with_one(
        world: Settings, dags: dict[str, Any], retrain_run: Ran):
    from pipelines import canary_job

    state = canary_job.status(world)
    if state.mode != "off":
        canary_job.rollback(world, "checking the DAG without a canary")
    tick = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=5)
    assert _run(dags["canary_rollout"], tick).states == {"step": "skipped"}
    ml = model_registry.connect(world)
    challenger = model_registry.alias_version(ml, world.model_name, model_registry.CHALLENGER)
    champion = model_registry.alias_version(ml, world.model_name, model_registry.CHAMPION)
    model_registry.record_gate(ml, world.model_name, str(challenger.version), {
        "gate.verdict": "pass", "gate.reason": "the DAG's step is under test", "gate.champion_version": str(champion.version)})
    state = canary_job.start(world, shadow=True)
    ran = _run(dags["canary_rollout"], tick + timedelta(minutes=5))
    assert ran.state == "success", ran.states
    look = ran.values["step"]
    assert look["action"] == "hold" and look["mode"] == "shadow", look  # no dwell, no evidence yet
    decisions = [a.path for a in ml.list_artifacts(state.canary_id, "decisions")]
    assert decisions == ["decisions/step01-look001.json"]
    assert ml.get_run(state.canary_id).data.tags["canary.last_action"] == "hold at step 1 look 1"
    canary_job.rollback(world, "test over")
