"""Feast values that are not packed scalars (lists, sets, maps, JSON, structs, timestamps, ...):
Feast ``Value`` protos in, serialized bytes in the packed value, protos or Python values out.

The packed layout keeps such a feature as the bytes of its ``Value`` proto
(:data:`features.packed_layout.VALUE_KIND_PREFIX`), so:

* ``PackedRedisOnlineStore.online_read`` returns exactly the proto that was written, as Feast's
  own Redis store does (it stores the same serialization);
* the fast reader and the SDK return what Feast's ``get_online_features(...).to_dict()`` gives,
  because they convert with the function ``to_dict`` uses (``feast_value_type_to_python_type``);
* the Spark materializer builds the protos from Arrow with the function Feast's own
  materialization uses (``python_values_to_proto_values``), so both write paths store the same bytes.

This module imports Feast, which takes seconds: the online read path imports it only for views
that hold such features (:func:`features.online_views.read_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.message import DecodeError

from features.errors import CorruptValueError
from features.packed_layout import VALUE_KIND_PREFIX, UnpackedBatch

__all__ = ["parse_value_columns", "python_column", "serialized_column", "serialized_from_arrow"]


def _value_type(kind: str) -> ValueType:
    return ValueType[kind.removeprefix(VALUE_KIND_PREFIX)]


def serialized_column(protos: Sequence[ValueProto | None]) -> tuple[np.ndarray, np.ndarray]:
    """Serialized protos (objects) and their validity: an absent proto, an unset one and Feast's
    ``null_val`` are null (stored as a null, read back as an unset ``Value``, as scalars are)."""
    n = len(protos)
    column = np.full(n, None, dtype=object)
    valid = np.zeros(n, dtype=bool)
    for j, proto in enumerate(protos):
        if proto is not None and proto.WhichOneof("val") not in (None, "null_val"):
            column[j] = proto.SerializeToString()
            valid[j] = True
    return column, valid


def serialized_from_arrow(values: Any, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A materialized Arrow column of a ``value:`` kind, as Feast's own materialization turns it
    into protos (``python_values_to_proto_values`` over ``to_numpy``), serialized. An Arrow map
    (Parquet's and Spark's form of a Feast ``Map``) is handed over as dicts: Arrow gives (key, value)
    pairs, which Feast's conversion refuses."""
    if pa.types.is_map(values.type):
        python: Any = [None if v is None else dict(v) for v in values.to_pylist()]
    else:
        python = values.to_numpy(zero_copy_only=False)
    protos = python_values_to_proto_values(python, _value_type(kind))
    return serialized_column(protos)


def parse_value_columns(batch: UnpackedBatch, keys: Sequence[bytes]) -> None:
    """Replace the serialized protos of ``batch``'s ``value:`` features by parsed ``Value`` protos.

    The variable part is not under the checksum: bytes that do not parse make their entity's value
    corrupt (missing, reported in ``batch.corrupt``), as a string that is not UTF-8 does.
    """
    bad: list[int] = []
    for i, kind in batch.schema.text_features:
        if not kind.startswith(VALUE_KIND_PREFIX):
            continue
        column = batch.column(i)
        for j in np.flatnonzero(batch.valid[:, i]).tolist():
            try:
                column[j] = ValueProto.FromString(column[j])
            except DecodeError:
                name = batch.schema.names[i]
                batch.corrupt.append(CorruptValueError(keys[j], f"feature {name!r} is not a serialized Feast Value"))
                bad.append(j)
    if bad:
        batch.drop(np.unique(np.asarray(bad, dtype=np.intp)))


def python_column(column: np.ndarray, kind: str) -> np.ndarray:
    """Parsed protos (None where missing) as the Python values ``OnlineResponse.to_dict()`` gives."""
    value_type = _value_type(kind)
    out = np.full(len(column), None, dtype=object)
    for j, proto in enumerate(column):
        if proto is not None:
            out[j] = feast_value_type_to_python_type(proto, value_type)
    return out
