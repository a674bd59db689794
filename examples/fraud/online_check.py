"""The fraud example's ``feature_jobs.sample_entities``: the entity rows on which the
``feature_pipeline`` DAG compares online values with the offline store's.

    raw payments of the interval ──► distinct (customer_id, merchant_id) pairs, a seeded sample
    offline tables' created times ──► ``pending``: a pair with a feature row that arrived after
                                      the interval's end (not materialized yet, rightly)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipelines.feature_pipeline import interval_dates
from pipelines.training_data import utc_timestamp

if TYPE_CHECKING:
    from tidemark.settings import Settings

__all__ = ["sample_entities"]


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
    """Per entity row: does a customer or merchant feature row of it carry a created time in
    ``(end, read_at]`` (known now, not yet materialized)? Reads the offline tables' created columns."""
    import pyarrow.dataset as ds

    created = {"customer_txn_agg": ("customer_id", ["created_1h", "created_24h", "created_7d"]),
               "customer_profile": ("customer_id", ["created_timestamp"]),
               "merchant_stats": ("merchant_id", ["created_timestamp"])}
    late: dict[str, set[int]] = {"customer_id": set(), "merchant_id": set()}
    for table, (key, columns) in created.items():
        root = settings.offline_dir / table
        if not root.is_dir():
            continue
        arrived = None
        for c in columns:
            f = ds.field(c)
            cond = (f > end) & (f <= read_at)
            arrived = cond if arrived is None else arrived | cond
        wanted = ds.field(key).isin(entities[key].unique().tolist()) & arrived
        found = ds.dataset(root, format="parquet", partitioning="hive").to_table(columns=[key], filter=wanted)
        late[key].update(found[key].to_pylist())
    return (entities["customer_id"].isin(late["customer_id"]) | entities["merchant_id"].isin(late["merchant_id"])
            ).to_numpy()
