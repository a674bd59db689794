"""The DAGs run end to end with ``dag.test()`` on a temporary SQLite metadata DB, against real
Spark and Redis on small generated data, and their effects asserted. Tasks read their settings
from the environment, as on a worker; ``dag.test()`` runs them in this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis

from features.settings import Settings
from tests.conftest import DAGS_FOLDER
from tests.integration.redis_servers import RedisProc

pytestmark = pytest.mark.integration

DAYS, ROWS = 100, 60_000
TODAY = datetime.now(UTC).date()
FIRST_DAY = TODAY - timedelta(days=DAYS)
DRIFT_DAY = FIRST_DAY + timedelta(days=75)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, spark, module_redis: RedisProc, airflow_db: Path) -> Iterator[Settings]:
    from pipelines.datagen import DatagenConfig, generate

    home = tmp_path_factory.mktemp("dag-home")
    env = {"TIDEMARK_HOME": str(home), "TIDEMARK_REDIS_URL": module_redis.url, "TIDEMARK_SPARK_MASTER": "local[2]",
           "TIDEMARK_SPARK_SHUFFLE_PARTITIONS": "4"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    settings = Settings.from_env()
    generate(settings.raw_dir, DatagenConfig(rows=ROWS, seed=5, start=FIRST_DAY, days=DAYS,
                                             scenario="covariate_shift", drift_start=DRIFT_DAY))
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


def _run(dag: Any, logical_date: datetime | None = None, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    run = dag.test(logical_date=logical_date, **kwargs)
    return run, {ti.task_id: ti for ti in run.get_task_instances()}


def _states(tis: dict[str, Any]) -> dict[str, str]:
    return {task_id: str(ti.state) for task_id, ti in tis.items()}


# --- feature_pipeline ----------------------------------------------------------------------------


def test_feature_pipeline_builds_checks_materializes_and_agrees_online(world: Settings, dags: dict[str, Any]):
    yesterday = TODAY - timedelta(days=1)
    run, tis = _run(dags["feature_pipeline"], datetime.combine(TODAY, datetime.min.time(), UTC) + timedelta(hours=1))
    assert str(run.state) == "success", _states(tis)
    built = tis["build_features"].xcom_pull(task_ids="build_features")
    assert built["start"] == str(yesterday - timedelta(days=3)) and built["end"] == str(TODAY)
    for table in ("customer_txn_agg", "customer_profile", "merchant_stats"):
        assert (world.offline_dir / table / f"date={yesterday}").is_dir(), table
    loaded = tis["materialize"].xcom_pull(task_ids="materialize")
    assert sum(loaded.values()) > 0
    assert redis.Redis.from_url(world.redis_url).dbsize() > 100
    check = tis["check_online"].xcom_pull(task_ids="check_online")
    assert check["mismatches"] == 0 and check["stale_views"] == [] and check["entities"] > 50, check
    # entities with rows that arrived after the interval's end are left out; most are compared
    assert check["values"] >= (check["entities"] - check["pending"]) * 20 and check["pending"] < check["entities"] / 2


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
        run, tis = _run(dags["feature_pipeline"], datetime.combine(TODAY, datetime.min.time(), UTC) + timedelta(hours=1))
    finally:
        pq.write_table(original, part)
    assert str(run.state) == "failed"
    assert _states(tis) == {"build_features": "failed", "materialize": "upstream_failed",
                            "check_online": "upstream_failed"}
    after = {p: p.stat().st_mtime_ns for p in (world.offline_dir / "customer_txn_agg").rglob("*.parquet")}
    assert after == before
