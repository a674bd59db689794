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


@pytest.fixture(scope="session", autouse=True)
def no_embedded_redis_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stop, and name, every embedded redis-server that a test started under this run's temporary
    folders and left running: tidemark daemonizes it so that it outlives the command that started it
    (features/embedded_redis.py), so a test that forgets it leaks a process per run."""
    yield
    from features.embedded_redis import EmbeddedRedis

    base = tmp_path_factory.getbasetemp()
    _LEFT_RUNNING.extend(str(folder.relative_to(base)) for folder in _embedded_redis_folders(base, depth=5)
                         if EmbeddedRedis(folder).stop())


_LEFT_RUNNING: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _LEFT_RUNNING:
        terminalreporter.write_line(f"stopped {len(_LEFT_RUNNING)} embedded redis-server(s) that tests left running: "
                                    f"{', '.join(_LEFT_RUNNING)}", yellow=True)


def _embedded_redis_folders(root: Path, depth: int) -> list[Path]:
    """Folders named ``redis`` holding a ``server.json``, at most ``depth`` levels below ``root``."""
    import os

    found = []
    for folder, subfolders, files in os.walk(root):
        level = len(Path(folder).relative_to(root).parts)
        if Path(folder).name == "redis" and "server.json" in files:
            found.append(Path(folder))
        if level >= depth:
            subfolders.clear()
    return found


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
