"""SparkAsofOfflineStore through Feast's own FeatureStore API, against Feast's Spark store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.integration

BASE = pd.Timestamp("2026-02-01", tz="UTC")

DEFINITIONS = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, ValueType
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Float64, Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
rider = Entity(name="rider", join_keys=["rider_id"], value_type=ValueType.INT64)
driver_stats = FeatureView(
    name="driver_stats", entities=[driver], ttl=timedelta(hours=6),
    schema=[Field(name="rate", dtype=Float64), Field(name="trips", dtype=Int64)],
    source=SparkSource(name="driver_src", path="{root}/driver", file_format="parquet",
                       timestamp_field="event_timestamp", created_timestamp_column="created"),
)
rider_stats = FeatureView(
    name="rider_stats", entities=[rider], ttl=timedelta(0),
    schema=[Field(name="score", dtype=Float64)],
    source=SparkSource(name="rider_src", path="{root}/rider", file_format="parquet",
                       timestamp_field="event_timestamp", created_timestamp_column="created"),
)
'''


def _write(df: pd.DataFrame, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path / "part-0.parquet", coerce_timestamps="us")


def _history(rng: np.random.Generator, key: str, n_keys: int, n: int, value_cols: dict) -> pd.DataFrame:
    # Distinct seconds per key (no event-time ties), so Feast's store returns one row per entity.
    ev = BASE + pd.to_timedelta(rng.permutation(n * 7)[:n].astype(np.int64) * 60 + rng.integers(0, 59, n), unit="s")
    df = pd.DataFrame({key: rng.integers(0, n_keys, n).astype(np.int64), "event_timestamp": ev})
    df["created"] = df["event_timestamp"] + pd.to_timedelta(np.where(rng.random(n) < 0.2, 7_200, 5), unit="s")
    for name, fn in value_cols.items():
        df[name] = fn(n)
    return df


@pytest.fixture(scope="module")
def repos(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("feast")
    rng = np.random.default_rng(11)
    driver = _history(rng, "driver_id", 40, 3_000, {"rate": lambda n: rng.random(n),
                                                    "trips": lambda n: rng.integers(0, 100, n)})
    rider = _history(rng, "rider_id", 30, 1_000, {"score": lambda n: rng.normal(size=n)})
    _write(driver, root / "data" / "driver")
    _write(rider, root / "data" / "rider")
    stores = {}
    for name, offline in {
        "ours": {"type": "features.offline_store.SparkAsofOfflineStore", "filter_by_created_timestamp": False},
        "ours_filtered": {"type": "features.offline_store.SparkAsofOfflineStore"},
        "feast": {"type": "spark"},
    }.items():
        repo = root / name
        repo.mkdir()
        (repo / "definitions.py").write_text(DEFINITIONS.replace("{root}", str(root / "data")))
        (repo / "feature_store.yaml").write_text(yaml.safe_dump({
            "project": "t", "provider": "local", "registry": str(repo / "registry.db"),
            "offline_store": offline, "online_store": {"type": "sqlite", "path": str(repo / "online.db")},
            "entity_key_serialization_version": 3,
        }))
        from feast import FeatureStore

        store = FeatureStore(repo_path=str(repo))
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"defs_{name}", repo / "definitions.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        store.apply([module.driver, module.rider, module.driver_stats, module.rider_stats])
        stores[name] = store
    entities = pd.DataFrame({
        "driver_id": rng.integers(0, 45, 800).astype(np.int64),   # some ids have no history
        "rider_id": rng.integers(0, 30, 800).astype(np.int64),
        "event_timestamp": BASE + pd.to_timedelta(rng.integers(0, 3_000 * 7 * 60, 800), unit="s"),
    })
    entities = pd.concat([entities, entities.iloc[:25]], ignore_index=True)  # duplicates
    return stores, entities, driver


FEATURES = ["driver_stats:rate", "driver_stats:trips", "rider_stats:score"]


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["driver_id", "rider_id", "event_timestamp", "rate", "trips", "score"]
    return df[cols].sort_values(cols).reset_index(drop=True)


def test_identical_to_feast_spark_store_without_ties(repos):
    stores, entities, _ = repos
    ours = stores["ours"].get_historical_features(entity_df=entities.copy(), features=FEATURES).to_df()
    theirs = stores["feast"].get_historical_features(entity_df=entities.copy(), features=FEATURES).to_df()
    assert len(ours) == len(entities) == len(theirs)
    a, b = _sorted(ours), _sorted(theirs)
    b["event_timestamp"] = pd.to_datetime(b["event_timestamp"], utc=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert ours["rate"].notna().mean() > 0.3  # a real comparison, not all nulls


def test_output_keeps_input_order_and_duplicates(repos):
    stores, entities, _ = repos
    out = stores["ours"].get_historical_features(entity_df=entities.copy(), features=FEATURES).to_df()
    pd.testing.assert_series_equal(out["driver_id"], entities["driver_id"], check_names=False)
    pd.testing.assert_series_equal(out["event_timestamp"], entities["event_timestamp"], check_names=False)
    dup = out.iloc[-25:].reset_index(drop=True)
    pd.testing.assert_frame_equal(dup, out.iloc[:25].reset_index(drop=True))


def test_created_filter_hides_late_rows_until_they_arrive(repos):
    stores, entities, driver = repos
    out = stores["ours_filtered"].get_historical_features(entity_df=entities.copy(), features=FEATURES).to_df()
    late = driver[driver["created"] - driver["event_timestamp"] > pd.Timedelta("1h")]
    merged = entities.assign(rate=out["rate"]).merge(late, on=["driver_id", "rate"], suffixes=("", "_f"))
    assert len(late) > 0
    assert (merged["created"] <= merged["event_timestamp"]).all()


def test_spark_output_and_full_feature_names(repos, spark):
    stores, entities, _ = repos
    job = stores["ours"].get_historical_features(entity_df=entities.copy(), features=FEATURES,
                                                 full_feature_names=True)
    sdf = job.to_spark_df()
    assert "driver_stats__rate" in sdf.columns
    pdf = job.to_df()
    got = sdf.select("driver_stats__rate").toPandas()["driver_stats__rate"]
    pd.testing.assert_series_equal(got, pdf["driver_stats__rate"], check_names=False)


def test_spark_entity_frame_and_sql_string(repos, spark):
    stores, entities, _ = repos
    sdf = spark.createDataFrame(entities.iloc[:50])
    sdf.createOrReplaceTempView("entity_rows")
    by_df = stores["ours"].get_historical_features(entity_df=sdf, features=FEATURES).to_df()
    by_sql = stores["ours"].get_historical_features(entity_df="SELECT * FROM entity_rows", features=FEATURES).to_df()
    by_pandas = stores["ours"].get_historical_features(entity_df=entities.iloc[:50].copy(), features=FEATURES).to_df()
    for frame in (by_df, by_sql):
        np.testing.assert_array_equal(frame["rate"].to_numpy(), by_pandas["rate"].to_numpy())


def test_naive_timestamps_are_utc_whatever_the_session_zone(repos, spark):
    stores, entities, _ = repos
    aware = stores["ours"].get_historical_features(entity_df=entities.iloc[:200].copy(), features=FEATURES).to_df()
    naive = entities.iloc[:200].copy()
    naive["event_timestamp"] = naive["event_timestamp"].dt.tz_localize(None)
    before = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        out = stores["ours"].get_historical_features(entity_df=naive, features=FEATURES).to_df()
        sdf = spark.createDataFrame(entities.iloc[:200])
        out_spark = stores["ours"].get_historical_features(entity_df=sdf, features=FEATURES).to_df()
    finally:
        spark.conf.set("spark.sql.session.timeZone", before)
    np.testing.assert_array_equal(out["rate"].to_numpy(), aware["rate"].to_numpy())
    np.testing.assert_array_equal(out_spark["rate"].to_numpy(), aware["rate"].to_numpy())


def test_pull_latest_is_newest_per_entity(repos):
    stores, _, driver = repos
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

    store = stores["ours"]
    offline = get_offline_store_from_config(store.config.offline_store)
    fv = store.get_feature_view("driver_stats")
    start, end = BASE, BASE + timedelta(days=1)
    got = offline.pull_latest_from_table_or_query(
        store.config, fv.batch_source, ["driver_id"], ["rate", "trips"], "event_timestamp", "created", start, end,
    ).to_df().sort_values("driver_id").reset_index(drop=True)
    window = driver[(driver["event_timestamp"] >= start) & (driver["event_timestamp"] <= end)]
    want = (window.sort_values(["event_timestamp", "created"]).groupby("driver_id").tail(1)
            .sort_values("driver_id").reset_index(drop=True))
    assert got["driver_id"].tolist() == want["driver_id"].tolist()
    np.testing.assert_allclose(got["rate"].to_numpy(), want["rate"].to_numpy())
    no_created = offline.pull_latest_from_table_or_query(
        store.config, fv.batch_source, ["driver_id"], ["rate"], "event_timestamp", None, start, end,
    ).to_df().sort_values("driver_id").reset_index(drop=True)
    assert list(no_created.columns) == ["driver_id", "rate", "event_timestamp"]
    np.testing.assert_allclose(no_created["rate"].to_numpy(), want["rate"].to_numpy())
    everything = offline.pull_all_from_table_or_query(
        store.config, fv.batch_source, ["driver_id"], ["rate"], "event_timestamp", "created", start, end).to_df()
    assert len(everything) == len(window)


def test_entity_less_mode_gives_latest_values_at_end_date(repos):
    stores, _, driver = repos
    start, end = BASE + timedelta(days=1), BASE + timedelta(days=2)
    out = stores["ours"].get_historical_features(features=["driver_stats:rate"], start_date=start,
                                                 end_date=end).to_df()
    seen = driver[(driver["event_timestamp"] >= start) & (driver["event_timestamp"] <= end)]["driver_id"].unique()
    history = driver[driver["event_timestamp"] <= end].sort_values(["event_timestamp", "created"])
    latest = history.groupby("driver_id").tail(1).set_index("driver_id")
    fresh = latest["event_timestamp"] >= end - timedelta(hours=6)  # the view's TTL
    want = latest["rate"].where(fresh).reindex(sorted(seen))
    got = out.set_index("driver_id")["rate"].sort_index()
    assert list(got.index) == list(want.index)
    assert got.notna().sum() > 5 and got.isna().sum() > 0  # both fresh and expired values occur
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy())


def test_object_column_of_mixed_zone_datetimes_joins_as_its_utc_instants(repos):
    # Feast's own test data pass entity timestamps as Python datetimes in several zones.
    stores, entities, _ = repos
    rows = entities.iloc[:200].copy()
    aware = stores["ours"].get_historical_features(entity_df=rows.copy(), features=FEATURES).to_df()
    zones = ["Asia/Tokyo", "America/New_York", None, "UTC"]
    mixed = rows.copy()
    mixed["event_timestamp"] = pd.Series(
        [t.tz_convert(zones[i % 4]).to_pydatetime() if zones[i % 4] else t.tz_localize(None).to_pydatetime()
         for i, t in enumerate(rows["event_timestamp"])], dtype=object, index=rows.index)
    out = stores["ours"].get_historical_features(entity_df=mixed, features=FEATURES).to_df()
    assert aware["rate"].notna().sum() > 50
    np.testing.assert_array_equal(out["rate"].to_numpy(), aware["rate"].to_numpy())
    np.testing.assert_array_equal(out["score"].to_numpy(), aware["score"].to_numpy())
    assert out["event_timestamp"].tolist() == rows["event_timestamp"].tolist()
