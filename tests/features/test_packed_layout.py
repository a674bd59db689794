"""The packed online value: round trips, byte order of times, corruption detection, sizes, fingerprints.

The format is documented in ``docs/online_format.md``; the layout tests here pin it byte by byte.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.errors import CorruptValueError
from features.packed_layout import (
    FORMAT_VERSION,
    MAGIC,
    NO_TIME,
    NUMERIC_KINDS,
    VARIABLE_KINDS,
    PackedSchema,
    UnpackedBatch,
    pack_rows,
    unpack_rows,
)
from features.redis_client import WrongType

KINDS = ("float64", "float32", "int64", "int32", "bool", "string", "bytes")
FIXED_KINDS = tuple(k for k in KINDS if k in NUMERIC_KINDS)
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
KEY = b"tm:{customer_id=1042}:customer_txn_24h"
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(PROPERTY, max_examples=60)

names_st = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=10)
micros_st = st.one_of(st.integers(I64_MIN, I64_MAX),
                      st.sampled_from([NO_TIME, I64_MAX, -1, 0, 1, -86_400_000_000, 1_767_225_600_000_000]))


def value_st(kind: str) -> st.SearchStrategy[Any]:
    """Values of one kind; floats are NaN-free, float32 ones exactly representable in float32."""
    return {
        "float64": st.floats(allow_nan=False),
        "float32": st.floats(allow_nan=False, width=32),
        "int64": st.one_of(st.integers(I64_MIN, I64_MAX), st.sampled_from([I64_MIN, I64_MAX, 0, -1])),
        "int32": st.integers(-(2**31), 2**31 - 1),
        "bool": st.booleans(),
        "string": st.text(max_size=12),
        "bytes": st.binary(max_size=12),
    }[kind]


_DTYPE = {"float64": np.float64, "float32": np.float32, "int64": np.int64, "int32": np.int32, "bool": np.bool_}


def schema_st(kinds: tuple[str, ...] = KINDS, max_features: int = 40) -> st.SearchStrategy[PackedSchema]:
    return st.lists(names_st, min_size=1, max_size=max_features, unique=True).flatmap(
        lambda names: st.tuples(st.just(tuple(names)), st.lists(st.sampled_from(kinds), min_size=len(names),
                                                               max_size=len(names)).map(tuple))
    ).map(lambda nk: PackedSchema(*nk))


@st.composite
def batches(draw: st.DrawFn, kinds: tuple[str, ...] = KINDS, max_features: int = 40) -> dict[str, Any]:
    """A schema and ``n`` rows for it: columns, validity (None = all valid), event and created times."""
    schema = draw(schema_st(kinds, max_features))
    n = draw(st.integers(1, 6))
    columns, valid, raw = [], [], []
    for kind in schema.kinds:
        values = draw(st.lists(value_st(kind), min_size=n, max_size=n))
        ok = draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=n, max_size=n)))
        ok_arr = None if ok is None else np.array(ok, dtype=bool)
        if kind in VARIABLE_KINDS:
            # Nulls of text features may be None (what Arrow gives) or any value: neither is stored.
            col = np.array([v if ok is None or ok[j] or draw(st.booleans()) else None
                            for j, v in enumerate(values)], dtype=object)
        else:
            col = np.array(values, dtype=_DTYPE[kind])
        columns.append(col)
        valid.append(ok_arr)
        raw.append(values)
    event = np.array(draw(st.lists(micros_st, min_size=n, max_size=n)), dtype=np.int64)
    created = draw(st.one_of(st.none(), st.lists(micros_st, min_size=n, max_size=n)))
    return {"schema": schema, "n": n, "columns": columns, "valid": valid, "raw": raw, "event": event,
            "created": None if created is None else np.array(created, dtype=np.int64)}


def pack(b: dict[str, Any]) -> list[bytes]:
    return pack_rows(b["schema"], b["event"], b["created"], b["columns"], b["valid"])


def one_value(schema: PackedSchema, event: int = 1_767_225_600_000_000, created: int | None = None,
              values: list[Any] | None = None) -> bytes:
    """One value of ``schema`` with every feature valid (simple defaults per kind)."""
    default = {"float64": 1.5, "float32": 0.25, "int64": -7, "int32": 42, "bool": True, "string": "é€x",
               "bytes": b"\x00\xff"}
    values = values if values is not None else [default[k] for k in schema.kinds]
    columns = [np.array([v], dtype=object if k in VARIABLE_KINDS else _DTYPE[k])
               for v, k in zip(values, schema.kinds, strict=True)]
    created_arr = None if created is None else np.array([created], dtype=np.int64)
    return pack_rows(schema, np.array([event], dtype=np.int64), created_arr, columns, [None] * len(columns))[0]


def reference_checksum(fixed: bytes) -> int:
    """The checksum exactly as ``docs/online_format.md`` describes it: CRC-32 of the fixed part
    with bytes 24..28 (the checksum itself) zeroed."""
    return zlib.crc32(fixed[:24] + b"\0\0\0\0" + fixed[28:])


def with_checksum(value: bytes, fixed_size: int) -> bytes:
    """``value`` with its checksum recomputed: a forgery that passes the checksum."""
    out = bytearray(value)
    out[24:28] = reference_checksum(bytes(out[:fixed_size])).to_bytes(4, "little")
    return bytes(out)


def read_as_corrupt(schema: PackedSchema, values: list[bytes | None], keys: list[bytes], bad: bytes,
                    match: str = "") -> UnpackedBatch:
    """Unpack ``values``: the one at key ``bad`` reads as missing, and the batch reports it as a
    CorruptValueError naming the key (and ``match``); the batch is returned for more checks."""
    out = unpack_rows(schema, values, keys)
    named = [e for e in out.corrupt if e.key == bad]
    assert len(named) == 1 and isinstance(named[0], CorruptValueError), out.corrupt
    assert re.search(re.escape(repr(bad.decode())) + ".*" + match, str(named[0])), str(named[0])
    row = keys.index(bad)
    assert not out.found[row] and not out.valid[row].any() and out.event_us[row] == NO_TIME
    assert all(column[row] is None for i, column in enumerate(out.columns) if schema.kinds[i] in ("string", "bytes"))
    return out


# -- round trip ----------------------------------------------------------------------------------


@PROPERTY
@given(b=batches(), data=st.data())
def test_round_trip_gives_back_values_validity_and_times(b: dict[str, Any], data: st.DataObject) -> None:
    schema, n = b["schema"], b["n"]
    packed = pack(b)
    absent = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    stored: list[bytes | None] = [None if gone else v for v, gone in zip(packed, absent, strict=True)]
    keys = [b"k%d" % j for j in range(n)]

    out = unpack_rows(schema, stored, keys)

    found = ~np.array(absent)
    assert out.found.tolist() == found.tolist()
    created = np.full(n, NO_TIME) if b["created"] is None else b["created"]
    assert out.event_us.tolist() == np.where(found, b["event"], NO_TIME).tolist()
    assert out.created_us.tolist() == np.where(found, created, NO_TIME).tolist()
    for i, kind in enumerate(schema.kinds):
        ok = np.ones(n, dtype=bool) if b["valid"][i] is None else b["valid"][i]
        assert out.valid[:, i].tolist() == (ok & found).tolist()
        for j in range(n):
            got, want = out.columns[i][j], b["raw"][i][j]
            if kind in VARIABLE_KINDS:
                assert got == (want if ok[j] and found[j] else None)
                assert got is None or type(got) is (str if kind == "string" else bytes)
            elif not (ok[j] and found[j]):
                assert got == 0
            elif kind.startswith("float"):
                # float32 is stored as float64: exact, bit for bit (signed zeros and infinities too)
                assert np.float64(want).view(np.int64) == np.float64(got).view(np.int64)
            else:
                assert int(got) == int(want)


def test_round_trip_of_extremes_and_nulls() -> None:
    schema = PackedSchema(("amt", "cnt", "flag", "country", "blob", "small"),
                          ("float64", "int64", "bool", "string", "bytes", "float32"))
    columns = [np.array([-0.0, np.inf, 1e308]), np.array([I64_MIN, I64_MAX, 0]), np.array([True, False, True]),
               np.array(["", "日本🚀", None], dtype=object), np.array([b"", b"\x00" * 3, b"x"], dtype=object),
               np.array([np.float32(0.1), np.float32(-3.5), np.float32(0)], dtype=np.float32)]
    valid = [None, None, np.array([True, True, False]), np.array([True, True, False]), None, None]
    event = np.array([-1, 0, I64_MAX])
    created = np.array([NO_TIME, I64_MIN + 1, 5])

    out = unpack_rows(schema, pack_rows(schema, event, created, columns, valid), [b"a", b"b", b"c"])

    assert out.columns[0].tolist() == [-0.0, np.inf, 1e308] and np.signbit(out.columns[0][0])
    assert out.columns[1].tolist() == [I64_MIN, I64_MAX, 0]
    assert out.columns[2].tolist() == [1, 0, 0] and out.valid[:, 2].tolist() == [True, True, False]
    assert out.columns[3].tolist() == ["", "日本🚀", None]
    assert out.columns[4].tolist() == [b"", b"\x00\x00\x00", b"x"]
    assert out.columns[5].tolist() == [float(np.float32(0.1)), -3.5, 0.0]
    assert out.event_us.tolist() == event.tolist() and out.created_us.tolist() == created.tolist()


def test_created_none_means_no_time() -> None:
    schema = PackedSchema(("x",), ("int64",))
    value = pack_rows(schema, np.array([5]), None, [np.array([1])], [None])[0]
    assert value[16:24] == b"\x00" * 8  # NO_TIME encodes to all zero bytes: it sorts first
    assert unpack_rows(schema, [value], [KEY]).created_us.tolist() == [NO_TIME]


def test_all_absent_batch_and_empty_batch_decode() -> None:
    schema = PackedSchema(("x", "s"), ("float64", "string"))
    out = unpack_rows(schema, [None, None], [b"a", b"b"])
    assert out.found.tolist() == [False, False] and not out.valid.any()
    assert out.columns[1].tolist() == [None, None] and out.event_us.tolist() == [NO_TIME, NO_TIME]
    assert len(unpack_rows(schema, [], []).found) == 0


def test_pack_of_no_rows_is_empty() -> None:
    schema = PackedSchema(("x",), ("int64",))
    assert pack_rows(schema, np.zeros(0, dtype=np.int64), None, [np.zeros(0, dtype=np.int64)], [None]) == []


# -- layout --------------------------------------------------------------------------------------


def test_layout_matches_the_documented_offsets() -> None:
    schema = PackedSchema(("amt", "n", "tag"), ("float64", "int32", "string"))
    columns = [np.array([2.5]), np.array([-3], dtype=np.int32), np.array(["ab"], dtype=object)]
    value = pack_rows(schema, np.array([1]), np.array([-2]), columns, [None, np.array([False]), None])[0]

    assert value[0:2] == MAGIC == b"TM" and value[2] == FORMAT_VERSION == 1 and value[3] == 0
    assert struct.unpack(">I", value[4:8])[0] == schema.fingerprint
    assert value[8:16] == (1 ^ 2**63).to_bytes(8, "big")
    assert value[16:24] == ((-2 % 2**64) ^ 2**63).to_bytes(8, "big")
    assert struct.unpack("<I", value[24:28])[0] == reference_checksum(value[:schema.fixed_size])
    assert struct.unpack("<I", value[28:32])[0] == 0b010  # feature 1 is null
    assert struct.unpack("<d", value[32:40])[0] == 2.5
    assert value[40:48] == b"\x00" * 8  # a null's slot is zero
    assert struct.unpack("<Q", value[48:56])[0] == 2  # a text slot holds the byte length
    assert value[56:] == b"ab" and schema.fixed_size == 56


def test_null_bitmap_spans_words_for_more_than_32_features() -> None:
    schema = PackedSchema(tuple(f"f{i}" for i in range(33)), ("int64",) * 33)
    valid = [np.array([i not in (0, 31, 32)]) for i in range(33)]
    value = pack_rows(schema, np.array([0]), None, [np.array([i]) for i in range(33)], valid)[0]
    assert struct.unpack("<II", value[28:36]) == (1 | 1 << 31, 1)
    assert unpack_rows(schema, [value], [KEY]).valid[0].tolist() == [bool(v[0]) for v in valid]


@QUICK
@given(b=batches(kinds=FIXED_KINDS))
def test_values_without_text_have_the_fixed_size(b: dict[str, Any]) -> None:
    schema = b["schema"]
    assert all(len(v) == schema.fixed_size for v in pack(b))
    words = (len(schema.names) + 31) // 32
    assert schema.fixed_size == 28 + 4 * words + 8 * len(schema.names)


@QUICK
@given(b=batches())
def test_sizes_are_multiples_of_4_and_text_follows_the_fixed_part(b: dict[str, Any]) -> None:
    schema = b["schema"]
    assert schema.fixed_size % 4 == 0
    for value in pack(b):
        lengths = [struct.unpack_from("<Q", value, schema.fixed_size - 8 * (len(schema.kinds) - i))[0]
                   for i, k in enumerate(schema.kinds) if k in VARIABLE_KINDS]
        assert len(value) == schema.fixed_size + sum(lengths)


# -- ordering ------------------------------------------------------------------------------------


@PROPERTY
@given(a=st.tuples(micros_st, micros_st), b=st.tuples(micros_st, micros_st))
def test_bytes_8_to_24_compare_like_event_then_created(a: tuple[int, int], b: tuple[int, int]) -> None:
    schema = PackedSchema(("x", "s"), ("float64", "string"))
    va, vb = (one_value(schema, event=t[0], created=t[1], values=[0.0, "z"]) for t in (a, b))
    sign = (a > b) - (a < b)
    assert (va[8:24] > vb[8:24]) - (va[8:24] < vb[8:24]) == sign
    # the comparison the write script makes, one unsigned byte at a time
    first = next(((x > y) - (x < y) for x, y in zip(va[8:24], vb[8:24], strict=True) if x != y), 0)
    assert first == sign


def test_time_order_across_the_epoch_and_no_time() -> None:
    schema = PackedSchema(("x",), ("int64",))
    times = [NO_TIME, -(10**15), -1, 0, 1, 10**15, I64_MAX]
    encoded = [one_value(schema, event=t, values=[0])[8:16] for t in times]
    assert encoded == sorted(encoded) and len(set(encoded)) == len(times)


# -- corruption ----------------------------------------------------------------------------------


@PROPERTY
@given(b=batches(max_features=5), data=st.data())
def test_any_single_bit_flip_in_the_fixed_part_is_detected(b: dict[str, Any], data: st.DataObject) -> None:
    schema = b["schema"]
    value = pack(b)[0]
    bit = data.draw(st.integers(0, schema.fixed_size * 8 - 1))
    flipped = bytearray(value)
    flipped[bit // 8] ^= 1 << (bit % 8)
    read_as_corrupt(schema, [bytes(flipped)], [KEY], KEY)


def test_a_constructed_single_bit_flip_is_detected() -> None:
    # Found by solving fold(S) == fold(S + 2**b * m_k) for the sum S: the flip turns a=0 into a=2.
    schema = PackedSchema(("a", "b"), ("int64", "int64"))
    value = pack_rows(schema, np.array([0]), None, [np.array([0]), np.array([957894099239626066])], [None, None])[0]
    flipped = bytearray(value)
    flipped[32] ^= 0b10
    out = read_as_corrupt(schema, [bytes(flipped)], [KEY], KEY)
    assert np.isnan(out.floats([0, 1])).all()  # not a=2, a value that was never written


def test_a_bad_value_reads_as_missing_and_the_rest_of_its_batch_is_served() -> None:
    schema = PackedSchema(("x", "s"), ("int64", "string"))
    good, bad = one_value(schema, values=[7, "ok"]), bytearray(one_value(schema))
    bad[30] ^= 0x40
    keys = [b"tm:{id=1}:v", b"tm:{id=2}:v", b"tm:{id=3}:v", b"tm:{id=4}:v"]
    out = read_as_corrupt(schema, [good, None, bytes(bad), good], keys, keys[2], "checksum")
    assert out.found.tolist() == [True, False, False, True] and len(out.corrupt) == 1
    assert out.column(0)[[0, 3]].tolist() == [7, 7] and out.column(1).tolist() == ["ok", None, None, "ok"]


def test_a_key_of_another_redis_type_reads_as_missing() -> None:
    schema = PackedSchema(("x",), ("float64",))
    out = read_as_corrupt(schema, [one_value(schema), WrongType("hash")], [b"tm:{id=1}:v", KEY], KEY, "Redis hash")
    assert out.found.tolist() == [True, False]


@pytest.mark.parametrize("kinds", [("int64", "float64"), ("string", "bytes", "int32")])
@pytest.mark.parametrize("mangle", [
    pytest.param(lambda v, size: v[:-1], id="truncated-by-one"),
    pytest.param(lambda v, size: v[:size - 4], id="truncated-in-fixed-part"),
    pytest.param(lambda v, size: v[:3], id="three-bytes"),
    pytest.param(lambda v, size: b"", id="empty"),
    pytest.param(lambda v, size: v + b"\x00", id="extended"),
    pytest.param(lambda v, size: v + v, id="doubled"),
])
def test_bad_lengths_are_refused(kinds: tuple[str, ...], mangle: Any) -> None:
    schema = PackedSchema(tuple(f"f{i}" for i in range(len(kinds))), kinds)
    value = mangle(one_value(schema), schema.fixed_size)
    out = read_as_corrupt(schema, [one_value(schema), value], [b"tm:{id=0}:v", KEY], KEY, "bytes")
    assert out.found.tolist() == [True, False]


def test_wrong_magic_is_refused_even_with_a_valid_checksum() -> None:
    schema = PackedSchema(("x",), ("float64",))
    forged = with_checksum(b"XX" + one_value(schema)[2:], schema.fixed_size)
    read_as_corrupt(schema, [forged], [KEY], KEY, "magic")


@pytest.mark.parametrize("version", [0, 2, 255])
def test_another_format_version_is_refused_even_with_a_valid_checksum(version: int) -> None:
    schema = PackedSchema(("x", "s"), ("float64", "string"))
    value = bytearray(one_value(schema))
    value[2] = version
    read_as_corrupt(schema, [with_checksum(bytes(value), schema.fixed_size)], [KEY], KEY, f"format version {version}")


@pytest.mark.parametrize("other", [
    PackedSchema(("amount", "count"), ("float64", "int64")),   # renamed feature, same size
    PackedSchema(("amt", "count"), ("int64", "int64")),        # another kind, same size
    PackedSchema(("count", "amt"), ("int64", "float64")),      # reordered
    PackedSchema(("amt",), ("float64",)),                      # fewer features
    PackedSchema(("amt", "count", "x"), ("float64", "int64", "string")),
], ids=["renamed", "retyped", "reordered", "fewer", "more"])
def test_a_value_of_another_schema_is_refused(other: PackedSchema) -> None:
    schema = PackedSchema(("amt", "count"), ("float64", "int64"))
    read_as_corrupt(schema, [one_value(other)], [KEY], KEY,
                    "another definition" if other.fixed_size == schema.fixed_size else "")


def test_invalid_utf8_in_a_string_feature_is_refused() -> None:
    schema = PackedSchema(("s", "b"), ("string", "bytes"))
    value = one_value(schema, values=["ab", b"\xff\xfe"])
    # The checksum covers the fixed part only, so this swap goes unseen until the text is decoded.
    broken = value[:schema.fixed_size] + b"\xc3(" + value[schema.fixed_size + 2:]
    read_as_corrupt(schema, [broken], [KEY], KEY, "UTF-8")
    assert unpack_rows(schema, [value], [KEY]).columns[1].tolist() == [b"\xff\xfe"]


def test_stored_checksum_matches_the_documented_algorithm() -> None:
    for schema in (PackedSchema(("a",), ("bool",)), PackedSchema(tuple(f"f{i}" for i in range(40)), ("int32",) * 40)):
        value = one_value(schema)
        assert int.from_bytes(value[24:28], "little") == reference_checksum(value[:schema.fixed_size])


# -- schema --------------------------------------------------------------------------------------


def test_schema_refuses_unknown_kinds_and_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="decimal"):
        PackedSchema(("x",), ("decimal",))
    with pytest.raises(ValueError):
        PackedSchema(("x", "y"), ("int64",))


def test_fingerprint_is_the_documented_crc32() -> None:
    schema = PackedSchema(("amt", "tag"), ("float64", "string"))
    assert schema.fingerprint == zlib.crc32(b"amt:float64\ntag:string")


@settings(PROPERTY, max_examples=100)
@given(schema=schema_st(max_features=10), data=st.data())
def test_fingerprint_changes_with_a_name_a_kind_or_the_order(schema: PackedSchema, data: st.DataObject) -> None:
    names, kinds = list(schema.names), list(schema.kinds)
    i = data.draw(st.integers(0, len(names) - 1))
    new_name = data.draw(names_st.filter(lambda s: s not in names))
    renamed = PackedSchema(tuple(names[:i] + [new_name] + names[i + 1:]), schema.kinds)
    new_kind = data.draw(st.sampled_from([k for k in KINDS if k != kinds[i]]))
    retyped = PackedSchema(schema.names, tuple(kinds[:i] + [new_kind] + kinds[i + 1:]))
    variants = [renamed, retyped]
    if len(names) > 1:
        j = data.draw(st.integers(0, len(names) - 1).filter(lambda j: j != i))
        order = list(range(len(names)))
        order[i], order[j] = j, i
        variants.append(PackedSchema(tuple(names[o] for o in order), tuple(kinds[o] for o in order)))
    for other in variants:
        assert other.fingerprint != schema.fingerprint, other


# -- the documented example ----------------------------------------------------------------------


def example_value() -> bytes:
    """The worked example of docs/online_format.md (customer 1042's customer_txn_24h row)."""
    schema = PackedSchema(("txn_count_24h", "amt_sum_24h", "channel"), ("int64", "float64", "string"))
    event = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    created = event + 90_000_000   # 90 s later
    return pack_rows(schema, np.array([event]), np.array([created]),
                     [np.array([3]), np.array([0.0]), np.array(["pos"], dtype=object)],
                     [None, np.array([False]), None])[0]


def test_the_worked_example_in_the_docs_is_exact() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "online_format.md").read_text()
    block = doc.split("<!-- example-value -->", 1)[1].split("```", 2)[1]
    dumped = bytes.fromhex("".join(line.split("|")[0].split(":", 1)[1] for line in block.splitlines()
                                   if ":" in line))
    assert dumped == example_value(), "regenerate the hex dump in docs/online_format.md"


# -- the two decoders --------------------------------------------------------------------------


def _same_batch(a: UnpackedBatch, b: UnpackedBatch) -> None:
    np.testing.assert_array_equal(a.found, b.found)
    np.testing.assert_array_equal(a.event_us, b.event_us)
    np.testing.assert_array_equal(a.created_us, b.created_us)
    np.testing.assert_array_equal(a.valid, b.valid)
    for i, kind in enumerate(a.schema.kinds):
        x, y = a.column(i), b.column(i)
        assert x.dtype == y.dtype
        if kind in VARIABLE_KINDS:
            assert x.tolist() == y.tolist()
        else:
            np.testing.assert_array_equal(x.view(np.int64), y.view(np.int64))  # bit for bit, NaN and -0.0 too


@PROPERTY
@given(b=batches(), data=st.data())
def test_the_per_value_decoder_of_a_few_values_matches_the_vectorised_one(b: dict[str, Any],
                                                                          data: st.DataObject) -> None:
    from features.packed_layout import _FEW, _unpack_few, _unpack_vectorised

    values: list[bytes | None] = list(pack(b))
    values = [None if data.draw(st.booleans()) else v for v in values][:_FEW]
    keys = [b"k%d" % j for j in range(len(values))]
    few = _unpack_few(b["schema"], values)
    assert few is not None
    _same_batch(few, _unpack_vectorised(b["schema"], values, keys))


def test_a_few_values_with_a_corrupt_one_take_the_vectorised_path_and_say_why() -> None:
    schema = PackedSchema(("n", "s"), ("int64", "string"))
    good = one_value(schema, values=[3, "pos"])
    bad = good[:-1] + b"\xff"  # not UTF-8
    out = read_as_corrupt(schema, [good, bad], [b"a", b"b"], b"b", "UTF-8")
    assert out.found.tolist() == [True, False] and out.column(1).tolist() == ["pos", None]


@settings(max_examples=100, deadline=None)
@given(kinds=st.lists(st.sampled_from(["float64", "float32", "int64", "int32", "bool"]), min_size=1, max_size=8),
       bits=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=8, max_size=8),
       valid=st.lists(st.booleans(), min_size=8, max_size=8), data=st.data())
def test_one_rows_floats_are_the_floats_of_that_row_in_a_bigger_batch(kinds, bits, valid, data):
    """A request's one row takes a plain-Python path through ``floats``; a batch takes numpy's."""
    schema = PackedSchema(tuple(f"f{i}" for i in range(len(kinds))), tuple(kinds))
    f = len(kinds)
    row, ok = np.array([bits[:f]], dtype=np.int64), np.array([valid[:f]], dtype=bool)
    chosen = data.draw(st.lists(st.integers(0, f - 1), min_size=1, max_size=f))

    def batch(n: int) -> UnpackedBatch:
        times = np.zeros(n, dtype=np.int64)
        return UnpackedBatch(schema, np.ones(n, dtype=bool), times, times.copy(), np.repeat(row, n, axis=0),
                             np.repeat(ok, n, axis=0), {})

    one, two = batch(1).floats(chosen), batch(2).floats(np.asarray(chosen, dtype=np.intp))
    assert one.shape == (1, len(chosen)) and one.dtype == np.float64
    assert one.tobytes() == two[:1].tobytes() or np.array_equal(one, two[:1], equal_nan=True)
