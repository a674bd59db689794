"""What the online store needs to know about a feature view, and how a batch of its rows is written.

Shared by the Feast plugin (:mod:`features.online_store`), the Spark materializer (which runs this
on executors) and the fast reader, so every path writes and reads the same bytes under the same keys.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np

from features.corrupt_values import CORRUPT_VALUES
from features.errors import ConfigError, OnlineStoreError, UnresolvedEntityError
from features.online_keys import INT_KEY, STR_KEY, view_keys
from features.packed_layout import (
    NO_TIME,
    PackedSchema,
    UnpackedBatch,
    pack_rows,
    unpack_rows,
    value_kind,
)
from features.redis_client import RedisOnline
from features.stream_views import StreamView, is_stream_view
from features.window_read import aggregate

__all__ = ["OnlineView", "WriteCounts", "expiry_ms", "kind_of", "read_batch", "write_rows"]

# Feast value type name -> packed fixed-width (or text) kind. Every other Feast value type (lists,
# sets, maps, JSON, structs, timestamps, ...) is stored as its serialized proto: see kind_of.
_KIND_OF: Final = {"DOUBLE": "float64", "FLOAT": "float32", "INT64": "int64", "INT32": "int32",
                   "BOOL": "bool", "STRING": "string", "BYTES": "bytes"}
_KEY_KIND_OF: Final = {"INT64": INT_KEY, "INT32": INT_KEY, "STRING": STR_KEY}
DUMMY_JOIN_KEY: Final = "__dummy_id"  # Feast's join key for views without entities
# Per project, a hash of view -> "<fingerprint>:<ttl µs>" for views fully loaded into Redis; the
# plugin drops a view's entry when it drops the view's values, so the next incremental run reloads.
LOADED_KEY: Final = b"__tidemark_loaded__"


@dataclass(frozen=True)
class OnlineView:
    """A feature view as the online store sees it."""

    name: str
    join_keys: tuple[str, ...]
    key_kinds: tuple[str, ...]
    schema: PackedSchema
    ttl_us: int  # 0: values never go stale
    stream: StreamView | None = None  # windowed aggregations, computed at read time from events

    @classmethod
    def from_feast(cls, view: Any) -> OnlineView:
        """Build from a registered Feast ``FeatureView`` (its entity columns must be resolved)."""
        stream = StreamView.from_feast(view) if is_stream_view(view) else None
        names: list[str] = list(stream.output_names) if stream else []
        kinds: list[str] = list(stream.output_kinds) if stream else []
        for feature in [] if stream else view.features:
            names.append(feature.name)
            kinds.append(kind_of(feature.dtype.to_value_type().name))
        join_keys, key_kinds = [], []
        for column in view.entity_columns:
            kind = _KEY_KIND_OF.get(column.dtype.to_value_type().name)
            if kind is None:
                raise ConfigError(f"join key {column.name!r} of {view.name} has type {column.dtype}; "
                                  "the online store keys entities by integers or strings")
            join_keys.append(column.name)
            key_kinds.append(kind)
        if not join_keys:
            if list(view.entities) not in ([], ["__dummy"]):
                raise UnresolvedEntityError(
                    f"feature view {view.name!r} has no resolved join keys: its entities {list(view.entities)} "
                    "are not registered; apply them with the view (`feast apply` or FeatureClient.apply())")
            join_keys, key_kinds = [DUMMY_JOIN_KEY], [STR_KEY]  # Feast keys these by ""
        ttl_us = micros(view.ttl) if view.ttl and stream is None else 0
        return cls(view.name, tuple(join_keys), tuple(key_kinds),
                   PackedSchema(tuple(names), tuple(kinds)), ttl_us, stream)

    def stale(self, event_us: np.ndarray, now_us: int | np.ndarray) -> np.ndarray:
        """True where a value is older than the TTL at ``now_us`` (the offline join's rule)."""
        if not self.ttl_us:
            return np.zeros(len(event_us), dtype=bool)
        return event_us < now_us - self.ttl_us


def kind_of(value_type: str) -> str:
    """The packed kind of a Feast value type name: the scalars keep their fixed-width slot (the
    hot path), any other type, present or future, is kept as its serialized proto. A repo is never
    refused for a feature's type."""
    return _KIND_OF.get(value_type) or value_kind(value_type)


def read_batch(view: OnlineView, values: Sequence[Any], keys: Sequence[bytes],
               at_us: int | np.ndarray) -> UnpackedBatch:
    """``view``'s values as read from Redis, decoded as of ``at_us`` (one instant, or one per key):
    a packed view's rows with those past the TTL hidden, or a stream view's aggregations computed
    from its stored events (its "event time" is the instant read at). Corrupt values read as
    missing and are reported (:data:`~features.corrupt_values.CORRUPT_VALUES`)."""
    n = len(keys)
    if view.stream is not None:
        windows = aggregate(view.stream, values, keys, at_us=at_us)
        at = np.array(at_us, dtype=np.int64) if isinstance(at_us, np.ndarray) else np.full(n, at_us, dtype=np.int64)
        batch = UnpackedBatch(view.schema, windows.found, at, np.full(n, NO_TIME), windows.slots, windows.valid, {},
                              windows.corrupt)
    else:
        batch = unpack_rows(view.schema, values, keys)
        if view.schema.has_values:
            # Imported here: it imports Feast (seconds); views of scalars never need it.
            from features.value_protos import parse_value_columns

            parse_value_columns(batch, keys)
    CORRUPT_VALUES.record(batch.corrupt)  # served as missing, never silently
    if view.ttl_us:  # 0: no TTL (a stream view's values are as of the instant read)
        stale = batch.found & view.stale(batch.event_us, at_us)
        if stale.any():
            batch.hide(stale)
    return batch


@dataclass
class WriteCounts:
    """What a write did, row by row."""

    written: int = 0
    unchanged: int = 0
    skipped_older: int = 0
    expired: int = 0
    refused: int = 0
    refused_keys: list[bytes] = field(default_factory=list)  # up to 10 examples

    def add(self, other: WriteCounts) -> WriteCounts:
        return WriteCounts(self.written + other.written, self.unchanged + other.unchanged,
                           self.skipped_older + other.skipped_older, self.expired + other.expired,
                           self.refused + other.refused, (self.refused_keys + other.refused_keys)[:10])

    def __str__(self) -> str:
        return (f"{self.written:,} written, {self.unchanged:,} unchanged, {self.skipped_older:,} skipped "
                f"(stored value newer), {self.expired:,} not written (already past the view's TTL)")

    @property
    def rows(self) -> int:
        return self.written + self.unchanged + self.skipped_older + self.expired + self.refused


def micros(delta: timedelta) -> int:
    """A duration in whole microseconds, exactly (no float rounding), as the offline join uses."""
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def epoch_us(moment: datetime) -> int:
    """Microseconds since the epoch of ``moment`` (naive means UTC, as in Feast), exactly."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return micros(moment - datetime(1970, 1, 1, tzinfo=UTC))


def now_us() -> int:
    """Wall-clock time, microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


def expiry_ms(event_us: np.ndarray, ttl_us: int, margin_us: int, at_us: int, cap_ms: int = 0) -> np.ndarray:
    """Redis time to live per row, in ms: 0 for no expiry (no TTL), -1 where already stale.

    A key outlives its TTL by ``margin_us``: reads enforce the TTL exactly, expiry only frees memory.
    ``cap_ms`` > 0 (Feast's ``key_ttl_seconds``) bounds the time to live of every written key, one
    without a TTL included; it never makes a stale row writable.
    """
    if not ttl_us:
        return np.full(len(event_us), max(cap_ms, 0), dtype=np.int64)
    left_us = np.asarray(event_us, dtype=np.int64) + ttl_us - at_us
    left_ms = np.maximum(-(-left_us // 1000), 1)  # rounded up: live for part of a ms is live
    live_ms = left_ms + margin_us // 1000
    if cap_ms > 0:
        live_ms = np.minimum(live_ms, cap_ms)
    return np.where(left_us < 0, -1, live_ms)


def write_rows(
    redis_online: RedisOnline, project: bytes, view: OnlineView, ids: Sequence[bytes],
    event_us: np.ndarray, created_us: np.ndarray | None, columns: Sequence[np.ndarray],
    valid: Sequence[np.ndarray | None], *, margin_us: int, at_us: int | None = None, key_ttl_ms: int = 0,
) -> WriteCounts:
    """Write rows of ``view`` (one per entity id), newest wins; stale rows are not written.
    ``key_ttl_ms`` > 0 caps each key's Redis time to live (see :func:`expiry_ms`)."""
    at = now_us() if at_us is None else at_us
    ttl = expiry_ms(event_us, view.ttl_us, margin_us, at, key_ttl_ms)
    keep = np.flatnonzero(ttl >= 0)
    counts = WriteCounts(expired=len(ids) - len(keep))
    if not len(keep):
        return counts
    if len(keep) < len(ids):
        ids = [ids[i] for i in keep.tolist()]
        event_us = np.asarray(event_us)[keep]
        created_us = None if created_us is None else np.asarray(created_us)[keep]
        columns = [np.asarray(c)[keep] for c in columns]
        valid = [None if v is None else np.asarray(v)[keep] for v in valid]
        ttl = ttl[keep]
    keys = view_keys(project, view.name, ids)
    values = pack_rows(view.schema, event_us, created_us, columns, valid)
    status = redis_online.write_newest(keys, values, ttl)
    counts.written = int((status == 1).sum())
    counts.unchanged = int((status == 0).sum())
    counts.skipped_older = int((status == 2).sum())
    refused = np.flatnonzero(status == -1)
    counts.refused = len(refused)
    counts.refused_keys = [keys[i] for i in refused[:10].tolist()]
    return counts


def raise_if_refused(counts: WriteCounts) -> None:
    """Refused keys held something that is not ours; say which instead of overwriting it."""
    if counts.refused:
        shown = ", ".join(repr(k.decode(errors="backslashreplace")) for k in counts.refused_keys[:3])
        raise OnlineStoreError(
            f"{counts.refused} key(s) hold values that are not tidemark packed values "
            f"(e.g. {shown}); they were left untouched. Delete them, or point tidemark at another "
            "Redis database or project."
        )
