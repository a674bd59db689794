"""Reading Feast stream feature views: what tidemark computes, and the definitions it refuses."""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from features.errors import ConfigError
from features.stream_views import StreamView
from features.window_read import aggregate
from features.window_state import state_header

warnings.filterwarnings("ignore", message=".*experimental.*")


def _view(aggregations: list[Any] | None = None, schema: dict[str, Any] | None = None, *, source: str = "push",
          tags: dict[str, str] | None = None) -> Any:
    from feast import Entity, Field, FileSource, PushSource, ValueType
    from feast.aggregation import Aggregation
    from feast.stream_feature_view import StreamFeatureView
    from feast.types import Float64, Int64

    history = FileSource(name="h", path="/tmp/none", timestamp_field="ts", created_timestamp_column="arrived")
    push = PushSource(name="events", batch_source=history)
    if aggregations is None:
        aggregations = [Aggregation(column="x", function="sum", time_window=timedelta(hours=1), name="x_sum_1h"),
                        Aggregation(column="x", function="count", time_window=timedelta(days=7), name="x_n_7d"),
                        Aggregation(column="y", function="avg", time_window=timedelta(minutes=5))]
    fields = schema if schema is not None else {
        (a.name or a.resolved_name(a.time_window)): Int64 if a.function == "count" else Float64 for a in aggregations}
    return StreamFeatureView(
        name="v", entities=[Entity(name="e", join_keys=["e_id"], value_type=ValueType.INT64)],
        source=push if source == "push" else history, timestamp_field="ts",
        schema=[Field(name=n, dtype=t) for n, t in fields.items()], aggregations=aggregations, tags=tags or {})


def test_reads_columns_windows_names_and_the_event_id():
    view = StreamView.from_feast(_view(tags={"tidemark.event_id": "id"}))
    assert view.columns == ("x", "y")
    assert [(a.name, a.column, a.function, a.window_us) for a in view.aggregations] == [
        ("x_sum_1h", 0, "sum", 3_600_000_000), ("x_n_7d", 0, "count", 7 * 86_400_000_000),
        ("avg_y_300s", 1, "mean", 300_000_000)]
    assert view.horizon_us == 7 * 86_400_000_000
    assert view.output_kinds == ("float64", "int64", "float64")
    assert (view.push_source, view.timestamp_field, view.arrival_column, view.event_id) == ("events", "ts", "arrived", "id")


@pytest.mark.parametrize(("change", "message"), [
    ({"function": "median"}, "median"),
    ({"time_window": timedelta(seconds=30)}, "time_window"),
    ({"time_window": timedelta(days=31)}, "time_window"),
    ({"slide_interval": timedelta(minutes=5)}, "slide_interval"),
])
def test_refuses_what_it_cannot_compute_exactly(change, message):
    from feast.aggregation import Aggregation

    args = {"column": "x", "function": "sum", "time_window": timedelta(hours=1), "name": "s"} | change
    with pytest.raises(ConfigError, match=message):
        StreamView.from_feast(_view([Aggregation(**args)], schema={"s": _float()}))


def test_the_schema_must_be_the_aggregations_outputs_typed():
    from feast.aggregation import Aggregation
    from feast.types import Int64

    agg = [Aggregation(column="x", function="max", time_window=timedelta(hours=1), name="m")]
    with pytest.raises(ConfigError, match=r"Missing from schema: \['m'\]"):
        StreamView.from_feast(_view(agg, schema={"other": _float()}))
    with pytest.raises(ConfigError, match="Float64"):
        StreamView.from_feast(_view(agg, schema={"m": Int64}))


def test_needs_a_push_source():
    with pytest.raises(ValueError, match="stream source"):  # Feast refuses a batch source itself
        _view(source="batch")


def test_a_state_of_another_definition_reads_as_corrupt_not_as_values():
    view = StreamView.from_feast(_view())
    record = np.zeros(1, dtype=[("e", "<i8"), ("id", "V8"), ("v", "<f8", (2,))]).tobytes()
    good = state_header(view) + bytes(8) + record
    other = b"TMW\x02\x00\x00\x00\x00" + bytes(8) + record  # another column list
    values = aggregate(view, [good, other, b"garbage", None], [b"k0", b"k1", b"k2", b"k3"], at_us=1)
    assert values.found.tolist() == [True, False, False, True]
    assert not values.valid[1:3].any() and len(values.corrupt) == 2
    assert values.slots[3, 1] == 0 and values.valid[3, 1]  # no events: count 0, a real value


def _float() -> Any:
    from feast.types import Float64

    return Float64


def test_out_of_range_times_ids_and_keys_are_typed_errors_never_wrapped_or_500s():
    """Found by the API fuzzer: integers past int64 overflowed (a 500) or would wrap silently."""
    from features.errors import EntityFrameError, EventError
    from features.online_keys import entity_ids
    from features.window_state import event_id_hashes, event_micros

    with pytest.raises(EventError) as caught:
        event_micros([0, 2**63, "2000-01-01T00:00:00Z"], "t")
    assert caught.value.row == 1
    with pytest.raises(EventError):
        event_micros(["2263-01-01T00:00:00Z", 2**70], "t")  # past nanoseconds: fine; past int64: refused
    assert event_micros(["2263-01-01T00:00:00Z"], "t")[0] == 9_246_182_400_000_000
    # one id value is one hash, whatever else is in the batch; past int64 an id is hashed as text
    mixed = event_id_hashes([0, 2**63, "x"], "id")
    assert mixed[0] == event_id_hashes(np.asarray([0]), "id")[0] and mixed[2] == event_id_hashes(["x"], "id")[0]
    with pytest.raises(EntityFrameError, match="past the largest int64"):
        entity_ids(["k"], ["int"], [np.asarray([2**63], dtype=np.uint64)])
