"""Deterministic synthetic card-fraud data: what ``tidemark datagen`` writes to ``$TIDEMARK_HOME/raw``.

:func:`generate` writes the four raw tables of ``docs/data_model.md`` (``customer_profiles/``,
``merchants/``, ``transactions/``, ``labels/``) and ``_manifest.json``. The same
:class:`DatagenConfig` always yields the same values. A :class:`Scenario` other than the baseline
changes only what happens from ``drift_start`` on: every event before it is identical to the
baseline's for the same seed, because each concern draws from its own random stream
(``SeedSequence.spawn``) and the scenarios draw from streams of their own.

Errors::

    TidemarkError
    └── DatagenError (also a ValueError)   bad arguments, or an output folder that is not ours
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from examples.fraud.datagen import catalog as cat
from examples.fraud.datagen.tables import RawTables, build_tables
from tidemark.errors import TidemarkError

__all__ = ["DatagenConfig", "DatagenError", "DatagenSummary", "Scenario", "data_window", "generate"]

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"
LATE_AFTER_S = 60  # an arrival more than this many seconds after the event counts as late
_EPOCH = dt.date(1970, 1, 1)


class DatagenError(TidemarkError, ValueError):
    """The generator's arguments are invalid, or the output folder cannot be replaced safely."""


class Scenario(str, enum.Enum):
    """What changes from the drift start on (nothing, for the baseline)."""

    BASELINE = "baseline"
    COVARIATE_SHIFT = "covariate_shift"  # amounts x1.6, incomes of most customers up ~35%
    NEW_CATEGORY = "new_category"  # crypto_exchange merchants take ~15% of payments
    CONCEPT_DRIFT = "concept_drift"  # fraud turns into small domestic card testing


@dataclass(frozen=True)
class DatagenConfig:
    """Arguments of one generator run.

    ``rows`` transactions over ``days`` UTC days from ``start``; ``drift_start`` (a UTC day)
    defaults to ``start`` + 75% of ``days``; ``customers`` defaults to ``rows // 40`` and
    ``merchants`` to ``max(200, rows // 400)``. ``scenario`` may be given as its string value.
    """

    rows: int = 1_000_000
    seed: int = 7
    scenario: Scenario = Scenario.BASELINE
    start: dt.date = dt.date(2026, 1, 1)
    days: int = 120
    drift_start: dt.date | None = None
    customers: int | None = None
    merchants: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scenario", _parse_scenario(self.scenario))
        _require_int("rows", self.rows, 1, "pass e.g. --rows 1000000")
        _require_int("seed", self.seed, 0, "pass e.g. --seed 7")
        _require_int("days", self.days, 1, "pass e.g. --days 120")
        if not isinstance(self.start, dt.date) or isinstance(self.start, dt.datetime):
            raise DatagenError(f"start must be a datetime.date (a UTC day), got {self.start!r}")
        if self.customers is not None:
            _require_int("customers", self.customers, 1, "or leave it out for rows // 40")
        if self.merchants is not None:
            n = len(cat.CATEGORIES)
            _require_int(
                "merchants", self.merchants, n, "(one per category at least) or leave it out"
            )
        for name in ("rows", "seed", "days", "customers", "merchants"):
            if isinstance(getattr(self, name), np.integer):  # keep the manifest JSON-ready
                object.__setattr__(self, name, int(getattr(self, name)))
        self._check_drift_start()

    def _check_drift_start(self) -> None:
        last = self.start + dt.timedelta(days=self.days - 1)
        if self.days < 2 and self.scenario is not Scenario.BASELINE:
            raise DatagenError(
                f"scenario {self.scenario.value!r} needs days >= 2 so that some data comes before "
                f"the drift start (got days={self.days}); pass e.g. --days 120"
            )
        given = self.drift_start
        if given is None:
            return
        if not isinstance(given, dt.date) or isinstance(given, dt.datetime):
            raise DatagenError(f"drift_start must be a datetime.date (a UTC day), got {given!r}")
        if not self.start < given <= last:
            raise DatagenError(
                f"drift_start {given} is outside the data window: pick a day from "
                f"{self.start + dt.timedelta(days=1)} to {last} (after start {self.start}, within "
                f"its {self.days} days), or leave it out for start + 75% of days"
            )

    @property
    def drift_date(self) -> dt.date:
        """The UTC day from which the scenario applies."""
        if self.drift_start is not None:
            return self.drift_start
        return self.start + dt.timedelta(days=max(1, int(self.days * 0.75)))

    @property
    def n_customers(self) -> int:
        """Number of customers, the default applied."""
        return self.customers if self.customers is not None else max(1, self.rows // 40)

    @property
    def n_merchants(self) -> int:
        """Number of (baseline) merchants, the default applied."""
        return self.merchants if self.merchants is not None else max(200, self.rows // 400)

    def manifest(self) -> dict[str, Any]:
        """The arguments as JSON-ready values, defaults resolved, to reproduce the run."""
        return {
            "rows": self.rows,
            "seed": self.seed,
            "scenario": self.scenario.value,
            "start": self.start.isoformat(),
            "days": self.days,
            "drift_start": self.drift_date.isoformat(),
            "customers": self.n_customers,
            "merchants": self.n_merchants,
        }


def data_window(start: dt.date | None, end: dt.date | None, days: int | None, today: dt.date) -> tuple[dt.date, int]:
    """(first day, days) of a generated window, all days UTC and inclusive: by default the ``days``
    (120) up to ``today``, so that the data is recent enough for the feature views' TTLs and a
    materialization "up to now" serves it; ``start``/``end`` pin it (given both, ``days`` must be
    left out or agree)."""
    if start is not None and end is not None:
        span = (end - start).days + 1
        if span < 1:
            raise DatagenError(f"--end {end} is before --start {start}; give the last day after the first")
        if days is not None and days != span:
            raise DatagenError(f"--start {start} to --end {end} is {span} days, not --days {days}; leave one out")
        return start, span
    days = DatagenConfig.days if days is None else days
    _require_int("days", days, 1, "pass e.g. --days 120")
    if start is not None:
        return start, days
    last = today if end is None else end
    return last - dt.timedelta(days=days - 1), days


def _parse_scenario(value: object) -> Scenario:
    """The :class:`Scenario` named by ``value`` (a member or its string value)."""
    try:
        return Scenario(value)
    except ValueError:
        known = ", ".join(s.value for s in Scenario)
        raise DatagenError(f"unknown scenario {value!r}; choose one of: {known}") from None


def _require_int(name: str, value: object, minimum: int, hint: str) -> None:
    """Raise :class:`DatagenError` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DatagenError(f"{name} must be an integer >= {minimum}, got {value!r}; {hint}")


@dataclass(frozen=True)
class DatagenSummary:
    """What a run wrote: row counts, fraud rate and late-arrival share (fractions), wall seconds."""

    transactions: int
    labels: int
    customers: int
    profile_versions: int
    merchants: int
    fraud_rate: float
    late_share: float
    seconds: float
    out_dir: Path

    def table(self) -> str:
        """A short aligned table for the terminal."""
        rows = [
            ("transactions", f"{self.transactions:,}"),
            ("labels", f"{self.labels:,}"),
            ("customers", f"{self.customers:,}"),
            ("profile versions", f"{self.profile_versions:,}"),
            ("merchants", f"{self.merchants:,}"),
            ("fraud rate", f"{self.fraud_rate:.2%}"),
            ("late arrivals", f"{self.late_share:.2%}"),
            ("seconds", f"{self.seconds:.1f}"),
        ]
        lines = [f"{name:<17}{value:>14}" for name, value in rows]
        return "\n".join([f"raw data in {self.out_dir}", *lines])


def generate(out_dir: Path, config: DatagenConfig) -> DatagenSummary:
    """Generate the raw tables for ``config`` into ``out_dir`` (``$TIDEMARK_HOME/raw``).

    Whatever ``out_dir`` held before is replaced as a whole: the data is written to a sibling
    folder that is then renamed into place, so a crash never leaves a half-written ``out_dir``.
    A non-empty ``out_dir`` without a ``_manifest.json`` is refused, to never delete foreign data.
    """
    began = time.perf_counter()
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    tables = build_tables(config)
    log.info(
        "simulated %d transactions in %.1f s",
        tables.transactions.num_rows,
        time.perf_counter() - began,
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    try:
        _write_tables(tables, staged)
        manifest = {
            "generator": "tidemark datagen",
            "format": 1,
            **config.manifest(),
            **tables.counts(),
        }
        (staged / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _swap_into_place(staged, out_dir)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    seconds = time.perf_counter() - began
    log.info("wrote %s in %.1f s", out_dir, seconds)
    return _summary(tables, out_dir, seconds)


def _summary(tables: RawTables, out_dir: Path, seconds: float) -> DatagenSummary:
    """Counts and rates of the written tables."""
    txn = tables.transactions
    delay_us = _us(txn["arrival_timestamp"]) - _us(txn["event_timestamp"])
    return DatagenSummary(
        transactions=txn.num_rows,
        labels=tables.labels.num_rows,
        customers=len(np.unique(_ints(tables.profiles["customer_id"]))),
        profile_versions=tables.profiles.num_rows,
        merchants=tables.merchants.num_rows,
        fraud_rate=float(np.mean(_ints(tables.labels["is_fraud"]))),
        late_share=float(np.mean(delay_us > LATE_AFTER_S * cat.SECOND_US)),
        seconds=seconds,
        out_dir=out_dir,
    )


def _us(column: pa.ChunkedArray) -> np.ndarray:
    """Microseconds since the epoch of a timestamp[us] column."""
    return _ints(column.cast(pa.int64()))


def _ints(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as a numpy array."""
    return np.asarray(column.to_numpy())


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier run's output."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DatagenError(
            f"{out_dir} exists and is not a folder; remove it or choose another out_dir"
        )
    if any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
        raise DatagenError(
            f"refusing to replace {out_dir}: it is not empty and has no {MANIFEST_NAME} from an "
            "earlier datagen run; empty or remove it, or point TIDEMARK_HOME elsewhere"
        )


def _swap_into_place(staged: Path, out_dir: Path) -> None:
    """Rename ``staged`` to ``out_dir``, retiring (then deleting) what was there."""
    retired = out_dir.with_name(f".{out_dir.name}.retired-{uuid.uuid4().hex}")
    had_old = out_dir.exists()
    if had_old:
        os.replace(out_dir, retired)
    try:
        os.replace(staged, out_dir)
    except OSError:
        if had_old:
            os.replace(retired, out_dir)
        raise
    if had_old:
        shutil.rmtree(retired, ignore_errors=True)


def _write_tables(tables: RawTables, root: Path) -> None:
    """Write the four tables under ``root`` (Parquet, timestamps in microseconds, UTC)."""
    (root / "merchants").mkdir()
    _write_parquet(tables.merchants, root / "merchants" / "part-00000.parquet")
    jobs = [
        *_partition_jobs(tables.profiles, "valid_from", root / "customer_profiles"),
        *_partition_jobs(tables.transactions, "event_timestamp", root / "transactions"),
        *_partition_jobs(tables.labels, "label_timestamp", root / "labels"),
    ]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda job: _write_parquet(*job), jobs))


def _partition_jobs(table: pa.Table, column: str, directory: Path) -> list[tuple[pa.Table, Path]]:
    """(slice, file) pairs writing ``table``, sorted by ``column``, as ``date=YYYY-MM-DD`` folders."""
    day = _us(table[column]) // cat.DAY_US
    cuts = np.flatnonzero(np.diff(day)) + 1
    starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(day)]])
    jobs = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        folder = directory / f"date={(_EPOCH + dt.timedelta(days=int(day[s]))).isoformat()}"
        folder.mkdir(parents=True)
        jobs.append((table.slice(s, e - s), folder / "part-00000.parquet"))
    return jobs


def _write_parquet(table: pa.Table, path: Path) -> None:
    """One Parquet file, timestamps as TIMESTAMP(MICROS, isAdjustedToUTC=true) that Spark reads."""
    pq.write_table(table, path, compression="snappy", coerce_timestamps="us")
