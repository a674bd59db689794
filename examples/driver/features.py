"""The driver example's Feast objects: two entities, two Spark sources, two views, one service.

Built by a function so the data folder is an argument (tests pass a temporary one);
``feature_repo/definitions.py`` calls it for the ``feast`` CLI. Feast is imported inside the
function: it takes seconds to import, and the data generator and training code import this
package without needing it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

__all__ = ["driver_definitions"]


def driver_definitions(data_dir: Path) -> list[Any]:
    """Entities, sources, views and the ``driver_activity`` service over the tables in ``data_dir``.

    ``data_dir`` is where :func:`examples.driver.datagen.generate` wrote its Parquet folders.
    """
    from feast import Entity, FeatureService, FeatureView, Field, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.types import Float32, Int64

    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64,
                    description="A driver taking trip requests")
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64,
                      description="A rider requesting trips")

    def source(table: str) -> SparkSource:
        # Partitioned by the UTC day of event_timestamp, so a join reads only the days it needs.
        return SparkSource(name=table, path=str(data_dir / table), file_format="parquet",
                           timestamp_field="event_timestamp", created_timestamp_column="created",
                           date_partition_column="date")

    driver_stats_source, customer_profile_source = source("driver_hourly_stats"), source("customer_daily_profile")
    driver_hourly_stats = FeatureView(
        name="driver_hourly_stats", entities=[driver], ttl=timedelta(days=2),
        schema=[Field(name="conv_rate", dtype=Float32), Field(name="acc_rate", dtype=Float32),
                Field(name="avg_daily_trips", dtype=Int64)],
        source=driver_stats_source,
        description="Driver's conversion and acceptance rates (fractions) and trips per day, hourly",
    )
    customer_daily_profile = FeatureView(
        name="customer_daily_profile", entities=[customer], ttl=timedelta(days=7),
        schema=[Field(name="current_balance", dtype=Float32), Field(name="avg_passenger_count", dtype=Float32),
                Field(name="lifetime_trip_count", dtype=Int64)],
        source=customer_profile_source,
        description="Customer's wallet balance (EUR), usual party size and trips so far, daily at 00:00 UTC",
    )
    activity = FeatureService(name="driver_activity", features=[driver_hourly_stats, customer_daily_profile],
                              description="Every feature the completion and duration models read")
    return [driver, customer, driver_stats_source, customer_profile_source,
            driver_hourly_stats, customer_daily_profile, activity]
