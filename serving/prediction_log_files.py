"""The prediction log's files: batches to Arrow tables, one table per hour, each written whole.

    batches ──arrow_tables──► tables (one per column set; an unconvertible batch set aside)
            ──unified──► as few tables as the schemas allow ──split_by_hour──► (date=…/hour=…, rows)
            ──write_isolating──► a hidden temporary file, fsynced, renamed into place

Kept apart from :mod:`serving.prediction_log`, which owns the queue, the writer thread and the
counters; this module holds no state.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["TIMESTAMP_COLUMN", "arrow_tables", "split_by_hour", "to_table", "unified", "write_isolating"]

TIMESTAMP_COLUMN = "event_timestamp"
HOUR_US = 3_600 * 1_000_000
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Batch = dict[str, np.ndarray]


def arrow_tables(batches: Sequence[Batch], types: Mapping[str, pa.DataType]
                  ) -> tuple[list[pa.Table], list[tuple[int, Exception]]]:
    """One table per group of batches with the same columns and dtypes; and the unconvertible
    batches, as (rows, error)."""
    groups: dict[tuple[tuple[str, str], ...], list[Batch]] = {}
    for batch in batches:
        key = tuple((name, "object" if a.dtype.kind in "OUS" else a.dtype.str) for name, a in batch.items())
        groups.setdefault(key, []).append(batch)
    tables, bad = [], []
    for group in groups.values():
        with contextlib.suppress(Exception):  # mixed types, text that is not Unicode, …: find the culprits below
            tables.append(to_table({name: np.concatenate([b[name] for b in group]) for name in group[0]}, types))
            continue
        for batch in group:  # a batch is one request's rows: drop the bad ones, keep the rest
            try:
                tables.append(to_table(batch, types))
            except Exception as exc:  # noqa: BLE001  (whatever the cause, this batch alone is lost)
                bad.append((len(batch[TIMESTAMP_COLUMN]), exc))
    return tables, bad


def to_table(columns: Mapping[str, np.ndarray], types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    types = types or {}
    arrays = [
        pa.array(a, type=TIMESTAMP_TYPE) if name == TIMESTAMP_COLUMN
        # from_pandas: None and NaN are null in object columns; float columns keep NaN as NaN.
        else pa.array(a, type=types.get(name), from_pandas=a.dtype.kind == "O")
        for name, a in columns.items()
    ]
    return pa.table(arrays, names=list(columns))


def unified(tables: Sequence[pa.Table]) -> list[pa.Table]:
    """Tables merged into as few as their schemas allow: missing columns become null."""
    groups: list[tuple[pa.Schema, list[pa.Table]]] = []
    for table in tables:
        for i, (schema, members) in enumerate(groups):
            try:
                merged = schema if schema.equals(table.schema) else pa.unify_schemas([schema, table.schema])
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                continue
            members.append(table)
            groups[i] = (merged, members)
            break
        else:
            groups.append((table.schema, [table]))
    return [pa.concat_tables(members, promote_options="default") for _, members in groups]


def split_by_hour(table: pa.Table) -> list[tuple[str, pa.Table]]:
    """``(date=…/hour=…, rows of that UTC hour)`` for each hour the table's timestamps touch."""
    hours = table.column(TIMESTAMP_COLUMN).cast(pa.int64()).to_numpy() // HOUR_US
    if (hours == hours[0]).all():
        return [(_hour_folder(int(hours[0])), table)]
    order = np.argsort(hours, kind="stable")
    hours, table = hours[order], table.take(order)
    bounds = [0, *(np.flatnonzero(np.diff(hours)) + 1).tolist(), len(hours)]
    return [(_hour_folder(int(hours[a])), table.slice(a, b - a)) for a, b in itertools.pairwise(bounds)]


def _hour_folder(hour_index: int) -> str:
    start = _EPOCH + timedelta(hours=hour_index)
    return f"date={start:%Y-%m-%d}/hour={start:%H}"


def write_isolating(folder: Path, table: pa.Table) -> tuple[int, list[tuple[int, Exception]]]:
    """Write ``table`` as one file; if Parquet refuses its data (anything but an ``OSError``), write
    it in halves, down to single rows, so that only the rows it refuses are lost. Returns the files
    written and the refused (rows, error) pieces; an ``OSError`` propagates (the disk, not the data)."""
    try:
        _write_file(folder, table)
        return 1, []
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001  (a data error: isolate it)
        if table.num_rows <= 1:
            return 0, [(table.num_rows, exc)]
    half = table.num_rows // 2
    files, refused = write_isolating(folder, table.slice(0, half))
    more, also = write_isolating(folder, table.slice(half))
    return files + more, refused + also


def _write_file(folder: Path, table: pa.Table) -> None:
    """Write ``table`` as a new file in ``folder``: a temporary name, fsync, then an atomic rename."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex}.parquet"
    tmp = folder / f".{name}.tmp"  # a leading '.' hides it from pyarrow and Spark
    try:
        pq.write_table(table, tmp, coerce_timestamps="us")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # so that a renamed file is never empty after a power cut
        finally:
            os.close(fd)
        os.replace(tmp, folder / name)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
