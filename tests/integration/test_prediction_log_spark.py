"""Spark reads the prediction log as written: every row, UTC microsecond timestamps, hour partitions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from serving.prediction_log import PredictionLog

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = pytest.mark.integration


def test_spark_reads_the_prediction_log(spark: SparkSession, tmp_path: Path) -> None:
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampType

    n = 50
    # Across an hour and a day boundary, with sub-millisecond parts that a lossy reader would drop.
    stamps = np.datetime64("2026-11-21T23:59:58.000001", "us") + np.arange(n) * np.timedelta64(80_001, "us")
    with PredictionLog(tmp_path) as plog:
        plog.append({
            "event_timestamp": stamps,
            "request_id": np.array([f"req-{i}" for i in range(n)], dtype=object),
            "customer_id": np.arange(n, dtype=np.int64),
            "amount": np.where(np.arange(n) % 4 == 0, np.nan, np.arange(n) * 2.5),
            "score": np.linspace(0, 1, n),
            "variant": np.full(n, "champion", dtype=object),
            "model_version": np.full(n, "7", dtype=object),
        })
        plog.append({"event_timestamp": stamps[:1], "customer_id": np.array([n])})  # other columns
    assert plog.files_written == 2  # hours 23 and 00; the second batch is unified into hour 23's file

    df = spark.read.option("mergeSchema", "true").parquet(str(tmp_path))
    assert isinstance(df.schema["event_timestamp"].dataType, TimestampType)  # not TIMESTAMP_NTZ
    rows = df.select("customer_id", F.unix_micros("event_timestamp").alias("us"), F.col("date").cast("string"),
                     "hour", "model_version").orderBy("customer_id").collect()
    assert len(rows) == n + 1 == df.count()
    expected_us = stamps.astype(np.int64).tolist()
    assert [r["us"] for r in rows] == [*expected_us, expected_us[0]]
    # tidemark's sessions turn partition type inference off: the keys read as the folders spell them
    hours = {(r["date"], r["hour"]) for r in rows}
    assert hours == {("2026-11-21", "23"), ("2026-11-22", "00")}
    assert rows[-1]["model_version"] is None and rows[0]["model_version"] == "7"
