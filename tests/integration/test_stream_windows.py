"""Windowed aggregations of stream feature views: Spark offline and Redis online, against the
row-by-row definition (hypothesis), and against each other at several "now"s."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.asof_join import ROW_ID
from features.online_keys import entity_ids, key_prefix, view_keys
from features.redis_client import RedisOnline
from features.stream_views import StreamView, WindowAggregation
from features.window_join import WindowViewSpec, window_join
from features.window_read import aggregate
from features.window_state import prepare_events, push_events
from tests.features.window_oracle import Event, close, dedupe, window_value

pytestmark = pytest.mark.integration

MINUTE = 60_000_000
BASE = 1_780_000_000_000_000 - 1_780_000_000_000_000 % MINUTE  # a whole minute, in 2026
KEYS = ["a", "b", "c"]
WINDOWS = {"1m": MINUTE, "7m": 7 * MINUTE, "30m": 30 * MINUTE}
VIEW = StreamView(
    name="w", push_source="events", columns=("x",),
    aggregations=tuple(WindowAggregation(f"{f}_{w}", 0, f, us) for w, us in WINDOWS.items()
                       for f in ("count", "sum", "mean", "min", "max")),
    timestamp_field="event_timestamp", arrival_column="arrival", event_id="event_id")
EVENT_SCHEMA = "k string, event_timestamp timestamp, arrival timestamp, x double, event_id long"
_projects = itertools.count()

# An event: key, event minute (a small range: ties), an offset within the minute (the window's
# edges, exactly), arrival delay in minutes (None: arrival unknown), value, and whether it replays
# an earlier event (same id and content, arriving again later).
events_strategy = st.lists(
    st.tuples(st.sampled_from(KEYS), st.integers(0, 40), st.sampled_from([0, 0, 1, MINUTE - 1]),
              st.one_of(st.none(), st.integers(0, 35)),
              st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)),
              st.booleans()),
    max_size=40)


def _events(drawn: list, *, nulls: bool = True) -> list[Event]:
    out: list[Event] = []
    for key, minute, offset, delay, value, replay in drawn:
        if not nulls and value is None:
            value = 1.5
        if replay and out:
            first = out[len(out) // 2]
            later = first.arrival_us + (delay or 0) * MINUTE
            out.append(Event(first.key, first.event_us, later, first.value, first.event_id))
            continue
        e = BASE + minute * MINUTE + offset
        arrival = e if delay is None else e + delay * MINUTE
        out.append(Event(key, e, arrival, value, len(out)))
    return out


def _spark_events(spark, events: list[Event], *, arrival_known: bool = True):
    rows = [(ev.key, pd.Timestamp(ev.event_us, unit="us", tz="UTC").to_pydatetime(),
             pd.Timestamp(ev.arrival_us, unit="us", tz="UTC").to_pydatetime() if arrival_known else None,
             ev.value, ev.event_id) for ev in events]
    return spark.createDataFrame(rows, schema=EVENT_SCHEMA)


def _offline(spark, events: list[Event], entity_rows: list[tuple[str, int]]) -> pd.DataFrame:
    entities = spark.createDataFrame(
        [(i, k, pd.Timestamp(t, unit="us", tz="UTC").to_pydatetime()) for i, (k, t) in enumerate(entity_rows)],
        schema=f"{ROW_ID} long, k string, event_timestamp timestamp")
    spec = WindowViewSpec(VIEW, _spark_events(spark, events), ("k",), ("k",),
                          tuple((i, a.name) for i, a in enumerate(VIEW.aggregations)))
    return window_join(entities, [spec], timestamp_col="event_timestamp").orderBy(ROW_ID).toPandas()


def _plain(value: object) -> object:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return int(value) if isinstance(value, np.integer | int) else float(value)  # type: ignore[arg-type]


# Entity rows: at free times, or on an event's critical instants (its event time, its arrival, the
# instant it leaves a window, and one microsecond either side), where an off-by-one would show.
times_strategy = st.lists(st.one_of(
    st.tuples(st.just("free"), st.sampled_from(KEYS), st.integers(-5, 80), st.sampled_from([0, 1, MINUTE - 1])),
    st.tuples(st.just("edge"), st.integers(0, 39), st.sampled_from(["e", "a", *WINDOWS]), st.sampled_from([-1, 0, 1]))),
    min_size=1, max_size=12)


def _entity_rows(times: list, events: list[Event]) -> list[tuple[str, int]]:
    rows = []
    for kind, *rest in times:
        if kind == "free":
            key, minute, offset = rest
            rows.append((key, BASE + minute * MINUTE + offset))
        elif events:
            index, edge, shift = rest
            ev = events[index % len(events)]
            at = ev.event_us if edge == "e" else ev.arrival_us if edge == "a" else ev.event_us + WINDOWS[edge]
            rows.append((ev.key, at + shift))
    return rows or [("a", BASE)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=events_strategy, times=times_strategy)
def test_offline_windows_follow_the_definition(spark, drawn, times):
    """Late and out-of-order events, replays of one id, nulls, emptied windows, entity rows before
    the first event and exactly on window edges: every aggregation equals the definition."""
    events = _events(drawn)
    entity_rows = _entity_rows(times, events)
    got = _offline(spark, events, entity_rows)
    unique = dedupe(events)
    for i, (key, t) in enumerate(entity_rows):
        for agg in VIEW.aggregations:
            want = window_value(unique, key, t, agg.window_us, agg.function)
            value = _plain(got.iloc[i][agg.name])
            assert close(value, want), f"row {i} ({key}, t={t - BASE}µs) {agg.name}: got {value}, want {want}"


def test_an_event_without_arrival_time_counts_from_its_event_time(spark):
    events = [Event("a", BASE, BASE, 2.0, 1), Event("a", BASE + MINUTE, BASE + MINUTE, 3.0, 2)]
    spec = WindowViewSpec(VIEW, _spark_events(spark, events, arrival_known=False), ("k",), ("k",), ((5, "count_7m"),))
    entities = spark.createDataFrame([(0, "a", pd.Timestamp(BASE + MINUTE, unit="us", tz="UTC").to_pydatetime())],
                                     schema=f"{ROW_ID} long, k string, event_timestamp timestamp")
    assert window_join(entities, [spec], timestamp_col="event_timestamp").first()["count_7m"] == 2


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=events_strategy, times=times_strategy)
def test_online_equals_offline_at_every_now(spark, redis_url, drawn, times):
    """Events pushed as they arrive (replays included) give, at each "now", the offline values."""
    events = _events(drawn, nulls=False)
    redis_online = RedisOnline(redis_url, timeout_ms=2_000)
    project = key_prefix(f"sw{next(_projects)}")
    pending = sorted(events, key=lambda ev: ev.arrival_us)
    nows_us = sorted({t for _, t in _entity_rows(times, events)})[:5]
    entity_rows = [(k, t) for t in nows_us for k in KEYS]
    offline = _offline(spark, events, entity_rows)
    for t in nows_us:
        arrived = [ev for ev in pending if ev.arrival_us <= t]
        pending = [ev for ev in pending if ev.arrival_us > t]
        for ev in arrived:  # one push per arrival instant, at that instant
            frame = pd.DataFrame({"k": [ev.key], "event_timestamp": [pd.Timestamp(ev.event_us, unit="us", tz="UTC")],
                                  "x": [ev.value], "event_id": [ev.event_id]})
            push_events(redis_online, project, VIEW, prepare_events(VIEW, ("k",), ("str",), frame, at_us=ev.arrival_us),
                        at_us=ev.arrival_us)
        keys = view_keys(project, VIEW.name, entity_ids(["k"], ["str"], [KEYS]))
        state = aggregate(VIEW, redis_online.get_many(keys), keys, at_us=t)
        for j, key in enumerate(KEYS):
            row = offline.iloc[entity_rows.index((key, t))]
            for a, agg in enumerate(VIEW.aggregations):
                raw = state.slots[j, a]
                online = (None if not state.valid[j, a] else
                          int(raw) if agg.function == "count" else float(np.int64(raw).view(np.float64)))
                assert close(online, _plain(row[agg.name])), (
                    f"{key} at {(t - BASE) / MINUTE:.2f} min, {agg.name}: online {online}, offline {row[agg.name]}")


def test_each_edge_of_the_definition_exactly(spark):
    """One late event (event time e, arrival a = e + 2 min): absent at a - 1µs, counted from a on,
    still in the 7-minute window at e + 7 min - 1µs and gone at e + 7 min; a replay of its id
    that arrived earlier wins, so the event counts from that earlier arrival."""
    e = BASE + 10 * MINUTE
    late = Event("a", e, e + 2 * MINUTE, 4.0, 1)
    times = [e - 1, e, late.arrival_us - 1, late.arrival_us, e + 7 * MINUTE - 1, e + 7 * MINUTE]
    got = _offline(spark, [late], [("a", t) for t in times])
    assert got["count_7m"].tolist() == [0, 0, 0, 1, 1, 0]
    assert got["sum_7m"].tolist() == [0.0, 0.0, 0.0, 4.0, 4.0, 0.0]
    assert [_plain(v) for v in got["max_7m"]] == [None, None, None, 4.0, 4.0, None]
    replayed = [late, Event("a", e, e + MINUTE, 4.0, 1)]
    got = _offline(spark, replayed, [("a", e + MINUTE - 1), ("a", e + MINUTE)])
    assert got["count_7m"].tolist() == [0, 1]
