"""``feature_pipeline`` run with ``dag.test()`` on the driver example, its stores given as Airflow
Connections (``AIRFLOW_CONN_TIDEMARK_REDIS``, ``AIRFLOW_CONN_TIDEMARK_SPARK``) while the environment's
``TIDEMARK_REDIS_URL`` names a port nothing listens on: the run can only succeed through the
Connection. Its Asset events, one per published view, are read back from the metadata DB. The run
is by hand, as ``airflow dags trigger feature_pipeline``: no logical date, so Airflow 3 gives it no
data interval and it covers the day up to its ``run_after``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from examples.driver.datagen import generate
from pipelines.dag_runs import Ran, load_dags, run_dag
from tests.integration.redis_servers import RedisProc, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2] / "examples" / "driver" / "feature_repo"
VIEWS = {"customer_daily_profile", "driver_hourly_stats"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, module_redis: RedisProc, airflow_db: Path) -> Iterator[Ran]:
    home = tmp_path_factory.mktemp("conn-home")
    generate(home / "driver_example" / "data", end=datetime.now(UTC).replace(minute=0, second=0, microsecond=0),
             days=4, drivers=10, customers=20,
             trips_per_day=50)
    env = {"TIDEMARK_HOME": str(home), "TIDEMARK_FEAST_REPO": str(REPO),
           "TIDEMARK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing there
           "TIDEMARK_SPARK_MASTER": "spark://nowhere.invalid:7077",
           "AIRFLOW_CONN_TIDEMARK_REDIS": module_redis.url,
           "AIRFLOW_CONN_TIDEMARK_SPARK": json.dumps({"conn_type": "spark", "host": "local[2]",
                                                      "extra": {"conf": {"spark.sql.shuffle.partitions": "4"}}})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield run_dag(load_dags(retries=0)["feature_pipeline"])  # no logical date: a manual run now
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_the_tasks_used_the_connections_not_the_environment(run: Ran, module_redis: RedisProc) -> None:
    assert run.state == "success", run.states
    assert set(run.values["materialize"]) == VIEWS and sum(run.values["materialize"].values()) > 0
    assert redis.Redis.from_url(module_redis.url).dbsize() > 0  # the Connection's Redis got the features


def test_each_published_view_has_an_asset_event(run: Ran) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dag_run = session.scalars(select(DagRun).where(DagRun.run_id == run.run_id)).one()
        assert dag_run.logical_date is None and dag_run.data_interval_end is None  # what Airflow 3 gives it
        run_after = dag_run.run_after
        rows: list[Any] = list(session.execute(
            select(AssetModel.uri, AssetEvent.extra, AssetEvent.source_task_id)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_dag_id == "feature_pipeline", AssetEvent.source_run_id == run.run_id)))
    assert {uri for uri, _, _ in rows} == {f"tidemark://features/{view}" for view in VIEWS}
    assert {task for _, _, task in rows} == {"check_online"}
    for uri, extra, _ in rows:
        view = uri.removeprefix("tidemark://features/")
        assert extra["rows_written"] == run.values["materialize"][view]
        assert extra["interval_end"] == run_after.isoformat()  # the day up to when it was triggered
