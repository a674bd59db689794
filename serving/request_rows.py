"""The rows of a ``POST /v1/predict`` body, checked field by field into numpy columns.

What a row may hold: the join keys (64-bit integer ids; an integral float counts, as in JSON
Schema), the request fields the champion needs (numbers, finite, or null; text of at most 200
characters that can be stored, so no lone surrogate, or null) and an optional ``transaction_id``.
Every problem is a field-level message (``{"loc": ["rows", 3, "amount"], "msg": "..."}``) that
says what to send instead; nothing that passes can fail later in the prediction log.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["JOIN_KEYS", "TRANSACTION_ID", "unicode_text", "validate_rows"]

JOIN_KEYS = ("customer_id", "merchant_id")
#: Optional per row: the payment's id, passed through to the prediction log (the model never sees
#: it), so that delayed fraud labels can be joined to the scores the canary and drift jobs judge.
TRANSACTION_ID = "transaction_id"


def validate_rows(body: Any, request_columns: tuple[str, ...], text: frozenset[str],
              max_rows: int) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Rows as numpy columns (ids int64, numbers float64 with NaN for null, text as objects with
    None), or field-level errors (``loc``, ``msg``); at most 20 errors."""
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        return {}, [{"loc": ["rows"], "msg": 'expected an object {"rows": [ {...}, ... ]}'}]
    rows = body["rows"]
    if not rows:
        return {}, [{"loc": ["rows"], "msg": "rows is empty; send at least one row"}]
    if len(rows) > max_rows:
        return {}, [{"loc": ["rows"], "msg": f"{len(rows):,} rows; at most {max_rows:,} per request"}]
    fields = (*JOIN_KEYS, *request_columns)
    errors: list[dict[str, Any]] = []
    columns: dict[str, list[Any]] = {f: [] for f in (*fields, TRANSACTION_ID)}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            errors.append({"loc": ["rows", i], "msg": "each row must be an object"})
            continue
        payment = row.get(TRANSACTION_ID)
        if payment is not None and (payment := _int64(payment)) is None:
            errors.append({"loc": ["rows", i, TRANSACTION_ID], "msg": f"must be a 64-bit integer or null, "
                                                                      f"got {row[TRANSACTION_ID]!r:.40}"})
        columns[TRANSACTION_ID].append(payment)
        for name in fields:
            value = row.get(name)
            if name in JOIN_KEYS and value is not None:
                value = _int64(value)
                problem = None if value is not None else f"must be a 64-bit integer, got {row[name]!r:.40}"
            else:
                problem = _problem(name, value, name in row, name in text)
            if problem:
                errors.append({"loc": ["rows", i, name], "msg": problem})
            columns[name].append(value)
        if len(errors) >= 20:
            break
    if errors:
        return {}, errors
    return {name: _array(values, np.int64 if name in JOIN_KEYS else
                         object if name in text or name == TRANSACTION_ID else np.float64)
            for name, values in columns.items()}, []


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


def _problem(name: str, value: Any, present: bool, is_text: bool) -> str | None:
    if name in JOIN_KEYS:  # present and not null: _validate checks those
        return "required (an integer id)"
    if not present:
        return "required" + (" (text; null if unknown)" if is_text else " (a number; null if unknown)")
    if value is None:
        return None
    if is_text:
        if not isinstance(value, str) or len(value) > 200:
            return f"must be text (at most 200 characters), got {value!r:.40}"
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
