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
    from features.spark import spark_session

    session = spark_session(SparkSettings(master="local[2]", shuffle_partitions=4, driver_memory="2g"))
    yield session
    session.stop()
