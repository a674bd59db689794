"""``POST /v1/push`` of the serving API: events into the stream feature views that read a push
source, through :class:`features.push.EventPusher` (the one write path for events).

    {"push_source": "...", "rows": [{...}, ...]}
      │ push_request: an object, a push source name, 1 to max_rows objects of numbers, text, null
      ▼
    EventPusher.push ──► Redis window state, every view of the source, idempotent by event id
      │ EventError (a bad row: nothing stored) -> 422 naming ["rows", row, column]
      ▼ UnknownPushSourceError -> 404; OnlineStoreUnavailable -> 503
    {"views": {view: {"added": n, "duplicates": n, "expired": n}}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from features.errors import EventError
from serving.request_rows import unicode_text

if TYPE_CHECKING:
    from features.window_state import PushCounts

__all__ = ["EventSink", "event_error_detail", "push_request"]


class EventSink(Protocol):
    """What the server asks of :class:`features.push.EventPusher`."""

    @property
    def push_sources(self) -> list[str]: ...
    def views_of(self, push_source: str) -> list[Any]: ...
    def row_fields(self, push_source: str) -> dict[str, str]: ...
    def push(self, push_source: str, rows: Sequence[Mapping[str, Any]], *,
             at_us: int | None = None) -> Mapping[str, PushCounts]: ...


def push_request(body: Any, max_rows: int) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """``(push_source, rows, errors)`` of a ``POST /v1/push`` body: an object with a push source
    name and 1 to ``max_rows`` row objects whose values are numbers, text or null. What the rows
    must hold (join keys, event time, event id, aggregated values) is the views' to say: the
    pusher names the row and column of the first bad value."""
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        return "", [], [{"loc": ["rows"], "msg": 'expected an object {"push_source": "...", "rows": [{...}, ...]}'}]
    source, rows = body.get("push_source"), body["rows"]
    if not isinstance(source, str) or not source or len(source) > 200 or not unicode_text(source):
        return "", [], [{"loc": ["push_source"], "msg": f"must be the name of a push source, got {source!r:.40}"}]
    if not rows or len(rows) > max_rows:
        return "", [], [{"loc": ["rows"], "msg": f"send 1 to {max_rows:,} rows per request, got {len(rows):,}"}]
    errors: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            errors.append({"loc": ["rows", i], "msg": "each row must be an object"})
            continue
        for column, value in row.items():
            problem = _value_problem(value)
            if problem:
                errors.append({"loc": ["rows", i, column], "msg": problem})
        if len(errors) >= 20:
            break
    return source, rows, errors


def _value_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool | int | float):
        return None
    if isinstance(value, str):
        return None if len(value) <= 200 and unicode_text(value) else (
            "must be valid Unicode text of at most 200 characters")
    return f"must be a number, text or null, got {type(value).__name__}"


def event_error_detail(exc: EventError) -> list[dict[str, Any]]:
    """The 422 detail of a refused push: where (``["rows", row, column]``) and the pusher's message."""
    loc: list[Any] = ["rows"]
    if exc.row is not None:
        loc.append(exc.row)
    if exc.column:
        loc.append(exc.column)
    return [{"loc": loc, "msg": str(exc)}]
