"""Appending rows to a feature view's Parquet source: Feast's ``offline_write_batch``.

``FeatureStore.push(..., to=PushMode.OFFLINE)`` and ``write_to_offline_store`` hand the offline
store an Arrow table for a view's batch source. The rows are appended so that a reader never sees
half a write and a failed write leaves the table as it was:

- a source partitioned by ``date`` (as the feature builds write them) gets, for each UTC day the
  rows fall on, its partition rewritten as old rows + new rows through
  :func:`features.partitioned_write.write_partitions` (staged, journaled, renamed into place);
- an unpartitioned folder gets one new Parquet file, written under a hidden name and renamed in.

Timestamps are written in microseconds: Spark refuses Parquet ``TIMESTAMP(NANOS)``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

from features.errors import OfflineWriteError
from features.partitioned_write import PARTITION_COLUMN, write_partitions

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

__all__ = ["append_to_source"]


def append_to_source(spark: SparkSession, view_name: str, source: SparkSource, table: pa.Table) -> int:
    """Append ``table``'s rows to ``source`` (a Parquet path); returns the rows written.

    Raises :class:`OfflineWriteError` when the source is not a Parquet path or the rows' columns
    or types differ from those already stored.
    """
    if not source.path or (source.file_format or "parquet") != "parquet":
        raise OfflineWriteError(
            f"feature view {view_name!r} reads {source.table or source.query or source.path!r}; rows can be "
            "written only to a SparkSource with a Parquet path: give the view one, or write to its table yourself")
    root = Path(source.path.removeprefix("file://"))
    partitioned = source.date_partition_column == PARTITION_COLUMN or any(root.glob(f"{PARTITION_COLUMN}=*"))
    rows = _conformed(view_name, source, root, table.drop_columns(
        [PARTITION_COLUMN] if partitioned and PARTITION_COLUMN in table.column_names else []))
    if rows.num_rows == 0:
        return 0
    if partitioned:
        _append_partitioned(spark, root, source.timestamp_field, rows)
    else:
        _append_file(root, rows)
    return rows.num_rows


def _conformed(view_name: str, source: SparkSource, root: Path, table: pa.Table) -> pa.Table:
    """``table`` in the stored column order and types; an error naming any difference."""
    stored = _stored_schema(root)
    if stored is None:
        return table
    stored = pa.schema([f for f in stored if f.name != PARTITION_COLUMN])
    missing = sorted(set(stored.names) - set(table.column_names))
    extra = sorted(set(table.column_names) - set(stored.names))
    if missing or extra:
        raise OfflineWriteError(
            f"rows for feature view {view_name!r} do not fit its source {source.path}: missing columns "
            f"{missing}, unexpected columns {extra}; push exactly the source's columns {stored.names}")
    columns = []
    for field in stored:
        column = table.column(field.name)
        try:
            columns.append(column if column.type == field.type else column.cast(field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise OfflineWriteError(
                f"column {field.name!r} of the rows for feature view {view_name!r} is {column.type}, the "
                f"source stores {field.type} and the values do not convert ({exc}); convert them first") from exc
    return pa.Table.from_arrays(columns, schema=stored)


def _stored_schema(root: Path) -> pa.Schema | None:
    files = sorted(f for f in root.rglob("*.parquet") if not any(p.startswith(("_", ".")) for p in f.parts[len(root.parts):]))
    return pq.read_schema(files[0]) if files else None


def _append_file(root: Path, rows: pa.Table) -> None:
    root.mkdir(parents=True, exist_ok=True)
    name = f"part-{uuid.uuid4().hex}.parquet"
    hidden = root / f"_{name}.tmp"  # readers skip names starting with "_"
    try:
        pq.write_table(rows, hidden, coerce_timestamps="us", allow_truncated_timestamps=False)
        os.replace(hidden, root / name)
    except pa.ArrowInvalid as exc:  # e.g. nanoseconds that microseconds would truncate
        raise OfflineWriteError(f"rows for {root} cannot be stored as Parquet ({exc}); round timestamps to "
                                "microseconds (Spark reads no finer) and push again") from exc
    finally:
        hidden.unlink(missing_ok=True)


def _append_partitioned(spark: SparkSession, root: Path, timestamp_field: str, rows: pa.Table) -> None:
    from pyspark.sql import functions as F

    from features.time_columns import epoch_micros, utc_date_string

    stamps = pc.cast(rows.column(timestamp_field), pa.timestamp("us", tz="UTC"))
    days = sorted({d.isoformat() for d in pc.cast(stamps, pa.date32()).to_pylist() if d is not None})
    # Pushed batches are small: they travel through the driver, which every deployment can reach.
    new = spark.createDataFrame(rows.to_pandas(), schema=_spark_schema(spark, rows))
    new = new.withColumn(PARTITION_COLUMN, utc_date_string(epoch_micros(F.col(timestamp_field))))
    frame = new
    if _stored_schema(root) is not None:
        old = spark.read.parquet(str(root)).where(F.col(PARTITION_COLUMN).cast("string").isin(days))
        frame = old.withColumn(PARTITION_COLUMN, F.col(PARTITION_COLUMN).cast("string")).unionByName(new)
    write_partitions(frame, root, days, sort_by=[timestamp_field])


def _spark_schema(spark: SparkSession, rows: pa.Table) -> StructType:
    """The Spark schema of ``rows`` as Spark reads the same columns from Parquet."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(rows.schema)
