"""Online state of stream feature views: every event of the longest window, per entity, in Redis.

One Redis string per (view, entity), under the view's usual key
(:func:`features.online_keys.view_keys`): an 8-byte header (``TMW``, a format version, the CRC-32
of the view's aggregated columns) and one fixed-size record per event::

    event time (µs, int64 LE) | event id (8 bytes) | one float64 per aggregated column (NaN: null)

A push merges records into the state with one Lua script (``RedisOnline.push_events``):
atomically, skipping ids already stored (a replay counts once), dropping events that left the
longest window. A read computes every aggregation for "now" from the records, exactly as the
offline definition does (:mod:`features.stream_views`), so windows slide by time with no job
running and a value is never a tile old.

Why events and not tiles: the count over ``(now - w, now]`` changes at the instant each event
leaves the window, so an exact value at every future "now" needs the time of every event still
in it; partial aggregates per tile lose exactly that. The state is bounded by the events of the
longest window, not by the history: older events are dropped on every write, and a key expires
when its newest event has left the longest window.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from features.errors import CorruptValueError, EntityFrameError, EventError, OnlineStoreError
from features.online_keys import entity_ids, view_keys
from features.redis_client import RedisOnline
from features.stream_views import StreamView

__all__ = ["MAX_FUTURE_US", "PushCounts", "WindowValues", "aggregate", "make_records", "prepare_events", "push_events",
           "record_dtype", "state_header"]

MAX_FUTURE_US: Final = 5 * 60 * 1_000_000
"""How far past the pusher's clock an event time may lie (clock skew); later ones are refused."""
EXPIRY_MARGIN_MS: Final = 60_000
_MAGIC: Final = b"TMW\x01"
_SPLITMIX: Final = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def record_dtype(view: StreamView) -> np.dtype:
    """The record of one event: time, id, one float64 per aggregated column."""
    return np.dtype([("e", "<i8"), ("id", "V8"), ("v", "<f8", (len(view.columns),))])


def state_header(view: StreamView) -> bytes:
    """Magic, version, and the CRC-32 of the column list: a redefined view never reads old state."""
    return _MAGIC + zlib.crc32("\x1f".join(view.columns).encode()).to_bytes(4, "little")


@dataclass(frozen=True)
class PreparedEvents:
    """Validated events: one entity id and one record per pushed row."""

    entity_ids: list[bytes]
    records: np.ndarray


@dataclass
class PushCounts:
    """What a push did: events added, replays ignored, and events already out of every window."""

    added: int = 0
    duplicates: int = 0
    expired: int = 0

    def add(self, other: PushCounts) -> PushCounts:
        return PushCounts(self.added + other.added, self.duplicates + other.duplicates,
                          self.expired + other.expired)

    def as_dict(self) -> dict[str, int]:
        return {"added": self.added, "duplicates": self.duplicates, "expired": self.expired}


def prepare_events(view: StreamView, join_keys: Sequence[str], key_kinds: Sequence[str],
                   rows: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
                   at_us: int, max_future_us: int = MAX_FUTURE_US) -> PreparedEvents:
    """Check pushed rows and turn them into records; raises :class:`EventError` naming the first
    bad row and column. Extra columns are ignored (a Feast push frame carries them)."""
    frame = _frame(rows)
    n = len(frame)
    for column in (*join_keys, view.timestamp_field, *view.columns, *([view.event_id] if view.event_id else [])):
        if column not in frame.columns:
            raise EventError(f"the rows have no column {column!r} (they have {list(frame.columns)}); "
                             f"a push to {view.push_source!r} needs the join keys, {view.timestamp_field!r}"
                             f"{', the event id ' + repr(view.event_id) if view.event_id else ''} and the "
                             f"aggregated columns {list(view.columns)}", column=column)
    try:
        ids = entity_ids(join_keys, key_kinds, [frame[k].to_numpy() for k in join_keys])
    except EntityFrameError as exc:
        key = next((k for k in join_keys if k in str(exc)), join_keys[0])
        raise EventError(str(exc), row=_first_bad_key(frame[key], key_kinds[list(join_keys).index(key)]),
                         column=key) from None
    event_us = _event_micros(frame[view.timestamp_field], view.timestamp_field)
    late = np.flatnonzero(event_us > at_us + max_future_us)
    if len(late):
        raise EventError(f"event time {pd.Timestamp(int(event_us[late[0]]), unit='us', tz='UTC')} is more than "
                         f"{max_future_us // 60_000_000} minutes ahead of this clock; check the pusher's clock "
                         "and time zone", row=int(late[0]), column=view.timestamp_field)
    values = np.column_stack([_values(frame[c], c) for c in view.columns]) if n else np.zeros((0, len(view.columns)))
    return PreparedEvents(ids, make_records(view, ids, event_us, values,
                                            frame[view.event_id] if view.event_id else None))


def make_records(view: StreamView, ids: Sequence[bytes], event_us: np.ndarray, values: np.ndarray,
                 event_ids: pd.Series | None) -> np.ndarray:
    """Records of already checked events (NaN values are nulls: counted in no aggregation)."""
    records = np.zeros(len(ids), dtype=record_dtype(view))
    records["e"] = event_us
    records["v"] = values
    records["id"] = (_id_hashes(event_ids, view.event_id or "") if event_ids is not None
                     else _content_hashes(ids, records))
    return records


def push_events(redis_online: RedisOnline, project: bytes, view: StreamView, events: PreparedEvents, *,
                at_us: int) -> PushCounts:
    """Merge ``events`` into the online state, one round trip (one Lua call per Redis node)."""
    if not events.entity_ids:
        return PushCounts()
    order = np.argsort(np.asarray(events.entity_ids, dtype=object), kind="stable")
    grouped: dict[bytes, list[int]] = {}
    for i in order.tolist():
        grouped.setdefault(events.entity_ids[i], []).append(i)
    ids = list(grouped)
    payloads = [events.records[np.asarray(rows)].tobytes() for rows in grouped.values()]
    keys = view_keys(project, view.name, ids)
    reply = redis_online.push_events(keys, payloads, now_us=at_us, horizon_us=view.horizon_us,
                                     header=state_header(view), record_size=record_dtype(view).itemsize,
                                     margin_ms=EXPIRY_MARGIN_MS)
    refused = np.flatnonzero(reply[:, 0] < 0)
    if len(refused):
        shown = ", ".join(repr(keys[i].decode(errors="backslashreplace")) for i in refused[:3])
        raise OnlineStoreError(
            f"{len(refused)} key(s) of stream view {view.name!r} hold something other than its window state "
            f"(e.g. {shown}): another definition of the view, or a foreign value. The other keys of this "
            "push were stored. Apply the view (`feast apply` clears a redefined view's state), backfill "
            "it with `tidemark features materialize`, and push again")
    return PushCounts(int(reply[:, 0].sum()), int(reply[:, 1].sum()), int(reply[:, 2].sum()))


@dataclass(frozen=True)
class WindowValues:
    """Aggregations of one view for ``n`` entities at one instant."""

    slots: np.ndarray    # int64[n, outputs]: counts as integers, the rest as float64 bits
    valid: np.ndarray    # bool[n, outputs]: false for null (mean/min/max of no value, corrupt state)
    latest_us: np.ndarray  # int64[n]: newest event time in the state, int64 minimum if none
    found: np.ndarray    # bool[n]: false only where the stored state is unusable (corrupt)
    corrupt: list[CorruptValueError]


def aggregate(view: StreamView, blobs: Sequence[Any], keys: Sequence[bytes], *, at_us: int) -> WindowValues:
    """Every aggregation of ``view`` at ``at_us`` for each entity's stored state (None: no events)."""
    n, outputs = len(blobs), len(view.aggregations)
    header, dtype = state_header(view), record_dtype(view)
    counts = np.zeros(n, dtype=np.int64)
    bodies: list[bytes] = []
    corrupt: list[CorruptValueError] = []
    bad = np.zeros(n, dtype=bool)
    for i, blob in enumerate(blobs):
        if blob is None:
            continue
        if not isinstance(blob, bytes) or blob[:len(header)] != header or (len(blob) - len(header)) % dtype.itemsize:
            bad[i] = True
            corrupt.append(CorruptValueError(keys[i], f"not the window state of {view.name!r} as defined now"))
            continue
        counts[i] = (len(blob) - len(header)) // dtype.itemsize
        bodies.append(blob[len(header):])
    records = np.frombuffer(b"".join(bodies), dtype=dtype)
    owner = np.repeat(np.arange(n), counts)
    times, values = records["e"], records["v"]
    latest = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(latest, owner, times)
    slots = np.zeros((n, outputs), dtype=np.int64)
    valid = np.ones((n, outputs), dtype=bool)
    cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for a, agg in enumerate(view.aggregations):
        key = (agg.column, agg.window_us)
        if key not in cache:
            column = values[:, agg.column]
            inside = (times > at_us - agg.window_us) & (times <= at_us) & ~np.isnan(column)
            cache[key] = (owner[inside], column[inside], np.bincount(owner[inside], minlength=n))
        who, vals, count = cache[key]
        if agg.function == "count":
            slots[:, a] = count
            continue
        if agg.function in ("sum", "mean"):
            total = np.bincount(who, weights=vals, minlength=n)
            result = total if agg.function == "sum" else np.divide(total, count, out=np.zeros(n), where=count > 0)
            valid[:, a] = agg.function == "sum" or count > 0  # type: ignore[assignment]
        else:
            result = np.full(n, np.inf if agg.function == "min" else -np.inf)
            (np.minimum if agg.function == "min" else np.maximum).at(result, who, vals)
            valid[:, a] = count > 0
        slots[:, a] = np.where(valid[:, a], result, 0.0).view(np.int64)
    valid[bad] = False
    return WindowValues(slots, valid, latest, ~bad, corrupt)


def _frame(rows: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows.reset_index(drop=True)
    if isinstance(rows, Mapping):
        try:
            return pd.DataFrame({k: (v if isinstance(v, list | tuple | np.ndarray | pd.Series) else [v])
                                 for k, v in rows.items()})
        except ValueError as exc:
            raise EventError(f"the columns have different lengths ({exc})") from None
    return pd.DataFrame(list(rows))


def _event_micros(series: pd.Series, column: str) -> np.ndarray:
    """Event times as UTC microseconds: tz-aware or naive (UTC) datetimes, ISO strings, or
    integer microseconds since the epoch."""
    if series.isna().any():
        raise EventError("the event time is missing", row=int(np.flatnonzero(series.isna().to_numpy())[0]),
                         column=column)
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64)
    try:
        stamps = pd.to_datetime(series, utc=True, format="ISO8601" if series.dtype == object else None)
    except (ValueError, TypeError, OverflowError):
        for i, value in enumerate(series.tolist()):
            try:
                pd.Timestamp(value)
            except (ValueError, TypeError, OverflowError):
                raise EventError(f"{value!r} is not a timestamp (give a datetime, an ISO 8601 string or "
                                 "integer microseconds since the epoch)", row=i, column=column) from None
        raise EventError("the column does not hold timestamps", column=column) from None
    return stamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]").astype(np.int64)


def _values(series: pd.Series, column: str) -> np.ndarray:
    """An aggregated column as float64; refuses text, nulls, NaN and infinities."""
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        out = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        out = np.empty(len(series))
        for i, value in enumerate(series.tolist()):
            if not isinstance(value, int | float | np.number) or isinstance(value, complex | np.complexfloating):
                raise EventError(f"{value!r} is not a number", row=i, column=column)
            out[i] = float(value)
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        raise EventError(f"{series.iloc[int(bad[0])]!r} is not a finite number (nulls, NaN and infinities "
                         "cannot be aggregated; drop the event or send the value)", row=int(bad[0]), column=column)
    return out


def _id_hashes(series: pd.Series, column: str) -> np.ndarray:
    """8-byte ids: integers through splitmix64 (a bijection: distinct ids never collide), anything
    else through BLAKE2b."""
    if series.isna().any():
        raise EventError("the event id is missing", row=int(np.flatnonzero(series.isna().to_numpy())[0]),
                         column=column)
    if pd.api.types.is_integer_dtype(series.dtype):
        return _splitmix(series.to_numpy(dtype=np.int64).view(np.uint64)).view("V8")
    return np.array([hashlib.blake2b(str(v).encode(), digest_size=8).digest() for v in series.tolist()],
                    dtype="V8")


def _content_hashes(ids: Sequence[bytes], records: np.ndarray) -> np.ndarray:
    """Without an id column an event is its content: entity, time and values."""
    data = records[["e", "v"]].tobytes()
    size = len(data) // max(len(records), 1)
    return np.array([hashlib.blake2b(e + data[i * size:(i + 1) * size], digest_size=8).digest()
                     for i, e in enumerate(ids)], dtype="V8")


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _SPLITMIX[0]
        z = (z ^ (z >> np.uint64(30))) * _SPLITMIX[1]
        z = (z ^ (z >> np.uint64(27))) * _SPLITMIX[2]
        return np.ascontiguousarray(z ^ (z >> np.uint64(31)))


def _first_bad_key(series: pd.Series, kind: str) -> int:
    for i, value in enumerate(series.tolist()):
        try:
            entity_ids(["k"], [kind], [[value]])
        except EntityFrameError:
            return i
    return 0
