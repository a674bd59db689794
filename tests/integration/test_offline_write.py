"""SparkAsofOfflineStore.offline_write_batch through Feast's push and write_to_offline_store, on real Spark."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.errors import OfflineWriteError

pytestmark = pytest.mark.integration

DAY = pd.Timestamp("2026-02-01", tz="UTC")


def _existing(root: Path) -> pd.DataFrame:
    """Rows as a feature build writes them: one folder per UTC day, microsecond timestamps."""
    rows = pd.DataFrame({"user_id": [1, 2], "event_timestamp": [DAY + pd.Timedelta("1h"), DAY + pd.Timedelta("2h")],
                         "score": [0.25, 0.5]})
    folder = root / "date=2026-02-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), folder / "part-0.parquet", coerce_timestamps="us")
    return rows


def _store(root: Path, *, partitioned: bool):
    from feast import Entity, FeatureStore, FeatureView, Field, PushSource, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.repo_config import RepoConfig
    from feast.types import Float64

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    batch = SparkSource(name="scores_src", path=str(root / "scores"), file_format="parquet",
                        timestamp_field="event_timestamp",
                        **({"date_partition_column": "date"} if partitioned else {}))
    push = PushSource(name="scores_push", batch_source=batch)
    view = FeatureView(name="scores", entities=[user], schema=[Field(name="score", dtype=Float64)], source=push)
    store = FeatureStore(config=RepoConfig(
        project="w", provider="local", registry={"registry_type": "file", "path": str(root / "registry.db")},
        offline_store={"type": "features.offline_store.SparkAsofOfflineStore"},
        online_store={"type": "sqlite", "path": str(root / "online.db")},
        entity_key_serialization_version=3, repo_path=str(root)))
    store.apply([user, view])
    return store


def _scores(store, users: list[int], at: pd.Timestamp) -> list:
    entity_df = pd.DataFrame({"user_id": users, "event_timestamp": [at] * len(users)})
    return store.get_historical_features(entity_df=entity_df, features=["scores:score"]).to_df()["score"].tolist()


def test_push_to_offline_appends_into_the_days_partitions(tmp_path, spark):
    from feast.data_source import PushMode

    _existing(tmp_path / "scores")
    store = _store(tmp_path, partitioned=True)
    pushed = pd.DataFrame({"user_id": [1, 3], "score": [0.75, 1.5],
                           "event_timestamp": [DAY + pd.Timedelta("3h"), DAY + pd.Timedelta("1D 5h")],
                           "date": ["2026-02-01", "2026-02-02"]})
    store.push("scores_push", pushed, to=PushMode.OFFLINE)
    assert _scores(store, [1, 2, 3], DAY + pd.Timedelta("2D")) == [0.75, 0.5, 1.5]
    early = _scores(store, [1, 3], DAY + pd.Timedelta("150min"))  # as of before the pushed rows
    assert early[0] == 0.25 and pd.isna(early[1])
    folders = sorted(p.name for p in (tmp_path / "scores").iterdir() if not p.name.startswith("_"))
    assert folders == ["date=2026-02-01", "date=2026-02-02"]
    day1 = pq.read_table(tmp_path / "scores" / "date=2026-02-01").to_pandas()
    assert sorted(day1["score"]) == [0.25, 0.5, 0.75]
    assert pq.read_schema(next((tmp_path / "scores" / "date=2026-02-02").glob("*.parquet"))).field(
        "event_timestamp").type == pa.timestamp("us", tz="UTC")


def test_write_to_offline_store_appends_a_file_to_an_unpartitioned_source(tmp_path, spark):
    root = tmp_path / "scores"
    root.mkdir()
    rows = pd.DataFrame({"user_id": [1], "event_timestamp": [DAY], "score": [0.25]})
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), root / "part-0.parquet", coerce_timestamps="us")
    store = _store(tmp_path, partitioned=False)
    store.write_to_offline_store("scores", pd.DataFrame({
        "user_id": [2], "event_timestamp": [DAY + pd.Timedelta("1h")], "score": [0.5]}))
    assert _scores(store, [1, 2], DAY + pd.Timedelta("1D")) == [0.25, 0.5]
    assert len([p for p in root.iterdir() if p.suffix == ".parquet" and not p.name.startswith("_")]) == 2


def test_rows_that_do_not_fit_the_source_are_refused_and_leave_it_as_it_was(tmp_path, spark):
    _existing(tmp_path / "scores")
    store = _store(tmp_path, partitioned=True)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "scores").rglob("*"))
    bad = pd.DataFrame({"user_id": [1], "event_timestamp": [DAY + pd.Timedelta("3h")], "score": ["high"],
                        "date": ["2026-02-01"]})
    with pytest.raises(OfflineWriteError, match="'score'.*convert"):
        store.write_to_offline_store("scores", bad)
    after = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "scores").rglob("*"))
    assert after == before
    assert _scores(store, [1], DAY + pd.Timedelta("1D")) == [0.25]
