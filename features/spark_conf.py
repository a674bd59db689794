"""Session SQL settings scoped to a block, for the few places that need a specific value.

``features.spark.spark_session`` reuses an already running session as it is, so code that
depends on a setting (the Parquet timestamp type, the file-listing strategy) sets it for the
duration of its own work and puts the previous value back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@contextmanager
def scoped_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """Set the session option ``key`` to ``value`` inside the block, restoring it afterwards.

    Session options are shared by every thread of the session: two threads that scope the same
    key to different values at the same time would see each other's.
    """
    previous = spark.conf.get(key, None)
    if previous == value:
        yield
        return
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
