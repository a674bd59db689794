"""Stream windows and event ids: a few rows in plain Python give what the vectorised path gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.stream_views import StreamView, WindowAggregation
from features.window_read import _FEW_ENTITIES, _aggregate_few, _aggregate_many, _plan, aggregate
from features.window_state import layout

MINUTE = 60_000_000
VIEW = StreamView(
    name="v", push_source="events", columns=("x", "y"), timestamp_field="ts", arrival_column=None, event_id="id",
    aggregations=tuple(WindowAggregation(f"{f}_{c}_{w}", c, f, w * MINUTE)
                       for c in (0, 1) for w in (5, 60) for f in ("count", "sum", "mean", "min", "max")))
NOW = 1_000_000 * MINUTE

values = st.one_of(st.floats(-1e6, 1e6), st.just(float("nan")), st.just(-0.0))
event = st.tuples(st.integers(NOW - 90 * MINUTE, NOW + MINUTE), values, values)  # some past "now", some gone
state = st.one_of(st.none(), st.lists(event, max_size=8))  # 8 entities x 8 events x 4 windows: few


def _blob(events: list[tuple[int, float, float]] | None) -> bytes | None:
    if events is None:
        return None
    header, dtype = layout(VIEW)
    records = np.zeros(len(events), dtype=dtype)
    records["e"] = [e for e, _, _ in events]
    records["v"] = np.array([[x, y] for _, x, y in events], dtype=np.float64).reshape(len(events), 2)
    return header + bytes(8) + records.tobytes()


@settings(max_examples=200, deadline=None)
@given(states=st.lists(state, min_size=1, max_size=_FEW_ENTITIES),
       instants=st.one_of(st.just(NOW), st.lists(st.integers(NOW - 30 * MINUTE, NOW), min_size=_FEW_ENTITIES,
                                                 max_size=_FEW_ENTITIES)))
def test_a_few_entities_read_in_python_as_the_vectorised_read(states, instants):
    blobs = [_blob(s) for s in states]
    keys = [f"k{i}".encode() for i in range(len(blobs))]
    at = instants if isinstance(instants, int) else np.array(instants[:len(blobs)], dtype=np.int64)
    few = _aggregate_few(VIEW, _plan(VIEW), blobs, at)
    many = _aggregate_many(VIEW, _plan(VIEW), blobs, keys, at)
    assert few is not None
    assert few.valid.tolist() == many.valid.tolist()
    assert few.latest_us.tolist() == many.latest_us.tolist() and few.found.all() and many.found.all()
    counts = [a for a, agg in enumerate(VIEW.aggregations) if agg.function == "count"]
    assert few.slots[:, counts].tolist() == many.slots[:, counts].tolist()
    floats = [a for a in range(len(VIEW.aggregations)) if a not in counts]
    np.testing.assert_allclose(few.slots[:, floats].view(np.float64), many.slots[:, floats].view(np.float64),
                               rtol=1e-12, atol=1e-6)  # sums: another order of the same additions


def test_a_corrupt_state_or_many_events_go_to_the_vectorised_read_which_names_the_reason():
    good = _blob([(NOW - MINUTE, 1.0, 2.0)])
    assert _aggregate_few(VIEW, _plan(VIEW), [good, b"garbage"], NOW) is None
    read = aggregate(VIEW, [good, b"garbage"], [b"k0", b"k1"], at_us=NOW)
    assert read.found.tolist() == [True, False] and len(read.corrupt) == 1
    crowded = _blob([(NOW - s, 1.0, 1.0) for s in range(1, 1000)])
    assert _aggregate_few(VIEW, _plan(VIEW), [crowded], NOW) is None  # 999 events x 4 windows: numpy's
    assert aggregate(VIEW, [crowded], [b"k"], at_us=NOW).slots[0, 0] == 999  # count_x_5: all within 5 min


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=16))
def test_a_requests_event_ids_hash_as_a_bulk_push_hashes_them(ids):
    from features.window_state import _FEW_IDS, event_id_hashes

    one_by_one = event_id_hashes(np.array(ids, dtype=np.int64), "id")  # Python integers
    bulk = event_id_hashes(np.array(ids * (_FEW_IDS + 1), dtype=np.int64), "id")  # numpy's path
    assert len(ids) <= _FEW_IDS < len(ids) * (_FEW_IDS + 1)
    assert bulk.tobytes()[:len(one_by_one.tobytes())] == one_by_one.tobytes()
