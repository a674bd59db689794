"""Checking and converting the entity dataframe of a point-in-time join.

An entity dataframe holds one row per prediction: the join keys and the moment of the
prediction. It can be a pandas DataFrame, a Spark DataFrame, or a Spark SQL query string.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.asof_join import ROW_ID, epoch_micros
from features.errors import EntityFrameError, MissingColumnError, TimestampTypeError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_TIMESTAMP_COL = "event_timestamp"
MICROS_COL = "__tm_t"


@dataclass(frozen=True)
class EntityFrame:
    """An entity dataframe, checked, with its timestamp column and time range (UTC)."""

    original: Any  # pandas.DataFrame | pyspark DataFrame
    timestamp_col: str
    min_t: datetime | None
    max_t: datetime | None

    @property
    def is_pandas(self) -> bool:
        return isinstance(self.original, pd.DataFrame)


def infer_timestamp_col(columns: dict[str, str]) -> str:
    """Pick the event timestamp column: ``event_timestamp`` if present, else the only timestamp.

    ``columns`` maps column name to a type name (pandas dtype or Spark simpleString).
    """
    if DEFAULT_TIMESTAMP_COL in columns:
        return DEFAULT_TIMESTAMP_COL
    stamps = [c for c, t in columns.items() if t.startswith(("datetime64", "timestamp"))]
    if len(stamps) == 1:
        return stamps[0]
    raise MissingColumnError(
        f"cannot tell which column holds the prediction time (timestamp columns: {stamps or 'none'}); "
        f"name it {DEFAULT_TIMESTAMP_COL!r}"
    )


def check_pandas(entity_df: pd.DataFrame, join_keys: Iterable[str]) -> EntityFrame:
    """Validate a pandas entity frame and make its timestamp column UTC-aware (naive = UTC)."""
    columns = {c: str(t) for c, t in entity_df.dtypes.items()}
    ts_col = _timestamp_col_or_explain(entity_df, columns)
    _require_keys(columns, join_keys)
    stamps = utc_series(entity_df[ts_col], ts_col)
    frame = entity_df.copy(deep=False)
    frame[ts_col] = stamps
    valid = stamps.dropna()
    lo = valid.min().to_pydatetime() if len(valid) else None
    hi = valid.max().to_pydatetime() if len(valid) else None
    return EntityFrame(frame.reset_index(drop=True), ts_col, lo, hi)


def check_spark(entity_df: DataFrame, join_keys: Iterable[str]) -> EntityFrame:
    """Validate a Spark entity frame; its time range is computed with one aggregate."""
    from pyspark.sql import functions as F

    columns = {f.name: f.dataType.simpleString() for f in entity_df.schema.fields}
    ts_col = infer_timestamp_col(columns)
    if not columns[ts_col].startswith(("timestamp", "date", "bigint")):
        raise TimestampTypeError(
            f"entity column {ts_col!r} is {columns[ts_col]}, not a timestamp; "
            f"convert it with to_timestamp() (naive values are read as UTC)"
        )
    _require_keys(columns, join_keys)
    # Aggregate epoch micros, not timestamps: collect() renders timestamps in the Python
    # process's local zone, micros are unambiguous.
    micros = epoch_micros(entity_df, ts_col)
    row = entity_df.agg(F.min(micros).alias("lo"), F.max(micros).alias("hi")).first()
    lo, hi = (row["lo"], row["hi"]) if row is not None else (None, None)
    return EntityFrame(entity_df, ts_col, _from_micros(lo), _from_micros(hi))


def utc_series(values: pd.Series, name: str) -> pd.Series:
    """``values`` as UTC-aware timestamps; naive values are taken to be UTC.

    An ``object`` column of Python ``datetime``s, pandas ``Timestamp``s or ``numpy.datetime64``s
    (mixed time zones, naive ones among them: what Feast's own test data and a list of
    ``datetime.now(tz)`` give) is converted to UTC as Feast's offline stores convert it. Any other
    value (text, numbers, dates without a time) is refused: Feast's default file store fails on
    text as well, and a guessed format would silently move the prediction time.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        if getattr(values.dt, "tz", None) is None:
            return values.dt.tz_localize("UTC")
        return values.dt.tz_convert("UTC")
    if values.dtype == object:
        others = [v for v in values.dropna() if not isinstance(v, (datetime, np.datetime64))]
        if not others:
            return _objects_to_utc(values, name)
        raise TimestampTypeError(
            f"entity column {name!r} holds {type(others[0]).__name__} values (e.g. {others[0]!r}), not "
            f"timestamps; convert it first, e.g. df[{name!r}] = pd.to_datetime(df[{name!r}], utc=True)"
        )
    raise TimestampTypeError(
        f"entity column {name!r} holds {values.dtype} values, not timestamps; "
        f"convert it first, e.g. df[{name!r}] = pd.to_datetime(df[{name!r}], utc=True)"
    )


def _objects_to_utc(values: pd.Series, name: str) -> pd.Series:
    """Datetime objects (any mix of zones and naive) as one UTC column; naive ones are UTC."""
    try:
        # utc=True converts aware values to UTC and localizes naive ones as UTC, value by value.
        return pd.Series(pd.to_datetime(values, utc=True), index=values.index, name=values.name)
    except (ValueError, OverflowError) as exc:  # out of the nanosecond range pandas computes in
        raise TimestampTypeError(
            f"entity column {name!r} holds a timestamp pandas cannot convert ({exc}); timestamps "
            "must lie between 1677-09-22 and 2262-04-11"
        ) from exc


def epoch_micros_array(stamps: pd.Series) -> np.ndarray:
    """UTC-aware timestamps as int64 microseconds since the epoch; NaT becomes the int64 minimum."""
    as_us = stamps.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return as_us.to_numpy(dtype="datetime64[us]").astype(np.int64)


def slim_frame(frame: EntityFrame, join_keys: list[str]) -> pd.DataFrame:
    """Only what the join needs: row id, join keys, prediction time in µs (null for NaT)."""
    entity_df: pd.DataFrame = frame.original
    micros = pd.Series(epoch_micros_array(entity_df[frame.timestamp_col])).astype("Int64")
    micros[entity_df[frame.timestamp_col].isna().to_numpy()] = pd.NA
    slim = pd.DataFrame({ROW_ID: np.arange(len(entity_df), dtype=np.int64)})
    for key in join_keys:
        slim[key] = entity_df[key].to_numpy()
    slim[MICROS_COL] = micros
    return slim


def slim_spark_frame(spark: SparkSession, frame: EntityFrame, join_keys: list[str],
                     staging_dir: Path | None) -> DataFrame:
    """Ship the slim entity frame to Spark.

    With ``staging_dir`` (a folder every executor can read), the frame is written there as one
    Parquet file and read back: at 1M rows that is ~3.5x faster than ``createDataFrame``, which
    pushes the rows through the driver as a local relation.
    """
    slim = slim_frame(frame, join_keys)
    if staging_dir is None:
        return spark.createDataFrame(slim)
    staging_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(slim, preserve_index=False), staging_dir / "entities.parquet")
    return spark.read.parquet(str(staging_dir))


def full_spark_frame(spark: SparkSession, frame: EntityFrame) -> DataFrame:
    """The whole entity frame in Spark with a row id (pandas order, or Spark partition order)."""
    from pyspark.sql import functions as F

    if frame.is_pandas:
        entity_df = frame.original.copy()
        entity_df[frame.timestamp_col] = entity_df[frame.timestamp_col].astype("datetime64[us, UTC]")
        entity_df[ROW_ID] = np.arange(len(entity_df), dtype=np.int64)
        return spark.createDataFrame(entity_df)
    return frame.original.withColumn(ROW_ID, F.monotonically_increasing_id())


def _timestamp_col_or_explain(entity_df: pd.DataFrame, columns: dict[str, str]) -> str:
    if DEFAULT_TIMESTAMP_COL in columns:
        return DEFAULT_TIMESTAMP_COL
    try:
        return infer_timestamp_col(columns)
    except MissingColumnError:
        if len(entity_df.columns) == 0:
            raise EntityFrameError("the entity dataframe has no columns; it needs join keys and an "
                                   f"{DEFAULT_TIMESTAMP_COL!r} column") from None
        raise


def _require_keys(columns: dict[str, str], join_keys: Iterable[str]) -> None:
    missing = sorted(set(join_keys) - set(columns))
    if missing:
        raise MissingColumnError(
            f"the entity dataframe lacks join key column(s) {missing} needed by the requested "
            f"features; it has {sorted(columns)}"
        )


def _from_micros(value: int | None) -> datetime | None:
    if value is None:
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(value))
