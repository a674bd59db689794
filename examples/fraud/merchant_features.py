"""The ``merchant_stats`` feature table, as a pure function of raw Spark DataFrames.

One row per merchant per UTC day boundary ``s`` (00:00), from the first boundary at or after
the merchant's onboarding on (a merchant has no snapshot before it existed, so on its first day
it has none at all). Over the transactions with event time in ``(s - 30d, s]`` that had arrived
by ``s``: ``txn_count_30d``, ``amt_mean_30d`` (EUR; null when the count is 0, because there is
no mean of nothing) and ``fraud_rate_30d``, the share of them labelled fraud by a label known by
``s`` (0.0 when the count is 0). ``created_timestamp = s``: every input was known by then.

How, without pairing every transaction with every day: a transaction counts at exactly the
contiguous boundaries ``[lo, hi)`` with ``lo`` the first boundary >= max(event, arrival) (for
the fraud count: >= max(event, arrival, label)) and ``hi`` the first boundary >= event + 30d.
So it emits +1 at ``lo`` and -1 at ``hi`` (and +/- its amount); summing those deltas per
(merchant, day) and taking a running sum over the days of a merchant x day grid gives every
snapshot. Work is linear in the transactions plus the grid. Amounts are summed as integer
micro-euros, so running sums are exact (no float residue after +a-a).
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from features.time_columns import DAY_US, amount_micros, ceil_div, day_index, day_start, epoch_micros

MERCHANT_WINDOW_DAYS = 30
MERCHANT_LOOKBACK_DAYS = 30
"""Days of transactions (and labels) before ``start`` that the 30-day window needs."""

_DAY = "__day"


def merchant_stats(
    transactions: DataFrame, labels: DataFrame, merchants: DataFrame, start: date, end: date
) -> DataFrame:
    """Daily 30-day merchant snapshots at each 00:00 UTC from ``start`` to ``end`` (inclusive).

    ``transactions`` and ``labels`` follow the raw schemas and must hold every transaction with
    event time, and every label with label time, from ``start - 30 days`` to ``end`` 00:00
    (label times are assumed >= their transaction's). ``merchants`` is the raw merchants table;
    transactions of merchants missing from it are ignored. Output columns: ``merchant_id``,
    ``event_timestamp``, ``created_timestamp``, ``category``, ``country``, ``txn_count_30d``
    (int64), ``amt_mean_30d`` (float64, EUR), ``fraud_rate_30d`` (float64), ``date``.
    """
    first, last = day_index(start), day_index(end)
    daily = _daily_deltas(transactions, labels, first, last)
    onboarded_day = ceil_div(epoch_micros(F.col("onboarded_at")), DAY_US)
    # merchants x days, small (never transactions x days); from `first` on even for merchants
    # onboarded later, because deltas before their first snapshot still enter the running sums.
    grid = merchants.where(onboarded_day <= F.lit(last)).select(
        F.col("merchant_id").cast("long").alias("merchant_id"),
        F.col("category").cast("string").alias("category"),
        F.col("country").cast("string").alias("country"),
        onboarded_day.alias("__first_day"),
        F.explode(F.sequence(F.lit(first).cast("long"), F.lit(last).cast("long"))).alias(_DAY),
    )
    running = Window.partitionBy("merchant_id").orderBy(_DAY).rowsBetween(Window.unboundedPreceding, 0)
    totals = grid.join(daily, ["merchant_id", _DAY], "left").select(
        "merchant_id", "category", "country", "__first_day", _DAY,
        *[F.sum(F.coalesce(F.col(c), F.lit(0))).over(running).alias(c) for c in ("__n", "__amt", "__fraud")],
    )  # fmt: skip
    # Only now drop the days before onboarding: their deltas are part of the running sums.
    return _snapshot_columns(totals.where(F.col(_DAY) >= F.col("__first_day")))


def _daily_deltas(transactions: DataFrame, labels: DataFrame, first: int, last: int) -> DataFrame:
    """Per (merchant, day index in [first, last]): deltas of count, amount (micro-EUR) and frauds."""
    bounds = _contribution_bounds(transactions, labels, first)
    lo, lo_fraud, hi, amt = F.col("__lo"), F.col("__lo_fraud"), F.col("__hi"), F.col("__amt")
    counted, fraud_counted = lo < hi, F.coalesce(lo_fraud < hi, F.lit(False))
    # A null day drops the delta: its range is empty, or it starts/ends after the last day.
    deltas = F.array(
        _delta(F.when(counted & (lo <= last), lo), F.lit(1), amt, F.lit(0)),
        _delta(F.when(fraud_counted & (lo_fraud <= last), lo_fraud), F.lit(0), F.lit(0), F.lit(1)),
        _delta(F.when(counted & (hi <= last), hi), F.lit(-1), -amt, -fraud_counted.cast("long")),
    )
    return (
        bounds.select("merchant_id", F.explode(deltas).alias("d"))
        .where(F.col("d.day").isNotNull())
        .groupBy("merchant_id", F.col("d.day").alias(_DAY))
        .agg(*[F.sum(f"d.{c}").alias(f"__{c}") for c in ("n", "amt", "fraud")])
    )


def _contribution_bounds(transactions: DataFrame, labels: DataFrame, first: int) -> DataFrame:
    """Per transaction whose window can reach day ``first``: the day indices ``__lo`` (counted
    from), ``__lo_fraud`` (counted as fraud from; null if not fraud) and ``__hi`` (no longer
    counted from), lower bounds clamped to ``first``; and ``__amt`` in micro-EUR."""
    frauds = (
        labels.where(F.col("is_fraud").cast("int") == 1)
        .groupBy(F.col("transaction_id").cast("long").alias("transaction_id"))
        .agg(F.min(epoch_micros(F.col("label_timestamp"))).alias("__l"))  # earliest known as fraud
    )
    txns = transactions.select(
        F.col("transaction_id").cast("long").alias("transaction_id"),
        F.col("merchant_id").cast("long").alias("merchant_id"),
        epoch_micros(F.col("event_timestamp")).alias("__e"),
        epoch_micros(F.col("arrival_timestamp")).alias("__a"),
        amount_micros(F.col("amount")).alias("__amt"),
    ).where(F.col("__e") > F.lit((first - MERCHANT_WINDOW_DAYS) * DAY_US))
    return txns.join(frauds, "transaction_id", "left").select(
        "merchant_id",
        "__amt",
        (ceil_div(F.col("__e"), DAY_US) + MERCHANT_WINDOW_DAYS).alias("__hi"),  # first boundary >= event + 30d
        F.greatest(ceil_div(F.greatest("__e", "__a"), DAY_US), F.lit(first)).alias("__lo"),
        # greatest() skips nulls, so "no fraud label" must stay null explicitly.
        F.when(
            F.col("__l").isNotNull(), F.greatest(ceil_div(F.greatest("__e", "__a", "__l"), DAY_US), F.lit(first))
        ).alias("__lo_fraud"),
    )


def _delta(day: Column, n: Column, amount_us: Column, fraud: Column) -> Column:
    """One (day, +/-count, +/-amount, +/-fraud) delta; a null day means "no delta"."""
    return F.struct(
        day.cast("long").alias("day"),
        n.cast("long").alias("n"),
        amount_us.cast("long").alias("amt"),
        fraud.cast("long").alias("fraud"),
    )


def _snapshot_columns(totals: DataFrame) -> DataFrame:
    n, amount_us, frauds = F.col("__n"), F.col("__amt"), F.col("__fraud")
    s = day_start(F.col(_DAY))
    return totals.select(
        "merchant_id",
        s.alias("event_timestamp"),
        s.alias("created_timestamp"),
        "category",
        "country",
        n.alias("txn_count_30d"),
        F.when(n > 0, amount_us.cast("double") / (n * F.lit(1_000_000)).cast("double")).alias("amt_mean_30d"),
        F.when(n > 0, frauds.cast("double") / n.cast("double")).otherwise(F.lit(0.0)).alias("fraud_rate_30d"),
        F.date_from_unix_date(F.col(_DAY).cast("int")).cast("string").alias("date"),
    )
