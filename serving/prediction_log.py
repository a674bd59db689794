"""The prediction log: every scored row, appended off the response path to hourly Parquet files.

It is what drift monitoring reads and what delayed labels are joined to. One row per scored row,
its columns as :mod:`serving.prediction_log_schema` lists them: ``event_timestamp`` (when it was
scored), ``request_id``, the model contract's join keys, the label source's row ids when the
request named them (what delayed labels join on; int64, null where absent), the request fields and
the feature values the model saw, ``score``, ``variant`` (``champion`` | ``challenger`` |
``shadow``) and ``model_version``. Layout, under ``root``, one model's folder
(``$TIDEMARK_HOME/offline/prediction_log/model=<name>``)::

    root/date=YYYY-MM-DD/hour=HH/part-<UTC write time>-<uuid>.parquet

``date`` and ``hour`` are the UTC date and hour of each row's ``event_timestamp`` (read them back
with ``pyarrow.dataset.dataset(root, partitioning="hive")`` or ``spark.read.parquet(root)``).

How a row travels::

    append(columns)      request thread: a few checks, then a list append under a lock (no disk,
      │                  no Arrow); a batch that would take the pending rows past max_pending_rows
      │                  is dropped and counted in dropped_rows, never waited for
      │                  (append_rows(key, at_us, columns): a serving request's rows, added to one
      │                  Python list per column shared by the requests of its layout, ~8 µs for a
      │                  one-row request of 30 columns; see serving.prediction_log_rows)
      ▼
    in-memory queue      written every flush_interval_s, as soon as max_rows rows are queued, and
      │                  on flush() / close()
      ▼  writer thread
    one Arrow table per column set, split by event hour: one file per hour, written to a hidden
    temporary name (``.part-….parquet.tmp``, which readers skip), fsynced and renamed into place,
    so that a reader sees a whole file or none

**What can be lost.** Nothing on a clean shutdown: :meth:`PredictionLog.close` (or leaving its
``with`` block, or a normal interpreter exit, for which it registers itself with :mod:`atexit`)
writes everything appended before it. On a crash (SIGKILL, out of memory, ``os._exit``, a power
cut), the rows not yet written are lost: those appended since the last write began, which is *at
most* ``flush_interval_s`` seconds *or* ``max_rows`` rows of the newest predictions (whichever
comes first triggers a write), plus the one write in progress, if any. While the disk fails (full,
permission denied) every pending row, up to ``max_pending_rows``, is at risk. Note that Python's
default SIGTERM handling is not a clean exit (``atexit`` does not run): a server must turn SIGTERM
into a normal shutdown, as uvicorn and gunicorn do.

**Timestamps.** ``event_timestamp`` is passed as a numpy ``datetime64[us]`` array in UTC (numpy has
no time zones; other datetime64 units are converted, nanoseconds truncated to microseconds). It is
stored as Parquet ``TIMESTAMP(MICROS, isAdjustedToUTC=true)``, which Spark reads as a
``timestamp`` (it rejects nanoseconds).

**Schemas.** Batches may have different column sets (a new model with other features, a request
field added). Within one write, their columns are unified and missing values are null, so a file
holds the union of its batches' columns; the files of different writes may differ, so read the
log with a merged schema (``pyarrow.unify_schemas`` of the files' schemas, Spark's
``mergeSchema``). Only where a column has incompatible types in two batches (a float here, a string
there) do those batches go to separate files. Floats keep NaN as NaN; in string (object) columns
``None`` and NaN are null. A column named ``date`` or ``hour`` is refused: those are the folders'
partition keys.

**Errors.** A batch that is malformed (lengths differ, no timestamp) raises
:class:`PredictionLogError` in :meth:`~PredictionLog.append`. A failed write (permission denied,
disk full) never stops the writer: it is logged (at most every 10 s), the rows are kept and
retried every ``flush_interval_s``, and :meth:`~PredictionLog.flush` raises
:class:`PredictionLogWriteError`. A batch that Arrow cannot convert (an object column mixing
strings and numbers) is logged and dropped. Crashed writes may leave ``.part-*.tmp`` files:
readers ignore them and they can be deleted.

Each write makes one small file per hour it touches, so at one write a second a busy hour holds
up to 3,600 files per serving process; compact old hours offline if readers find that slow.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serving.errors import PredictionLogError, PredictionLogWriteError
from serving.prediction_log_files import (
    TIMESTAMP_COLUMN,
    Batch,
    arrow_tables,
    split_by_hour,
    to_table,
    unified,
    write_isolating,
)
from serving.prediction_log_rows import LIST_ROWS, RowColumns, checked_length

__all__ = [
    "DROP_REASONS",
    "PARTITION_KEYS",
    "TIMESTAMP_COLUMN",
    "PredictionLog",
    "PredictionLogError",
    "PredictionLogWriteError",
]

log = logging.getLogger(__name__)

DROP_REASONS = ("overflow", "closed", "unconvertible", "unwritable", "unwritten_at_close", "writer_error")
PARTITION_KEYS = ("date", "hour")
_WARN_EVERY_S = 10.0
_PAUSE_S = 100e-6



class PredictionLog:
    """Appends scored rows to hourly Parquet files under ``root`` from a background thread.

    ``max_rows``: a write starts as soon as this many rows are queued. ``flush_interval_s``
    (seconds): otherwise queued rows are written at this period; together the two bound what a
    crash can lose (see the module docstring). ``max_pending_rows``: rows held in memory (queued,
    being written, or kept after a failed write) never exceed this; a batch that would is dropped.
    Thread-safe; one instance per process and root is the intended use.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_rows: int = 50_000,
        flush_interval_s: float = 1.0,
        max_pending_rows: int = 500_000,
        column_types: Mapping[str, pa.DataType] | None = None,
    ) -> None:
        """``column_types``: Arrow types of columns that must have one type in every file although a
        whole batch may hold only nulls (an optional id: ``{"transaction_id": pa.int64()}``)."""
        if max_rows < 1 or max_pending_rows < 1 or not flush_interval_s > 0:
            raise ValueError(
                f"max_rows ({max_rows}), max_pending_rows ({max_pending_rows}) and flush_interval_s "
                f"({flush_interval_s}) must be positive"
            )
        self.root = Path(root)
        self.max_rows = max_rows
        self.flush_interval_s = flush_interval_s
        self.max_pending_rows = max_pending_rows
        self.column_types = dict(column_types or {})
        self._cond = threading.Condition()
        # Guarded by _cond: the queue, the row and file counters, the flush handshake.
        self._queue: list[Batch | RowColumns] = []
        self._open: dict[Hashable, RowColumns] = {}  # per append_rows key, its RowColumns in _queue
        self._queued_rows = 0
        self._held_rows = 0  # taken by the writer: being written, or kept after a failed write
        self._written_rows = self._files_written = self._write_errors = 0
        self._dropped: Counter[str] = Counter()  # rows never written, by reason (DROP_REASONS)
        self._flush_requested = self._flush_served = 0
        self._last_error: Exception | None = None
        self._closing = False
        self._drop_throttle = _Throttle(_WARN_EVERY_S)
        # The writer thread's own state.
        self._retry: list[pa.Table] = []
        self._due = time.monotonic() + flush_interval_s
        self._error_throttle = _Throttle(_WARN_EVERY_S)
        _warm_up()
        # A daemon, so that a forgotten close() cannot hang the interpreter's exit; atexit (which
        # runs before daemon threads are stopped) closes the log instead.
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- the response path ------------------------------------------------------------------

    def declare(self, name: str, arrow_type: pa.DataType) -> None:
        """Give column ``name`` one Arrow type in every file from now on (see ``column_types``)."""
        self.column_types[name] = arrow_type

    def append(self, columns: Mapping[str, np.ndarray | list[Any]]) -> None:
        """Queue a batch of scored rows, given as equally long columns; returns without disk I/O.

        ``columns[TIMESTAMP_COLUMN]`` is a numpy ``datetime64[us]`` array in UTC. The arrays are
        referenced, not copied: don't modify them afterwards. Raises :class:`PredictionLogError`
        for a malformed batch. A batch that would exceed ``max_pending_rows``, or that comes after
        :meth:`close`, is dropped and counted in :attr:`dropped_rows` (a warning is logged at
        most every 10 s).
        """
        batch, rows = _checked_batch(columns)
        if rows:
            self._enqueue(batch, rows)

    def append_rows(self, key: Hashable, at_us: int, columns: Mapping[str, np.ndarray | Sequence[Any]],
                    types: Mapping[str, pa.DataType] | None = None) -> None:
        """Queue one request's scored rows, all scored at ``at_us`` (µs since the epoch, UTC):
        ``columns`` equally long, numpy arrays or lists (text as objects, ``None`` or NaN for null),
        without the timestamp column. The rows of calls with the same ``key`` and the same column
        names are gathered into one list per column as they come (a request of more than
        ``LIST_ROWS`` rows keeps its arrays), so that the writer converts each column once per
        write. Numbers come as numpy arrays (a list is text or other objects, ``None`` and NaN
        null): they are float64 in the files unless ``types`` (the same mapping for every call of a
        key) names an Arrow type, e.g. int64 for integer ids; other columns keep their values' type. The arrays are referenced, not copied: don't modify them afterwards.
        Raises :class:`PredictionLogError` for columns of different lengths or names that the log
        reserves; full or closed, as :meth:`append`. A request whose values Arrow cannot convert
        (text in a column that was numeric for its key) is dropped alone at the write
        (``unconvertible``)."""
        rows = len(next(iter(columns.values()), ()))  # add() or checked_length() checks the others
        if not rows:
            checked_length(columns)
            return
        with self._cond:
            refused, warning = self._refusal_locked(rows)
            if not refused:
                if rows > LIST_ROWS:
                    _check_names(columns)
                    self._queue.append(RowColumns.whole(at_us, columns, types or {}))
                else:
                    segment = self._open.get(key)
                    if segment is None or not segment.fits(columns):
                        _check_names(columns)
                        segment = RowColumns(columns, types or {})
                        segment.add(at_us, columns)  # checks the lengths before it is queued
                        self._open[key] = segment
                        self._queue.append(segment)
                    else:
                        segment.add(at_us, columns)
                self._queued_rows += rows
                if self._queued_rows >= self.max_rows and self._last_error is None:
                    self._cond.notify_all()
        if warning:
            log.warning("%s", warning)

    def _enqueue(self, batch: Batch, rows: int) -> None:
        with self._cond:
            refused, warning = self._refusal_locked(rows)
            if not refused:
                self._queue.append(batch)
                self._queued_rows += rows
                if self._queued_rows >= self.max_rows and self._last_error is None:
                    self._cond.notify_all()
        if warning:
            log.warning("%s", warning)

    def _refusal_locked(self, rows: int) -> tuple[bool, str | None]:
        """Drop (and count) ``rows`` if the log is closed or full: whether it did, and the warning to
        log once the lock is released (at most one every 10 s)."""
        if self._closing:
            return True, self._drop_locked(rows, "closed", "the log is closed")
        if self._queued_rows + self._held_rows + rows > self.max_pending_rows:
            return True, self._drop_locked(rows, "overflow", f"{self.max_pending_rows} rows are already waiting for the disk")
        return False, None

    # -- flushing and closing ---------------------------------------------------------------

    def flush(self) -> None:
        """Write everything appended so far and return once it is on disk.

        Raises :class:`PredictionLogWriteError` if the write fails; the rows stay pending and are
        retried. After :meth:`close`, returns at once.
        """
        with self._cond:
            if not self._closing:
                self._flush_requested += 1
                request = self._flush_requested
                self._cond.notify_all()
                while self._flush_served < request and self._thread.is_alive():
                    self._cond.wait(1.0)
                error, pending = self._last_error, self._queued_rows + self._held_rows
                if error is not None:
                    raise PredictionLogWriteError(
                        f"could not write {pending} prediction rows under {self.root} ({error}); "
                        f"they are kept in memory (at most {self.max_pending_rows}) and retried every "
                        f"{self.flush_interval_s} s: fix the cause (permissions, free space)"
                    ) from error
                return
        self._thread.join()  # closing: close() writes everything

    def close(self) -> None:
        """Write everything appended so far and stop the writer thread; idempotent, never raises.

        Rows that still cannot be written are logged as an error and counted in
        :attr:`dropped_rows`. Later appends are dropped.
        """
        with self._cond:
            first = not self._closing
            self._closing = True
            self._cond.notify_all()
        if first:
            atexit.unregister(self.close)
        self._thread.join()
        with self._cond:
            lost = self._queued_rows + self._held_rows
            self._dropped["unwritten_at_close"] += lost
            self._queued_rows = self._held_rows = 0
            error = self._last_error
        if lost:
            log.error("prediction log closed with %d rows that could not be written under %s (%s); they are lost",
                      lost, self.root, error)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- counters ---------------------------------------------------------------------------

    @property
    def written_rows(self) -> int:
        """Rows on disk, in files that readers can see."""
        return self._written_rows

    @property
    def dropped_rows(self) -> int:
        """Rows appended but never written, whatever the reason (see :attr:`dropped_by_reason`)."""
        return sum(self._dropped.values())

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        """Rows never written, per reason: ``overflow`` (over ``max_pending_rows``), ``closed``
        (appended after :meth:`close`), ``unconvertible`` (a batch Arrow cannot convert, such as
        text that is not valid Unicode), ``unwritable`` (rows Parquet refused while the disk was
        fine), ``unwritten_at_close`` (a failing disk at :meth:`close`), ``writer_error`` (a bug)."""
        with self._cond:
            return {reason: self._dropped[reason] for reason in DROP_REASONS}

    @property
    def pending_rows(self) -> int:
        """Rows in memory: queued, being written, or kept after a failed write."""
        with self._cond:
            return self._queued_rows + self._held_rows

    @property
    def files_written(self) -> int:
        """Parquet files renamed into place."""
        return self._files_written

    @property
    def write_errors(self) -> int:
        """Failed attempts to write a file (each is retried)."""
        return self._write_errors

    # -- the writer thread ------------------------------------------------------------------

    def _drop_locked(self, rows: int, reason: str, why: str) -> str | None:
        self._dropped[reason] += rows
        suppressed = self._drop_throttle.ready()
        if suppressed is None:
            return None
        return (f"prediction log dropped {rows} rows ({why}; {suppressed} more dropped warnings since the last); "
                f"{sum(self._dropped.values())} dropped in all")

    def _run(self) -> None:
        while True:
            with self._cond:
                self._wait_for_work()
                closing, request = self._closing, self._flush_requested
                batches, self._queue = self._queue, []
                self._open.clear()
                self._held_rows += self._queued_rows
                self._queued_rows = 0
            try:
                error = self._write_round(batches)
            except Exception as exc:  # a bug: drop this round's rows rather than retry it forever
                log.exception("prediction log writer failed; dropping the %d rows it held", self._held_rows)
                error, self._retry = exc, []
                with self._cond:
                    self._dropped["writer_error"] += self._held_rows
                    self._held_rows = 0
            self._due = time.monotonic() + self.flush_interval_s
            with self._cond:
                self._flush_served = request
                self._last_error = error
                self._cond.notify_all()
            if closing:
                return

    def _wait_for_work(self) -> None:
        """Block (holding ``_cond``) until a write is due: on a request, by size, or by time."""
        while True:
            if self._closing or self._flush_requested > self._flush_served:
                return
            # After a failure, only the timer retries: a size trigger would spin on a broken disk.
            if self._queued_rows >= self.max_rows and self._last_error is None:
                return
            now = time.monotonic()
            if now >= self._due:
                if self._queued_rows + self._held_rows:
                    return
                self._due = now + self.flush_interval_s
            self._cond.wait(self._due - now)

    def _write_round(self, queued: Sequence[Batch | RowColumns]) -> Exception | None:
        """Write the retained pieces and ``queued``; return the error that stopped it, if any.

        A batch or request that can't be converted, or rows that Parquet refuses, are dropped
        alone (counted by reason); everything else of the round is written. Only a failing disk
        (an ``OSError``) stops the round: its rows are kept and retried."""
        batches = [item for item in queued if not isinstance(item, RowColumns)]
        tables, bad = arrow_tables(batches, self.column_types)
        for segment in queued:
            if isinstance(segment, RowColumns):
                made, refused = segment.tables()
                tables += made
                bad += refused
        for rows, exc in bad:
            log.error("prediction log dropped a batch of %d rows that Arrow cannot convert: %s", rows, exc)
            self._forget(rows, "unconvertible")
        _let_others_run()
        pieces = [piece for table in unified(self._retry + tables) for piece in split_by_hour(table)]
        self._retry = []
        for i, (subdir, table) in enumerate(pieces):
            _let_others_run()
            try:
                written, refused_rows = write_isolating(self.root / subdir, table)
            except OSError as exc:  # the disk: keep the rows, retry later
                self._retry = [t for _, t in pieces[i:]]
                self._report_failure(exc, sum(t.num_rows for t in self._retry))
                return exc
            for rows, error in refused_rows:
                log.error("prediction log dropped %d rows that Parquet refused: %s", rows, error)
                self._forget(rows, "unwritable")
            with self._cond:
                self._held_rows -= table.num_rows - sum(rows for rows, _ in refused_rows)
                self._written_rows += table.num_rows - sum(rows for rows, _ in refused_rows)
                self._files_written += written
        return None

    def _forget(self, rows: int, reason: str) -> None:
        with self._cond:
            self._held_rows -= rows
            self._dropped[reason] += rows

    def _report_failure(self, exc: Exception, rows: int) -> None:
        with self._cond:
            self._write_errors += 1
        suppressed = self._error_throttle.ready()
        if suppressed is not None:
            log.error("prediction log could not write under %s (%s); %d rows kept, retried every %s s "
                      "(%d similar errors since the last report)", self.root, exc, rows, self.flush_interval_s,
                      suppressed)


class _Throttle:
    """Allows one report per period; counts the ones it held back."""

    def __init__(self, period_s: float) -> None:
        self._period_s = period_s
        self._last = -math.inf
        self._held_back = 0

    def ready(self) -> int | None:
        """The number held back since the last report if one may be made now, else None."""
        now = time.monotonic()
        if now - self._last < self._period_s:
            self._held_back += 1
            return None
        held, self._last, self._held_back = self._held_back, now, 0
        return held


def _let_others_run() -> None:
    """Hand the GIL to a thread that waits for it, such as the one answering requests.

    The writer's Python work would otherwise hold the GIL for up to the interpreter's switch
    interval (5 ms) at a time, and every request arriving meanwhile waits that long. A thread that
    releases the GIL and takes it straight back (``time.sleep(0)``) usually wins it again before
    the waiting thread has woken, so the pause must outlast that thread's wake-up."""
    time.sleep(_PAUSE_S)


def _warm_up() -> None:
    """Run the writer's Arrow and Parquet calls once, in memory.

    Arrow imports pandas on first use, and pandas imports a module that registers a thread-exit
    hook, which raises once the interpreter is exiting: a first write from the atexit hook would
    fail. Doing it here, once, makes that write an ordinary one.
    """
    sample = to_table({TIMESTAMP_COLUMN: np.zeros(1, "datetime64[us]"), "text": np.array(["x"], dtype=object)})
    for _, piece in split_by_hour(unified([sample, sample])[0]):
        pq.write_table(piece, pa.BufferOutputStream(), coerce_timestamps="us")


def _check_names(columns: Mapping[str, Any]) -> None:
    """:class:`PredictionLogError` for the names the log sets itself (timestamp, partition keys)."""
    for name in (TIMESTAMP_COLUMN, *PARTITION_KEYS):
        if name in columns:
            raise PredictionLogError(f"column {name!r} is the log's own (the time scored, or a partition folder "
                                     f"date=…/hour=…); rename it, e.g. to '{name}_of_request'")


def _checked_batch(columns: Mapping[str, np.ndarray | list[Any]]) -> tuple[Batch, int]:
    """The batch as 1-d numpy arrays with a ``datetime64[us]`` timestamp, and its row count."""
    if TIMESTAMP_COLUMN not in columns:
        raise PredictionLogError(f"a prediction log batch needs a {TIMESTAMP_COLUMN!r} column; it has {sorted(columns)}")
    batch: Batch = {}
    for name, values in columns.items():
        if name in PARTITION_KEYS:
            raise PredictionLogError(f"column {name!r} clashes with the log's partition folders (date=…/hour=…); "
                                     f"rename it, e.g. to '{name}_of_request'")
        array = values if isinstance(values, np.ndarray) else np.asarray(values)
        if array.ndim != 1:
            raise PredictionLogError(f"column {name!r} must be one-dimensional; it has shape {array.shape}")
        batch[name] = array
    lengths = {len(a) for a in batch.values()}
    if len(lengths) > 1:
        raise PredictionLogError(f"columns differ in length: { {n: len(a) for n, a in batch.items()} }")
    stamps = batch[TIMESTAMP_COLUMN]
    if stamps.dtype.kind != "M":
        raise PredictionLogError(
            f"{TIMESTAMP_COLUMN!r} must be numpy datetime64[us] in UTC, not {stamps.dtype}; from a "
            "time-zone-aware pandas column use series.dt.tz_convert(None).to_numpy('datetime64[us]')"
        )
    if stamps.dtype != np.dtype("datetime64[us]"):
        batch[TIMESTAMP_COLUMN] = stamps = stamps.astype("datetime64[us]")
    if np.isnat(stamps).any():
        raise PredictionLogError(f"{TIMESTAMP_COLUMN!r} has missing values (NaT); every row needs its time")
    return batch, lengths.pop()
