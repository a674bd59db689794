"""Windowed aggregations, declared as Feast ``StreamFeatureView``s, as tidemark computes them.

A team declares them with Feast's own classes::

    StreamFeatureView(
        name="customer_txn", entities=[customer], source=transactions_push,  # a PushSource
        timestamp_field="event_timestamp",
        schema=[Field(name="amt_sum_1h", dtype=Float64), Field(name="txn_count_1h", dtype=Int64)],
        aggregations=[Aggregation(column="amount", function="sum", time_window=timedelta(hours=1),
                                  name="amt_sum_1h"),
                      Aggregation(column="amount", function="count", time_window=timedelta(hours=1),
                                  name="txn_count_1h")],
        tags={"tidemark.event_id": "transaction_id"},
    )

The push source's ``batch_source`` holds the raw event history (a ``SparkSource``); its
``created_timestamp_column``, when set, is each event's arrival time.

**The definition.** The value of an aggregation ``(column, function, window w)`` for an entity at
time ``t`` is ``function`` over the events of that entity with event time in ``(t - w, t]`` that
had arrived by ``t``, each event id counted once per entity (its earliest arrival wins). An event that
arrives late counts from its arrival on, never before. Functions follow SQL over the column's
non-null values: ``count`` counts them, ``sum`` is 0 over none, ``mean``, ``min`` and ``max`` are
null over none. Offline (:mod:`features.window_join`) and online (:mod:`features.window_state`)
both compute exactly this.

The event id column is named by the view's tag ``tidemark.event_id``. Without one, an event's id
is its content (entity, event time and aggregated values): replaying an identical row counts once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from features.errors import ConfigError

__all__ = ["EVENT_ID_TAG", "FUNCTIONS", "StreamView", "WindowAggregation", "is_stream_view"]

# Feast warns on every StreamFeatureView it builds, registry reads included: once per view and
# call, hundreds of lines a run. tidemark computes these views itself; the warning says nothing here.
warnings.filterwarnings("ignore", message="Stream feature views are experimental", category=RuntimeWarning)

FUNCTIONS: Final = ("count", "sum", "mean", "min", "max")
EVENT_ID_TAG: Final = "tidemark.event_id"
MIN_WINDOW: Final = timedelta(minutes=1)
MAX_WINDOW: Final = timedelta(days=30)
_OUTPUT_TYPE: Final = {"count": "INT64", "sum": "DOUBLE", "mean": "DOUBLE", "min": "DOUBLE", "max": "DOUBLE"}


@dataclass(frozen=True)
class WindowAggregation:
    """One output feature: ``function`` of input column ``column`` over the trailing window."""

    name: str
    column: int       # index into StreamView.columns
    function: str
    window_us: int


@dataclass(frozen=True)
class StreamView:
    """What tidemark needs from one stream feature view, online and offline."""

    name: str
    push_source: str
    columns: tuple[str, ...]          # the aggregated input columns, in record order
    aggregations: tuple[WindowAggregation, ...]
    timestamp_field: str              # event time, in pushed rows and in the batch source
    arrival_column: str | None        # the batch source's created timestamp (arrival), if any
    event_id: str | None              # the event id column, if the view names one

    @property
    def horizon_us(self) -> int:
        """The longest window: an event older than this counts in no window any more."""
        return max(a.window_us for a in self.aggregations)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.aggregations)

    @property
    def output_kinds(self) -> tuple[str, ...]:
        """Packed kinds of the outputs: counts are int64, everything else float64."""
        return tuple("int64" if a.function == "count" else "float64" for a in self.aggregations)

    @classmethod
    def from_feast(cls, view: Any) -> StreamView:
        """Read a Feast ``StreamFeatureView`` with aggregations; raises ConfigError when tidemark
        cannot compute it exactly (unknown function, window out of range, outputs that do not
        match the schema, no push source)."""
        aggs = list(getattr(view, "aggregations", None) or [])
        if not aggs:
            raise ConfigError(f"feature view {view.name!r} declares no aggregations")
        source = getattr(view, "stream_source", None)
        batch = getattr(view, "batch_source", None)
        if source is None or type(source).__name__ != "PushSource" or batch is None:
            raise ConfigError(f"stream feature view {view.name!r} must read a PushSource whose batch_source "
                              "holds the event history (PushSource(name=..., batch_source=SparkSource(...)))")
        timestamp = getattr(view, "timestamp_field", "") or batch.timestamp_field
        if timestamp != batch.timestamp_field:
            raise ConfigError(f"stream feature view {view.name!r} aggregates on {timestamp!r} but its batch "
                              f"source's timestamp_field is {batch.timestamp_field!r}; use one column")
        columns: list[str] = []
        out: list[WindowAggregation] = []
        for agg in aggs:
            out.append(_aggregation(view.name, agg, columns))
        names = [a.name for a in out]
        if len(set(names)) != len(names):
            raise ConfigError(f"stream feature view {view.name!r} has two aggregations named alike: "
                              f"{sorted(n for n in names if names.count(n) > 1)}; give each a name=")
        _check_schema(view, out)
        event_id = (getattr(view, "tags", None) or {}).get(EVENT_ID_TAG) or None
        return cls(view.name, source.name, tuple(columns), tuple(out), timestamp,
                   batch.created_timestamp_column or None, event_id)


def is_stream_view(view: Any) -> bool:
    """True for a Feast view whose values tidemark computes as windowed aggregations."""
    return bool(getattr(view, "aggregations", None))


def _aggregation(view: str, agg: Any, columns: list[str]) -> WindowAggregation:
    function = (agg.function or "").lower()
    if function == "avg":
        function = "mean"
    if function not in FUNCTIONS:
        raise ConfigError(f"{view}: aggregation function {agg.function!r} of column {agg.column!r} is not "
                          f"supported; use one of {list(FUNCTIONS)}")
    window = agg.time_window
    if window is None or not MIN_WINDOW <= window <= MAX_WINDOW:
        raise ConfigError(f"{view}: aggregation {agg.function}({agg.column}) needs a time_window from "
                          f"{MIN_WINDOW} to {MAX_WINDOW}; got {window}")
    if agg.slide_interval not in (None, window):
        raise ConfigError(f"{view}: aggregation {agg.function}({agg.column}) sets slide_interval "
                          f"{agg.slide_interval}; tidemark's windows slide continuously (exact at every "
                          "event), so leave slide_interval unset")
    if not agg.column:
        raise ConfigError(f"{view}: an aggregation has no column")
    if agg.column not in columns:
        columns.append(agg.column)
    window_us = (window.days * 86_400 + window.seconds) * 1_000_000 + window.microseconds
    return WindowAggregation(agg.resolved_name(window), columns.index(agg.column), function, window_us)


def _check_schema(view: Any, aggs: list[WindowAggregation]) -> None:
    """The view's schema (its features) must be exactly the aggregations' outputs, typed."""
    keys = {c.name for c in getattr(view, "entity_columns", [])}  # Feast's inference may list them too
    declared = {f.name: f.dtype.to_value_type().name for f in view.features if f.name not in keys}
    wanted = {a.name: _OUTPUT_TYPE[a.function] for a in aggs}
    if set(declared) != set(wanted):
        raise ConfigError(
            f"stream feature view {view.name!r}: its schema must list exactly its aggregations' outputs. "
            f"Missing from schema: {sorted(set(wanted) - set(declared))}; not an aggregation: "
            f"{sorted(set(declared) - set(wanted))}")
    wrong = {n: (declared[n], t) for n, t in wanted.items() if declared[n] != t}
    if wrong:
        raise ConfigError(f"stream feature view {view.name!r}: declare counts as Int64 and the other "
                          f"functions as Float64; got " +
                          ", ".join(f"{n}: {have} (want {want})" for n, (have, want) in sorted(wrong.items())))
