"""Every Feast value type through the packed online value, without Redis.

For each type: a written ``Value`` proto comes back from the plugin's read conversion as exactly the
proto Feast's own Redis store returns (it stores ``SerializeToString()`` and parses it back), and
the fast reader's column holds what ``OnlineResponse.to_dict()`` gives for it. Nulls stay missing.
"""

from __future__ import annotations

import decimal
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pytest
from feast import Entity, FeatureView, Field, FileSource
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.types import Array, Bytes, Int64, Json, Map, String, Struct, UnixTimestamp
from feast.utils import _columns_to_proto_values
from feast.value_type import ValueType

from features.corrupt_values import CORRUPT_VALUES
from features.online_keys import INT_KEY, view_keys
from features.online_reader import _objects
from features.online_store import _columns_from_protos, _proto
from features.online_views import OnlineView, kind_of, read_batch
from features.packed_layout import PackedSchema, pack_rows
from features.value_protos import serialized_from_arrow

T = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
NOW = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z, µs
SAMPLES: dict[str, Any] = {  # one Python value per Feast value type, as a team would write it
    "BYTES": b"\x00\xffab", "STRING": "é,{x}", "INT32": -7, "INT64": 2**40, "DOUBLE": -0.125, "FLOAT": 0.5,
    "BOOL": True, "UNIX_TIMESTAMP": T, "BYTES_LIST": [b"a", b"\x00"], "STRING_LIST": ["a", "é"],
    "INT32_LIST": [1, -2], "INT64_LIST": [2**40, -1], "DOUBLE_LIST": [1.5, -0.25], "FLOAT_LIST": [0.5, 2.0],
    "BOOL_LIST": [True, False], "UNIX_TIMESTAMP_LIST": [T, T + timedelta(days=1)],
    "MAP": {"a": 1, "b": "x", "c": [1.5, 2.5], "d": {"e": True}}, "MAP_LIST": [{"a": 1}, {"b": "y"}],
    "BYTES_SET": {b"a", b"b"}, "STRING_SET": {"a", "b"}, "INT32_SET": {1, 2}, "INT64_SET": {3, 4},
    "DOUBLE_SET": {1.5}, "FLOAT_SET": {0.5}, "BOOL_SET": {True}, "UNIX_TIMESTAMP_SET": {T},
    "PDF_BYTES": b"%PDF-1.4", "IMAGE_BYTES": b"\x89PNG", "JSON": {"a": [1, 2], "b": None},
    "JSON_LIST": [{"a": 1}, [2]], "STRUCT": {"x": 1, "y": "z"}, "STRUCT_LIST": [{"x": 1}, {"x": 2}],
    "UUID": uuid.UUID(int=5), "TIME_UUID": uuid.uuid1(node=1, clock_seq=2), "UUID_LIST": [uuid.UUID(int=1)],
    "TIME_UUID_LIST": [uuid.uuid1(node=1, clock_seq=3)], "UUID_SET": {uuid.UUID(int=2)},
    "TIME_UUID_SET": {uuid.uuid1(node=1, clock_seq=4)}, "VALUE_LIST": [[1, 2], [3]],
    "VALUE_SET": [[1], [2, 3]], "DECIMAL": decimal.Decimal("1.25"), "DECIMAL_LIST": [decimal.Decimal("1.5")],
    "DECIMAL_SET": {decimal.Decimal(2)}, "SCALAR_MAP": {1: "a", 2: "b"},
    "ZONED_TIMESTAMP": datetime(2026, 1, 1, 12, tzinfo=ZoneInfo("Europe/Paris")),
}
TYPES = [vt for vt in ValueType if vt.name not in ("UNKNOWN", "NULL")]
SCALARS = {"BYTES", "STRING", "INT32", "INT64", "DOUBLE", "FLOAT", "BOOL"}


def test_the_samples_cover_every_feast_value_type() -> None:
    assert sorted(SAMPLES) == sorted(vt.name for vt in TYPES)


def _view(types: list[ValueType]) -> OnlineView:
    names = tuple(f"f_{vt.name.lower()}" for vt in types)
    return OnlineView("every_type", ("id",), (INT_KEY,), PackedSchema(names, tuple(kind_of(vt.name) for vt in types)), 0)


def _through_the_store(view: OnlineView, rows: list[dict[str, ValueProto]]) -> tuple[list[dict[str, ValueProto]], Any]:
    """What online_write_batch packs and online_read gives back, plus the read batch."""
    columns, valid = _columns_from_protos(view, rows)
    n = len(rows)
    values = pack_rows(view.schema, np.full(n, NOW), None, columns, valid)
    keys = view_keys(b"t:", view.name, [str(j).encode() for j in range(n)])
    batch = read_batch(view, values, keys, NOW)
    assert batch.found.all() and not batch.corrupt
    out = [{name: _proto(kind, batch.columns[i][j], bool(batch.valid[j, i]))
            for i, (name, kind) in enumerate(zip(view.schema.names, view.schema.kinds, strict=True))}
           for j in range(n)]
    return out, batch


def _feast_redis_returns(proto: ValueProto) -> ValueProto:
    """Feast's own Redis store writes ``SerializeToString()`` and reads it back with ``ParseFromString``."""
    return ValueProto.FromString(proto.SerializeToString())


def test_scalars_keep_their_fixed_slots_and_every_other_type_is_a_serialized_proto() -> None:
    for vt in TYPES:
        assert kind_of(vt.name) == ("value:" + vt.name if vt.name not in SCALARS else kind_of(vt.name))
    assert [kind_of(n) for n in ("DOUBLE", "FLOAT", "INT64", "INT32", "BOOL", "STRING", "BYTES")] == [
        "float64", "float32", "int64", "int32", "bool", "string", "bytes"]


@pytest.mark.parametrize("rows", [3, 12])  # the per-value decoder (a few) and the vectorised one
def test_every_type_reads_back_as_feast_redis_would_return_it_and_as_to_dict_gives_it(rows: int) -> None:
    view = _view(TYPES)
    written = [{name: python_values_to_proto_values([SAMPLES[vt.name]], vt)[0]
                for name, vt in zip(view.schema.names, TYPES, strict=True)} for _ in range(rows)]
    written[1] = {name: ValueProto() for name in view.schema.names}  # every feature null (unset)
    written[2] = {}  # features absent from the row altogether
    read, batch = _through_the_store(view, written)
    for j in range(rows):
        for i, (name, vt) in enumerate(zip(view.schema.names, TYPES, strict=True)):
            if j in (1, 2):
                assert read[j][name] == ValueProto() and not batch.valid[j, i], (name, j)
                continue
            assert read[j][name] == _feast_redis_returns(written[j][name]), name
            if vt.name not in SCALARS:
                got = _objects(view.schema.kinds[i], batch.column(i))[j]
                assert got == feast_value_type_to_python_type(written[j][name], vt), name
    assert feast_value_type_to_python_type(read[0]["f_map"], ValueType.MAP) == SAMPLES["MAP"]


def test_feasts_null_val_reads_as_missing() -> None:
    view = _view([ValueType.MAP, ValueType.INT64_LIST])
    from feast.protos.feast.types.Value_pb2 import Null

    read, batch = _through_the_store(view, [{"f_map": ValueProto(null_val=Null.NULL),
                                             "f_int64_list": ValueProto(null_val=Null.NULL)}])
    assert read == [{"f_map": ValueProto(), "f_int64_list": ValueProto()}]
    assert _objects("value:MAP", batch.column(0)).tolist() == [None]


def test_an_unparsable_proto_reads_as_missing_for_its_entity_and_is_reported() -> None:
    view = _view([ValueType.INT64_LIST])
    good = python_values_to_proto_values([[1, 2]], ValueType.INT64_LIST)[0].SerializeToString()
    values = pack_rows(view.schema, np.full(2, NOW), None, [np.array([good, b"\xff\xff\xff"], dtype=object)],
                       [None])
    keys = view_keys(b"t:", view.name, [b"1", b"2"])
    before = CORRUPT_VALUES.count
    batch = read_batch(view, values, keys, NOW)
    assert batch.found.tolist() == [True, False]
    assert [e.key for e in batch.corrupt] == [keys[1]] and CORRUPT_VALUES.count == before + 1
    assert _objects("value:INT64_LIST", batch.column(0)).tolist() == [[1, 2], None]


ARROW_CASES = [  # (type, Arrow column as Spark hands it to the writer: one value, then a null)
    (ValueType.INT64_LIST, pa.array([[1, 2**40], None], pa.list_(pa.int64()))),
    (ValueType.INT32_LIST, pa.array([[1, -2], None], pa.list_(pa.int32()))),
    (ValueType.DOUBLE_LIST, pa.array([[1.5, -0.25], None], pa.list_(pa.float64()))),
    (ValueType.FLOAT_LIST, pa.array([[0.5], None], pa.list_(pa.float32()))),
    (ValueType.BOOL_LIST, pa.array([[True, False], None], pa.list_(pa.bool_()))),
    (ValueType.STRING_LIST, pa.array([["a", "é"], None], pa.list_(pa.string()))),
    (ValueType.BYTES_LIST, pa.array([[b"a", b"\x00"], None], pa.list_(pa.binary()))),
    (ValueType.UNIX_TIMESTAMP, pa.array([T, None], pa.timestamp("us", tz="UTC"))),
    (ValueType.UNIX_TIMESTAMP_LIST, pa.array([[T], None], pa.list_(pa.timestamp("us", tz="UTC")))),
    (ValueType.JSON, pa.array(['{"a": [1, 2]}', None], pa.string())),
    (ValueType.STRUCT, pa.array([{"x": 1, "y": "z"}, None], pa.struct([("x", pa.int64()), ("y", pa.string())]))),
    (ValueType.PDF_BYTES, pa.array([b"%PDF", None], pa.binary())),
    (ValueType.UUID, pa.array([str(uuid.UUID(int=5)), None], pa.string())),
    (ValueType.DECIMAL, pa.array(["1.25", None], pa.string())),
]


@pytest.mark.parametrize(("vt", "column"), ARROW_CASES, ids=[vt.name for vt, _ in ARROW_CASES])
def test_the_spark_writer_builds_the_protos_feast_materialization_builds(vt: ValueType, column: pa.Array) -> None:
    ours, valid = serialized_from_arrow(column, "value:" + vt.name)
    theirs = _columns_to_proto_values(pa.RecordBatch.from_arrays([column], names=["c"]), [("c", vt)])["c"]
    assert ValueProto.FromString(ours[0]) == theirs[0]
    assert feast_value_type_to_python_type(ValueProto.FromString(ours[0]), vt) is not None
    # the null: missing for us; Feast's proto for it (unset, or its null-timestamp marker) reads as None
    assert feast_value_type_to_python_type(theirs[1], vt) is None
    assert not valid[1] or ValueProto.FromString(ours[1]) == theirs[1]


def test_the_spark_writer_turns_an_arrow_map_into_feasts_map() -> None:
    """Spark/Parquet hold a Map as map<string, string>; Arrow hands it over as (key, value) pairs,
    which Feast's own conversion refuses. The writer passes a dict, as Feast's Python API takes."""
    column = pa.array([[("a", "1"), ("b", "x")], None], pa.map_(pa.string(), pa.string()))
    ours, valid = serialized_from_arrow(column, "value:MAP")
    assert valid.tolist() == [True, False]
    expected = python_values_to_proto_values([{"a": "1", "b": "x"}], ValueType.MAP)[0]
    assert ValueProto.FromString(ours[0]) == expected
    assert feast_value_type_to_python_type(expected, ValueType.MAP) == {"a": "1", "b": "x"}


def test_a_view_with_maps_json_structs_lists_and_bytes_is_accepted() -> None:
    entity = Entity(name="thing", join_keys=["thing_id"])
    fv = FeatureView(
        name="rich", entities=[entity], ttl=timedelta(0),
        schema=[Field(name="thing_id", dtype=Int64), Field(name="m", dtype=Map), Field(name="j", dtype=Json),
                Field(name="s", dtype=Struct({"x": Int64, "y": String})), Field(name="l", dtype=Array(Int64)),
                Field(name="b", dtype=Bytes), Field(name="t", dtype=UnixTimestamp)],
        source=FileSource(path="unused.parquet", timestamp_field="ts"))
    view = OnlineView.from_feast(fv)
    assert dict(zip(view.schema.names, view.schema.kinds, strict=True)) == {
        "m": "value:MAP", "j": "value:JSON", "s": "value:STRUCT", "l": "value:INT64_LIST", "b": "bytes",
        "t": "value:UNIX_TIMESTAMP"}
