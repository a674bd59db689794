"""Windowed aggregations of stream feature views, for every entity row at its own time, on Spark.

For an entity row ``(keys, t)`` and an aggregation ``(column, function, w)`` the value is the
function over the entity's events with event time in ``(t - w, t]`` that had arrived by ``t``
(arrival: the batch source's created timestamp; an event without one is available at its event
time), each event id once, its earliest arrival winning (:mod:`features.stream_views`).

How: the view's events and the entity rows are unioned and sorted once per entity, by event time
for events and by ``t`` for entity rows. A range frame over that order, the view's longest window
back from each row, gathers exactly the events with event time in ``(t - longest, t]``, ties at
``t`` included; each aggregation then keeps those that had arrived by ``t`` and fall in its own
window, and reduces them. This is one shuffle and sort per view, linear in the rows for a bounded
number of events per window (the cost of Spark's own sliding range frames), with no join of each
entity row against the event table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from features.asof_join import epoch_micros, quote
from features.stream_views import StreamView

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

__all__ = ["WindowViewSpec", "dedupe_events", "window_join"]

_T = "__tm_wt"
_ENT = "__tm_went"
_EV = "__tm_wev"
_LIST = "__tm_wlist"


@dataclass(frozen=True)
class WindowViewSpec:
    """One stream view's side of the join: its event rows and the outputs wanted.

    ``source_keys`` are the events' join-key columns, matched by position with the entity frame's
    ``join_keys``; ``outputs`` pairs an aggregation's index in ``view.aggregations`` with its
    output column name."""

    view: StreamView
    source: DataFrame
    join_keys: tuple[str, ...]
    source_keys: tuple[str, ...]
    outputs: tuple[tuple[int, str], ...]


def window_join(entities: DataFrame, views: Sequence[WindowViewSpec], *, timestamp_col: str) -> DataFrame:
    """``entities`` with each view's requested aggregations as of each row's ``timestamp_col``."""
    result = entities
    for spec in views:
        result = _join_view(result, spec, timestamp_col)
    return result


def dedupe_events(events: DataFrame, view: StreamView, source_keys: Sequence[str]) -> DataFrame:
    """The view's events as ``[id,] k0.., e, a, v0..`` (µs, µs, float64), one per event id: the
    earliest arrival wins, a tie goes to the smaller (event time, keys, values). Without an id
    column, identical (keys, event time, values) are one event, available from its first arrival."""
    from pyspark.sql import functions as F

    e = epoch_micros(events, view.timestamp_field)
    a = F.greatest(e, epoch_micros(events, view.arrival_column)) if view.arrival_column else e
    a = F.coalesce(a, e)
    keys = [F.col(quote(k)).alias(f"k{i}") for i, k in enumerate(source_keys)]
    values = [F.col(quote(c)).cast("double").alias(f"v{j}") for j, c in enumerate(view.columns)]
    rows = events.select(*keys, e.alias("e"), a.alias("a"), *values,
                         *([F.col(quote(view.event_id)).alias("id")] if view.event_id else []))
    rows = rows.where(F.col("e").isNotNull())
    for i in range(len(source_keys)):
        rows = rows.where(F.col(f"k{i}").isNotNull())
    # NaN is not a value (the push refuses it): treat it as null, like a missing value.
    rows = rows.select(*[c for c in rows.columns if not c.startswith("v")],
                       *[F.when(~F.isnan(f"v{j}"), F.col(f"v{j}")).alias(f"v{j}") for j in range(len(view.columns))])
    payload = ["e", *[f"k{i}" for i in range(len(source_keys))], *[f"v{j}" for j in range(len(view.columns))]]
    if view.event_id:
        first = rows.groupBy("id").agg(F.min(F.struct("a", *payload)).alias("w"))
        return first.select("id", *[F.col(f"w.{c}").alias(c) for c in ("a", *payload)])
    return rows.groupBy(*payload).agg(F.min("a").alias("a"))


def _join_view(entities: DataFrame, spec: WindowViewSpec, timestamp_col: str) -> DataFrame:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    view = spec.view
    n_keys = len(spec.join_keys)
    key_types = [entities.schema[k].dataType for k in spec.join_keys]
    ent_cols = entities.columns
    t = epoch_micros(entities, timestamp_col)
    entity_side = entities.select(
        *[F.col(quote(k)).alias(f"__tm_wk{i}") for i, k in enumerate(spec.join_keys)],
        t.alias(_T),
        F.struct(*[F.col(quote(c)) for c in ent_cols]).alias(_ENT),
    )
    events = dedupe_events(spec.source, view, spec.source_keys)
    ev_struct = F.struct("e", "a", *[f"v{j}" for j in range(len(view.columns))])
    ev_type = events.select(ev_struct.alias("s")).schema["s"].dataType
    ent_type = entity_side.schema[_ENT].dataType
    union = entity_side.withColumn(_EV, F.lit(None).cast(ev_type)).unionByName(events.select(
        *[F.col(f"k{i}").cast(key_types[i]).alias(f"__tm_wk{i}") for i in range(n_keys)],
        F.col("e").alias(_T),
        F.lit(None).cast(ent_type).alias(_ENT),
        ev_struct.alias(_EV),
    ))
    # Range bounds are inclusive: [t - (H - 1µs), t] is (t - H, t] in whole microseconds.
    frame = (Window.partitionBy(*[f"__tm_wk{i}" for i in range(n_keys)]).orderBy(_T)
             .rangeBetween(-(view.horizon_us - 1), 0))
    gathered = union.select(_T, _ENT, F.collect_list(_EV).over(frame).alias(_LIST)).where(F.col(_ENT).isNotNull())
    outputs = [F.col(f"{_ENT}.{quote(c)}").alias(c) for c in ent_cols]
    outputs += [_aggregate(view, index, F.col(_LIST), F.col(_T)).alias(name) for index, name in spec.outputs]
    return gathered.select(*outputs)


def _aggregate(view: StreamView, index: int, events: Column, t: Column) -> Column:
    """One aggregation over the gathered events of a row at time ``t``."""
    from pyspark.sql import functions as F

    agg = view.aggregations[index]
    v = f"v{agg.column}"
    inside = F.filter(events, lambda x: (x["a"] <= t) & (x["e"] > t - F.lit(agg.window_us)) & x[v].isNotNull())
    values = F.transform(inside, lambda x: x[v])
    count = F.size(values)
    if agg.function == "count":
        return count.cast("long")
    total = F.aggregate(values, F.lit(0.0).cast("double"), lambda acc, x: acc + x)
    if agg.function == "sum":
        return total
    if agg.function == "mean":
        return F.when(count > 0, total / count)
    return F.array_max(values) if agg.function == "max" else F.array_min(values)
