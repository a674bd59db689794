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
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from features.errors import EntityFrameError, EventError, OnlineStoreError
from features.online_keys import entity_ids, view_keys
from features.redis_client import RedisOnline
from features.stream_views import StreamView

__all__ = ["HEADER_SIZE", "MAX_FUTURE_US", "NO_EVENT", "PushCounts", "event_id_hashes", "event_micros", "layout",
           "make_records", "prepare_events", "push_events", "push_to_views", "record_dtype", "retention_us",
           "state_header"]

MAX_FUTURE_US: Final = 5 * 60 * 1_000_000
"""How far past the pusher's clock an event time may lie (clock skew); later ones are refused."""
EXPIRY_MARGIN_MS: Final = 60_000
NO_EVENT: Final = np.iinfo(np.int64).min
"""The newest event time of a state with no events."""
_INT64_MAX: Final = int(np.iinfo(np.int64).max)
_MAGIC: Final = b"TMW\x02"
HEADER_SIZE: Final = 16
"""Bytes before the first record: the 8-byte prefix (:func:`state_header`), then the oldest
stored event time (µs, int64 LE), which lets a push skip trimming until it matters."""
_SPLITMIX_INT: Final = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
_SPLITMIX: Final = tuple(np.uint64(c) for c in _SPLITMIX_INT)
_MASK64: Final = (1 << 64) - 1
_FEW_IDS: Final = 16


def record_dtype(view: StreamView) -> np.dtype:
    """The record of one event: time, id, one float64 per aggregated column."""
    return np.dtype([("e", "<i8"), ("id", "V8"), ("v", "<f8", (len(view.columns),))])


def retention_us(view: StreamView) -> int:
    """How far back the state keeps events: 1.25 longest windows, so that a read as of any instant
    in the last quarter window (a replay of recent traffic) is as exact as a read for now."""
    return view.horizon_us + view.horizon_us // 4


def state_header(view: StreamView) -> bytes:
    """The state's 8-byte prefix: magic, version, and the CRC-32 of the column list (a redefined
    view never reads old state). The full header adds the oldest stored event time (8 bytes)."""
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
    bad row and column. Extra columns are ignored (a Feast push frame carries them). Rows are
    a DataFrame, a mapping of columns (or of one row's values), or a sequence of row mappings;
    no DataFrame is built for the latter two (a one-event push costs microseconds here)."""
    needed = [*join_keys, view.timestamp_field, *view.columns, *([view.event_id] if view.event_id else [])]
    columns, have = _columns(rows, needed)
    for column in needed:
        if column not in columns:
            raise EventError(f"the rows have no column {column!r} (they have {have}); "
                             f"a push to {view.push_source!r} needs the join keys, {view.timestamp_field!r}"
                             f"{', the event id ' + repr(view.event_id) if view.event_id else ''} and the "
                             f"aggregated columns {list(view.columns)}", column=column)
    try:
        ids = entity_ids(join_keys, key_kinds, [columns[k] for k in join_keys])
    except EntityFrameError as exc:
        key = next((k for k in join_keys if repr(k) in str(exc)), join_keys[0])
        raise EventError(str(exc), row=_first_bad_key(columns[key], key_kinds[list(join_keys).index(key)]),
                         column=key) from None
    event_us = _event_micros(columns[view.timestamp_field], view.timestamp_field)
    late = np.flatnonzero(event_us > at_us + max_future_us)
    if len(late):
        raise EventError(f"event time {pd.Timestamp(int(event_us[late[0]]), unit='us', tz='UTC')} is more than "
                         f"{max_future_us // 60_000_000} minutes ahead of this clock; check the pusher's clock "
                         "and time zone", row=int(late[0]), column=view.timestamp_field)
    values = np.empty((len(ids), len(view.columns)))
    for j, column in enumerate(view.columns):
        values[:, j] = _values(columns[column], column)
    event_ids = _id_hashes(columns[view.event_id], view.event_id) if view.event_id else None
    return PreparedEvents(ids, make_records(view, ids, event_us, values, event_ids))


def make_records(view: StreamView, ids: Sequence[bytes], event_us: np.ndarray, values: np.ndarray,
                 event_ids: np.ndarray | None) -> np.ndarray:
    """Records of already checked events (NaN values are nulls: counted in no aggregation);
    ``event_ids``: 8-byte hashes (:func:`event_id_hashes`), None for views without an id column."""
    records = np.zeros(len(ids), dtype=layout(view)[1])
    records["e"] = event_us
    records["v"] = values
    records["id"] = event_ids if event_ids is not None else _content_hashes(ids, records)
    return records


def event_micros(values: Any, column: str) -> np.ndarray:
    """Event times (datetimes, ISO 8601 strings, integer µs) as UTC µs; EventError for a bad one."""
    return _event_micros(_array(values), column)


def event_id_hashes(values: Any, column: str) -> np.ndarray:
    """The 8-byte id of each event id value, as a push computes it (the backfill uses it too)."""
    return _id_hashes(_array(values), column)


def push_events(redis_online: RedisOnline, project: bytes, view: StreamView, events: PreparedEvents, *,
                at_us: int) -> PushCounts:
    """Merge ``events`` into one view's online state (see :func:`push_to_views`)."""
    return push_to_views(redis_online, project, [(view, events)], at_us=at_us)[view.name]


def push_to_views(redis_online: RedisOnline, project: bytes, pushes: Sequence[tuple[StreamView, PreparedEvents]],
                  *, at_us: int) -> dict[str, PushCounts]:
    """Merge events into the online state of several views in one round trip (one Lua call per
    Redis node, so on a single Redis every view gets the events or none does)."""
    keys: list[bytes] = []
    payloads: list[bytes] = []
    states: list[tuple[int, bytes, int]] = []
    spans: list[tuple[StreamView, int, int]] = []
    for view, events in pushes:
        grouped: dict[bytes, list[int]] = {}
        for i, entity in enumerate(events.entity_ids):
            grouped.setdefault(entity, []).append(i)
        start = len(keys)
        keys += view_keys(project, view.name, list(grouped))
        payloads += [events.records[rows].tobytes() if len(rows) > 1 else events.records[rows[0]].tobytes()
                     for rows in grouped.values()]
        header, dtype = layout(view)
        states += [(view.horizon_us, header, dtype.itemsize)] * len(grouped)
        spans.append((view, start, len(keys)))
    reply = redis_online.push_events(keys, payloads, states, now_us=at_us, margin_ms=EXPIRY_MARGIN_MS)
    refused = np.flatnonzero(reply[:, 0] < 0)
    if len(refused):
        shown = ", ".join(repr(keys[i].decode(errors="backslashreplace")) for i in refused[:3])
        raise OnlineStoreError(
            f"{len(refused)} key(s) hold something other than their stream view's window state (e.g. {shown}): "
            "another definition of the view, or a foreign value; they were left untouched and the other keys "
            "of this push were stored. Apply the view (`feast apply` clears a redefined view's state), "
            "backfill it with `tidemark features materialize`, and push again")
    return {view.name: PushCounts(int(reply[lo:hi, 0].sum()), int(reply[lo:hi, 1].sum()), int(reply[lo:hi, 2].sum()))
            for view, lo, hi in spans}


_LAYOUTS: dict[int, tuple[StreamView, bytes, np.dtype]] = {}


def layout(view: StreamView) -> tuple[bytes, np.dtype]:
    """The view's state header and record dtype, computed once per view object (hashing a view
    costs more than a read)."""
    cached = _LAYOUTS.get(id(view))
    if cached is not None and cached[0] is view:
        return cached[1], cached[2]
    header, dtype = state_header(view), record_dtype(view)
    if len(_LAYOUTS) > 1024:
        _LAYOUTS.clear()
    _LAYOUTS[id(view)] = (view, header, dtype)
    return header, dtype


def _columns(rows: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]], needed: Sequence[str]
             ) -> tuple[dict[str, np.ndarray], list[str]]:
    """The ``needed`` columns that ``rows`` has, as numpy arrays of one length; and every column
    it has (for messages). Time-zone-aware pandas columns come back as UTC datetime64."""
    if isinstance(rows, pd.DataFrame):
        out = {}
        for c in needed:
            if c in rows.columns:
                out[c] = _array(rows[c])
        return out, [str(c) for c in rows.columns]
    if isinstance(rows, Mapping):
        out = {c: _array(rows[c] if isinstance(rows[c], list | tuple | np.ndarray | pd.Series) else [rows[c]])
               for c in needed if c in rows}
        lengths = {len(v) for v in out.values()}
        if len(lengths) > 1:
            raise EventError(f"the columns have different lengths {sorted(lengths)}; give one value per event "
                             "in every column")
        return out, list(rows)
    listed = list(rows)
    have = list(dict.fromkeys(k for r in listed for k in r))
    return {c: _array([r.get(c) for r in listed]) for c in needed if c in have}, have


def _array(values: Any) -> np.ndarray:
    if isinstance(values, pd.Series):
        if isinstance(values.dtype, pd.DatetimeTZDtype):  # UTC nanoseconds as they are stored; NaT stays NaT
            return np.asarray(values.array.asi8).view("M8[ns]")
        return values.to_numpy()
    array = np.asarray(values)
    return array if array.dtype.kind not in "US" else np.asarray(values, dtype=object)


def _is_null(value: Any) -> bool:
    return value is None or value is pd.NaT or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _event_micros(array: np.ndarray, column: str) -> np.ndarray:
    """Event times as UTC microseconds: datetimes (naive ones are UTC), ISO 8601 strings, or
    integer microseconds since the epoch."""
    if array.dtype.kind in "iu":
        too_big = np.flatnonzero(array > _INT64_MAX) if array.dtype.kind == "u" else np.zeros(0, dtype=np.intp)
        if len(too_big):
            raise EventError(f"{array[int(too_big[0])]!r} is out of the range of event times", row=int(too_big[0]),
                             column=column)
        return array.astype(np.int64)
    if array.dtype.kind == "M":
        missing = np.isnat(array)
        if missing.any():
            raise EventError("the event time is missing", row=int(np.flatnonzero(missing)[0]), column=column)
        return array.astype("datetime64[us]").astype(np.int64)
    out = np.empty(len(array), dtype=np.int64)
    for i, value in enumerate(array.tolist()):
        if _is_null(value):
            raise EventError("the event time is missing", row=i, column=column)
        if isinstance(value, int) and not isinstance(value, bool):
            if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
                raise EventError(f"{value!r} is out of the range of event times (integer microseconds since "
                                 "the epoch)", row=i, column=column)
            out[i] = value
            continue
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError, OverflowError):
            stamp = None
        if stamp is None or stamp is pd.NaT or isinstance(value, float | bool):
            raise EventError(f"{value!r} is not a timestamp (give a datetime, an ISO 8601 string or integer "
                             "microseconds since the epoch)", row=i, column=column)
        naive = stamp if stamp.tzinfo is None else stamp.tz_convert("UTC").tz_localize(None)
        try:  # in microseconds from the timestamp's own unit: years past 2262 overflow nanoseconds
            out[i] = int(naive.asm8.astype("datetime64[us]").astype(np.int64))
        except (OverflowError, ValueError):
            raise EventError(f"{value!r} is out of the range of event times", row=i, column=column) from None
    return out


def _values(array: np.ndarray, column: str) -> np.ndarray:
    """An aggregated column as float64; refuses text, nulls, NaN and infinities."""
    if array.dtype.kind in "biuf":
        out = array.astype(np.float64)
    else:
        out = np.empty(len(array))
        for i, value in enumerate(array.tolist()):
            if not isinstance(value, int | float | np.number) or isinstance(value, complex | np.complexfloating):
                raise EventError(f"{value!r} is not a number", row=i, column=column)
            out[i] = float(value)
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        raise EventError(f"{array[int(bad[0])]!r} is not a finite number (nulls, NaN and infinities cannot be "
                         "aggregated; drop the event or send the value)", row=int(bad[0]), column=column)
    return out


def _id_hashes(array: np.ndarray, column: str) -> np.ndarray:
    """8-byte ids: whole numbers through splitmix64 (a bijection: distinct ids never collide),
    anything else through BLAKE2b of its text."""
    if array.dtype.kind == "i":
        return _splitmix(array.astype(np.int64).view(np.uint64)).view("V8")
    items = array.tolist()
    missing = next((i for i, v in enumerate(items) if _is_null(v)), None)
    if missing is not None:
        raise EventError("the event id is missing", row=missing, column=column)
    whole = [int(v) if (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
             else None for v in items]
    fits = [w is not None and -_INT64_MAX - 1 <= w <= _INT64_MAX for w in whole]
    out = np.empty(len(items), dtype="V8")
    numbers = [i for i, ok in enumerate(fits) if ok]
    if numbers:
        out[numbers] = _splitmix(np.array([whole[i] for i in numbers], dtype=np.int64).view(np.uint64)).view("V8")
    for i, ok in enumerate(fits):  # text, or whole numbers past int64: by their text (a value is always one id)
        if not ok:
            w = whole[i]
            out[i] = hashlib.blake2b(str(w if w is not None else items[i]).encode(), digest_size=8).digest()
    return out


def _content_hashes(ids: Sequence[bytes], records: np.ndarray) -> np.ndarray:
    """Without an id column an event is its content: entity, time and values."""
    data = records[["e", "v"]].tobytes()
    size = len(data) // max(len(records), 1)
    return np.array([hashlib.blake2b(e + data[i * size:(i + 1) * size], digest_size=8).digest()
                     for i, e in enumerate(ids)], dtype="V8")


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser of each uint64 (a bijection), as uint64."""
    if len(x) <= _FEW_IDS:  # one request's ids: Python integers cost ~2 µs where numpy's 7 calls cost ~15
        return np.array([_splitmix_one(v) for v in x.tolist()], dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + _SPLITMIX[0]
        z = (z ^ (z >> np.uint64(30))) * _SPLITMIX[1]
        z = (z ^ (z >> np.uint64(27))) * _SPLITMIX[2]
        return np.ascontiguousarray(z ^ (z >> np.uint64(31)))


def _splitmix_one(v: int) -> int:
    z = (v + _SPLITMIX_INT[0]) & _MASK64
    z = ((z ^ (z >> 30)) * _SPLITMIX_INT[1]) & _MASK64
    z = ((z ^ (z >> 27)) * _SPLITMIX_INT[2]) & _MASK64
    return z ^ (z >> 31)


def _first_bad_key(array: np.ndarray, kind: str) -> int:
    for i, value in enumerate(array.tolist()):
        try:
            entity_ids(["k"], [kind], [[value]])
        except EntityFrameError:
            return i
    return 0
