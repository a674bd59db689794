"""Customer feature tables, as pure functions of raw Spark DataFrames.

``customer_txn_agg``: one row per transaction, at its event time ``t``, with for each window
``w`` in 1h, 24h, 7d the count, sum, mean and max of the amounts (EUR) of the customer's
transactions with event time in ``(t - w, t]``, the anchoring one included, and ``created_<w>``,
the latest arrival among them: the value cannot have been computed before all of them arrived.

Ties: two transactions of one customer at the same microsecond are each in the other's window
(range-frame semantics), so both rows carry identical values. That is what "event time in
``(t - w, t]``" says, and no order between them exists that could say otherwise.

Sums and means are computed exactly on whole micro-euros (:func:`features.time_columns.amount_micros`)
and only then converted to float64, so they do not depend on the order Spark adds rows in.

``customer_profile``: one row per profile version, valid from ``valid_from`` and known from
``recorded_at``.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from features.time_columns import (
    DAY_US,
    HOUR_US,
    amount_micros,
    day_index,
    epoch_micros,
    micros_to_eur,
    utc_date_string,
)

#: Trailing windows of ``customer_txn_agg``: name -> length in microseconds.
CUSTOMER_WINDOWS: dict[str, int] = {"1h": HOUR_US, "24h": 24 * HOUR_US, "7d": 7 * DAY_US}
CUSTOMER_LOOKBACK_DAYS = 7
"""Days of transactions before ``start`` that the longest customer window needs."""

_T_US = "__t_us"
_AMT_US = "__amt_us"


def customer_txn_agg(transactions: DataFrame, start: date, end: date) -> DataFrame:
    """Trailing-window aggregates per transaction with event date in ``[start, end]`` (UTC).

    ``transactions`` follows the raw ``transactions`` schema and must hold every transaction
    with event time from ``start - 7 days`` on (earlier ones are ignored). Output columns:
    ``customer_id``, ``event_timestamp``, per window ``txn_count_<w>`` (int64), ``amt_sum_<w>``,
    ``amt_mean_<w>``, ``amt_max_<w>`` (float64, EUR), ``created_<w>`` (timestamp), and ``date``.
    """
    first_us = (day_index(start) - CUSTOMER_LOOKBACK_DAYS) * DAY_US
    end_us = (day_index(end) + 1) * DAY_US
    txns = transactions.select(
        "customer_id",
        "event_timestamp",
        "arrival_timestamp",
        F.col("amount").cast("double").alias("amount"),
        epoch_micros(F.col("event_timestamp")).alias(_T_US),
        amount_micros(F.col("amount")).alias(_AMT_US),
    ).where((F.col(_T_US) >= F.lit(first_us)) & (F.col(_T_US) < F.lit(end_us)))
    ordered = Window.partitionBy("customer_id").orderBy(_T_US)
    columns: list[Column] = [F.col("customer_id"), F.col("event_timestamp")]
    for name, length_us in CUSTOMER_WINDOWS.items():
        # rangeBetween bounds are inclusive: [t - (w - 1us), t] is (t - w, t] in whole micros.
        columns += _window_columns(name, ordered.rangeBetween(-(length_us - 1), 0))
    start_us = day_index(start) * DAY_US
    return (
        txns.select(*columns, F.col(_T_US))
        .where(F.col(_T_US) >= F.lit(start_us))
        .withColumn("date", utc_date_string(F.col(_T_US)))
        .drop(_T_US)
    )


def _window_columns(name: str, frame: WindowSpec) -> list[Column]:
    """The five columns of one trailing window (``frame``: partition, order and range)."""
    count = F.count(F.lit(1)).over(frame)
    total_us = F.sum(_AMT_US).over(frame)
    return [
        count.alias(f"txn_count_{name}"),
        micros_to_eur(total_us).alias(f"amt_sum_{name}"),
        # count >= 1 always: the anchoring transaction is in its own window.
        (total_us.cast("double") / (count * F.lit(1_000_000)).cast("double")).alias(f"amt_mean_{name}"),
        F.max("amount").over(frame).alias(f"amt_max_{name}"),
        F.max("arrival_timestamp").over(frame).alias(f"created_{name}"),
    ]


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
