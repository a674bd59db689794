"""Customer feature tables, as pure functions of raw Spark DataFrames.

``customer_profile``: one row per profile version, valid from ``valid_from`` and known from
``recorded_at``.

The customer's spending windows (``customer_txn``: 1 h, 24 h, 7 days) have no table: they are a
stream feature view over the raw payments (:mod:`examples.fraud.feature_views`), computed by
tidemark offline at each training row's time and online from the pushed payments.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.time_columns import DAY_US, day_index, epoch_micros, utc_date_string


def customer_profile(profiles: DataFrame, start: date, end: date) -> DataFrame:
    """Profile versions whose ``valid_from`` falls on a UTC date in ``[start, end]``.

    Output columns: ``customer_id``, ``event_timestamp`` (= ``valid_from``),
    ``created_timestamp`` (= ``recorded_at``), ``income`` (float64, EUR per year),
    ``age_band``, ``home_country``, ``date``.
    """
    t_us = epoch_micros(F.col("valid_from"))
    in_range = (t_us >= F.lit(day_index(start) * DAY_US)) & (t_us < F.lit((day_index(end) + 1) * DAY_US))
    return profiles.where(in_range).select(
        F.col("customer_id").cast("long").alias("customer_id"),
        F.col("valid_from").cast("timestamp").alias("event_timestamp"),
        F.col("recorded_at").cast("timestamp").alias("created_timestamp"),
        F.col("income").cast("double").alias("income"),
        F.col("age_band").cast("string").alias("age_band"),
        F.col("home_country").cast("string").alias("home_country"),
        utc_date_string(t_us).alias("date"),
    )
