"""tidemark's Feast definitions: entities, Spark sources and feature views.

Built by a function so the offline location is an argument, not read from the environment at
import; ``examples/fraud/feature_repo/definitions.py`` calls it for the ``feast`` CLI.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

WINDOWS = ("1h", "24h", "7d")
_WINDOW_TTL = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


def feature_definitions(offline_dir: Path) -> list[Any]:
    """Every Feast object of the tidemark project, reading offline tables under ``offline_dir``."""
    from feast import Entity, FeatureView, Field, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.types import Float64, Int64, String

    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64,
                      description="A card holder")
    merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64,
                      description="A card acceptor")

    def source(table: str, created: str, name: str | None = None) -> SparkSource:
        return SparkSource(name=name or table, path=str(offline_dir / table), file_format="parquet",
                           timestamp_field="event_timestamp", created_timestamp_column=created,
                           date_partition_column="date")

    views: list[Any] = []
    for w in WINDOWS:
        # A window's value is only computable once every transaction in it has arrived, so each
        # window has its own created timestamp and is its own view over the shared table.
        views.append(FeatureView(
            name=f"customer_txn_{w}", entities=[customer], ttl=_WINDOW_TTL[w],
            schema=[Field(name=f"txn_count_{w}", dtype=Int64), Field(name=f"amt_sum_{w}", dtype=Float64),
                    Field(name=f"amt_mean_{w}", dtype=Float64), Field(name=f"amt_max_{w}", dtype=Float64)],
            source=source("customer_txn_agg", f"created_{w}", name=f"customer_txn_agg_{w}"),
            description=f"Customer spend over the trailing {w} (EUR), as of each transaction; "
                        f"missing when the customer had no transaction in the last {w}",
        ))
    views.append(FeatureView(
        name="customer_profile", entities=[customer], ttl=timedelta(0),
        schema=[Field(name="income", dtype=Float64), Field(name="age_band", dtype=String),
                Field(name="home_country", dtype=String)],
        source=source("customer_profile", "created_timestamp"),
        description="Customer profile version in force (annual income in EUR)",
    ))
    views.append(FeatureView(
        name="merchant_stats", entities=[merchant], ttl=timedelta(days=2),
        schema=[Field(name="category", dtype=String), Field(name="country", dtype=String),
                Field(name="txn_count_30d", dtype=Int64), Field(name="amt_mean_30d", dtype=Float64),
                Field(name="fraud_rate_30d", dtype=Float64)],
        source=source("merchant_stats", "created_timestamp"),
        description="Daily merchant snapshot; fraud rate counts only labels known at the snapshot",
    ))
    return [customer, merchant, *views]


DEFAULT_FEATURES: tuple[str, ...] = (
    *[f"customer_txn_{w}:{f}_{w}" for w in WINDOWS for f in ("txn_count", "amt_sum", "amt_mean", "amt_max")],
    "customer_profile:income",
    "customer_profile:age_band",
    "customer_profile:home_country",
    "merchant_stats:category",
    "merchant_stats:country",
    "merchant_stats:txn_count_30d",
    "merchant_stats:amt_mean_30d",
    "merchant_stats:fraud_rate_30d",
)
"""The feature set the fraud model trains on."""
