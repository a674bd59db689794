"""The fraud example's Feast definitions: entities, sources and feature views.

Built by a function so the data locations are arguments, not read from the environment at
import; ``examples/fraud/feature_repo/definitions.py`` calls it for the ``feast`` CLI.

The customer windows are stream feature views over one push source, ``transactions``: tidemark
computes them exactly from the raw payments (offline, at each training row's time) and from the
pushed payments (online, at the moment of the read), so training and serving see one definition.
A window at time ``t`` holds the customer's payments with event time in ``(t - w, t]`` that had
*arrived* by ``t``: a payment arrives after its authorisation round trip, so the payment scored
at ``t`` is never in its own windows, offline as online (serving scores it, then pushes it).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

WINDOWS = ("1h", "24h", "7d")
_WINDOW_LENGTH = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
#: The four aggregations of each window, over the payment's ``amount`` (EUR): feature name prefix
#: and function.
WINDOW_FUNCTIONS = (("txn_count", "count"), ("amt_sum", "sum"), ("amt_mean", "mean"), ("amt_max", "max"))
WINDOW_VIEW = "customer_txn"
PUSH_SOURCE = "transactions"
"""The push source the served payments go to (``push_scored_events`` in ``tidemark.yaml``)."""


def feature_definitions(offline_dir: Path, raw_dir: Path) -> list[Any]:
    """Every Feast object of the fraud project: the customer windows over the raw payments under
    ``raw_dir``, the other views over the offline tables under ``offline_dir``."""
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

    push, history = transactions_source(raw_dir)
    views: list[Any] = [customer_window_view(customer, push)]
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
    return [customer, merchant, history, push, *views]


def transactions_source(raw_dir: Path) -> tuple[Any, Any]:
    """The ``transactions`` push source and its batch source: the raw payments (``raw_dir /
    transactions``, partitioned by event date), event time ``event_timestamp``, arrival time
    ``arrival_timestamp``."""
    from feast import PushSource
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    history = SparkSource(name="transactions_history", path=str(raw_dir / "transactions"), file_format="parquet",
                          timestamp_field="event_timestamp", created_timestamp_column="arrival_timestamp",
                          date_partition_column="date")
    return PushSource(name=PUSH_SOURCE, batch_source=history), history


def customer_window_view(customer: Any, push: Any) -> Any:
    """``customer_txn``: for each window of 1 hour, 24 hours and 7 days, the count, sum, mean and max
    of the customer's payment amounts (EUR) over it, payments that had arrived by then only. An
    empty window is count 0 and sum 0.0, with a null mean and max. One view, so one state per card
    online: each payment is stored once for the three windows."""
    from feast import Field
    from feast.aggregation import Aggregation
    from feast.stream_feature_view import StreamFeatureView
    from feast.types import Float64, Int64

    aggregations = [Aggregation(column="amount", function=function, time_window=_WINDOW_LENGTH[window],
                                name=f"{prefix}_{window}") for window in WINDOWS for prefix, function in WINDOW_FUNCTIONS]
    return StreamFeatureView(
        name=WINDOW_VIEW, entities=[customer], source=push, timestamp_field="event_timestamp",
        schema=[Field(name=a.name, dtype=Int64 if a.function == "count" else Float64) for a in aggregations],
        aggregations=aggregations, tags={"tidemark.event_id": "transaction_id"},
        description="Customer spend over the trailing 1 h, 24 h and 7 days (EUR) before each payment: the "
                    "payments that had arrived by then, the scored one not among them",
    )


DEFAULT_FEATURES: tuple[str, ...] = (
    *[f"{WINDOW_VIEW}:{prefix}_{w}" for w in WINDOWS for prefix, _ in WINDOW_FUNCTIONS],
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
