"""The definition of a windowed aggregation, row by row, for tests to compare against.

Value of ``function(column)`` over window ``w`` for an entity at ``t``: over the entity's events
with event time in ``(t - w, t]`` that had arrived by ``t``, one per (entity, event id) (earliest
arrival wins, ties to the smaller event time and value), non-null values only; count 0 and sum 0.0 over
none, mean/min/max None over none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    key: str
    event_us: int
    arrival_us: int
    value: float | None
    event_id: int


def dedupe(events: Sequence[Event]) -> list[Event]:
    """One event per (entity, id): the earliest arrival, ties to the smaller (event time, value)."""
    best: dict[tuple[str, int], Event] = {}
    for ev in events:
        cur = best.get((ev.key, ev.event_id))
        rank = (ev.arrival_us, ev.event_us, _order(ev.value))
        if cur is None or rank < (cur.arrival_us, cur.event_us, _order(cur.value)):
            best[(ev.key, ev.event_id)] = ev
    return list(best.values())


def window_value(events: Sequence[Event], key: str, t_us: int, window_us: int, function: str) -> float | int | None:
    """``function`` at ``t_us`` over already deduplicated ``events``."""
    values = [ev.value for ev in events
              if ev.key == key and t_us - window_us < ev.event_us <= t_us and max(ev.arrival_us, ev.event_us) <= t_us
              and ev.value is not None]
    if function == "count":
        return len(values)
    if function == "sum":
        return math.fsum(values)
    if not values:
        return None
    if function == "mean":
        return math.fsum(values) / len(values)
    return max(values) if function == "max" else min(values)


def close(got: object, want: object) -> bool:
    """Counts, min and max exactly; sums and means within 1e-9 relative (or 1e-9 absolute near 0)."""
    if want is None:
        return got is None
    if got is None:
        return False
    if isinstance(want, int):
        return got == want
    assert isinstance(got, float | int) and isinstance(want, float)
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


def _order(value: float | None) -> float:
    return -math.inf if value is None else value
