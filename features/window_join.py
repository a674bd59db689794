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
    from pyspark.sql.types import DataType

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


def dedupe_events(events: DataFrame, view: StreamView, source_keys: Sequence[str], *,
                  key_types: Sequence[DataType] | None = None, partitions: int | None = None) -> DataFrame:
    """The view's events as ``[id,] k0.., e, a, v0..`` (µs, µs, float64), one per (entity, event
    id), as the online state keeps them: the earliest arrival wins, a tie goes to the smaller
    (event time, values). Without an id column, identical (keys, event time, values) are one
    event, available from its first arrival. ``key_types`` casts the keys; ``partitions``
    hash-partitions the rows by key first, so the deduplication and a later sort by key share
    one shuffle."""
    from pyspark.sql import functions as F

    e = epoch_micros(events, view.timestamp_field)
    a = F.greatest(e, epoch_micros(events, view.arrival_column)) if view.arrival_column else e
    a = F.coalesce(a, e)
    keys = [(F.col(quote(k)) if key_types is None else F.col(quote(k)).cast(key_types[i])).alias(f"k{i}")
            for i, k in enumerate(source_keys)]
    values = [F.col(quote(c)).cast("double").alias(f"v{j}") for j, c in enumerate(view.columns)]
    rows = events.select(*keys, e.alias("e"), a.alias("a"), *values,
                         *([F.col(quote(view.event_id)).alias("id")] if view.event_id else []))
    rows = rows.where(F.col("e").isNotNull())
    for i in range(len(source_keys)):
        rows = rows.where(F.col(f"k{i}").isNotNull())
    # NaN is not a value (the push refuses it): treat it as null, like a missing value.
    rows = rows.select(*[c for c in rows.columns if not c.startswith("v")],
                       *[F.when(~F.isnan(f"v{j}"), F.col(f"v{j}")).alias(f"v{j}") for j in range(len(view.columns))])
    key_names = [f"k{i}" for i in range(len(source_keys))]
    if partitions:
        rows = rows.repartition(partitions, *key_names)
    payload = ["e", *[f"v{j}" for j in range(len(view.columns))]]
    if view.event_id:
        first = rows.groupBy(*key_names, "id").agg(F.min(F.struct("a", *payload)).alias("w"))
        return first.select("id", *key_names, *[F.col(f"w.{c}").alias(c) for c in ("a", *payload)])
    return rows.groupBy(*key_names, *payload).agg(F.min("a").alias("a"))


def _join_view(entities: DataFrame, spec: WindowViewSpec, timestamp_col: str) -> DataFrame:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    view = spec.view
    n_keys = len(spec.join_keys)
    key_types = [entities.schema[k].dataType for k in spec.join_keys]
    ent_cols = entities.columns
    t = epoch_micros(entities, timestamp_col)
    # Both sides hash-partitioned alike by key: the deduplication, the union and the window's
    # sort then need no further shuffle.
    partitions = int(entities.sparkSession.conf.get("spark.sql.shuffle.partitions") or 200)
    key_cols = [f"__tm_wk{i}" for i in range(n_keys)]
    entity_side = entities.select(
        *[F.col(quote(k)).alias(f"__tm_wk{i}") for i, k in enumerate(spec.join_keys)],
        t.alias(_T),
        F.struct(*[F.col(quote(c)) for c in ent_cols]).alias(_ENT),
    ).repartition(partitions, *key_cols)
    events = dedupe_events(spec.source, view, spec.source_keys, key_types=key_types, partitions=partitions)
    ev_struct = F.struct("e", "a", *[f"v{j}" for j in range(len(view.columns))])
    ev_type = events.select(ev_struct.alias("s")).schema["s"].dataType
    ent_type = entity_side.schema[_ENT].dataType
    union = entity_side.withColumn(_EV, F.lit(None).cast(ev_type)).unionByName(events.select(
        *[F.col(f"k{i}").alias(f"__tm_wk{i}") for i in range(n_keys)],
        F.col("e").alias(_T),
        F.lit(None).cast(ent_type).alias(_ENT),
        ev_struct.alias(_EV),
    ))
    # Range bounds are inclusive: [t - (H - 1µs), t] is (t - H, t] in whole microseconds.
    frame = (Window.partitionBy(*key_cols).orderBy(_T)
             .rangeBetween(-(view.horizon_us - 1), 0))
    gathered = union.select(_T, _ENT, F.collect_list(_EV).over(frame).alias(_LIST)).where(F.col(_ENT).isNotNull())
    # Each (column, window) keeps its events once; its functions then reduce that one array.
    wanted = {(view.aggregations[i].column, view.aggregations[i].window_us) for i, _ in spec.outputs}
    inside = {cw: f"__tm_win{n}" for n, cw in enumerate(sorted(wanted))}
    gathered = gathered.select(_T, _ENT, *[_values_inside(F.col(_LIST), F.col(_T), c, w).alias(name)
                                           for (c, w), name in inside.items()])
    outputs = [F.col(f"{_ENT}.{quote(c)}").alias(c) for c in ent_cols]
    for index, name in spec.outputs:
        agg = view.aggregations[index]
        outputs.append(_reduce(agg.function, F.col(inside[(agg.column, agg.window_us)])).alias(name))
    return gathered.select(*outputs)


def _values_inside(events: Column, t: Column, column: int, window_us: int) -> Column:
    """The non-null values of ``column`` of the gathered events that had arrived by ``t`` and
    fall in ``(t - window, t]`` (the frame already bounds them by the longest window)."""
    from pyspark.sql import functions as F

    v = f"v{column}"
    inside = F.filter(events, lambda x: (x["a"] <= t) & (x["e"] > t - F.lit(window_us)) & x[v].isNotNull())
    return F.transform(inside, lambda x: x[v])


def _reduce(function: str, values: Column) -> Column:
    """One aggregation over an array of values (empty: count 0, sum 0.0, others null)."""
    from pyspark.sql import functions as F

    count = F.size(values)
    if function == "count":
        return count.cast("long")
    total = F.aggregate(values, F.lit(0.0).cast("double"), lambda acc, x: acc + x)
    if function == "sum":
        return total
    if function == "mean":
        return F.when(count > 0, total / count)
    return F.array_max(values) if function == "max" else F.array_min(values)
