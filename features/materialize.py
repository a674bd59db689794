"""Materialization: the latest offline value per entity, from Spark partitions into Redis.

Each Spark task packs its partition's rows with numpy and writes them in pipelined, newest-wins
batches (``features.online_views.write_rows``), so the work scales out with executors and the
driver only sees one small count row per partition. A run is:

* idempotent: writing the same rows again changes nothing (the write script compares event and
  created times; identical values count as "unchanged");
* resumable: a finished partition is recorded in a Redis set for the run, and the window of a
  run in progress in a per-view "pending" entry; after a crash, the next incremental run (or the
  same explicit window) finishes that window first, skipping the partitions already written
  (the run id covers the view definition, the window and the source files with their sizes and
  times, so changed inputs start a fresh run); a partition with refused keys is not recorded;
* visible: a progress bar counts finished partitions, and the result counts written, unchanged,
  skipped (stored value newer) and expired rows.

Windows. ``materialize(start, end)`` moves rows with event time in ``[start, end]`` that had
arrived by ``end`` (created time <= end), as Feast does plus the arrival rule of our offline
store. ``materialize_incremental(end)`` picks up from the view's last materialized end, and also
takes rows that *arrived* since then with an older event time (late data): without that, a late
row would never reach the online store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import redis

from features.errors import FeatureStoreError, OnlineStoreError
from features.online_keys import entity_ids, key_prefix
from features.online_views import (
    LOADED_KEY,
    OnlineView,
    WriteCounts,
    epoch_us,
    micros,
    now_us,
    raise_if_refused,
    write_rows,
)
from features.packed_layout import NO_TIME, VALUE_KIND_PREFIX
from features.redis_client import RedisOnline

if TYPE_CHECKING:
    import pyarrow as pa
    from feast import FeatureView
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["MaterializeResult", "Window", "latest_rows", "materialize_view", "materialize_views", "run_windows"]

log = logging.getLogger(__name__)

_CHUNK: Final = 2_000       # rows per pipelined write
_RUN_TTL_S: Final = 7 * 86_400  # a crashed run can be resumed for a week
_COUNTS_SCHEMA: Final = ("part int, written long, unchanged long, skipped long, expired long, "
                         "resumed boolean, refused long, refused_keys array<binary>")


@dataclass(frozen=True)
class Window:
    """Which offline rows to move: event time in ``[start, end]``, arrived by ``end``; with
    ``arrived_after`` set, also rows that arrived after it whatever their event time."""

    start: datetime
    end: datetime
    arrived_after: datetime | None = None
    full: bool = False  # covers everything a fresh online store needs (first or reload run)

    def to_json(self) -> str:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else _utc(moment).isoformat()

        return json.dumps({"start": iso(self.start), "end": iso(self.end), "full": self.full,
                           "arrived_after": iso(self.arrived_after)})

    @classmethod
    def from_json(cls, text: str | bytes) -> Window:
        raw = json.loads(text)
        after = raw["arrived_after"]
        return cls(datetime.fromisoformat(raw["start"]), datetime.fromisoformat(raw["end"]),
                   datetime.fromisoformat(after) if after else None, bool(raw["full"]))


@dataclass
class MaterializeResult:
    """Counts for one view."""

    view: str
    window: Window
    counts: WriteCounts
    partitions: int
    resumed_partitions: int


def latest_rows(spark: SparkSession, fv: FeatureView, window: Window, *, partitions: int | None = None
                ) -> DataFrame:
    """One row per entity: its newest eligible offline row, times as epoch microseconds.

    Columns: the join keys, ``__ev`` and ``__cr`` (microseconds, UTC; ``__cr`` null without a
    created column), then the view's features. With ``partitions``, the rows are hash-partitioned
    by join keys into that many partitions before the aggregation (one shuffle, not two).
    """
    from pyspark.sql import functions as F

    from features.asof_join import epoch_micros, quote
    from features.offline_store import latest_per_entity, load_source

    source = fv.batch_source
    if source is None:
        raise FeatureStoreError(f"feature view {fv.name!r} has no batch source to materialize from")
    ts, created = source.timestamp_field, source.created_timestamp_column or None
    src = load_source(spark, source)  # type: ignore[arg-type]  # any SparkSource-like source
    for old, new in (source.field_mapping or {}).items():
        src = src.withColumnRenamed(old, new)
    ev, cr = epoch_micros(src, ts), (epoch_micros(src, created) if created else F.lit(None).cast("long"))
    start_us, end_us = (epoch_us(window.start), epoch_us(window.end))
    eligible = (ev >= start_us) & (ev <= end_us)
    if window.arrived_after is not None and created:
        eligible = eligible | ((ev <= end_us) & (cr > epoch_us(window.arrived_after)))
    if created:
        eligible = eligible & (cr.isNull() | (cr <= end_us))
    if fv.ttl and fv.ttl > timedelta(0):  # rows already stale at `end` would not be written anyway
        eligible = eligible & (ev >= end_us - micros(fv.ttl))
    join_keys = [c.name for c in fv.entity_columns]
    for key in join_keys:  # as in the offline join: a row without its key belongs to no entity
        eligible = eligible & F.col(quote(key)).isNotNull()
    src = src.where(eligible).withColumn("__ev", ev).withColumn("__cr", cr)
    if partitions and join_keys:
        src = src.repartition(partitions, *[quote(k) for k in join_keys])
    features = [f.name for f in fv.features]
    # The newest row is picked by max(struct(...)), and Spark cannot order maps (a Feast Map is
    # map<string, string> in Parquet): carry maps as their (ordered) entry arrays through the pick.
    maps = {f for f in features if f in src.columns and src.schema[f].dataType.typeName() == "map"}
    for name in maps:
        src = src.withColumn(name, F.map_entries(F.col(quote(name))))
    latest = latest_per_entity(src, join_keys, features, "__ev", "__cr")
    outputs = [F.map_from_entries(F.col(quote(f))).alias(f) if f in maps else F.col(quote(f)) for f in features]
    return latest.select(*[quote(c) for c in join_keys], "__ev", "__cr", *outputs)


def materialize_view(
    spark: SparkSession, project: str, fv: FeatureView, window: Window, redis_online: RedisOnline,
    *, partitions: int = 4, margin_us: int = 3_600_000_000, key_ttl_ms: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> MaterializeResult:
    """Write the latest value per entity of ``fv`` in ``window`` to Redis (see the module doc)."""
    view = OnlineView.from_feast(fv)
    join_keys = [c.name for c in fv.entity_columns]
    rows = latest_rows(spark, fv, window, partitions=partitions)
    rows, parts = (rows, partitions) if join_keys else (rows.coalesce(1), 1)
    run_key = _run_key(project, view, window, rows, parts)
    meta = _Meta(redis_online, project)
    meta.set_pending(view.name, window)
    task = _PartitionWriter(redis_online.url, redis_online.is_cluster, redis_online.write_timeout_ms,
                            key_prefix(project), view, run_key, margin_us, now_us(), key_ttl_ms)
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(redis_online, run_key, parts, done, on_progress),
                               daemon=True)
    watcher.start()
    try:
        results = rows.mapInArrow(task, _COUNTS_SCHEMA).collect()
    except Exception as exc:
        raise FeatureStoreError(
            f"materializing {view.name} stopped: {_root_cause(exc)}. Finished partitions are "
            f"recorded: materialize_incremental (or `tidemark features materialize`) resumes this "
            f"window first, as does materialize('{window.start.isoformat()}', "
            f"'{window.end.isoformat()}')."
        ) from exc
    finally:
        done.set()
        watcher.join()
    counts = WriteCounts()
    for r in results:
        counts = counts.add(WriteCounts(r.written, r.unchanged, r.skipped, r.expired, r.refused,
                                        list(r.refused_keys)))
    raise_if_refused(counts)  # partitions with refused keys were not recorded as finished
    with redis_online.translated("write"):
        redis_online.writer.delete(run_key)
    meta.clear_pending(view.name)
    if on_progress is not None:
        on_progress(parts, parts)
    return MaterializeResult(view.name, window, counts, parts, sum(1 for r in results if r.resumed))


def materialize_views(
    spark: SparkSession, store: Any, work: list[tuple[FeatureView, Window]], *,
    partitions: int | None = None, progress: bool = True,
) -> list[MaterializeResult]:
    """Materialize several views of a Feast ``store`` (its online store must be the packed one) as
    concurrent Spark jobs, so one view's planning overlaps another's writes; then record each
    window in the registry (only when every view succeeded), for ``materialize_incremental``."""
    outcomes = run_windows(spark, store.project, store.config.online_store, work,
                           partitions=partitions, progress=progress)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    for fv, window in work:
        store.registry.apply_materialization(fv, store.project, window.start, window.end)
    return [o for o in outcomes if isinstance(o, MaterializeResult)]


def run_windows(
    spark: SparkSession, project: str, online_config: Any, work: list[tuple[FeatureView, Window]], *,
    partitions: int | None = None, progress: bool = True,
) -> list[MaterializeResult | Exception]:
    """Run each ``(view, window)`` of ``work`` as a concurrent Spark job into the packed online store
    of ``online_config``; per item its result or the error that stopped it (the others run on).

    The registry is not touched: :func:`materialize_views` records the windows itself, and Feast
    does when its commands run this through ``features.materialize_engine``. A full window that
    succeeded marks its view loaded (the next incremental run needs no reload).
    """
    from features.online_store import connect
    from features.progress import partition_progress
    from features.spark import default_parallelism

    redis_online = connect(online_config)
    margin_us = online_config.expiry_margin_s * 1_000_000
    # Two tasks per core: one packs rows while the other waits on Redis.
    partitions = partitions or max(4, 2 * default_parallelism(spark))
    with partition_progress(enabled=progress) as report, ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(materialize_view, spark, project, fv, window, redis_online,
                               partitions=partitions, margin_us=margin_us,
                               key_ttl_ms=online_config.key_ttl_ms, on_progress=report(fv.name))
                   for fv, window in work]
        outcomes: list[MaterializeResult | Exception] = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except Exception as exc:  # noqa: BLE001  (returned, not raised: the caller decides per view)
                outcomes.append(exc)
    meta = _Meta(redis_online, project)
    for (fv, window), outcome in zip(work, outcomes, strict=True):
        if window.full and isinstance(outcome, MaterializeResult):
            meta.set_loaded(OnlineView.from_feast(fv))
    return outcomes


def incremental_window(fv: FeatureView, end: datetime, redis_online: RedisOnline, project: str) -> Window:
    """The window ``materialize_incremental`` runs for ``fv`` up to ``end``.

    An unfinished (crashed) run is resumed first, with its own window. A view never loaded into
    this online store under its current definition and TTL (first run, or its values were dropped
    by ``feast apply`` after a change) gets a full load from ``end - ttl``; otherwise the window
    starts at the last run's end and also takes rows that arrived since then.
    """
    meta = _Meta(redis_online, project)
    pending = meta.pending(fv.name)
    if pending is not None:
        return pending
    last = last_materialized_end(fv)
    if last is None or not meta.is_loaded(OnlineView.from_feast(fv)):
        return Window(default_start(fv, end), end, full=True)
    return Window(last, end, arrived_after=last)


class _Meta:
    """Materialization state kept in Redis beside the values (project-scoped hashes)."""

    def __init__(self, redis_online: RedisOnline, project: str) -> None:
        self._redis = redis_online
        self._pending = key_prefix(project) + b"__tidemark_pending__"
        self._loaded = key_prefix(project) + LOADED_KEY

    @staticmethod
    def _signature(view: OnlineView) -> bytes:
        return f"{view.schema.fingerprint}:{view.ttl_us}".encode()

    def _call(self, command: str, *args: Any) -> Any:
        with self._redis.translated("write"):
            return self._redis.writer.execute_command(command, *args)

    def pending(self, view: str) -> Window | None:
        raw = self._call("HGET", self._pending, view)
        return None if raw is None else Window.from_json(raw)

    def set_pending(self, view: str, window: Window) -> None:
        self._call("HSET", self._pending, view, window.to_json())

    def clear_pending(self, view: str) -> None:
        self._call("HDEL", self._pending, view)

    def is_loaded(self, view: OnlineView) -> bool:
        return self._call("HGET", self._loaded, view.name) == self._signature(view)

    def set_loaded(self, view: OnlineView) -> None:
        self._call("HSET", self._loaded, view.name, self._signature(view))


def _run_key(project: str, view: OnlineView, window: Window, rows: DataFrame, parts: int) -> bytes:
    # Input files with their size and modification time where they are local, so a rewritten
    # file starts a fresh run instead of resuming over stale partitions.
    files = "\n".join(f"{path} {_file_stamp(path)}" for path in sorted(rows.inputFiles()))
    text = "|".join(map(str, (view.name, view.schema.fingerprint, window.to_json(), parts, files)))
    return key_prefix(project) + b"__materialize__:" + hashlib.sha1(text.encode()).hexdigest().encode()


def _file_stamp(path: str) -> str:
    local = path.removeprefix("file://") if path.startswith("file:") or "://" not in path else None
    if local is None:
        return ""
    try:
        stat = os.stat(local)
    except OSError:
        return ""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _watch(redis_online: RedisOnline, run_key: bytes, parts: int, done: threading.Event,
           on_progress: Callable[[int, int], None] | None) -> None:
    """Report finished partitions (the run's Redis set) while the Spark job runs."""
    if on_progress is None:
        return
    while not done.wait(0.25):
        try:
            writer: Any = redis_online.writer
            finished = int(writer.scard(run_key))
        except (redis.RedisError, OnlineStoreError) as exc:  # progress is best effort
            log.debug("progress poll failed: %s", exc)
            continue
        on_progress(finished, parts)


def _root_cause(exc: BaseException) -> str:
    """The Python error inside a Spark task failure (the last line of the worker's traceback)."""
    text = str(exc)
    for marker in ("OnlineStoreUnavailable:", "OnlineStoreError:", "CorruptValueError:"):
        if marker in text:
            return text[text.index(marker):].splitlines()[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Traceback (most recent call last):" in lines:
        after = lines[lines.index("Traceback (most recent call last):") + 1:]
        errors = [line for line in after if not line.startswith(("File ", "^", "at ")) and ":" in line]
        if errors:
            return errors[-1] if "SQLSTATE" not in errors[-1] else errors[-1].split("SQLSTATE")[0]
    return lines[0] if lines else type(exc).__name__


@dataclass(frozen=True)
class _PartitionWriter:
    """The function Spark runs on each partition (pickled to executors)."""

    url: str
    cluster: bool
    timeout_ms: int
    project: bytes
    view: OnlineView
    run_key: bytes
    margin_us: int
    at_us: int
    key_ttl_ms: int = 0  # Feast's key_ttl_seconds, in ms; 0: no cap

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        from pyspark import TaskContext

        context = TaskContext.get()
        assert context is not None, "runs inside a Spark task"
        part = context.partitionId()
        redis_online = RedisOnline(self.url, timeout_ms=self.timeout_ms, write_timeout_ms=self.timeout_ms,
                                   cluster=self.cluster)
        try:
            writer: Any = redis_online.writer
            resumed = bool(writer.sismember(self.run_key, str(part)))
            counts = WriteCounts()
            for batch in batches:
                if resumed:
                    continue  # drain: Spark expects the input consumed
                for start in range(0, batch.num_rows, _CHUNK):
                    counts = counts.add(self._write(redis_online, batch.slice(start, _CHUNK)))
            if not resumed and not counts.refused:  # refused keys must be retried after a fix
                with redis_online.translated("write"):
                    writer.pipeline(transaction=False).sadd(self.run_key, str(part)).expire(
                        self.run_key, _RUN_TTL_S).execute()
        finally:
            redis_online.close()
        yield pa.RecordBatch.from_pylist([{
            "part": part, "written": counts.written, "unchanged": counts.unchanged,
            "skipped": counts.skipped_older, "expired": counts.expired, "resumed": resumed,
            "refused": counts.refused, "refused_keys": counts.refused_keys[:10],
        }], schema=pa.schema([("part", pa.int32()), ("written", pa.int64()), ("unchanged", pa.int64()),
                              ("skipped", pa.int64()), ("expired", pa.int64()), ("resumed", pa.bool_()),
                              ("refused", pa.int64()), ("refused_keys", pa.list_(pa.binary()))]))

    def _write(self, redis_online: RedisOnline, batch: pa.RecordBatch) -> WriteCounts:
        names = batch.schema.names
        column = {n: batch.column(i) for i, n in enumerate(names)}
        key_columns = [column[k].to_numpy(zero_copy_only=False) for k in self.view.join_keys
                       if k in column]
        if self.view.join_keys == ("__dummy_id",):
            ids = [b"__dummy_id="] * batch.num_rows
        else:
            ids = entity_ids(self.view.join_keys, self.view.key_kinds, key_columns)
        event = column["__ev"].to_numpy(zero_copy_only=False).astype(np.int64)
        created_arrow = column["__cr"]
        created = np.where(created_arrow.is_null().to_numpy(zero_copy_only=False), NO_TIME,
                           created_arrow.fill_null(0).to_numpy(zero_copy_only=False)).astype(np.int64)
        values, valid = [], []
        for name, kind in zip(self.view.schema.names, self.view.schema.kinds, strict=True):
            arrow = column[name]
            if kind.startswith(VALUE_KIND_PREFIX):  # lists, maps, JSON, ...: Feast's own protos
                from features.value_protos import serialized_from_arrow  # imports Feast: only here

                serialized, ok = serialized_from_arrow(arrow, kind)
                values.append(serialized)
                valid.append(ok)
                continue
            valid.append(~arrow.is_null().to_numpy(zero_copy_only=False))
            if kind in ("string", "bytes"):
                values.append(np.array(arrow.to_pylist(), dtype=object))
            else:
                filled = arrow.fill_null(False if kind == "bool" else 0).to_numpy(zero_copy_only=False)
                values.append(filled.astype(np.float64 if kind.startswith("float") else np.int64))
        return write_rows(redis_online, self.project, self.view, ids, event, created, values, valid,
                          margin_us=self.margin_us, at_us=self.at_us, key_ttl_ms=self.key_ttl_ms)


def _utc(moment: datetime) -> datetime:
    """An aware UTC datetime (naive means UTC, as in Feast); pandas Timestamps become datetimes."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return datetime(*moment.timetuple()[:6], moment.microsecond, tzinfo=UTC)


def default_start(fv: FeatureView, end: datetime) -> datetime:
    """Feast's rule for a first incremental run: ``end - ttl``, or the epoch without a TTL."""
    if fv.ttl and fv.ttl > timedelta(0):
        return end - fv.ttl
    return datetime(1970, 1, 1, tzinfo=UTC)


def last_materialized_end(fv: FeatureView) -> datetime | None:
    """End of the view's latest recorded materialization interval, if any."""
    intervals: list[Any] = list(getattr(fv, "materialization_intervals", []) or [])
    return max((i[1] for i in intervals), default=None)
