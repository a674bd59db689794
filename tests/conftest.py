"""Shared fixtures: one real local Spark session for the whole test run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """A real local Spark session (2 cores, UTC), shared by every test that asks for it."""
    from features.spark import BASE_CONF, spark_session
    from tidemark.settings import SparkSettings

    # Test queries are many and tiny: the JVM's optimising JIT (C2) would burn about half of the
    # suite's CPU compiling code that runs for milliseconds. C1 only halves the CPU time.
    java_options = BASE_CONF["spark.driver.extraJavaOptions"] + " -XX:TieredStopAtLevel=1"
    session = spark_session(
        SparkSettings(
            master="local[2]",
            shuffle_partitions=4,
            driver_memory="2g",
            extra_conf={"spark.driver.extraJavaOptions": java_options},
        )
    )
    yield session
    session.stop()


DAGS_FOLDER = Path(__file__).resolve().parents[1] / "pipelines" / "dags"


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Airflow 3 on a temporary home and SQLite metadata DB, with ``pipelines/dags`` as its DAG
    folder. Airflow reads its configuration once, when first imported: nothing may import it
    before this fixture (only ``pipelines/dags`` does, and tests import that through Airflow)."""
    import os
    import sys

    if "airflow" in sys.modules:
        raise RuntimeError("airflow was imported before its test configuration was set; import it inside tests")
    home = tmp_path_factory.mktemp("airflow")
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    })
    return home


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """The metadata DB created (``dag.test()`` needs it), in process: ~4 s, against ~12 s for ``airflow db migrate``."""
    from airflow.utils.db import initdb

    initdb()
    return airflow_home
