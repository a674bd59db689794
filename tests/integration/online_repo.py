"""A small Feast repo on tidemark's offline store and the packed Redis online store, for tests.

Data sit in the last days before "now", so TTLs behave as in production: ``cust_stats`` has a
one-day TTL (some customers' latest rows are older and must read as missing), ``cust_profile``
none and holds text and bool features.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

_projects = itertools.count()


@dataclass
class OnlineRepo:
    store: Any
    now: pd.Timestamp
    customers: np.ndarray
    root: Path


def _write(df: pd.DataFrame, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path / "part-0.parquet",
                   coerce_timestamps="us", allow_truncated_timestamps=True)


def make_history(root: Path, *, seed: int = 3, customers: int = 300, rows: int = 3_000) -> pd.Timestamp:
    """Write stats and profile Parquet under ``root``; returns the "now" they end at."""
    rng = np.random.default_rng(seed)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    ev = now - pd.to_timedelta(rng.integers(60, 3 * 86_400, rows), unit="s")
    stats = pd.DataFrame({"customer_id": rng.integers(0, customers, rows).astype(np.int64),
                          "event_timestamp": ev})
    late = rng.random(rows) < 0.2
    stats["created"] = ev + pd.to_timedelta(np.where(late, 1_800, 2), unit="s")
    stats["amount"] = rng.normal(50, 20, rows)
    stats["count"] = rng.integers(0, 40, rows).astype(np.int64)
    stats.loc[rng.random(rows) < 0.05, "amount"] = np.nan
    _write(stats, root / "stats")
    n = customers // 2
    profile = pd.DataFrame({
        "customer_id": np.arange(n, dtype=np.int64),
        "event_timestamp": now - pd.to_timedelta(rng.integers(3_600, 40 * 86_400, n), unit="s"),
        "country": rng.choice(["FR", "DE", "GB, north", "{odd}=%"], n),
        "vip": rng.random(n) < 0.3,
        "income": rng.normal(3_000, 800, n),
    })
    _write(profile, root / "profile")
    return now


def definitions(root: Path, *, stats_ttl: timedelta = timedelta(days=1)) -> list[Any]:
    from feast import Entity, FeatureView, Field, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.types import Bool, Float64, Int64, String

    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    stats = FeatureView(
        name="cust_stats", entities=[customer], ttl=stats_ttl,
        schema=[Field(name="amount", dtype=Float64), Field(name="count", dtype=Int64)],
        source=SparkSource(name="stats_src", path=str(root / "stats"), file_format="parquet",
                           timestamp_field="event_timestamp", created_timestamp_column="created"))
    profile = FeatureView(
        name="cust_profile", entities=[customer], ttl=timedelta(0),
        schema=[Field(name="country", dtype=String), Field(name="vip", dtype=Bool),
                Field(name="income", dtype=Float64)],
        source=SparkSource(name="profile_src", path=str(root / "profile"), file_format="parquet",
                           timestamp_field="event_timestamp"))
    return [customer, stats, profile]


def open_repo(root: Path, url: str | None, *, online: dict[str, Any] | None = None,
              project: str | None = None) -> Any:
    """A FeatureStore over the data in ``root`` with the packed online store at ``url``."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    online_store = {"type": "features.online_store.PackedRedisOnlineStore", "url": url, **(online or {})}
    config = RepoConfig(
        project=project or f"t{next(_projects)}", provider="local",
        registry={"registry_type": "file", "path": str(root / f"registry-{next(_projects)}.db")},
        offline_store={"type": "features.offline_store.SparkAsofOfflineStore"},
        online_store=online_store, entity_key_serialization_version=3, repo_path=str(root))
    return FeatureStore(config=config)


def offline_now(store: Any, customers: np.ndarray, features: list[str], now: pd.Timestamp) -> pd.DataFrame:
    """What the offline point-in-time join returns for ``customers`` at ``now``."""
    entity_df = pd.DataFrame({"customer_id": customers, "event_timestamp": now})
    frame = store.get_historical_features(entity_df=entity_df, features=features).to_df()
    return frame.drop(columns=["event_timestamp"])
