"""Spark column expressions for UTC time arithmetic in integer microseconds.

The feature jobs do all their time arithmetic on ``int64`` microseconds since the Unix epoch
(UTC) and on UTC day indices (days since 1970-01-01), never on session-time-zone-dependent
functions (``date_format``, ``to_date`` of a timestamp), so their results are the same whatever
time zone a reused Spark session happens to have.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column
from pyspark.sql import functions as F

SECOND_US = 1_000_000
HOUR_US = 3_600 * SECOND_US
DAY_US = 24 * HOUR_US
MICROS_PER_EUR = 1_000_000
"""Amounts are summed as whole micro-euros (1e-6 EUR), see :func:`amount_micros`."""

_EPOCH = date(1970, 1, 1)


def day_index(day: date) -> int:
    """UTC day index of ``day``: days since 1970-01-01."""
    return (day - _EPOCH).days


def epoch_micros(ts: Column) -> Column:
    """A timestamp column as int64 microseconds since the epoch (UTC)."""
    return F.unix_micros(ts)


def floor_div(x: Column, divisor: int) -> Column:
    """``floor(x / divisor)`` for an int64 column, exact (no rounding through a double quotient)."""
    # x - pmod(x, d) is an exact multiple of d below 2**53, so the double division is exact too.
    return ((x - F.pmod(x, F.lit(divisor))) / F.lit(divisor)).cast("long")


def ceil_div(x: Column, divisor: int) -> Column:
    """``ceil(x / divisor)`` for an int64 column, exact."""
    return -floor_div(-x, divisor)


def day_start(day_idx: Column) -> Column:
    """The timestamp of 00:00 UTC of a day index column."""
    return F.timestamp_micros(day_idx.cast("long") * F.lit(DAY_US))


def utc_date_string(micros: Column) -> Column:
    """``YYYY-MM-DD`` of the UTC day that an epoch-microsecond column falls on (partition value)."""
    return F.date_from_unix_date(floor_div(micros, DAY_US).cast("int")).cast("string")


def amount_micros(amount_eur: Column) -> Column:
    """An amount in EUR as int64 micro-euros, rounded half to even.

    Sums are taken over these integers: exact, hence independent of the order Spark adds rows in
    (ties, shuffles), which is what makes backfill and incremental runs bit-identical.
    """
    return F.rint(amount_eur * F.lit(float(MICROS_PER_EUR))).cast("long")


def micros_to_eur(micros: Column) -> Column:
    """Inverse of :func:`amount_micros`: int64 micro-euros as a float64 amount in EUR."""
    return micros.cast("double") / F.lit(float(MICROS_PER_EUR))
