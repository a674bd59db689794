"""The fraud example's ``feature_jobs.sample_entities``: the entity rows on which the
``feature_pipeline`` DAG compares online values with the offline store's.

    raw payments of the interval ──► distinct (customer_id, merchant_id) pairs, a seeded sample
    offline tables' created times ──► ``pending``: a pair with a feature row that arrived after
    and raw payments' arrivals        the interval's end (not materialized yet, rightly), or a
                                      customer with a payment that arrived after it (its windows
                                      were rebuilt as of the interval's end; in production the
                                      served payments are pushed as they come, in this example's
                                      generated world the payments of the hours since are not)
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from examples.fraud.datagen.events import MAX_LATE_US
from pipelines.feature_pipeline import interval_dates
from pipelines.training_data import utc_timestamp

if TYPE_CHECKING:
    from tidemark.settings import Settings

__all__ = ["sample_entities"]

MAX_LATE = timedelta(microseconds=MAX_LATE_US)  # the latest a generated payment arrives after its event


def sample_entities(settings: Settings, start: datetime, end: datetime, *, sample: int, seed: int,
                    read_at: datetime) -> pd.DataFrame:
    """Up to ``sample`` (customer_id, merchant_id) pairs that paid in ``[start, end)`` (UTC, a
    seeded sample), with ``pending``: a feature row of the pair arrived in ``(end, read_at]``."""
    entities = _entities(settings, start, end, sample, seed)
    pending = _arrived_after(settings, _utc(end), read_at, entities) if len(entities) else np.zeros(0, dtype=bool)
    return entities.assign(pending=pending)


def _utc(moment: datetime) -> datetime:
    return utc_timestamp(moment).to_pydatetime()


def _entities(settings: Settings, start: datetime, end: datetime, sample: int, seed: int) -> pd.DataFrame:
    """Distinct (customer_id, merchant_id) pairs that paid in ``[start, end)``, a seeded sample."""
    import pyarrow.dataset as ds

    first, last = interval_dates(start, end)
    root = settings.raw_dir / "transactions"
    files = [str(f) for i in range((last - first).days + 1)
             for f in sorted((root / f"date={first + timedelta(days=i)}").glob("*.parquet"))]
    if not files:
        return pd.DataFrame({"customer_id": np.array([], np.int64), "merchant_id": np.array([], np.int64)})
    when = ds.field("event_timestamp")
    table = ds.dataset(files, format="parquet").to_table(
        columns=["customer_id", "merchant_id"], filter=(when >= _utc(start)) & (when < _utc(end)))
    pairs = table.to_pandas().drop_duplicates().sort_values(["customer_id", "merchant_id"])
    if len(pairs) > sample:
        pairs = pairs.sample(sample, random_state=seed)
    return pairs.astype("int64").reset_index(drop=True)


def _arrived_after(settings: Settings, end: datetime, read_at: datetime, entities: pd.DataFrame) -> np.ndarray:
    """Per entity row: did a record of it arrive in ``(end, read_at]`` (known now, not loaded by a
    run up to ``end``)? The offline tables' created columns, and the raw payments' arrivals (the
    customer windows are computed from those)."""
    late: dict[str, set[int]] = {"customer_id": set(), "merchant_id": set()}
    for table, (key, column) in {"customer_profile": ("customer_id", "created_timestamp"),
                                 "merchant_stats": ("merchant_id", "created_timestamp")}.items():
        late[key] |= _keys_arrived(settings.offline_dir / table, key, column, end, read_at, entities)
    # a payment arrives at most MAX_LATE after its event, in its event day's partition
    late["customer_id"] |= _keys_arrived(settings.raw_dir / "transactions", "customer_id", "arrival_timestamp",
                                         end, read_at, entities, since=(end - MAX_LATE).date())
    return (entities["customer_id"].isin(late["customer_id"]) | entities["merchant_id"].isin(late["merchant_id"])
            ).to_numpy()


def _keys_arrived(root: Path, key: str, column: str, end: datetime, read_at: datetime, entities: pd.DataFrame,
                  since: date | None = None) -> set[int]:
    """The ``key`` values of ``entities`` with a row under ``root`` whose ``column`` is in ``(end, read_at]``,
    reading the ``date=`` partitions from ``since`` on (all when None)."""
    import pyarrow.dataset as ds

    if not root.is_dir():
        return set()
    parts = sorted(p for p in root.glob("date=*") if since is None or p.name[len("date="):] >= since.isoformat())
    files = [str(f) for p in parts for f in sorted(p.glob("*.parquet"))]
    if not files:
        return set()
    when = ds.field(column)
    wanted = ds.field(key).isin(entities[key].unique().tolist()) & (when > end) & (when <= read_at)
    found = ds.dataset(files, format="parquet").to_table(columns=[key], filter=wanted)
    return set(found[key].to_pylist())
