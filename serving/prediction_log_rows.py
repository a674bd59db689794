"""Requests' rows gathered as columns while they are appended, so that a write converts each column
once instead of each request's arrays.

A server answering one-row requests at 300/s hands the prediction log 300 dicts of ~30 one-element
arrays a second. Concatenating them on the writer thread took 7–14 ms of the writer's CPU, most of
it holding the GIL, in one burst per write, during which requests waited: at 300 requests/s on one
worker, p99 10.7–13.7 ms with the write each second against 4.1 ms with no write during the run
(docs/benchmarks.md, issue 18). Here the request thread extends one Python list per column (~8 µs
for a one-row request of 30 columns) and the writer makes each column with one ``pa.array`` call
(~0.9 ms for 500 such rows; ``benchmarks/prediction_log_pauses.py``)::

    request thread:  RowColumns.add(at_us, columns)  one list extend per column, under the log's lock
    writer thread:   RowColumns.tables()              one pa.array per column; if a column does not
                                                      convert, request by request

Types, the same in every file of a log: numeric columns are float64 (an integer feature with a
missing value would otherwise be int64 in one file and float64 in the next) unless ``types`` names
an Arrow type (integer ids: int64); text (object) columns keep their values, ``None`` and NaN
being null; the timestamp is ``TIMESTAMP(MICROS, UTC)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from serving.errors import PredictionLogError
from serving.prediction_log_files import TIMESTAMP_COLUMN, TIMESTAMP_TYPE

__all__ = ["LIST_ROWS", "RowColumns", "checked_length"]

LIST_ROWS = 64  # requests with more rows keep their arrays: tolist() would cost the request thread more than it saves

Column = np.ndarray | Sequence[Any]


class RowColumns:
    """The rows of requests that share one column layout (names, and which are numbers), as one
    growing list per column plus the scoring instant of each row; or, from :meth:`whole`, one
    larger request's arrays as they are. Not thread-safe: the prediction log adds to it under its
    lock and hands it to the writer whole."""

    def __init__(self, columns: Mapping[str, Column], types: Mapping[str, pa.DataType]) -> None:
        self.names = tuple(columns)
        self.numeric = frozenset(name for name, values in columns.items()
                                 if isinstance(values, np.ndarray) and values.dtype.kind in "fiub")
        self.types = types
        self._values: dict[str, Any] = {name: [] for name in self.names}
        self._lists = tuple(self._values.values())  # in the order of names, for add()
        self._stamps: Any = []
        self.counts: list[int] = []  # rows per request, in order: what a failed conversion is retried by
        self.open = True

    @classmethod
    def whole(cls, at_us: int, columns: Mapping[str, Column], types: Mapping[str, pa.DataType]) -> RowColumns:
        """One request's rows, its arrays referenced as they are (closed: :meth:`add` refuses)."""
        n = checked_length(columns)
        rows = cls(columns, types)
        rows._values = {name: values if isinstance(values, np.ndarray) else list(values)
                        for name, values in columns.items()}
        rows._stamps = np.full(n, at_us, dtype=np.int64)
        rows.counts.append(n)
        rows.open = False
        return rows

    def fits(self, columns: Mapping[str, Column]) -> bool:
        """Whether :meth:`add` takes ``columns``: this is open and has their layout (names in order)."""
        return self.open and tuple(columns) == self.names

    def add(self, at_us: int, columns: Mapping[str, Column]) -> int:
        """Append one request's rows (``columns``, which :meth:`fits`), scored at ``at_us`` (µs since
        the epoch, UTC); returns their count. :class:`PredictionLogError`, with nothing added, when
        the columns differ in length or one is not one-dimensional."""
        assert self.open, "a whole request's RowColumns takes no more rows"
        lists, n = [], -1
        for values in columns.values():
            if type(values) is np.ndarray:
                if values.ndim != 1:
                    checked_length(columns)  # raises, naming the column
                values = values.tolist()
            if len(values) != n:
                if n >= 0:
                    checked_length(columns)
                n = len(values)
            lists.append(values)
        for target, values in zip(self._lists, lists, strict=True):
            target += values
        self._stamps += [at_us] * n
        self.counts.append(n)
        return n

    def tables(self) -> tuple[list[pa.Table], list[tuple[int, Exception]]]:
        """The rows as Arrow tables: one, unless a column does not convert (a text value in a
        number column, text that is not Unicode); then one per request, and the requests that do
        not convert as (rows, error)."""
        try:
            return [self._table(self._values, self._stamps)], []
        except _CONVERSION_ERRORS:
            pass
        tables, bad = [], []
        start = 0
        for n in self.counts:
            end = start + n
            try:
                tables.append(self._table({k: v[start:end] for k, v in self._values.items()}, self._stamps[start:end],
                                          infer=True))
            except _CONVERSION_ERRORS as exc:
                bad.append((n, exc))
            start = end
        return tables, bad

    def _table(self, values: Mapping[str, Any], stamps: Any, *, infer: bool = False) -> pa.Table:
        """``infer``: a number column holding something else (text) is converted as what it holds
        (its file then has that type), as that request appended alone would be."""
        arrays = [pa.array(stamps, type=TIMESTAMP_TYPE)]
        for name in self.names:
            column, declared = values[name], self.types.get(name)
            if name not in self.numeric:
                arrays.append(pa.array(column, type=declared, from_pandas=True))
            elif declared is not None:
                arrays.append(pa.array(column, type=declared))
            elif infer and not _numbers(column):
                arrays.append(pa.array(column, from_pandas=True))
            else:
                arrays.append(pa.array(np.asarray(column, dtype=np.float64)))
        return pa.table(arrays, names=[TIMESTAMP_COLUMN, *self.names])


_CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


def checked_length(columns: Mapping[str, Column]) -> int:
    """The columns' common length; :class:`PredictionLogError` when they differ or one is not 1-d."""
    lengths = set()
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.ndim != 1:
            raise PredictionLogError(f"column {name!r} must be one-dimensional; it has shape {values.shape}")
        lengths.add(len(values))
    if len(lengths) != 1:
        raise PredictionLogError(f"columns differ in length: { {n: len(v) for n, v in columns.items()} }"
                                 if lengths else "a prediction log batch needs at least one column")
    return lengths.pop()


def _numbers(values: Any) -> bool:
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "fiub"
    return all(isinstance(v, int | float) or v is None for v in values)
