"""Atomic, partition-replacing Parquet writes of Spark DataFrames (the offline feature tables).

A table is a directory of ``date=YYYY-MM-DD/`` partition folders. :func:`write_partitions`
replaces exactly the partitions of a given list of dates and leaves every other one alone.
One call is one *run*, with a run id ``<run>``:

1. Under an exclusive lock (``table_dir/_write.lock``), :func:`recover` finishes or discards any
   earlier run that was interrupted.
2. Spark writes the DataFrame, partitioned by ``date``, into the hidden staging folder
   ``table_dir/_staging_<run>/``. Readers (Spark, pyarrow) skip names starting with ``_``, so
   nothing they see has changed. A staged date that is not in the list is an error.
3. The journal ``table_dir/_commit_<run>.json`` (the listed dates and which of them have staged
   rows) is written to a temporary name, fsynced and renamed into place: this is the commit
   point. From here on the run is only ever rolled *forward*.
4. For each listed date, the live partition (if any) is renamed into ``_trash_<run>/`` and the
   staged one (if any) is renamed in (``os.rename``, atomic on a POSIX file system).
5. The table folder is fsynced, then trash and staging are deleted, then the journal.

:func:`recover` redoes steps 4-5 from every journal it finds (each step checks what is already
done, so recovering twice, or recovering a recovery that died, is safe) and deletes any
``_staging_*``/``_trash_*`` folder that has no journal: a run that died before its commit point
(its previous data was never touched) or after its journal was gone (all moved already).

What a reader can observe: every partition is always either complete-old or complete-new, never
a mix of files. Between the two renames of step 4 a listed date is briefly absent, and after a
crash in step 4 some listed dates are new and others still old until the next write (or an
explicit :func:`recover`) rolls the run forward. Previous data is never lost: it sits in the
trash until every new partition is in place.

**Dates with no rows are removed.** A listed date for which the DataFrame has no rows ends up
with no partition. The list states which dates this run is the source of truth for, and a
run's result for such a date is "no rows"; keeping the old partition would leave rows that the
current inputs no longer produce, and a backfill would then differ from the incremental runs
it must equal. Callers must therefore list only dates whose inputs they actually read
(``build_features`` lists exactly its ``[start, end]``).

Limits: one writer per table at a time (the lock is ``flock``, so local or POSIX-locking file
systems only); object stores need a table format with its own commit protocol (Delta,
Iceberg). A reader that lists a partition just before it is moved to the trash may fail to open
its files, as with any overwrite of plain Parquet. "Crash" means the process dying: Spark does
not fsync the data files it writes, so a power cut just after a commit could still lose them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from features.errors import PartitionCommitError
from features.spark_conf import scoped_conf

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["LOCK_FILE", "PARTITION_COLUMN", "CommitHook", "WriteResult", "recover", "write_partitions"]

log = logging.getLogger(__name__)

PARTITION_COLUMN = "date"
LOCK_FILE = "_write.lock"
_STAGING = "_staging_"
_TRASH = "_trash_"
_JOURNAL = "_commit_"
_JOURNAL_SUFFIX = ".json"

CommitHook = Callable[[str], None]
"""Called after each step with its name: ``staged``, ``journaled``, ``aside:<date>`` (live
partition moved to the trash), ``in:<date>`` (staged partition moved in), ``committed``.
Tests inject one that raises to simulate a crash right after that step."""


@dataclass(frozen=True)
class WriteResult:
    """What one run of :func:`write_partitions` put in place."""

    run: str
    rows: dict[str, int]
    """Rows written per date (``YYYY-MM-DD``), for the dates that have rows."""
    removed: tuple[str, ...]
    """Listed dates that had no rows, hence have no partition now."""

    @property
    def total_rows(self) -> int:
        """Rows written over all partitions."""
        return sum(self.rows.values())


@dataclass(frozen=True)
class _Journal:
    run: str
    dates: tuple[str, ...]
    staged: frozenset[str]


def write_partitions(
    df: DataFrame,
    table_dir: Path,
    dates: Iterable[date | str],
    *,
    sort_by: Sequence[str] = (),
    hook: CommitHook | None = None,
) -> WriteResult:
    """Replace the ``dates`` partitions of the Parquet table at ``table_dir`` with ``df``'s rows.

    ``df`` must have a string ``date`` column (``YYYY-MM-DD``) whose values are all in ``dates``.
    Each date gets one file, rows sorted by ``sort_by`` within it; timestamps are written as
    ``TIMESTAMP(MICROS, isAdjustedToUTC=true)``. Listed dates without rows lose their partition
    (see the module docstring). Raises :class:`PartitionCommitError` when the rows do not fit the
    list or the table is locked by another writer; a failure before the commit point leaves the
    table as it was, one after it is finished by the next write or by :func:`recover`.
    """
    listed = _normalize_dates(dates)
    _check_partition_column(df)
    table_dir.mkdir(parents=True, exist_ok=True)
    hook = hook or _no_hook
    with _table_lock(table_dir):
        _recover_locked(table_dir, hook=_no_hook)
        if not listed:
            return WriteResult(run="", rows={}, removed=())
        run = _new_run_id()
        staging = table_dir / f"{_STAGING}{run}"
        _stage(df, staging, sort_by)
        rows = _staged_rows(staging, listed)
        hook("staged")
        journal = _Journal(run=run, dates=listed, staged=frozenset(rows))
        _write_journal(table_dir, journal)
        hook("journaled")
        _roll_forward(table_dir, journal, hook)
    removed = tuple(d for d in listed if d not in rows)
    log.info("wrote %s: %d rows in %d partitions, %d removed", table_dir, sum(rows.values()), len(rows), len(removed))
    return WriteResult(run=run, rows=rows, removed=removed)


def recover(table_dir: Path, *, hook: CommitHook | None = None) -> list[str]:
    """Finish or discard interrupted runs in ``table_dir``; return the run ids rolled forward.

    Safe to call at any time no writer holds the table: it waits for nothing and raises
    :class:`PartitionCommitError` if one does. A missing ``table_dir`` is left missing.
    """
    if not table_dir.is_dir():
        return []
    with _table_lock(table_dir):
        return _recover_locked(table_dir, hook=hook or _no_hook)


def _no_hook(step: str) -> None:
    """The production hook: steps are not observed."""


def _recover_locked(table_dir: Path, *, hook: CommitHook) -> list[str]:
    rolled = []
    for path in sorted(table_dir.glob(f"{_JOURNAL}*{_JOURNAL_SUFFIX}")):
        journal = _read_journal(path)
        log.warning("rolling forward interrupted write %s of %s", journal.run, table_dir)
        _roll_forward(table_dir, journal, hook)
        rolled.append(journal.run)
    # Without a journal, a staging folder never reached its commit point (discard it: the live
    # data was not touched) and a trash folder is from a run that had finished moving.
    for entry in table_dir.iterdir():
        if entry.name.startswith((_STAGING, _TRASH)) or entry.name.endswith(_JOURNAL_SUFFIX + ".tmp"):
            log.warning("discarding %s left by an interrupted write", entry)
            _remove(entry)
    return rolled


def _roll_forward(table_dir: Path, journal: _Journal, hook: CommitHook) -> None:
    """Steps 4 and 5 of the protocol; every move checks first whether it was already done."""
    staging = table_dir / f"{_STAGING}{journal.run}"
    trash = table_dir / f"{_TRASH}{journal.run}"
    trash.mkdir(exist_ok=True)
    for day in journal.dates:
        name = f"{PARTITION_COLUMN}={day}"
        live, staged = table_dir / name, staging / name
        if day in journal.staged and not staged.exists():
            continue  # already moved in: the live partition is the new one
        if live.exists():
            _rename(live, trash / name)
            hook(f"aside:{day}")
        if day in journal.staged:
            _rename(staged, live)
            hook(f"in:{day}")
    _fsync_dir(table_dir)
    hook("committed")
    _remove(trash)
    _remove(staging)
    (table_dir / f"{_JOURNAL}{journal.run}{_JOURNAL_SUFFIX}").unlink()
    _fsync_dir(table_dir)


def _stage(df: DataFrame, staging: Path, sort_by: Sequence[str]) -> None:
    """Write ``df`` under ``staging`` with Spark: one file per date, timestamps in microseconds."""
    from pyspark.sql import functions as F

    # Hash-partitioning by date sends each date to one task: one file per partition instead of
    # one per (task, date), and the writer's required sort by date is then a cheap local one.
    out = df.repartition(F.col(PARTITION_COLUMN)).sortWithinPartitions(PARTITION_COLUMN, *sort_by)
    with scoped_conf(df.sparkSession, "spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS"):
        # "error" is "errorifexists" under the name Spark Connect also accepts
        out.write.mode("error").partitionBy(PARTITION_COLUMN).parquet(str(staging))


def _staged_rows(staging: Path, listed: Sequence[str]) -> dict[str, int]:
    """Rows per staged date, from the Parquet footers (no Spark job); checks dates are listed."""
    import pyarrow.parquet as pq

    prefix = f"{PARTITION_COLUMN}="
    entries = list(staging.iterdir()) if staging.is_dir() else []
    staged = {p.name[len(prefix) :]: p for p in entries if p.is_dir() and p.name.startswith(prefix)}
    unexpected = sorted(set(staged) - set(listed))
    if unexpected:
        _remove(staging)
        raise PartitionCommitError(
            f"rows for dates {unexpected[:5]} are not in the {len(listed)} dates this write replaces "
            f"({listed[0]} … {listed[-1]}); filter the DataFrame to those dates or list them"
        )
    return {
        day: sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(path.glob("*.parquet")) if f.name[0] not in "._")
        for day, path in sorted(staged.items())
    }


def _write_journal(table_dir: Path, journal: _Journal) -> None:
    path = table_dir / f"{_JOURNAL}{journal.run}{_JOURNAL_SUFFIX}"
    tmp = path.with_name(path.name + ".tmp")
    body = {"version": 1, "run": journal.run, "dates": list(journal.dates), "staged": sorted(journal.staged)}
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(body, fh)
        fh.flush()
        os.fsync(fh.fileno())
    # The rename makes the journal appear whole or not at all: a torn journal cannot exist.
    os.replace(tmp, path)
    _fsync_dir(table_dir)


def _read_journal(path: Path) -> _Journal:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return _Journal(run=body["run"], dates=tuple(body["dates"]), staged=frozenset(body["staged"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PartitionCommitError(
            f"cannot read commit journal {path} ({exc}); its run's staged partitions are in "
            f"{path.parent / (_STAGING + path.stem[len(_JOURNAL) :])}: inspect them, then delete the journal"
        ) from exc


def _normalize_dates(dates: Iterable[date | str]) -> tuple[str, ...]:
    out = set()
    for day in dates:
        text = day.isoformat() if isinstance(day, date) else str(day)
        try:
            valid = date.fromisoformat(text).isoformat() == text
        except ValueError:
            valid = False
        if not valid or isinstance(day, datetime):
            raise PartitionCommitError(f"partition date {day!r} is not a date or a 'YYYY-MM-DD' string")
        out.add(text)
    return tuple(sorted(out))


def _check_partition_column(df: DataFrame) -> None:
    from pyspark.sql.types import StringType

    fields = {f.name: f.dataType for f in df.schema.fields}
    if not isinstance(fields.get(PARTITION_COLUMN), StringType):
        raise PartitionCommitError(
            f"the DataFrame needs a string column {PARTITION_COLUMN!r} (UTC date 'YYYY-MM-DD') to "
            f"partition by; it has {sorted(fields)}"
        )


def _new_run_id() -> str:
    # Sortable by start time; no '=' so that Spark never mistakes the folder for a partition.
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@contextmanager
def _table_lock(table_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the table; released by the OS if the process dies."""
    with open(table_dir / LOCK_FILE, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise PartitionCommitError(
                f"another process is writing {table_dir} (it holds {LOCK_FILE}); wait for it to finish"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _rename(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        raise PartitionCommitError(
            f"could not move {src} to {dst} ({exc}); the write is journaled and `recover` will finish "
            "it once the cause is fixed"
        ) from exc


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
