"""Pushing events into stream feature views' online state, and rebuilding it from the history.

:class:`EventPusher` is the one write path for events: ``FeatureClient.push``, the server's
``POST /v1/push``, the serving path's push of a scored event and ``tidemark features stream``
all go through it. Every stream view that reads the push source gets the events; all rows are
checked against every view before anything is written, so a bad row stores nothing.

:func:`backfill` builds the same state from a view's batch source (the event history), through
the same merge: a new deployment, or one that lost Redis, reads exact windows at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.errors import UnknownPushSourceError
from features.online_keys import entity_ids, key_prefix
from features.online_views import OnlineView, epoch_us, now_us
from features.redis_client import RedisOnline
from features.window_state import (
    PreparedEvents,
    PushCounts,
    event_id_hashes,
    make_records,
    prepare_events,
    push_events,
    push_to_views,
    retention_us,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["EventPusher", "backfill"]

_BACKFILL_BATCH = 20_000


class EventPusher:
    """Writes events of a project's push sources into the window state of every stream view."""

    def __init__(self, redis_online: RedisOnline, project: str, views: Iterable[OnlineView]) -> None:
        self._redis = redis_online
        self._project = key_prefix(project)
        self._by_source: dict[str, list[OnlineView]] = {}
        for view in views:
            if view.stream is not None:
                self._by_source.setdefault(view.stream.push_source, []).append(view)

    @property
    def push_sources(self) -> list[str]:
        return sorted(self._by_source)

    def row_fields(self, push_source: str) -> dict[str, str]:
        """What a row pushed to ``push_source`` must carry, by field: ``"int"`` or ``"str"`` (join
        keys, by the entity's type), ``"time"`` (the event time), ``"id"`` (the event id) or
        ``"number"`` (an aggregated column). Raises UnknownPushSourceError."""
        fields: dict[str, str] = {}
        for view in self.views_of(push_source):
            assert view.stream is not None
            fields.update(zip(view.join_keys, view.key_kinds, strict=True))
            fields[view.stream.timestamp_field] = "time"
            if view.stream.event_id:
                fields[view.stream.event_id] = "id"
            fields.update(dict.fromkeys(view.stream.columns, "number"))
        return fields

    def views_of(self, push_source: str) -> list[OnlineView]:
        """The stream views that read ``push_source``; raises UnknownPushSourceError."""
        views = self._by_source.get(push_source)
        if not views:
            raise UnknownPushSourceError(push_source, self._by_source)
        return views

    def push(self, push_source: str, rows: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
             at_us: int | None = None) -> dict[str, PushCounts]:
        """Add ``rows`` (one event each) to every stream view of ``push_source``, as arrived at
        ``at_us`` (default: now): one round trip for all of them, atomic on a single Redis, and
        idempotent by event id. Returns what each view did."""
        at = now_us() if at_us is None else at_us
        views = self.views_of(push_source)
        prepared = [(view, prepare_events(view.stream, view.join_keys, view.key_kinds, rows, at_us=at))
                    for view in views if view.stream is not None]
        return push_to_views(self._redis, self._project, [(v.stream, e) for v, e in prepared if v.stream is not None],
                             at_us=at)


@dataclass(frozen=True)
class BackfillResult:
    view: str
    events: int
    counts: PushCounts


def backfill(spark: SparkSession, feature_view: Any, redis_online: RedisOnline, project: str, *,
             at: datetime | None = None) -> BackfillResult:
    """Rebuild ``feature_view``'s online state as of ``at`` (default now) from its batch source:
    every event with event time in ``(at - 1.25 longest windows, at]`` that had arrived by ``at``, one
    per event id, merged like a push (what is already stored stays; nothing counts twice)."""
    from pyspark.sql import functions as F

    from features.offline_store import _WindowPlan
    from features.window_join import dedupe_events

    view = OnlineView.from_feast(feature_view)
    stream = view.stream
    assert stream is not None, f"{feature_view.name} is not a stream feature view"
    at_us = now_us() if at is None else epoch_us(at)
    moment = pd.Timestamp(at_us, unit="us", tz="UTC").to_pydatetime()
    quarter = timedelta(microseconds=retention_us(stream) - stream.horizon_us)
    spec = _WindowPlan(feature_view, [], False).spec(spark, moment - quarter, moment)
    events = dedupe_events(spec.source, stream, spec.source_keys)
    events = events.where((F.col("a") <= F.lit(at_us)) & (F.col("e") > F.lit(at_us - retention_us(stream)))
                          & (F.col("e") <= F.lit(at_us)))
    total, counts = 0, PushCounts()
    prefix = key_prefix(project)
    for batch in _batches(events.toLocalIterator(prefetchPartitions=True), _BACKFILL_BATCH):
        frame = pd.DataFrame(batch)
        ids = entity_ids(view.join_keys, view.key_kinds, [frame[f"k{i}"].to_numpy() for i in range(len(view.join_keys))])
        values = np.column_stack([frame[f"v{j}"].to_numpy(dtype=np.float64, na_value=np.nan)
                                  for j in range(len(stream.columns))])
        records = make_records(stream, ids, frame["e"].to_numpy(dtype=np.int64), values,
                               event_id_hashes(frame["id"].to_numpy(), stream.event_id) if stream.event_id else None)
        counts = counts.add(push_events(redis_online, prefix, stream, PreparedEvents(ids, records), at_us=at_us))
        total += len(frame)
    return BackfillResult(view.name, total, counts)


def _batches(rows: Iterable[Any], size: int) -> Iterable[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row.asDict())
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
