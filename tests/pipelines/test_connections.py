"""Airflow Connections → the DAG tasks' settings: each documented form of ``tidemark_redis``,
``tidemark_mlflow`` and ``tidemark_spark``, read by Airflow's own parser (``AIRFLOW_CONN_*`` as a URI
or JSON), and their precedence over the environment (a real run: tests/integration/test_dag_connections.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tidemark.errors import ConfigError
from tidemark.settings import Settings


@pytest.fixture
def connection(airflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``connection(conn_id, value)``: the Connection Airflow reads from ``AIRFLOW_CONN_<ID>=value``."""
    from airflow.sdk import Connection

    def define(conn_id: str, value: str | dict[str, Any]) -> Any:
        text = value if isinstance(value, str) else json.dumps(value)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", text)
        return Connection.get(conn_id)

    return define


@pytest.mark.parametrize(("value", "url"), [
    ("redis://:s%40cret@cache.internal:6380/2", "redis://:s%40cret@cache.internal:6380/2"),
    ("redis://cache.internal", "redis://cache.internal:6379/0"),
    ({"conn_type": "redis", "host": "cache", "port": 6379, "login": "app", "password": "p/w",
      "extra": {"db": 3, "ssl": True}}, "rediss://app:p%2Fw@cache:6379/3"),
    ({"conn_type": "redis", "extra": {"url": "redis://a:1,b:2/0"}}, "redis://a:1,b:2/0"),
    ({"conn_type": "redis", "host": "redis://whole:7000/1"}, "redis://whole:7000/1"),
])
def test_redis_connection_forms(connection: Any, value: Any, url: str) -> None:
    from pipelines.dags.connections import redis_url

    assert redis_url(connection("tidemark_redis", value)) == url


@pytest.mark.parametrize(("value", "uri"), [
    ("http://mlflow.internal:5000", "http://mlflow.internal:5000"),
    ({"conn_type": "http", "host": "mlflow", "schema": "https", "port": 443}, "https://mlflow:443"),
    ({"conn_type": "generic", "extra": {"tracking_uri": "databricks"}}, "databricks"),
    ({"conn_type": "generic", "extra": {"uri": "postgresql://u:p@db/mlflow"}}, "postgresql://u:p@db/mlflow"),
    ({"conn_type": "http", "host": "https://mlflow.example.com/team"}, "https://mlflow.example.com/team"),
])
def test_mlflow_connection_forms(connection: Any, value: Any, uri: str) -> None:
    from pipelines.dags.connections import mlflow_tracking_uri

    assert mlflow_tracking_uri(connection("tidemark_mlflow", value)) == uri


@pytest.mark.parametrize(("value", "master"), [
    ("spark://spark-master:7077", "spark://spark-master:7077"),
    ({"conn_type": "spark", "host": "spark-master"}, "spark://spark-master:7077"),
    ({"conn_type": "spark", "host": "local[4]"}, "local[4]"),
    ({"conn_type": "spark", "host": "yarn"}, "yarn"),
    ({"conn_type": "spark", "host": "k8s://https://api:6443"}, "k8s://https://api:6443"),
    ({"conn_type": "spark_connect", "host": "connect", "extra": {"token": "t k", "use_ssl": True}},
     "sc://connect:15002/;token=t%20k;use_ssl=true"),
    ({"conn_type": "generic", "extra": {"remote": "sc://connect:15002"}}, "sc://connect:15002"),
])
def test_spark_connection_forms(connection: Any, value: Any, master: str) -> None:
    from pipelines.dags.connections import spark_master

    assert spark_master(connection("tidemark_spark", value)) == master


def test_defined_connections_win_over_the_environment_and_undefined_ones_leave_it(
        connection: Any, tmp_path: Path) -> None:
    from pipelines.dags.connections import settings_with_connections

    env = {"TIDEMARK_HOME": str(tmp_path), "TIDEMARK_REDIS_URL": "redis://env:6379/0",
           "MLFLOW_TRACKING_URI": "http://env-mlflow:5000", "TIDEMARK_SPARK_MASTER": "local[2]",
           "TIDEMARK_SPARK_CONF": json.dumps({"spark.a": "env", "spark.b": "env"})}
    base = Settings.from_env(env)
    spark = connection("tidemark_spark", {"conn_type": "spark", "host": "spark://m:7077",
                                          "extra": {"conf": {"spark.b": "conn", "spark.c": 1}}})
    redis = connection("tidemark_redis", "redis://conn:6379/1")
    mine = settings_with_connections(base, {"tidemark_redis": redis, "tidemark_mlflow": None, "tidemark_spark": spark})
    assert mine.redis_url == "redis://conn:6379/1" and mine.mlflow_tracking_uri == "http://env-mlflow:5000"
    assert mine.spark.master == "spark://m:7077" and mine.spark.driver_memory == base.spark.driver_memory
    assert dict(mine.spark.extra_conf) == {"spark.a": "env", "spark.b": "conn", "spark.c": "1"}
    assert settings_with_connections(base, {}) == base


def test_a_connection_without_a_host_says_what_to_set(connection: Any) -> None:
    from pipelines.dags.connections import redis_url

    with pytest.raises(ConfigError, match="tidemark_redis connection has no host"):
        redis_url(connection("tidemark_redis", {"conn_type": "redis"}))


def test_the_dag_tasks_settings_read_the_connections(connection: Any, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """``common.settings()``, what every task calls: env first, a defined Connection over it."""
    from pipelines.dags.common import settings

    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.setenv("TIDEMARK_REDIS_URL", "redis://env:6379/0")
    monkeypatch.delenv("AIRFLOW_CONN_TIDEMARK_REDIS", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_TIDEMARK_MLFLOW", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_TIDEMARK_SPARK", raising=False)
    assert settings().redis_url == "redis://env:6379/0"
    connection("tidemark_redis", "redis://from-airflow:6379/4")
    assert settings().redis_url == "redis://from-airflow:6379/4"
