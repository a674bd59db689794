"""The driver example's Spark paths in one process, as a user runs them against a Spark master:
``python -m tests.integration.spark_cluster_job HOME NOW`` with ``TIDEMARK_SPARK_MASTER``,
``TIDEMARK_REDIS_URL`` and ``TIDEMARK_HOME`` (holding the example's data) set.

Applies the repo, appends rows to the offline store (Feast's ``write_to_offline_store``: the
partitioned, committed write), materializes into Redis (tasks on the executors write to Redis),
builds a training frame (the as-of join), reads the online values, and judges drift on Spark (a
reference profile fitted on Spark from the frame, shifted rows compared with it, as
``drift_monitor`` counts a large log). Prints one JSON object: what ran where, the frame's SHA-256,
the online values and the drift report, for a comparison across masters; and whether Spark's
drift report equals the one pandas computes from the same rows. Then the fraud example's feature
build (its Spark jobs) on a few days of its payments: each offline table's rows and SHA-256.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from examples.driver.training import INPUTS  # noqa: F401  (the example's entry points import here too)
from features.sdk import FeatureClient
from features.spark import is_connect, is_local
from pipelines.training_data import frame_sha256
from tidemark.settings import Settings

REPO = Path(__file__).resolve().parents[2] / "examples" / "driver" / "feature_repo"


def main(now_text: str) -> dict[str, object]:
    now = pd.Timestamp(now_text)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        seconds[step] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    settings = Settings.from_env()
    client = FeatureClient(settings)
    client.apply()
    lap("apply")
    late = pd.DataFrame({"driver_id": [1001, 1002], "event_timestamp": [now - pd.Timedelta(minutes=30)] * 2,
                         "created": [now - pd.Timedelta(minutes=20)] * 2})
    _append(client, late)
    lap("offline_write")  # includes starting (or connecting to) Spark
    client.materialize_incremental(now.to_pydatetime(), progress=False)
    lap("materialize")
    refs, _ = client.resolve_features("driver_activity")
    entities = pd.DataFrame({"driver_id": [1001, 1002, 1003, 1004] * 3, "customer_id": [201, 202, 203, 204] * 3,
                             "event_timestamp": [now - pd.Timedelta(hours=h) for h in (0, 6, 30) for _ in range(4)]})
    frame = client.training_frame(entities, refs)
    lap("training_frame")
    online = client.online_features(entities[["driver_id", "customer_id"]].drop_duplicates(), refs).frame
    spark = client.spark
    drift, drift_on_pandas = _drift(spark, frame)
    lap("drift")
    build = _fraud_build(settings)
    lap("fraud_build")
    return {"connect": is_connect(spark), "local": is_local(spark), "frame_sha256": frame_sha256(frame),
            "frame_rows": len(frame), "online": json.loads(online.to_json(orient="records", double_precision=10)),
            "drift": drift, "drift_as_pandas": drift == drift_on_pandas, "fraud_build": build, "seconds": seconds}


def _fraud_build(settings: Settings) -> dict[str, list[object]]:
    """The fraud example's Spark feature jobs (the driver example has none) over a few days of its
    generated payments, in a home of their own on the same session: each table's rows and SHA-256."""
    import dataclasses
    import datetime as dt
    import hashlib

    import pyarrow.dataset as ds

    from examples.fraud.datagen import DatagenConfig, generate
    from examples.fraud.feature_jobs import build_job

    fraud = dataclasses.replace(settings, home=settings.home / "fraud", feast_repo=None)
    start = dt.date(2026, 11, 20)
    generate(fraud.raw_dir, DatagenConfig(rows=5_000, days=4, start=start, seed=3))
    build_job(fraud, start, start + dt.timedelta(days=3))
    tables: dict[str, list[object]] = {}
    for folder in sorted(p for p in fraud.offline_dir.iterdir() if p.is_dir()):
        table = ds.dataset(folder, partitioning="hive").to_table().to_pandas()
        table = table.sort_values(list(table.columns)).reset_index(drop=True)
        tables[folder.name] = [len(table), hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()]
    return tables


def _drift(spark: object, frame: pd.DataFrame) -> tuple[dict[str, object], dict[str, object]]:
    """The frame's numeric features as the reference (fitted on Spark), the same rows shifted as
    the current data: the report counted on Spark, and the one counted by pandas."""
    from monitoring.drift import compare
    from monitoring.profile import ReferenceProfile

    numeric = frame.select_dtypes("number").drop(columns=["driver_id", "customer_id"], errors="ignore")
    profile = ReferenceProfile.fit(spark.createDataFrame(numeric), bins=4)  # type: ignore[attr-defined]
    shifted = numeric * 1.5 + 0.25
    on_spark = compare(profile, spark.createDataFrame(shifted)).to_dict()  # type: ignore[attr-defined]
    on_pandas = compare(profile, shifted).to_dict()
    for report in (on_spark, on_pandas):
        report.pop("profile_created_at")  # when this run fitted it: not comparable across runs
    return on_spark, on_pandas


def _append(client: FeatureClient, rows: pd.DataFrame) -> None:
    """Rows for the first batch view with a ``driver_id`` key, written to its offline source."""
    view = next(v for v in client.feature_views() if [c.name for c in v.entity_columns] == ["driver_id"])
    frame = rows[["driver_id", "event_timestamp"]].copy()
    for feature in view.features:
        frame[feature.name] = 1.0 if "Float" in str(feature.dtype) else 1
    source = view.batch_source
    if source.created_timestamp_column:
        frame[source.created_timestamp_column] = rows["created"]
    if source.date_partition_column:
        frame[source.date_partition_column] = rows["event_timestamp"].dt.strftime("%Y-%m-%d")
    client.store.write_to_offline_store(view.name, frame)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
