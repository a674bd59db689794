"""Seeded synthetic ride-hailing data for the driver example, written as Parquet.

    data_dir/
        driver_hourly_stats/     one row per driver per hour       (Feast source)
        customer_daily_profile/  one row per customer per UTC day  (Feast source)
        trips/                   one row per requested trip        (entity rows and labels)

Each folder holds ``date=YYYY-MM-DD/part-00000.parquet`` files, split by the UTC day of
``event_timestamp`` (the ``date`` column exists only as the folder name), as tidemark's own
sources are: the Spark sources declare ``date_partition_column="date"`` so a point-in-time join
reads only the days it needs. Timestamps are ``TIMESTAMP(MICROS, isAdjustedToUTC=true)``, the
precision Spark reads.

A trip's outcome is drawn from the features as they were at its request time (the driver's row
for that hour, the customer's row for that day), so a model trained on a point-in-time join can
learn it, and one trained on later values would be fitted to the wrong inputs:

    P(completed) = sigmoid(a + b·acc_rate + c·conv_rate - d·log(distance))
    trip_minutes = distance · (1.8 + 0.5·(avg_passenger_count - 1)) + noise   (completed only)

Everything is vectorised numpy and deterministic for a seed and ``end``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["TABLES", "generate", "main"]

TABLES = ("driver_hourly_stats", "customer_daily_profile", "trips")
"""The folders :func:`generate` writes under its ``data_dir``."""

FIRST_DRIVER_ID = 1001
FIRST_CUSTOMER_ID = 201
MAX_LABEL_DELAY_US = 2 * 86_400_000_000
"""A cancelled trip is known to be cancelled at most 2 days after the request (microseconds)."""

_MINUTE_US = 60_000_000
_HOUR_US = 60 * _MINUTE_US
_DAY_US = 24 * _HOUR_US
_TS = pa.timestamp("us", tz="UTC")
# Requests per hour of the UTC day, relative: a night trough and morning and evening peaks.
_DIURNAL = np.array([2, 1, 1, 1, 1, 2, 4, 7, 9, 7, 5, 5, 6, 5, 5, 6, 8, 10, 9, 7, 6, 5, 4, 3], dtype=np.float64)


@dataclass(frozen=True)
class _Grid:
    """Per-entity time series: ``values[name]`` is shaped (entities, steps), row i is ``ids[i]``."""

    ids: np.ndarray
    times_us: np.ndarray
    values: dict[str, np.ndarray]

    def table(self, rng: np.random.Generator, id_column: str) -> tuple[pa.Table, np.ndarray]:
        """Long table sorted by time (entity within a step), with its event times in microseconds."""
        steps, entities = len(self.times_us), len(self.ids)
        event_us = np.repeat(self.times_us, entities)
        columns: dict[str, pa.Array] = {
            id_column: pa.array(np.tile(self.ids, steps)),
            "event_timestamp": pa.array(event_us, type=_TS),
            "created": pa.array(_created_us(rng, event_us), type=_TS),
        }
        for name, grid in self.values.items():
            columns[name] = pa.array(grid.T.ravel())
        return pa.table(columns), event_us


def generate(
    data_dir: Path,
    *,
    end: datetime,
    days: int = 21,
    drivers: int = 50,
    customers: int = 200,
    trips_per_day: int = 400,
    seed: int = 0,
) -> dict[str, int]:
    """Write the three tables for ``[end - days, end)`` under ``data_dir``; return rows per table.

    ``end`` must be timezone-aware and on the hour. Each table folder is replaced whole (written
    aside, then renamed into place); nothing else under ``data_dir`` is touched.
    """
    end_us = _hour_us(end)
    if min(days, drivers, customers, trips_per_day) < 1:
        raise ValueError(f"days, drivers, customers and trips_per_day must be >= 1, got "
                         f"{days}, {drivers}, {customers}, {trips_per_day}")
    rng = np.random.default_rng(seed)
    start_us = end_us - days * _DAY_US
    hourly = _driver_hourly_stats(rng, drivers, start_us, days * 24)
    first_day_us = start_us - start_us % _DAY_US
    daily = _customer_daily_profile(rng, customers, first_day_us, -(-(end_us - first_day_us) // _DAY_US))
    tables = {
        "driver_hourly_stats": hourly.table(rng, "driver_id"),
        "customer_daily_profile": daily.table(rng, "customer_id"),
        "trips": _trips(rng, hourly, daily, days * trips_per_day),
    }
    _write_tables(tables, data_dir)
    return {name: table.num_rows for name, (table, _) in tables.items()}


def _hour_us(end: datetime) -> int:
    """``end`` in microseconds since the epoch, checked to be timezone-aware and on the hour."""
    if end.tzinfo is None:
        raise ValueError(f"end must be timezone-aware (UTC), got naive {end!r}; pass tzinfo=UTC")
    delta = end.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if micros % _HOUR_US:
        raise ValueError(f"end must be on the hour, got {end.isoformat()}; floor it to the hour")
    return micros


def _driver_hourly_stats(rng: np.random.Generator, drivers: int, start_us: int, hours: int) -> _Grid:
    """Acceptance and conversion rates that drift slowly per driver (a random walk in logit space)."""
    def rate(centre: float) -> np.ndarray:
        level = centre + rng.normal(0.0, 0.9, (drivers, 1))
        walk = np.cumsum(rng.normal(0.0, 0.04, (drivers, hours)), axis=1)
        return _sigmoid(level + walk + rng.normal(0.0, 0.15, (drivers, hours))).astype(np.float32)

    typical_trips = rng.uniform(4.0, 30.0, (drivers, 1))
    trips_walk = np.exp(np.cumsum(rng.normal(0.0, 0.01, (drivers, hours)), axis=1))
    return _Grid(
        ids=FIRST_DRIVER_ID + np.arange(drivers, dtype=np.int64),
        times_us=start_us + _HOUR_US * np.arange(hours, dtype=np.int64),
        values={"conv_rate": rate(-0.3), "acc_rate": rate(1.0),
                "avg_daily_trips": rng.poisson(typical_trips * trips_walk).astype(np.int64)},
    )


def _customer_daily_profile(rng: np.random.Generator, customers: int, first_day_us: int, days: int) -> _Grid:
    """Wallet balance (EUR), usual party size and a lifetime trip count that never decreases."""
    balance = rng.lognormal(3.5, 0.8, (customers, 1)) * np.exp(
        np.cumsum(rng.normal(0.0, 0.1, (customers, days)), axis=1))
    party = rng.uniform(1.0, 3.0, (customers, 1)) + rng.normal(0.0, 0.1, (customers, days))
    trips_per_day = rng.uniform(0.1, 3.0, (customers, 1))
    lifetime = rng.integers(0, 300, (customers, 1)) + np.cumsum(rng.poisson(trips_per_day, (customers, days)), axis=1)
    return _Grid(
        ids=FIRST_CUSTOMER_ID + np.arange(customers, dtype=np.int64),
        times_us=first_day_us + _DAY_US * np.arange(days, dtype=np.int64),
        values={"current_balance": np.round(balance, 2).astype(np.float32),
                "avg_passenger_count": np.clip(party, 1.0, 4.0).astype(np.float32),
                "lifetime_trip_count": lifetime.astype(np.int64)},
    )


def _created_us(rng: np.random.Generator, event_us: np.ndarray) -> np.ndarray:
    """When each feature row landed: 1-10 minutes of processing, 3% of rows 1-6 hours late."""
    delay = rng.integers(1, 11, len(event_us)) * _MINUTE_US
    late = rng.random(len(event_us)) < 0.03
    delay[late] += rng.integers(_HOUR_US, 6 * _HOUR_US, int(late.sum()))
    return event_us + delay


def _request_times_us(rng: np.random.Generator, start_us: int, hours: int, n: int) -> np.ndarray:
    """``n`` sorted request times (whole seconds) in ``[start, start + hours)``, busier at peaks."""
    weight = _DIURNAL[(start_us // _HOUR_US + np.arange(hours)) % 24]
    hour = rng.choice(hours, size=n, p=weight / weight.sum())
    return np.sort(start_us + hour * _HOUR_US + rng.integers(0, 3600, n) * 1_000_000)


def _trips(rng: np.random.Generator, hourly: _Grid, daily: _Grid, n: int) -> tuple[pa.Table, np.ndarray]:
    """Requested trips with their outcome, drawn from the features in force at request time."""
    start_us = int(hourly.times_us[0])
    t = _request_times_us(rng, start_us, len(hourly.times_us), n)
    d, c = rng.integers(0, len(hourly.ids), n), rng.integers(0, len(daily.ids), n)
    hour, day = (t - start_us) // _HOUR_US, (t - int(daily.times_us[0])) // _DAY_US
    acc, conv = hourly.values["acc_rate"][d, hour], hourly.values["conv_rate"][d, hour]
    party = daily.values["avg_passenger_count"][c, day]
    distance = np.round(np.clip(rng.lognormal(np.log(6.0), 0.6, n), 0.5, 80.0), 2)
    logit = 0.6 + 4.0 * (acc - 0.7) + 3.0 * (conv - 0.45) - 0.9 * np.log(distance / 6.0)
    completed = rng.random(n) < _sigmoid(logit)
    minutes = np.maximum(distance * (1.8 + 0.5 * (party - 1.0)) + rng.normal(0.0, 2.5, n), 1.0)
    table = pa.table({
        "trip_id": pa.array(1 + np.arange(n, dtype=np.int64)),
        "driver_id": pa.array(hourly.ids[d]),
        "customer_id": pa.array(daily.ids[c]),
        "event_timestamp": pa.array(t, type=_TS),
        "trip_distance_km": pa.array(distance),
        "completed": pa.array(completed.astype(np.int8)),
        "trip_minutes": pa.array(np.where(completed, np.round(minutes, 2), np.nan)),
        "label_timestamp": pa.array(t + _label_delay_us(rng, completed, minutes), type=_TS),
    })
    return table, t


def _label_delay_us(rng: np.random.Generator, completed: np.ndarray, minutes: np.ndarray) -> np.ndarray:
    """Request to known outcome: pickup wait plus the ride when completed; for a cancellation,
    minutes when the customer cancels, up to 2 days when the request is only closed by a timeout."""
    wait_us = rng.uniform(2.0, 15.0, len(completed)) * _MINUTE_US
    quick = rng.exponential(15.0 * _MINUTE_US, len(completed))
    slow = rng.uniform(0.0, MAX_LABEL_DELAY_US, len(completed))
    cancelled_us = np.where(rng.random(len(completed)) < 0.75, quick, slow)
    delay = np.where(completed, wait_us + minutes * _MINUTE_US, cancelled_us)
    return np.minimum(delay, MAX_LABEL_DELAY_US).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def _write_tables(tables: dict[str, tuple[pa.Table, np.ndarray]], data_dir: Path) -> None:
    """Write every table aside, then swap each folder into place (a rerun leaves no stale days)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f".staging-{uuid.uuid4().hex}"
    try:
        for name, (table, event_us) in tables.items():
            _write_days(table, event_us, staging / name)
        for name in tables:
            _replace(staging / name, data_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_days(table: pa.Table, event_us: np.ndarray, folder: Path) -> None:
    """One ``date=YYYY-MM-DD`` folder per UTC day of ``event_us`` (sorted ascending)."""
    day = event_us // _DAY_US
    cuts = np.flatnonzero(np.diff(day)) + 1
    for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(day)].tolist(), strict=True):
        name = datetime.fromtimestamp(int(day[lo]) * 86_400, UTC).date().isoformat()
        (folder / f"date={name}").mkdir(parents=True)
        pq.write_table(table.slice(lo, hi - lo), folder / f"date={name}" / "part-00000.parquet",
                       compression="snappy", coerce_timestamps="us")


def _replace(staged: Path, target: Path) -> None:
    """Rename ``staged`` to ``target``, deleting what ``target`` held only once the new one is in."""
    retired = target.with_name(f".{target.name}.retired-{uuid.uuid4().hex}")
    if target.exists():
        os.replace(target, retired)
    os.replace(staged, target)
    shutil.rmtree(retired, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m examples.driver.datagen --home DIR``: the last ``--days`` up to the current hour."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("TIDEMARK_HOME", ".tidemark")),
                        help="tidemark home; data goes to HOME/driver_example/data (default: $TIDEMARK_HOME)")
    parser.add_argument("--days", type=int, default=21, help="days of history ending at the current hour")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    data_dir = args.home / "driver_example" / "data"
    began = time.perf_counter()
    counts = generate(data_dir, end=end, days=args.days, seed=args.seed)
    rows = ", ".join(f"{name} {count:,}" for name, count in counts.items())
    print(f"wrote {rows} rows to {data_dir} in {time.perf_counter() - began:.2f} s (up to {end.isoformat()})")


if __name__ == "__main__":
    main()
