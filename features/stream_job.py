"""``tidemark features stream``: a push source's events from its landing folder into the stream
feature views' online state, with Spark Structured Streaming.

    landing/  new Parquet or JSON files, each read once
      │ spark.readStream (file source, maxFilesPerTrigger files per micro-batch)
      ▼
    micro-batch ──foreachBatch──► on the driver, chunks of at most chunk_rows rows
      │                              ──► EventPusher.push (every view of the push source)
      ▼
    checkpoint/  offsets and commits: a restart resumes after the last committed batch

**Restarts neither lose nor double events.** The checkpoint records which files each batch read
before the batch runs, and commits it after ``foreachBatch`` returned, so a batch is never skipped.
A crash between the push and the commit runs that batch again after the restart; the push is
idempotent by event id (by content for a view without one: :mod:`features.stream_views`), so the
replay adds nothing (its events come back as ``duplicates``). Any replay of a file is as harmless.

**Why the driver pushes, in bounded chunks,** rather than executors with ``foreachPartition``: the
push is one Redis round trip per chunk and view, so one process pushes 10^5 events a second or
more, past what one push source lands; the driver holds the one :class:`EventPusher` (Feast
registry, Redis connection, Lua script), which executors would each rebuild; and a bad row can be
set aside with the reason on one machine. Memory stays bounded: ``toLocalIterator`` brings one
partition at a time and at most ``chunk_rows`` rows are held as a frame. Pushing from executors
is the step past that (the pusher is rebuilt per partition from the project's settings).

**A bad event does not stop the stream** and is not dropped silently: a row the views refuse
(:class:`~features.errors.EventError` naming its row) goes to ``rejected/batch-<id>.jsonl`` with
the reason, and the rest is pushed. Files without a column the views need stop the stream: that is
the files' shape, not one event. Redis down stops it too (:class:`OnlineStoreUnavailable`); start
it again and it resumes from the checkpoint.

**Kafka instead of files** (not built here: the connector is not in the pyspark wheel; start
Spark with ``--packages org.apache.spark:spark-sql-kafka-0-10_2.13:<spark version>``)::

    spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", "broker-1:9092,broker-2:9092")
        .option("subscribe", "<topic>")            # or subscribePattern / assign
        .option("maxOffsetsPerTrigger", 100_000)   # the counterpart of maxFilesPerTrigger
        .load()
        .select(from_json(col("value").cast("string"), <the landing files' schema>).alias("e"))
        .select("e.*")

and the same ``foreachBatch`` and checkpoint (Kafka offsets then live in the checkpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pandas as pd

from features.errors import DataNotFoundError, EventError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from features.push import EventPusher

__all__ = ["FORMATS", "StreamTotals", "run_stream"]

log = logging.getLogger(__name__)

FORMATS: Final = ("parquet", "json")


@dataclass
class StreamTotals:
    """What a stream run did, summed over its micro-batches (per view for the counts)."""

    batches: int = 0
    rows: int = 0
    rejected: int = 0
    added: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    expired: dict[str, int] = field(default_factory=dict)

    def count(self, counts: dict[str, Any]) -> None:
        for view, c in counts.items():
            self.added[view] = self.added.get(view, 0) + c.added
            self.duplicates[view] = self.duplicates.get(view, 0) + c.duplicates
            self.expired[view] = self.expired.get(view, 0) + c.expired


def run_stream(spark: SparkSession, pusher: EventPusher, push_source: str, landing: str | Path,
               checkpoint: str | Path, *, file_format: str = "parquet", once: bool = False,
               max_files_per_trigger: int = 1_000, trigger_s: float = 2.0, chunk_rows: int = 10_000,
               on_batch: Callable[[int, StreamTotals], None] | None = None) -> StreamTotals:
    """Push every event file that lands in ``landing`` to ``push_source``'s stream views, resuming
    from ``checkpoint``. ``once``: process what is there now and return (Spark's ``availableNow``
    trigger); otherwise a micro-batch every ``trigger_s`` seconds until stopped. The files' schema
    is read from those already in ``landing``. ``on_batch(batch id, totals so far)`` after each
    batch. Raises UnknownPushSourceError, DataNotFoundError (no files to take the schema from)."""
    if file_format not in FORMATS:
        raise ValueError(f"file_format must be one of {FORMATS}, got {file_format!r}")
    views = pusher.views_of(push_source)  # an unknown push source fails before Spark starts anything
    needed = _needed_columns(views)
    schema = _landing_schema(spark, str(landing), file_format)
    totals = StreamTotals()
    rejected_dir = Path(checkpoint) / "rejected"

    def push_batch(batch: DataFrame, batch_id: int) -> None:
        for chunk in _chunks(_event_columns(batch, needed), chunk_rows):
            totals.rows += len(chunk)
            _push_chunk(pusher, push_source, chunk, totals, rejected_dir, batch_id)
        totals.batches += 1
        if on_batch is not None:
            on_batch(batch_id, totals)

    stream = (spark.readStream.format(file_format).schema(schema)
              .option("maxFilesPerTrigger", max_files_per_trigger).load(str(landing)))
    writer = stream.writeStream.foreachBatch(push_batch).option("checkpointLocation", str(checkpoint))
    writer = writer.trigger(availableNow=True) if once else writer.trigger(processingTime=f"{trigger_s} seconds")
    query = writer.queryName(f"tidemark_stream_{push_source}").start()
    try:
        query.awaitTermination()
    finally:
        if query.isActive:  # interrupted (Ctrl-C): stop cleanly; the checkpoint holds what was committed
            query.stop()
    return totals


def _needed_columns(views: list[Any]) -> dict[str, bool]:
    """Every column the views read from an event, each mapped to whether it is an event time."""
    needed: dict[str, bool] = {}
    for view in views:
        stream = view.stream
        for column in (*view.join_keys, *stream.columns, *([stream.event_id] if stream.event_id else [])):
            needed.setdefault(column, False)
        needed[stream.timestamp_field] = True
    return needed


def _landing_schema(spark: SparkSession, landing: str, file_format: str) -> Any:
    try:
        return spark.read.format(file_format).load(landing).schema
    except Exception as exc:  # AnalysisException: no such folder, or nothing to infer a schema from
        if "PATH_NOT_FOUND" in str(exc) or "UNABLE_TO_INFER_SCHEMA" in str(exc):
            raise DataNotFoundError(
                f"no {file_format} event files in {landing}: the stream takes the events' schema from the files "
                "already there; land one file first (or check --landing and --format)") from None
        raise


def _event_columns(batch: DataFrame, needed: dict[str, bool]) -> DataFrame:
    """The columns the views read (a missing one is the push's to name); event times as integer
    microseconds since the epoch (UTC), never through the Python process's local time zone."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampNTZType, TimestampType

    types = {f.name: f.dataType for f in batch.schema.fields}
    columns = []
    for name, is_time in needed.items():
        if name not in types:
            continue
        column = F.col(name)
        if is_time and isinstance(types[name], TimestampType | TimestampNTZType):
            column = F.unix_micros(column.cast("timestamp"))
        columns.append(column.alias(name))
    return batch.select(*columns)


def _chunks(batch: DataFrame, size: int) -> Iterator[pd.DataFrame]:
    rows = batch.toLocalIterator(prefetchPartitions=True)
    while chunk := list(islice(rows, size)):
        yield pd.DataFrame([row.asDict() for row in chunk], columns=batch.columns)


def _push_chunk(pusher: EventPusher, push_source: str, chunk: pd.DataFrame, totals: StreamTotals,
                rejected_dir: Path, batch_id: int) -> None:
    """Push ``chunk``; a row the views refuse is set aside (with the reason) and the rest pushed."""
    refused: list[dict[str, Any]] = []
    while len(chunk):
        try:
            totals.count(pusher.push(push_source, chunk))
            break
        except EventError as exc:
            if exc.row is None:  # a column is missing from every row: the files' shape, not one event
                raise
            refused.append({**chunk.iloc[exc.row].to_dict(), "_rejected_because": str(exc)})
            chunk = chunk.drop(index=chunk.index[exc.row]).reset_index(drop=True)
    if refused:
        totals.rejected += len(refused)
        rejected_dir.mkdir(parents=True, exist_ok=True)
        path = rejected_dir / f"batch-{batch_id}.jsonl"
        with path.open("a") as out:  # a re-run batch appends the same rows again: harmless, and kept
            out.write(pd.DataFrame(refused).to_json(orient="records", lines=True, default_handler=str))
        log.warning("%d events of batch %d refused by %s's views, kept in %s", len(refused), batch_id,
                    push_source, path)
