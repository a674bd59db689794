"""Shared fixtures: one real local Spark session for the whole test run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """A real local Spark session (2 cores, UTC), shared by every test that asks for it."""
    from features.settings import SparkSettings
    from features.spark import BASE_CONF, spark_session

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
