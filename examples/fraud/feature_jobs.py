"""The feature build: raw events (``raw/``) to the offline feature tables (``offline/``).

:func:`build_features` computes ``customer_profile`` and ``merchant_stats`` (see
:mod:`examples.fraud.customer_features` and :mod:`examples.fraud.merchant_features`, and
``docs/data_model.md``) for the feature rows whose ``event_timestamp`` falls on a UTC date in
``[start, end]``, and replaces exactly those date partitions of each table, atomically (see
:mod:`features.partitioned_write`).

It reads only the raw date partitions it needs: ``[start - 30 days, end]`` of transactions and
labels (the merchant window), ``[start, end]`` of customer profiles, and the small unpartitioned merchants table. Every value depends only on
the raw data inside its own lookback, and every sum is exact, so building a range in one run
or in any split of it (day by day, halves) writes identical tables.

The customer spending windows are no table here: they are stream feature views that tidemark
computes from the raw payments themselves (:mod:`examples.fraud.feature_views`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from examples.fraud.customer_features import customer_profile
from examples.fraud.merchant_features import MERCHANT_LOOKBACK_DAYS, merchant_stats
from features.errors import ConfigError, DataNotFoundError
from features.partitioned_write import PARTITION_COLUMN, write_partitions
from features.spark_conf import scoped_conf

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from tidemark.settings import Settings

__all__ = [
    "RAW_SCHEMAS",
    "TABLE_SORT",
    "BuildSummary",
    "build_features",
    "build_job",
    "customer_profile",
    "feature_frames",
    "merchant_stats",
    "partition_dates",
    "raw_date_range",
    "read_raw",
]

log = logging.getLogger(__name__)

#: Raw tables as documented in docs/data_model.md (Spark DDL). Columns are read and cast to these
#: types, so a generator writing e.g. ``is_fraud`` as int64 still reads the same.
RAW_SCHEMAS: dict[str, str] = {
    "transactions": "transaction_id long, customer_id long, merchant_id long, amount double, "
    "channel string, event_timestamp timestamp, arrival_timestamp timestamp",
    "labels": "transaction_id long, is_fraud tinyint, transaction_timestamp timestamp, label_timestamp timestamp",
    "customer_profiles": "customer_id long, income double, age_band string, home_country string, "
    "valid_from timestamp, recorded_at timestamp",
    "merchants": "merchant_id long, category string, country string, onboarded_at timestamp",
}
#: Offline tables in build order, with the sort order of rows within each date partition.
TABLE_SORT: dict[str, tuple[str, ...]] = {
    "customer_profile": ("customer_id", "event_timestamp"),
    "merchant_stats": ("merchant_id", "event_timestamp"),
}
_PARTITION_PREFIX = f"{PARTITION_COLUMN}="
_LISTING_THRESHOLD = "spark.sql.sources.parallelPartitionDiscovery.threshold"


@dataclass(frozen=True)
class BuildSummary:
    """What one :func:`build_features` run wrote."""

    tables: dict[str, int]
    """Rows written per table (over all the run's partitions)."""
    partitions: dict[str, int]
    """Date partitions with rows, per table (listed dates without rows were removed)."""
    start: date
    end: date
    seconds: float
    """Wall-clock time of the run, seconds."""

    def table(self) -> str:
        """A plain-text table of the run, for logs and the CLI."""
        width = max(len(name) for name in [*self.tables, "table"])
        lines = [
            f"feature build {self.start} .. {self.end} ({(self.end - self.start).days + 1} days) in {self.seconds:.1f} s",
            f"{'table':<{width}}  {'rows':>12}  {'partitions':>10}",
        ]
        lines += [f"{n:<{width}}  {self.tables[n]:>12,}  {self.partitions.get(n, 0):>10}" for n in self.tables]
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """The run as plain JSON values (what the ``feature_pipeline`` DAG's task returns)."""
        return {"tables": self.tables, "partitions": self.partitions, "start": str(self.start),
                "end": str(self.end), "seconds": round(self.seconds, 1)}


def build_job(settings: Settings, first: date | None, last: date | None, *, checks: bool = True) -> BuildSummary:
    """The example's ``feature_jobs.build`` (``feature_repo/tidemark.yaml``): :func:`build_features`
    on tidemark's Spark session, from ``settings.raw_dir`` to ``settings.offline_dir``."""
    from features.spark import spark_session

    return build_features(spark_session(settings.spark), settings.raw_dir, settings.offline_dir,
                          start=first, end=last, checks=checks)


def build_features(
    spark: SparkSession,
    raw_dir: Path,
    offline_dir: Path,
    *,
    start: date | None = None,
    end: date | None = None,
    checks: bool = False,
) -> BuildSummary:
    """Build the offline feature tables for the UTC dates ``[start, end]`` (inclusive).

    Without ``start``/``end``, each table covers its raw data's own span (transactions for the
    merchant table, profiles for the profile table). Each table lands in ``offline_dir/<table>/`` as Parquet partitioned by ``date``;
    the run replaces exactly the partitions ``start .. end`` (a date without rows loses its
    partition) and leaves all others alone. Tables are written one after the other, each
    atomically: if the run fails, the tables already written hold the new values, the others the
    old ones, and re-running the same range completes it. Raises :class:`DataNotFoundError` when
    a raw table is missing and :class:`ConfigError` when ``start > end``.

    ``checks``: first check the raw payments of the range and every table's new rows
    (:mod:`examples.fraud.data_checks`: schema, nulls, ranges) and raise :class:`DataCheckError`,
    listing every failure, before any table is written. The checked rows are kept (memory, then
    disk) so that they are computed once.
    """
    began = time.perf_counter()
    ranges = _table_ranges(raw_dir, start, end)
    frames = {name: feature_frames(spark, raw_dir, first, last)[name] for name, (first, last) in ranges.items()}
    if checks:
        frames = _checked(spark, raw_dir, frames, ranges)
    rows, partitions = {}, {}
    try:
        for name, (first, last) in ranges.items():
            dates = [first + timedelta(days=i) for i in range((last - first).days + 1)]
            result = write_partitions(frames[name], offline_dir / name, dates, sort_by=TABLE_SORT[name])
            rows[name], partitions[name] = result.total_rows, len(result.rows)
            log.info("built %s for %s..%s: %d rows", name, first, last, result.total_rows)
    finally:
        if checks:
            for frame in frames.values():
                frame.unpersist()
    first = min(r[0] for r in ranges.values())
    last = max(r[1] for r in ranges.values())
    return BuildSummary(rows, partitions, first, last, time.perf_counter() - began)


def _checked(spark: SparkSession, raw_dir: Path, frames: dict[str, DataFrame],
             ranges: dict[str, tuple[date, date]]) -> dict[str, DataFrame]:
    """``frames`` persisted, once the range's raw payments and every frame passed their checks."""
    from pyspark import StorageLevel

    from examples.fraud.data_checks import RAW_TRANSACTIONS, TABLE_CHECKS
    from features.data_checks import check_frame, raise_failures

    first, last = min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())
    results = [check_frame(read_raw(spark, raw_dir, "transactions", first, last), RAW_TRANSACTIONS,
                           start=first, end=last)]
    kept = {name: frame.persist(StorageLevel.MEMORY_AND_DISK) for name, frame in frames.items()}
    try:
        results += [check_frame(kept[name], TABLE_CHECKS[name], start=lo, end=hi) for name, (lo, hi) in ranges.items()]
        raise_failures(results, start=first, end=last)
    except BaseException:
        for frame in kept.values():
            frame.unpersist()
        raise
    for r in results:
        log.info("data checks passed: %s, %d rows", r.table, r.rows)
    return kept


def _table_ranges(raw_dir: Path, start: date | None, end: date | None) -> dict[str, tuple[date, date]]:
    """The dates each table is built for: the given range, or by default each table's own span.

    By default the transaction-based table covers the transactions' dates and the profile table
    the profiles' dates (sign-ups reach back long before the first transaction; building empty
    merchant snapshots for that year would only cost time).
    """
    if start is not None and end is not None:
        start, end = _resolve_range(raw_dir, start, end)
        return {name: (start, end) for name in TABLE_SORT}
    txn = _resolve_range(raw_dir, start, end, tables=("transactions",))
    profiles = _resolve_range(raw_dir, start, end, tables=("customer_profiles",))
    return {"customer_profile": profiles, "merchant_stats": txn}


def feature_frames(spark: SparkSession, raw_dir: Path, start: date, end: date) -> dict[str, DataFrame]:
    """The two feature tables for the UTC dates ``[start, end]``, as lazy DataFrames by table name.

    Each reads only the raw partitions its lookback needs; nothing is computed until acted on.
    """
    merchant_first = start - timedelta(days=MERCHANT_LOOKBACK_DAYS)
    return {
        "customer_profile": customer_profile(read_raw(spark, raw_dir, "customer_profiles", start, end), start, end),
        "merchant_stats": merchant_stats(
            read_raw(spark, raw_dir, "transactions", merchant_first, end),
            read_raw(spark, raw_dir, "labels", merchant_first, end),
            read_raw(spark, raw_dir, "merchants"),
            start,
            end,
        ),
    }


def read_raw(
    spark: SparkSession, raw_dir: Path, table: str, first: date | None = None, last: date | None = None
) -> DataFrame:
    """Read raw ``table``, only its ``date`` partitions in ``[first, last]`` when those are given.

    The partition folders are chosen by listing ``raw_dir/<table>/`` here rather than by a filter
    on the ``date`` column, so folders out of range are never listed by Spark nor opened. Columns
    are cast to :data:`RAW_SCHEMAS`; an empty range gives an empty DataFrame of that schema.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    root = raw_dir / table
    if not root.is_dir():
        raise DataNotFoundError(f"raw table {table!r} not found at {root}; generate raw data with `tidemark datagen`")
    schema = StructType.fromDDL(RAW_SCHEMAS[table])
    assert isinstance(schema, StructType)  # a column list parses to a struct
    if first is None and last is None:
        paths = [root]
    else:
        lo, hi = first or date.min, last or date.max
        paths = [root / f"{_PARTITION_PREFIX}{d.isoformat()}" for d in partition_dates(root) if lo <= d <= hi]
    if not paths:
        return spark.createDataFrame([], schema)
    # Above 32 paths Spark lists them with a distributed job of one task per path (seconds for a
    # year of daily partitions); listing local folders on the driver takes milliseconds.
    with scoped_conf(spark, _LISTING_THRESHOLD, str(max(32, len(paths) + 1))):
        frame = spark.read.parquet(*[str(p) for p in paths])
    return frame.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def partition_dates(table_dir: Path) -> list[date]:
    """The dates of the ``date=YYYY-MM-DD`` folders under ``table_dir``, sorted."""
    found = []
    for entry in table_dir.iterdir():
        if entry.is_dir() and entry.name.startswith(_PARTITION_PREFIX):
            try:
                found.append(date.fromisoformat(entry.name[len(_PARTITION_PREFIX) :]))
            except ValueError:
                log.warning("ignoring %s: not a date partition", entry)
    return sorted(found)


def raw_date_range(raw_dir: Path, tables: tuple[str, ...] = ("transactions", "customer_profiles")) -> tuple[date, date]:
    """First and last UTC date of the given raw tables together."""
    dates: list[date] = []
    for table in tables:
        root = raw_dir / table
        if not root.is_dir():
            raise DataNotFoundError(
                f"raw table {table!r} not found at {root}; generate raw data with `tidemark datagen`"
            )
        dates += partition_dates(root)
    if not dates:
        raise DataNotFoundError(f"no date partitions under {raw_dir}/transactions or customer_profiles; is it empty?")
    return min(dates), max(dates)


def _resolve_range(
    raw_dir: Path, start: date | None, end: date | None, tables: tuple[str, ...] = ("transactions", "customer_profiles")
) -> tuple[date, date]:
    if start is None or end is None:
        first, last = raw_date_range(raw_dir, tables)
        start, end = start or first, end or last
    if start > end:
        raise ConfigError(f"feature build start {start} is after end {end}; pass start <= end (inclusive UTC dates)")
    return start, end
