"""Redis keys of the packed online store: distinct entities get distinct keys, every input form and
Feast's protos give the same key, and all views of one entity share a cluster slot."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pandas as pd
import pytest
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from features.errors import ConfigError, EntityFrameError
from features.online_keys import entity_id_from_proto, entity_ids, key_prefix, view_keys

PROPERTY = settings(max_examples=150, deadline=None)
I64 = st.integers(-(2**63), 2**63 - 1)
# Characters that would break a naive "k=v,k=v" key, the escape character itself, and some unicode.
TRICKY = st.lists(st.sampled_from([*",=%{}:12 ab\\*é日", "%2C", "%25", "=1"]), max_size=8).map("".join)


def proto(pairs: list[tuple[str, Any]]) -> EntityKey:
    """An EntityKeyProto as Feast builds it: ints as int64_val, strings as string_val."""
    values = [Value(int64_val=v) if isinstance(v, int) else Value(string_val=v) for _, v in pairs]
    return EntityKey(join_keys=[k for k, _ in pairs], entity_values=values)


# -- layout --------------------------------------------------------------------------------------


def test_key_layout_single_and_compound() -> None:
    project = key_prefix("tidemark")
    assert view_keys(project, "customer_txn_24h", entity_ids(["customer_id"], ["int"], [[1042]])) == [
        b"tidemark:{customer_id=1042}:customer_txn_24h"]
    ids = entity_ids(["merchant_id", "customer_id"], ["str", "int"], [["m,1"], [7]])
    assert ids == [b"customer_id=7,merchant_id=m%2C1"]  # join keys sorted by name, values escaped


def test_escaping_is_percent_encoding_of_the_separators() -> None:
    assert entity_ids(["k"], ["str"], [["a%b,c=d{e}f"]]) == [b"k=a%25b%2Cc%3Dd%7Be%7Df"]
    assert entity_ids(["k"], ["str"], [["%2C", ","]]) == [b"k=%252C", b"k=%2C"]


def test_shifted_boundaries_give_different_ids() -> None:
    ids = entity_ids(["a", "b"], ["str", "str"], [["1", "12"], ["23", "3"]])
    assert ids == [b"a=1,b=23", b"a=12,b=3"]
    assert entity_ids(["a", "b"], ["str", "str"], [["x,b=y"], ["z"]]) != entity_ids(
        ["a", "b"], ["str", "str"], [["x"], ["y,b=z"]])


# -- distinctness --------------------------------------------------------------------------------


@PROPERTY
@given(rows=st.lists(st.tuples(TRICKY, TRICKY, TRICKY), min_size=1, max_size=30, unique=True))
def test_distinct_string_tuples_give_distinct_ids(rows: list[tuple[str, str, str]]) -> None:
    columns = [np.array([r[i] for r in rows], dtype=object) for i in range(3)]
    ids = entity_ids(["a", "b", "c"], ["str", "str", "str"], columns)
    assert len(set(ids)) == len(rows)
    assert all(b"{" not in i and b"}" not in i for i in ids)  # the hash tag stays intact


@PROPERTY
@given(rows=st.lists(st.tuples(I64, TRICKY), min_size=1, max_size=30, unique=True))
def test_distinct_int_and_string_tuples_give_distinct_ids(rows: list[tuple[int, str]]) -> None:
    ids = entity_ids(["customer_id", "device"], ["int", "str"],
                     [np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]])
    assert len(set(ids)) == len(rows)


# -- input forms and protos ----------------------------------------------------------------------


@PROPERTY
@given(rows=st.lists(st.tuples(I64, TRICKY, st.integers(-(2**31), 2**31 - 1)), min_size=1, max_size=10),
       seed=st.integers(0, 1000))
def test_arrays_lists_series_and_protos_give_the_same_ids(rows: list[tuple[int, str, int]], seed: int) -> None:
    join_keys, kinds = ["customer_id", "channel", "shard"], ["int", "str", "int"]
    cols = [[r[i] for r in rows] for i in range(3)]
    forms = [
        cols,
        [np.array(cols[0], dtype=np.int64), np.array(cols[1], dtype=object), np.array(cols[2], dtype=np.int32)],
        [pd.Series(cols[0], dtype="int64"), pd.Series(cols[1], dtype="string"), pd.Series(cols[2], dtype="Int32")],
    ]
    expected = entity_ids(join_keys, kinds, forms[0])
    for form in forms[1:]:
        assert entity_ids(join_keys, kinds, form) == expected
    order = list(range(3))
    random.Random(seed).shuffle(order)  # the order of join keys in the call or the proto must not matter
    assert entity_ids([join_keys[o] for o in order], [kinds[o] for o in order], [cols[o] for o in order]) == expected
    for row, want in zip(rows, expected, strict=True):
        assert entity_id_from_proto(proto([(join_keys[o], row[o]) for o in order])) == want
        int32 = EntityKey(join_keys=join_keys, entity_values=[Value(int64_val=row[0]), Value(string_val=row[1]),
                                                              Value(int32_val=row[2])])
        assert entity_id_from_proto(int32) == want


def test_proto_with_an_unsupported_value_type_is_refused() -> None:
    key = EntityKey(join_keys=["customer_id"], entity_values=[Value(double_val=1.0)])
    with pytest.raises(EntityFrameError, match="'customer_id'.*double_val"):
        entity_id_from_proto(key)
    with pytest.raises(EntityFrameError, match="'customer_id'"):
        entity_id_from_proto(EntityKey(join_keys=["customer_id"], entity_values=[Value()]))


@pytest.mark.parametrize("values", [
    [1042], np.array([1042], dtype=np.int32), np.array([1042], dtype=np.uint16), [1042.0],
    np.array([1042.0]), pd.Series([1042], dtype="Int64"), ["1042"], np.array(["1042"]), ["1042.0"],
    np.array([1042], dtype=object),
], ids=lambda v: type(v).__name__ + ":" + str(getattr(v, "dtype", type(v[0]).__name__)))
def test_int_keys_accept_whole_numbers_in_any_form(values: Any) -> None:
    assert entity_ids(["customer_id"], ["int"], [values]) == [b"customer_id=1042"]


def test_int_keys_keep_the_int64_extremes() -> None:
    values = np.array([-(2**63), 2**63 - 1, -1, 0])
    assert entity_ids(["c"], ["int"], [values]) == [b"c=%d" % v for v in values.tolist()]


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("values", [
    [1.5], np.array([np.nan]), [None], [1, None], np.array([1.0, np.inf]), ["abc"], [""],
    pd.Series([1, None], dtype="Int64"), pd.Series([1.0, np.nan]),
], ids=["fraction", "nan", "none", "int-and-none", "inf", "text", "empty-text", "pd-NA", "series-nan"])
def test_int_keys_refuse_fractions_and_nulls_naming_the_key(values: Any) -> None:
    with pytest.raises(EntityFrameError, match="join key 'customer_id'"):
        entity_ids(["customer_id"], ["int"], [values])


@pytest.mark.parametrize("values", [[None], ["a", None], [float("nan")], np.array(["a", np.nan], dtype=object)],
                         ids=["none", "text-and-none", "nan", "object-nan"])
def test_str_keys_refuse_nulls_naming_the_key(values: Any) -> None:
    with pytest.raises(EntityFrameError, match="join key 'device'"):
        entity_ids(["device"], ["str"], [values])


def test_str_keys_refuse_pandas_na() -> None:
    with pytest.raises(EntityFrameError, match="join key 'device'"):
        entity_ids(["device"], ["str"], [pd.Series(["a", None], dtype="string")])


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_large_int_keys_in_object_or_string_arrays_stay_exact() -> None:
    big = [2**53 + 1, 2**53, 2**63 - 1]
    want = [entity_id_from_proto(proto([("customer_id", v)])) for v in big]
    assert want == [b"customer_id=%d" % v for v in big]
    assert entity_ids(["customer_id"], ["int"], [pd.Series(big, dtype=object)]) == want
    assert entity_ids(["customer_id"], ["int"], [[str(v) for v in big]]) == want


# -- hash tag and project ------------------------------------------------------------------------


@PROPERTY
@given(row=st.tuples(I64, TRICKY), views=st.lists(st.text(min_size=1, max_size=20), min_size=2, max_size=5))
def test_every_view_of_an_entity_hashes_to_the_same_cluster_slot(row: tuple[int, str], views: list[str]) -> None:
    [entity] = entity_ids(["customer_id", "device"], ["int", "str"], [[row[0]], [row[1]]])
    keys = [view_keys(key_prefix("fraud-prod_2"), v, [entity])[0] for v in views]
    # Redis hashes only the part between the first "{" and the next "}": the entity id.
    assert {key_slot(k) for k in keys} == {key_slot(entity)}


@pytest.mark.parametrize("project", ["", "a{b", "a}b", "a:b", "a b", "a*", "a?", "a[b]", "a\\b"])
def test_key_prefix_refuses_names_that_break_keys(project: str) -> None:
    with pytest.raises(ConfigError, match="cannot be used in Redis keys"):
        key_prefix(project)


def test_key_prefix_of_a_plain_name() -> None:
    assert key_prefix("fraud-prod_2") == b"fraud-prod_2:"
