"""The one place that starts or joins tidemark's Spark session."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tidemark.extras import require
from tidemark.settings import SparkSettings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: Session settings tidemark relies on. UTC so that anything Spark renders or parses is UTC,
#: string partition values so ``date=2026-01-01`` stays a string and is not inferred as a date.
BASE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "true",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
}


#: Only for a local master: bind to loopback, run Python workers on this interpreter (the
#: project's environment, not whatever ``python3`` is on PATH), skip shuffle compression,
#: which costs CPU to save disk bandwidth a single machine does not lack (~10% of a 10M-row join),
#: and list partition folders on the driver.
_LOCAL_CONF: dict[str, str] = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.pyspark.python": sys.executable,
    "spark.pyspark.driver.python": sys.executable,
    "spark.shuffle.compress": "false",
    "spark.shuffle.spill.compress": "false",
    # Above this many folders Spark lists partitions with a distributed job (seconds for a
    # year of daily partitions); on one machine the driver lists them in milliseconds.
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "100000",
}


_SETTING_KEYS = ("spark.master", "spark.driver.memory", "spark.sql.shuffle.partitions")


def settings_conf(settings: SparkSettings) -> dict[str, str]:
    """``settings`` as Spark configuration keys: what the Feast offline store config carries, so a
    session the offline store starts on first use has tidemark's settings (see :func:`conf_settings`)."""
    return {"spark.master": settings.master, "spark.driver.memory": settings.driver_memory,
            "spark.sql.shuffle.partitions": str(settings.shuffle_partitions), **settings.extra_conf}


def conf_settings(conf: Mapping[str, str]) -> SparkSettings:
    """The inverse of :func:`settings_conf` (keys it lacks keep their defaults)."""
    default = SparkSettings()
    return SparkSettings(master=conf.get("spark.master", default.master),
                         driver_memory=conf.get("spark.driver.memory", default.driver_memory),
                         shuffle_partitions=int(conf.get("spark.sql.shuffle.partitions", default.shuffle_partitions)),
                         extra_conf={k: v for k, v in conf.items() if k not in _SETTING_KEYS})


def spark_session(settings: SparkSettings | None = None) -> SparkSession:
    """Return the active Spark session, or start a local one configured for tidemark.

    An already running session (a notebook's, Spark Connect's, a test fixture's) is reused as it
    is: tidemark's code does not depend on the session time zone or on partition type inference
    (it compares epoch microseconds and names partition folders itself).
    """
    require("pyspark", "spark", "starting Spark (feature builds, training frames, materialization)")
    from pyspark.sql import SparkSession

    settings = settings or SparkSettings()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.master(settings.master).appName("tidemark")
    builder = builder.config("spark.driver.memory", settings.driver_memory)
    builder = builder.config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
    local = _LOCAL_CONF if settings.master.startswith("local") else {}
    if local:
        # PySpark picks the worker interpreter from PYSPARK_PYTHON (default "python3", which is
        # not this virtual environment) and ignores spark.pyspark.python in local mode; Python
        # tasks (materialization) must import tidemark and its dependencies.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in {**BASE_CONF, **local, **settings.extra_conf}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    log.info("started Spark %s on %s", session.version, settings.master)
    return session
