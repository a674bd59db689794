"""Redis keys of the packed online store.

    <project>:{<join key>=<value>[,<join key>=<value>...]}:<feature view>
    tidemark:{account_id=1042}:account_spend

The part in braces is a Redis Cluster hash tag: every view of one entity hashes to the same slot,
so a read of all of an entity's views goes to one node. Join keys appear sorted by name. Integer
values are written in decimal; string values are percent-escaped (``%``, ``,``, ``=``, ``{``,
``}``), so distinct entity keys always give distinct Redis keys: ``("1", "23")`` and ``("12", "3")``
become ``a=1,b=23`` and ``a=12,b=3``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from features.errors import ConfigError, EntityFrameError

__all__ = ["entity_id_from_proto", "entity_ids", "key_prefix", "view_keys"]

INT_KEY: Final = "int"
STR_KEY: Final = "str"
_ESCAPES: Final = str.maketrans({"%": "%25", ",": "%2C", "=": "%3D", "{": "%7B", "}": "%7D"})


def key_prefix(project: str) -> bytes:
    """``<project>:`` — refused if the project name would break the hash tag or key parsing."""
    if not project or any(c in project for c in "{}:*?[]\\ "):
        raise ConfigError(f"project name {project!r} cannot be used in Redis keys; use letters, "
                          "digits, '_' and '-'")
    return project.encode() + b":"


def view_keys(project: bytes, view: str, ids: Sequence[bytes]) -> list[bytes]:
    """The Redis key of ``view`` for each entity id (from :func:`entity_ids`)."""
    head, tail = project + b"{", b"}:" + view.encode()
    return [head + e + tail for e in ids]


def entity_ids(join_keys: Sequence[str], kinds: Sequence[str], columns: Sequence[Any]) -> list[bytes]:
    """Canonical entity ids for ``n`` entities: ``columns[i]`` holds the values of ``join_keys[i]``.

    ``kinds[i]`` is ``"int"`` or ``"str"`` (the entity's declared value type): values are
    converted to it, so ``1042``, ``"1042"`` and ``1042.0`` name the same entity.
    """
    order = sorted(range(len(join_keys)), key=lambda i: join_keys[i])
    parts = [_encoded_values(join_keys[i], kinds[i], columns[i]) for i in order]
    names = [join_keys[i].encode() + b"=" for i in order]
    if len(parts) == 1:
        name = names[0]
        return [name + v for v in parts[0]]
    return [b",".join(n + v for n, v in zip(names, row, strict=True)) for row in zip(*parts, strict=True)]


def _encoded_values(name: str, kind: str, values: Any) -> list[bytes]:
    if kind == INT_KEY:
        return [b"%d" % v for v in _as_int64(name, values).tolist()]
    items = _as_list(values)
    if pd.isna(np.asarray(items, dtype=object)).any():
        raise EntityFrameError(f"join key {name!r} holds nulls; every entity needs a key")
    return [str(v).translate(_ESCAPES).encode() for v in items]


def _as_list(values: Any) -> list[Any]:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _as_int64(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        if array.dtype.kind == "u" and array.size and int(array.max()) > np.iinfo(np.int64).max:
            raise EntityFrameError(f"join key {name!r} must hold whole numbers (int64); got "
                                   f"{int(array.max())}, past the largest int64")  # never wrapped to another key
        return array.astype(np.int64, copy=False)
    if array.dtype.kind not in "fb":  # objects and strings: exact, one by one (no float rounding)
        return np.array([_exact_int(name, v) for v in _as_list(array)], dtype=np.int64)
    with np.errstate(invalid="ignore"):
        as_float = array.astype(np.float64)
        ints = as_float.astype(np.int64)
    bad = np.isnan(as_float) | (ints != as_float)
    if bad.any():
        raise EntityFrameError(f"join key {name!r} must hold whole numbers and no nulls; got "
                               f"{_as_list(array[bad])[:3]!r}")
    return ints


def _exact_int(name: str, value: Any) -> int:
    try:
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            number = int(value)
        else:
            try:
                number = int(str(value))
            except ValueError:
                as_float = float(value)
                if not as_float.is_integer():
                    raise ValueError(value) from None
                number = int(as_float)
        if not -(2**63) <= number < 2**63:
            raise OverflowError(value)
    except (TypeError, ValueError, OverflowError):
        raise EntityFrameError(f"join key {name!r} must hold whole numbers (int64) and no nulls; "
                               f"got {value!r}") from None
    return number


def entity_id_from_proto(entity_key: Any) -> bytes:
    """The canonical id of one Feast ``EntityKeyProto`` (what Feast passes the online store)."""
    pairs = sorted(zip(entity_key.join_keys, entity_key.entity_values, strict=True), key=lambda p: p[0])
    parts = []
    for name, value in pairs:
        which = value.WhichOneof("val")
        if which in ("int64_val", "int32_val"):
            text = b"%d" % getattr(value, which)
        elif which == "string_val":
            text = value.string_val.translate(_ESCAPES).encode()
        else:
            raise EntityFrameError(f"join key {name!r} has a {which} value; the online store keys "
                                   "entities by integers or strings")
        parts.append(name.encode() + b"=" + text)
    return b",".join(parts)
