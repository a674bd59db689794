"""Data checks of the feature build: schema, nulls and ranges, before anything is published.

    raw transactions of the interval ──► check_frame(RAW_TRANSACTIONS)  ─┐ all checked first,
    each offline table of the interval ──► check_frame(TABLE_CHECKS[t]) ─┘ one Spark pass each
                                          any failure ──► DataCheckError, nothing written

A :class:`TableCheck` declares, for one table, the columns and Spark types it must have, the
columns that must not be null, and the bounds values must lie in (a value outside is a row that
fails; null values pass a range, they are the not-null rule's business). :func:`check_frame`
computes every count in one aggregation and returns a :class:`CheckResult`; :func:`raise_failures`
turns the failures of several results into one :class:`DataCheckError` that lists them all.

The rules are what ``docs/data_model.md`` promises: amounts are positive euros, counts of a
window include the anchoring transaction, a fraud rate is a share, a profile's income is not
negative, a record arrives no earlier than its event, and the interval's rows are stamped
inside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from features.errors import DataCheckError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

__all__ = ["RAW_TRANSACTIONS", "TABLE_CHECKS", "Bound", "CheckResult", "TableCheck", "check_frame", "raise_failures"]

_WINDOWS = ("1h", "24h", "7d")


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


def _agg_table() -> TableCheck:
    types = {"customer_id": "bigint", "event_timestamp": "timestamp", "date": "string"}
    bounds: list[Bound] = []
    for w in _WINDOWS:
        types.update({f"txn_count_{w}": "bigint", f"amt_sum_{w}": "double", f"amt_mean_{w}": "double",
                      f"amt_max_{w}": "double", f"created_{w}": "timestamp"})
        bounds += [Bound(f"txn_count_{w}", low=1), Bound(f"amt_sum_{w}", low=0, strict_low=True),
                   Bound(f"amt_mean_{w}", low=0, strict_low=True), Bound(f"amt_max_{w}", low=0, strict_low=True)]
    bounds += [Bound("txn_count_24h", other="txn_count_1h"), Bound("txn_count_7d", other="txn_count_24h")]
    return TableCheck("customer_txn_agg", types, tuple(c for c in types if c != "date"), tuple(bounds))


#: The offline feature tables (``features.feature_jobs.TABLE_SORT``).
TABLE_CHECKS: dict[str, TableCheck] = {
    "customer_txn_agg": _agg_table(),
    "customer_profile": TableCheck(
        "customer_profile",
        {"customer_id": "bigint", "event_timestamp": "timestamp", "created_timestamp": "timestamp", "income": "double",
         "age_band": "string", "home_country": "string", "date": "string"},
        ("customer_id", "event_timestamp", "created_timestamp"),
        (Bound("income", low=0), Bound("created_timestamp", other="event_timestamp"))),
    "merchant_stats": TableCheck(
        "merchant_stats",
        {"merchant_id": "bigint", "event_timestamp": "timestamp", "created_timestamp": "timestamp", "category": "string",
         "country": "string", "txn_count_30d": "bigint", "amt_mean_30d": "double", "fraud_rate_30d": "double",
         "date": "string"},
        ("merchant_id", "event_timestamp", "created_timestamp", "txn_count_30d", "fraud_rate_30d"),
        (Bound("txn_count_30d", low=0), Bound("amt_mean_30d", low=0), Bound("fraud_rate_30d", low=0, high=1))),
}

#: Raw payments as ``features.feature_jobs.read_raw`` returns them (already cast to its schema).
RAW_TRANSACTIONS = TableCheck(
    "raw transactions",
    {"transaction_id": "bigint", "customer_id": "bigint", "merchant_id": "bigint", "amount": "double", "channel": "string",
     "event_timestamp": "timestamp", "arrival_timestamp": "timestamp"},
    ("transaction_id", "customer_id", "merchant_id", "amount", "channel", "event_timestamp", "arrival_timestamp"),
    (Bound("amount", low=0, strict_low=True), Bound("arrival_timestamp", other="event_timestamp"),
     Bound("channel", allowed=("pos", "ecom"))),
)


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
