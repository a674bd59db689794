"""Data checks of a feature build: schema, nulls and ranges, before anything is published.

    raw events of the interval ──► check_frame(the raw table's TableCheck) ─┐ all checked first,
    each offline table of the interval ──► check_frame(its TableCheck)      ─┘ one Spark pass each
                                          any failure ──► DataCheckError, nothing written

A :class:`TableCheck` declares, for one table, the columns and Spark types it must have, the
columns that must not be null, and the bounds values must lie in (a value outside is a row that
fails; null values pass a range, they are the not-null rule's business). :func:`check_frame`
computes every count in one aggregation and returns a :class:`CheckResult`; :func:`raise_failures`
turns the failures of several results into one :class:`DataCheckError` that lists them all.

A project's feature jobs declare their tables' checks beside them (the fraud example's:
``examples/fraud/data_checks.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from features.errors import DataCheckError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

__all__ = ["Bound", "CheckResult", "TableCheck", "check_frame", "raise_failures"]


@dataclass(frozen=True)
class Bound:
    """``low <= column <= high`` (either side optional); ``strict_low``: ``low < column``.
    ``other``: the bound is another column (``column >= other``), e.g. arrival after event."""

    column: str
    low: float | None = None
    high: float | None = None
    strict_low: bool = False
    other: str | None = None
    allowed: tuple[str, ...] = ()  # a text column: one of these values

    def describe(self) -> str:
        if self.other:
            return f"{self.column} >= {self.other}"
        if self.allowed:
            return f"{self.column} in {{{', '.join(self.allowed)}}}"
        parts = []
        if self.low is not None:
            parts.append(f"{self.low:g} {'<' if self.strict_low else '<='} {self.column}")
        if self.high is not None:
            parts.append(f"{self.column} <= {self.high:g}")
        return " and ".join(parts)

    def violated(self) -> Column:
        from pyspark.sql import functions as F

        col = F.col(f"`{self.column}`")
        if self.other:
            return col < F.col(f"`{self.other}`")
        if self.allowed:
            return ~col.isin(list(self.allowed))
        bad = F.lit(False)
        if self.low is not None:
            bad = bad | ((col <= F.lit(self.low)) if self.strict_low else (col < F.lit(self.low)))
        if self.high is not None:
            bad = bad | (col > F.lit(self.high))
        return bad | F.isnan(col)  # NaN compares false with everything: count it as out of range


@dataclass(frozen=True)
class TableCheck:
    """What one table must look like. ``types``: column -> Spark simple type name (``bigint``,
    ``double``, ``string``, ``timestamp``, ``tinyint``); ``time_column``: must fall in the interval."""

    table: str
    types: dict[str, str]
    not_null: tuple[str, ...]
    bounds: tuple[Bound, ...] = ()
    time_column: str | None = "event_timestamp"


@dataclass(frozen=True)
class CheckResult:
    """One table's check: rows seen and one line per failed rule (empty: passed)."""

    table: str
    rows: int
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def check_frame(frame: DataFrame, check: TableCheck, *, start: date, end: date) -> CheckResult:
    """Check ``frame`` against ``check`` for the UTC dates ``[start, end]``, in one Spark job.

    A schema mismatch (a column missing or of another type) is reported without counting rows:
    the counts would be meaningless.
    """
    from pyspark.sql import functions as F

    have = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
    schema = [f"{check.table}: column {c!r} is missing" if c not in have else
              f"{check.table}: column {c!r} is {have[c]}, expected {t}"
              for c, t in check.types.items() if have.get(c) != t]
    if schema:
        return CheckResult(check.table, -1, schema)
    counts: list[Column] = [F.count(F.lit(1)).alias("rows")]
    counts += [F.sum(F.col(f"`{c}`").isNull().cast("bigint")).alias(f"null:{c}") for c in check.not_null]
    counts += [F.sum(F.coalesce(b.violated(), F.lit(False)).cast("bigint")).alias(f"bound:{i}")
               for i, b in enumerate(check.bounds)]
    lo = datetime.combine(start, time(), tzinfo=UTC)
    hi = datetime.combine(end + timedelta(days=1), time(), tzinfo=UTC)
    if check.time_column:
        t = F.col(f"`{check.time_column}`")
        counts.append(F.sum(((t < F.lit(lo)) | (t >= F.lit(hi))).cast("bigint")).alias("outside"))
    row = frame.agg(*counts).collect()[0].asDict()
    failures = [f"{check.table}: {row[f'null:{c}']:,} of {row['rows']:,} rows have no {c}"
                for c in check.not_null if row[f"null:{c}"]]
    failures += [f"{check.table}: {row[f'bound:{i}']:,} of {row['rows']:,} rows break {b.describe()}"
                 for i, b in enumerate(check.bounds) if row[f"bound:{i}"]]
    if row.get("outside"):
        failures.append(f"{check.table}: {row['outside']:,} of {row['rows']:,} rows have {check.time_column} "
                        f"outside {start} .. {end} (UTC)")
    return CheckResult(check.table, int(row["rows"]), failures)


def raise_failures(results: Iterable[CheckResult], *, start: date, end: date, hint: Sequence[str] = ()) -> None:
    """Raise one :class:`DataCheckError` listing every failure of ``results``; return when all passed."""
    failures = [line for r in results for line in r.failures]
    if failures:
        advice = " ".join(hint) or ("fix the raw data of the interval (or the job that produced it) and re-run "
                                    "the interval; nothing was published")
        raise DataCheckError(f"data checks failed for {start} .. {end}: " + "; ".join(failures) + f". {advice}",
                             failures)
