"""The rows of a ``POST /v1/models/{name}/predict`` body, checked field by field into numpy columns.

What a row may hold, all from the champion's model contract: its join keys (integer ids are
64-bit integers, an integral float counting as in JSON Schema; text ids are non-empty text), its
request fields (numbers, finite, or null; text of at most 200 characters that can be stored, so no
lone surrogate, or null) and, optionally, the row ids its label source joins on that are not join
keys (an event id: a 64-bit integer or null, passed through to the prediction log, typed int64
there, so that delayed labels can be joined to the logged predictions; the model never sees them). Every problem is a
field-level message (``{"loc": ["rows", 3, "amount"], "msg": "..."}``) that says what to send
instead; nothing that passes can fail later in the prediction log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["RowSchema", "unicode_text", "validate_rows"]

_MAX_TEXT = 200


class RowSchema:
    """What a request row carries for one model: join keys with their kinds (``"int"`` or
    ``"str"``), request fields (``text`` among them are text), and optional pass-through ids."""

    def __init__(self, join_keys: Sequence[tuple[str, str]], request_columns: Sequence[str],
                 text: frozenset[str] = frozenset(), passthrough: Sequence[str] = ()) -> None:
        self.join_keys = tuple(join_keys)
        self.kinds = dict(self.join_keys)
        self.request_columns = tuple(request_columns)
        self.text = text
        self.passthrough = tuple(p for p in passthrough if p not in self.kinds and p not in self.request_columns)

    @property
    def required(self) -> tuple[str, ...]:
        return (*self.kinds, *self.request_columns)


def validate_rows(body: Any, schema: RowSchema, max_rows: int) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Rows as numpy columns (integer ids int64, text ids and text as objects with None, numbers
    float64 with NaN for null), or field-level errors (``loc``, ``msg``); at most 20 errors."""
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        return {}, [{"loc": ["rows"], "msg": 'expected an object {"rows": [ {...}, ... ]}'}]
    rows = body["rows"]
    if not rows:
        return {}, [{"loc": ["rows"], "msg": "rows is empty; send at least one row"}]
    if len(rows) > max_rows:
        return {}, [{"loc": ["rows"], "msg": f"{len(rows):,} rows; at most {max_rows:,} per request"}]
    errors: list[dict[str, Any]] = []
    columns: dict[str, list[Any]] = {f: [] for f in (*schema.required, *schema.passthrough)}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            errors.append({"loc": ["rows", i], "msg": "each row must be an object"})
            continue
        for name in schema.passthrough:
            value, problem = _id(row.get(name), "int", name in row, optional=True)
            if problem:
                errors.append({"loc": ["rows", i, name], "msg": problem})
            columns[name].append(value)
        for name in schema.required:
            if name in schema.kinds:
                value, problem = _id(row.get(name), schema.kinds[name], name in row, optional=False)
            else:
                value, problem = row.get(name), _problem(row.get(name), name in row, name in schema.text)
            if problem:
                errors.append({"loc": ["rows", i, name], "msg": problem})
            columns[name].append(value)
        if len(errors) >= 20:
            break
    if errors:
        return {}, errors
    return {name: _array(values, _dtype(name, schema)) for name, values in columns.items()}, []


def _dtype(name: str, schema: RowSchema) -> Any:
    if name in schema.kinds:
        return np.int64 if schema.kinds[name] == "int" else object
    return object if name in schema.text or name in schema.passthrough else np.float64


def _id(value: Any, kind: str | None, present: bool, *, optional: bool) -> tuple[Any, str | None]:
    """An id as an int64 (``kind="int"``), non-empty text (``"str"``) or either (None)."""
    if value is None:
        if optional:
            return None, None
        return None, "required (" + ("an integer id)" if kind == "int" else "a text id)" if kind == "str" else "an id)")
    if kind != "str":
        number = _int64(value)
        if number is not None:
            return number, None
    if kind != "int" and isinstance(value, str) and value and len(value) <= _MAX_TEXT and unicode_text(value):
        return value, None
    want = {"int": "a 64-bit integer", "str": f"non-empty text (at most {_MAX_TEXT} characters)"}.get(
        kind or "", "a 64-bit integer or text")
    return None, f"must be {want}{' or null' if optional else ''}, got {value!r:.40}"


def _array(values: list[Any], dtype: Any) -> np.ndarray:
    if dtype is object:  # one Python object (str or None) per row
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    if dtype is np.float64 and None in values:
        values = [math.nan if v is None else v for v in values]
    return np.array(values, dtype=dtype)


def _int64(value: Any) -> int | None:
    """``value`` as a 64-bit integer id, or None when it is not one. An integral float counts, as in
    JSON Schema (``1042.0`` is the integer 1042), up to ±2**53: beyond that a float no longer holds
    every integer, so the JSON parse may already have changed the id."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return None


def _problem(value: Any, present: bool, is_text: bool) -> str | None:
    if not present:
        return "required" + (" (text; null if unknown)" if is_text else " (a number; null if unknown)")
    if value is None:
        return None
    if is_text:
        if not isinstance(value, str) or len(value) > _MAX_TEXT:
            return f"must be text (at most {_MAX_TEXT} characters), got {value!r:.40}"
        if not unicode_text(value):  # JSON's \ud800 escape decodes to a lone surrogate, which no file can hold
            return "must be valid Unicode text: it holds a lone surrogate (an unpaired \\ud800-\\udfff escape)"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a finite number, got {value!r:.40}"
    try:
        if math.isfinite(float(value)):
            return None
    except OverflowError:
        pass
    return f"must be a finite number within ±1.8e308, got {str(value)[:40]}"


def unicode_text(text: str) -> bool:
    """Whether ``text`` can be stored: encodable as UTF-8 (no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
