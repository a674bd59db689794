"""The packed online value: one feature view's row for one entity in one compact binary string.

The format is documented in ``docs/online_format.md``; in short, every value is

    fixed part (same length for every row of a view)
        magic "TM" | version u8 | reserved u8 | schema fingerprint u32 BE
        event time (order-preserving u64 BE) | created time (same encoding)
        checksum u32 LE | null bitmap (u32 LE words) | one 8-byte slot per feature
    variable part: the bytes of string/bytes features and the serialized Feast ``Value`` protos
                   of ``value:<TYPE>`` features (lists, maps, JSON, structs, ...), in feature order

Times are microseconds since the Unix epoch (UTC). They are stored with the sign bit flipped and
big-endian, so comparing bytes 8..24 of two values compares (event time, created time): that is how
the Redis write script decides "newest wins" without parsing numbers.

Packing and unpacking work on whole batches with numpy: a batch of values of one view decodes with
one ``np.frombuffer`` over the joined bytes, never one Python object per feature.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, cast

import numpy as np

from features.errors import CorruptValueError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "NO_TIME",
    "VALUE_KIND_PREFIX",
    "PackedSchema",
    "UnpackedBatch",
    "is_variable",
    "pack_rows",
    "unpack_rows",
    "value_kind",
]

MAGIC: Final = b"TM"
FORMAT_VERSION: Final = 1
NO_TIME: Final = np.iinfo(np.int64).min  # "no created time"; sorts before every real time

_HEADER = 28  # magic 2, version 1, reserved 1, fingerprint 4, event 8, created 8, checksum 4
_CHECKSUM_WORD = 6  # the checksum is the 7th u32 word of the fixed part
_SIGN = np.uint64(1 << 63)
_SIGN_INT = 1 << 63
_NO_CHECKSUM = bytes(4)  # the checksum's bytes as the checksum covers them
_FEW = 8  # batches up to this size are decoded value by value (_unpack_few)

NUMERIC_KINDS: Final = frozenset({"float64", "float32", "int64", "int32", "bool"})
VARIABLE_KINDS: Final = frozenset({"string", "bytes"})
# Every Feast value type that is not one of the scalar kinds above (lists, sets, maps, JSON,
# structs, timestamps, UUIDs, decimals, ...) is kind "value:<ValueType name>": its slot holds a
# length like a string's, and its bytes are the serialized Feast ``Value`` proto. One generic
# encoding covers every type Feast has or adds, decodes to exactly the proto that was written (as
# Feast's own Redis store does), and keeps this module free of Feast: the proto is opaque bytes here.
VALUE_KIND_PREFIX: Final = "value:"
_SLOT_DTYPE: Final = {"float64": "<f8", "float32": "<f8", "int64": "<i8", "int32": "<i8",
                      "bool": "<i8", "string": "<u8", "bytes": "<u8"}


def value_kind(value_type: str) -> str:
    """The packed kind of a Feast value type stored as its serialized proto (e.g. ``value:MAP``)."""
    return VALUE_KIND_PREFIX + value_type


def is_variable(kind: str) -> bool:
    """True for kinds whose bytes live in the variable part (text, bytes, serialized protos)."""
    return kind in VARIABLE_KINDS or kind.startswith(VALUE_KIND_PREFIX)


def _known(kind: str) -> bool:
    return kind in NUMERIC_KINDS or is_variable(kind) and kind != VALUE_KIND_PREFIX


@dataclass(frozen=True)
class PackedSchema:
    """The features of one view, in storage order, each with its kind.

    Kinds: ``float64``, ``float32`` (stored as float64), ``int64``, ``int32``, ``bool``
    (stored as int64), ``string``, ``bytes`` and ``value:<Feast ValueType name>`` (a serialized
    Feast ``Value`` proto, kept as opaque bytes).
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = sorted({k for k in self.kinds if not _known(k)})
        if unknown or len(self.names) != len(self.kinds):
            raise ValueError(f"unsupported feature kinds {unknown}; supported: "
                             f"{sorted(NUMERIC_KINDS | VARIABLE_KINDS)} and {VALUE_KIND_PREFIX}<Feast ValueType>")

    @cached_property
    def fingerprint(self) -> int:
        """CRC-32 of the names and kinds: a value written under another definition is detected."""
        text = "\n".join(f"{n}:{k}" for n, k in zip(self.names, self.kinds, strict=True))
        return zlib.crc32(text.encode())

    @property
    def bitmap_words(self) -> int:
        return (len(self.names) + 31) // 32

    @property
    def fixed_size(self) -> int:
        """Bytes in the fixed part (a multiple of 4)."""
        return _HEADER + 4 * self.bitmap_words + 8 * len(self.names)

    @cached_property
    def has_variable(self) -> bool:
        return any(is_variable(k) for k in self.kinds)

    @cached_property
    def has_values(self) -> bool:
        """True when some feature is a serialized Feast ``Value`` proto (``value:`` kind)."""
        return any(k.startswith(VALUE_KIND_PREFIX) for k in self.kinds)

    @cached_property
    def header_word(self) -> np.uint64:
        """Bytes 0..8 of every value of this schema (magic, version, reserved, fingerprint) as one
        little-endian u64, so a batch is checked with one comparison."""
        head = MAGIC + bytes([FORMAT_VERSION, 0]) + self.fingerprint.to_bytes(4, "big")
        return np.frombuffer(head, dtype="<u8")[0]

    @cached_property
    def header_bytes(self) -> bytes:
        """Bytes 0..8 of every value of this schema."""
        return MAGIC + bytes([FORMAT_VERSION, 0]) + self.fingerprint.to_bytes(4, "big")

    @cached_property
    def text_features(self) -> tuple[tuple[int, str], ...]:
        """(index, kind) of the features held in the variable part, in schema order."""
        return tuple((i, k) for i, k in enumerate(self.kinds) if is_variable(k))

    @cached_property
    def slot_offset(self) -> int:
        """Where the 8-byte feature slots start in the fixed part."""
        return _HEADER + 4 * self.bitmap_words

    @cached_property
    def float_slots(self) -> np.ndarray:
        """True for features whose slot holds a float64 (else int64 or a text length)."""
        return np.array([k.startswith("float") for k in self.kinds], dtype=bool)

    @cached_property
    def slot_struct(self) -> struct.Struct:
        """One row's slots as Python numbers: float64 where :attr:`float_slots`, else int64."""
        return struct.Struct("<" + "".join("d" if is_float else "q" for is_float in self.float_slots.tolist()))

    def row_dtype(self) -> np.dtype:
        """A numpy structured dtype laying out the fixed part."""
        return self._row_dtype

    @cached_property
    def _row_dtype(self) -> np.dtype:
        fields = [("magic", "S2"), ("version", "u1"), ("reserved", "u1"), ("fingerprint", ">u4"),
                  ("event", ">u8"), ("created", ">u8"), ("checksum", "<u4"),
                  ("nulls", "<u4", (self.bitmap_words,))]
        fields += [(f"f{i}", _SLOT_DTYPE.get(k, "<u8")) for i, k in enumerate(self.kinds)]
        return np.dtype(fields)


class UnpackedBatch:
    """A decoded batch: one entry per input value, ``found`` false where the value was absent.

    Feature values stay in their 8-byte slots until asked for: :meth:`floats` gathers any subset
    as one float matrix, :attr:`columns` builds every feature's typed column.
    """

    def __init__(self, schema: PackedSchema, found: np.ndarray, event_us: np.ndarray,
                 created_us: np.ndarray, slots: np.ndarray, valid: np.ndarray,
                 text: dict[int, np.ndarray], corrupt: Sequence[CorruptValueError] = ()) -> None:
        self.schema = schema
        self.corrupt = list(corrupt)  # one error (key, reason) per value that read as missing for being corrupt
        self._present = found.copy()  # rows that had a value: where the slots belong
        self.found = found            # bool[n]; a reader may clear it (e.g. for stale values)
        self.event_us = event_us      # int64[n], NO_TIME where not found
        self.created_us = created_us  # int64[n], NO_TIME where absent
        self.valid = valid            # bool[n, features]: false for nulls and absent rows
        self._slots = slots           # int64[found rows, features], raw slot bits
        self._text = text             # feature index -> object[n] (str/bytes/None)

    def floats(self, features: Sequence[int] | np.ndarray) -> np.ndarray:
        """float64[n, len(features)] of numeric features; NaN for nulls and absent rows."""
        if len(self.found) == 1 and len(self._slots) == 1:  # one request's row: ~4 µs where numpy's calls cost ~20
            row, ok = self.schema.slot_struct.unpack(self._slots.tobytes()), self.valid[0].tolist()
            picked = features.tolist() if isinstance(features, np.ndarray) else features
            return np.array([[row[i] if ok[i] else np.nan for i in picked]], dtype=np.float64)
        chosen = features if isinstance(features, np.ndarray) else np.asarray(features, dtype=np.intp)
        raw = self._slots[:, chosen]  # a copy: fancy indexing
        is_float = self.schema.float_slots[chosen]
        gathered = np.where(is_float, raw.view(np.float64), raw.astype(np.float64))
        if self._present.all():  # a request's rows mostly are: no scatter into a NaN matrix
            out = gathered
        else:
            out = np.full((len(self.found), len(chosen)), np.nan)
            out[self._present] = gathered
        missing = ~self.valid[:, chosen]
        if missing.any():
            out[missing] = np.nan
        return out

    def column(self, i: int) -> np.ndarray:
        """Feature ``i`` for every row: float64, int64 (ints, bools) or objects (text, None)."""
        if i in self._text:
            return self._text[i]
        kind = self.schema.kinds[i]
        out = np.zeros(len(self.found), dtype=np.float64 if kind.startswith("float") else np.int64)
        raw = self._slots[:, i]
        out[self._present] = raw.view(np.float64) if kind.startswith("float") else raw
        return out

    def hide(self, rows: np.ndarray) -> None:
        """Treat ``rows`` (a bool mask) as not found: their values read as missing."""
        self.found &= ~rows
        self.valid[rows] = False
        for column in self._text.values():
            column[rows] = None

    def drop(self, rows: np.ndarray) -> None:
        """Treat ``rows`` (indices) as absent: not found, no values, no times."""
        mask = np.zeros(len(self.found), dtype=bool)
        mask[rows] = True
        self.hide(mask)
        self.event_us[mask] = NO_TIME
        self.created_us[mask] = NO_TIME

    @property
    def columns(self) -> list[np.ndarray]:
        """Every feature's column (see :meth:`column`)."""
        return [self.column(i) for i in range(len(self.schema.names))]


def _order_encode(micros: np.ndarray) -> np.ndarray:
    return micros.astype(np.int64).view(np.uint64) ^ _SIGN


def _order_decode(encoded: np.ndarray) -> np.ndarray:
    return (encoded.astype(np.uint64) ^ _SIGN).view(np.int64)


def _checksums(fixed: np.ndarray) -> np.ndarray:
    """CRC-32 (zlib) of each fixed part (one row per value), its checksum bytes taken as zero.

    CRC-32 detects every error of up to 3 bits at these lengths, and any language can check it.
    """
    zeroed = np.ascontiguousarray(fixed).view(np.uint8).copy()
    zeroed[:, 4 * _CHECKSUM_WORD:4 * _CHECKSUM_WORD + 4] = 0
    data, size = memoryview(zeroed.tobytes()), zeroed.shape[1]
    return np.fromiter((zlib.crc32(data[i:i + size]) for i in range(0, len(data), size)),
                       dtype=np.uint32, count=len(zeroed))


def pack_rows(
    schema: PackedSchema,
    event_us: np.ndarray,
    created_us: np.ndarray | None,
    columns: Sequence[np.ndarray],
    valid: Sequence[np.ndarray | None],
) -> list[bytes]:
    """Pack ``n`` rows of one view.

    ``event_us``/``created_us`` are microseconds since the epoch (UTC); ``created_us`` may be None
    or hold :data:`NO_TIME`. ``columns[i]`` holds feature ``i`` (numbers, or str/bytes objects for
    text kinds) and ``valid[i]`` marks its non-null entries (None: all valid).
    """
    n = len(event_us)
    rows = np.zeros(n, dtype=schema.row_dtype())
    rows["magic"], rows["version"], rows["fingerprint"] = MAGIC, FORMAT_VERSION, schema.fingerprint
    rows["event"] = _order_encode(np.asarray(event_us))
    rows["created"] = _order_encode(np.full(n, NO_TIME) if created_us is None else np.asarray(created_us))
    nulls = np.zeros((n, schema.bitmap_words), dtype=np.uint32)
    encoded_text: dict[int, list[bytes]] = {}
    for i, (kind, column, ok) in enumerate(zip(schema.kinds, columns, valid, strict=True)):
        ok = np.ones(n, dtype=bool) if ok is None else np.asarray(ok, dtype=bool)
        nulls[:, i // 32] |= (~ok).astype(np.uint32) << np.uint32(i % 32)
        if is_variable(kind):
            blobs = [_text_bytes(v, kind) if good else b"" for v, good in zip(column, ok, strict=True)]
            encoded_text[i] = blobs
            rows[f"f{i}"] = np.fromiter((len(b) for b in blobs), dtype=np.uint64, count=n)
        else:
            rows[f"f{i}"] = np.where(ok, np.asarray(column), 0)
    rows["nulls"] = nulls
    rows["checksum"] = _checksums(rows.view(np.uint32).reshape(n, schema.fixed_size // 4))
    size = schema.fixed_size
    buf = rows.tobytes()
    fixed = [buf[j * size:(j + 1) * size] for j in range(n)]
    if not encoded_text:
        return fixed
    order = sorted(encoded_text)
    return [b"".join([fixed[j], *(encoded_text[i][j] for i in order)]) for j in range(n)]


def _text_bytes(value: object, kind: str) -> bytes:
    """``value:`` kinds arrive already serialized (bytes), like ``bytes`` features."""
    if kind == "string":
        return str(value).encode()
    return bytes(value)  # type: ignore[call-overload]


def unpack_rows(schema: PackedSchema, values: Sequence[bytes | object | None], keys: Sequence[bytes]
                ) -> UnpackedBatch:
    """Decode values read for one view (None = key absent).

    A value that is not a well-formed value of this exact schema (wrong magic or version, another
    view definition, a bad length or checksum, a string that is not UTF-8, or not a string at all:
    anything but bytes, such as the reader's marker for a key of another Redis type) is that
    entity's *missing* value, as if absent: a corrupt value is a per-entity, permanent condition,
    and failing the batch would fail every healthy entity read beside it until someone deleted the
    key. The batch's :attr:`~UnpackedBatch.corrupt` holds a :class:`CorruptValueError` (key and
    reason) per such value, for the caller to count and report; raise one to be strict.
    """
    if len(values) <= _FEW:
        few = _unpack_few(schema, values)
        if few is not None:
            return few
    return _unpack_vectorised(schema, values, keys)


def _unpack_vectorised(schema: PackedSchema, values: Sequence[bytes | object | None], keys: Sequence[bytes]
                       ) -> UnpackedBatch:
    """:func:`unpack_rows` with one ``np.frombuffer`` over the batch's joined fixed parts."""
    n = len(values)
    size = schema.fixed_size
    corrupt: list[CorruptValueError] = []
    positions, present, fixed_buf = _well_sized(values, keys, size, schema.has_variable, corrupt)
    found = np.zeros(n, dtype=bool)
    found[positions] = True
    f = len(schema.names)
    valid = np.zeros((n, f), dtype=bool)
    event = np.full(n, NO_TIME, dtype=np.int64)
    created = np.full(n, NO_TIME, dtype=np.int64)
    text = {i: np.full(n, None, dtype=object) for i, k in enumerate(schema.kinds) if is_variable(k)}
    if not present:
        return UnpackedBatch(schema, found, event, created, np.zeros((0, f), np.int64), valid, text, corrupt)
    rows = np.frombuffer(fixed_buf, dtype=schema.row_dtype())
    as_bytes = np.frombuffer(fixed_buf, dtype=np.uint8).reshape(len(present), size)
    bad = _bad_fixed(schema, rows, as_bytes, [keys[j] for j in positions], corrupt)
    idx = np.asarray(positions, dtype=np.intp)
    event[idx] = _order_decode(rows["event"])
    created[idx] = _order_decode(rows["created"])
    nulls = np.unpackbits(as_bytes[:, _HEADER:schema.slot_offset], axis=1, bitorder="little")[:, :f]
    valid[idx] = nulls == 0
    slots = as_bytes[:, schema.slot_offset:].view("<i8")
    if schema.has_variable:
        bad |= _unpack_text(schema, slots, present, positions, [keys[j] for j in positions], valid, text, bad, corrupt)
    batch = UnpackedBatch(schema, found, event, created, slots, valid, text, corrupt)
    if bad.any():
        batch.drop(idx[bad])
    return batch


def _unpack_few(schema: PackedSchema, values: Sequence[bytes | object | None]) -> UnpackedBatch | None:
    """:func:`unpack_rows` of a few values (a request's), one Python pass per value: at this size
    the vectorised path's fixed count of numpy calls costs several times more. None as soon as a
    value is not well formed: the vectorised path then decodes the batch and says why."""
    size, f, slot_at = schema.fixed_size, len(schema.names), schema.slot_offset
    head, text = schema.header_bytes, schema.text_features
    found: list[bool] = []
    event: list[int] = []
    created: list[int] = []
    nulls: list[int] = []
    slots: list[bytes] = []
    texts: dict[int, list[Any]] = {i: [None] * len(values) for i, _ in text}
    for j, value in enumerate(values):
        if value is None:
            found.append(False)
            event.append(NO_TIME)
            created.append(NO_TIME)
            nulls.append(-1)
            continue
        if (type(value) is not bytes or (len(value) < size if text else len(value) != size)
                or value[:8] != head or int.from_bytes(value[24:28], "little")
                != zlib.crc32(value[28:size], zlib.crc32(_NO_CHECKSUM, zlib.crc32(value[:24])))):
            return None
        null_bits = int.from_bytes(value[_HEADER:slot_at], "little")
        if text:
            pos = size
            for i, kind in text:
                end = pos + int.from_bytes(value[slot_at + 8 * i:slot_at + 8 * i + 8], "little")
                if not null_bits >> i & 1:
                    decoded = _decode_text(value[pos:end], kind)
                    if decoded is None:
                        return None
                    texts[i][j] = decoded
                pos = end
            if pos != len(value):
                return None
        found.append(True)
        event.append(int.from_bytes(value[8:16], "big") - _SIGN_INT)
        created.append(int.from_bytes(value[16:24], "big") - _SIGN_INT)
        nulls.append(null_bits)
        slots.append(value[slot_at:size])
    bits = np.array([[not b >> i & 1 if b >= 0 else False for i in range(f)] for b in nulls], dtype=bool)
    columns = {}
    for i, column in texts.items():
        columns[i] = np.empty(len(values), dtype=object)
        columns[i][:] = column
    return UnpackedBatch(schema, np.array(found, dtype=bool), np.array(event, dtype=np.int64),
                         np.array(created, dtype=np.int64),
                         np.frombuffer(b"".join(slots), dtype="<i8").reshape(len(slots), f),
                         bits.reshape(len(values), f), columns)


def _well_sized(values: Sequence[bytes | object | None], keys: Sequence[bytes], size: int, variable: bool,
                corrupt: list[CorruptValueError]) -> tuple[list[int], list[bytes], bytes]:
    """The positions and values that are bytes of a possible length, and their fixed parts joined;
    the others (not bytes, too short, too long) are reported in ``corrupt``. The common case, every
    value well sized, costs a join and a length check, not a Python call per value."""
    if None in values:
        positions = [j for j, v in enumerate(values) if v is not None]
        present = [values[j] for j in positions]
    else:
        positions, present = list(range(len(values))), list(values)
    try:
        if variable:
            if all(len(v) >= size for v in present):  # type: ignore[arg-type]
                return positions, cast(list[bytes], present), b"".join(v[:size] for v in present)  # type: ignore[index]
        else:
            joined = b"".join(present)  # type: ignore[arg-type]
            if len(joined) == size * len(present):
                return positions, cast(list[bytes], present), joined
    except TypeError:  # a value that is not bytes: the marker for a key of another Redis type
        pass
    kept = []
    for j in positions:  # the rare case: sort out the bad values one by one
        why = _length_problem(values[j], size, variable)
        if why is None:
            kept.append(j)
        else:
            corrupt.append(CorruptValueError(keys[j], why))
    good = cast(list[bytes], [values[j] for j in kept])
    return kept, good, b"".join(v[:size] for v in good) if variable else b"".join(good)


def _length_problem(value: object, size: int, variable: bool) -> str | None:
    """Why ``value`` can't be a value of a view whose fixed part has ``size`` bytes, or None."""
    if not isinstance(value, bytes):
        kind = getattr(value, "type", type(value).__name__)
        return f"the key holds a Redis {kind}, not a string value"
    if len(value) < size if variable else len(value) != size:
        return (f"{len(value)} bytes, shorter than the {size}-byte fixed part of this view" if variable
                else f"{len(value)} bytes where this view's values have {size}")
    return None


def _bad_fixed(schema: PackedSchema, rows: np.ndarray, as_bytes: np.ndarray, keys: list[bytes],
               corrupt: list[CorruptValueError]) -> np.ndarray:
    """bool[rows]: a fixed part with a foreign header or a bad checksum (each reported in ``corrupt``)."""
    head = as_bytes[:, :8].view("<u8")[:, 0]
    bad = ~((head == schema.header_word) & (rows["checksum"] == _checksums(as_bytes)))
    for r in np.flatnonzero(bad):
        row = rows[r]
        if row["magic"] != MAGIC:
            why = "not a tidemark packed value (wrong magic bytes)"
        elif row["version"] != FORMAT_VERSION:
            why = f"format version {row['version']}, this reader understands {FORMAT_VERSION}"
        elif row["fingerprint"] != schema.fingerprint:
            why = ("written under another definition of this feature view; run `feast apply` (or "
                   "FeatureClient.apply()) and materialize again")
        else:
            why = "checksum mismatch: the value was altered after it was written"
        corrupt.append(CorruptValueError(keys[r], why))
    return bad


def _unpack_text(schema: PackedSchema, slots: np.ndarray, present: list[bytes], idx: list[int],
                 keys: list[bytes], valid: np.ndarray, text: dict[int, np.ndarray], skip: np.ndarray,
                 corrupt: list[CorruptValueError]) -> np.ndarray:
    """Decode the text features of the rows not in ``skip``; returns the rows found corrupt."""
    order = sorted(text)
    lengths = slots[:, order]
    bad = np.zeros(len(present), dtype=bool)
    for r, (j, value) in enumerate(zip(idx, present, strict=True)):
        if skip[r]:
            continue
        expected = schema.fixed_size + int(lengths[r].sum())
        if len(value) != expected:
            corrupt.append(CorruptValueError(keys[r], f"{len(value)} bytes; its header announces {expected}"))
            bad[r] = True
            continue
        pos = schema.fixed_size
        for c, i in enumerate(order):
            end = pos + int(lengths[r, c])
            if valid[j, i]:
                decoded = _decode_text(value[pos:end], schema.kinds[i])
                if decoded is None:
                    corrupt.append(CorruptValueError(keys[r], "a string feature is not valid UTF-8"))
                    bad[r] = True
                    break
                text[i][j] = decoded
            pos = end
    return bad


def _decode_text(chunk: bytes, kind: str) -> object:
    """The feature's value, or None when a string's bytes are not UTF-8. A ``value:`` kind's bytes
    stay a serialized proto: parsing it is the Feast-facing caller's job."""
    if kind != "string":
        return chunk
    try:
        return chunk.decode()
    except UnicodeDecodeError:
        return None
