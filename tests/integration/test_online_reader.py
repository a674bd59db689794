"""FeatureClient's online side on real Spark and Redis: materialization, the fast read path, faults."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
import yaml

from features.errors import (
    ConfigError,
    FeatureStoreError,
    MissingColumnError,
    OnlineStoreError,
    OnlineStoreUnavailable,
    UnknownFeatureError,
)
from tests.integration.online_repo import definitions, make_history, offline_now
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration

FEATURES = ["cust_stats:amount", "cust_stats:count", "cust_profile:country", "cust_profile:vip",
            "cust_profile:income"]


def _client(root: Path, url: str, project: str, *, stats_ttl: timedelta = timedelta(days=1), **online):
    from features.sdk import FeatureClient

    repo = root / f"repo-{project}"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": project, "provider": "local", "registry": str(repo / "registry.db"),
        "offline_store": {"type": "features.offline_store.SparkAsofOfflineStore"},
        "online_store": {"type": "features.online_store.PackedRedisOnlineStore", "url": url, **online},
        "entity_key_serialization_version": 3,
    }))
    client = FeatureClient(Settings(home=root / "home", spark=SparkSettings()), repo_path=repo)
    client.store.apply(definitions(root, stats_ttl=stats_ttl))
    return client


@pytest.fixture(scope="module")
def history(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("reader")
    return root, make_history(root, seed=5)


@pytest.fixture(scope="module")
def client(history, redis_url):
    root, now = history
    client = _client(root, redis_url, "reader")
    client.materialize(now - timedelta(days=60), now, progress=False)
    return client


def _same(got: pd.Series, want: pd.Series) -> bool:
    g = got.astype(object).where(got.notna(), None).tolist()
    w = want.astype(object).where(want.notna(), None).tolist()
    return g == w


def test_online_features_equal_the_offline_join_at_now_in_input_order(client, history):
    _root, now = history
    customers = np.random.default_rng(1).permutation(np.r_[np.arange(-3, 305), [7, 7, 12]])
    online = client.online_features(pd.DataFrame({"customer_id": customers}), FEATURES)
    offline = offline_now(client.store, customers, FEATURES, now)  # also input order
    assert online.frame["customer_id"].tolist() == customers.tolist()
    for ref in FEATURES:
        name = ref.split(":")[1]
        assert _same(online.frame[name], offline[name]), name
    assert online.found["cust_stats"].tolist() == offline["count"].notna().tolist()
    assert online.found["cust_profile"].tolist() == offline["income"].notna().tolist()
    assert not online.found.loc[customers < 0].to_numpy().any()
    assert 0 < online.found["cust_stats"].mean() < 1


def test_list_of_dicts_and_the_float32_matrix_agree_with_the_frame(client):
    rows = [{"customer_id": c} for c in (3, 999_999, 4, 3)]
    frame = client.online_features(rows, ["cust_stats:amount", "cust_profile:income"]).frame
    reader = client.online_reader()
    plan = reader.plan(["cust_stats:amount", "cust_profile:income"])
    matrix = reader.read_matrix(plan, {"customer_id": np.array([3, 999_999, 4, 3])})
    assert matrix.values.dtype == np.float32 and matrix.values.shape == (4, 2)
    expected = frame[["amount", "income"]].astype("float64").to_numpy(na_value=np.nan).astype(np.float32)
    np.testing.assert_array_equal(matrix.values, expected)
    assert matrix.found[1].tolist() == [False, False]


def test_serving_columns_agree_with_the_frame(client):
    """read_columns, serving's path: numbers (ints and bools too) as float64 with NaN, text as
    objects with None, in plan order; the same values and found mask as read_frame."""
    customers = np.array([3, 999_999, 4, 3, 150, -1])
    reader = client.online_reader()
    plan = reader.plan(FEATURES)
    frame, found = reader.read_frame(plan, {"customer_id": customers})
    columns, found_columns = reader.read_columns(plan, {"customer_id": customers})
    assert list(columns) == [ref.split(":")[1] for ref in FEATURES]
    np.testing.assert_array_equal(found_columns, found.to_numpy())
    kinds = set()
    for name, values in columns.items():
        want = frame[name]
        if pd.api.types.is_numeric_dtype(want.dtype):
            assert values.dtype == np.float64, name
            np.testing.assert_array_equal(values, want.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            assert values.dtype == object, name
            assert values.tolist() == want.astype(object).where(want.notna(), None).tolist()
        kinds.add(str(want.dtype))
        assert np.isnan(values[1]) if values.dtype == np.float64 else values[1] is None  # unknown customer
    assert {"string", "boolean", "Int64"} <= kinds, kinds


def test_feast_get_online_features_reads_the_same_values(client):
    customers = list(range(0, 300, 7))
    ours = client.online_features([{"customer_id": c} for c in customers], FEATURES).frame
    feast = client.store.get_online_features(FEATURES, [{"customer_id": c} for c in customers]).to_df()
    for ref in FEATURES:
        name = ref.split(":")[1]
        assert _same(ours[name], feast[name]), name


def test_bad_requests_get_typed_errors(client):
    with pytest.raises(UnknownFeatureError, match="cust_stats:amount"):
        client.online_features([{"customer_id": 1}], ["cust_stats:amuont"])
    with pytest.raises(MissingColumnError, match="customer_id"):
        client.online_features([{"cust_id": 1}], ["cust_stats:amount"])
    reader = client.online_reader()
    with pytest.raises(ConfigError, match="country"):
        reader.read_matrix(reader.plan(["cust_profile:country"]), {"customer_id": [1]})


def test_rematerializing_is_idempotent_and_an_older_window_is_skipped(client, history):
    _root, now = history
    again = client.materialize(now - timedelta(days=60), now, progress=False)
    assert all(r.counts.written == 0 and r.counts.unchanged > 0 for r in again)
    older = client.materialize(now - timedelta(days=60), now - timedelta(hours=30), progress=False)
    stats = next(r for r in older if r.view == "cust_stats")
    assert stats.counts.written == 0 and stats.counts.skipped_older + stats.counts.expired > 0


def test_incremental_materialization_picks_up_late_rows(history, redis_url):
    root, now = history
    client = _client(root, redis_url, "late")
    first = client.materialize_incremental(now, views=["cust_stats"], progress=False)
    assert first[0].counts.written > 0
    customer = 123_456  # a new customer whose row arrives late, after the first run's end
    late = pd.DataFrame({"customer_id": [customer], "event_timestamp": [now - pd.Timedelta(minutes=30)],
                         "created": [now + pd.Timedelta(seconds=1)], "amount": [12.5], "count": [4]})
    path = root / "stats" / "part-late.parquet"
    pq.write_table(pa.Table.from_pandas(late, preserve_index=False), path, coerce_timestamps="us")
    try:
        later = now + pd.Timedelta(seconds=5)
        second = client.materialize_incremental(later, views=["cust_stats"], progress=False)
        assert second[0].counts.written == 1
        online = client.online_features([{"customer_id": customer}], ["cust_stats:amount"]).frame
        assert online["amount"].tolist() == [12.5]
    finally:
        path.unlink()


def test_a_crashed_materialization_resumes_where_it_stopped(tmp_path, spark, redis_proc):
    root = tmp_path
    now = make_history(root, seed=9, customers=20_000, rows=40_000)  # enough bytes to fill Redis
    # none go stale; the last read is 20,000 keys in one MGET, which the 50 ms serving budget does
    # not cover on a loaded 2-core host (CI failed on it once): this test is about resuming
    client = _client(root, redis_proc.url, "resume", stats_ttl=timedelta(days=30), timeout_ms=2_000)
    server = redis.Redis.from_url(redis_proc.url)
    baseline = server.info("memory")["used_memory"]
    run = {"views": ["cust_stats"], "progress": False, "partitions": 16}
    full = client.materialize_incremental(now, **run)[0]
    assert full.window.full and full.counts.written > 5_000
    needed = server.info("memory")["used_memory"] - baseline
    server.flushall()  # the online store is lost: the next incremental run must reload it all
    server.config_set("maxmemory-policy", "noeviction")
    server.config_set("maxmemory", server.info("memory")["used_memory"] + needed * 6 // 10)
    with pytest.raises(FeatureStoreError, match="resumes this window first"):
        client.materialize_incremental(now, **run)
    server.config_set("maxmemory", 0)
    later = now + pd.Timedelta(seconds=1)  # "now" has moved on: the crashed window is finished first
    resumed, rest = client.materialize_incremental(later, **run)
    assert resumed.window.end == now and 0 < resumed.resumed_partitions < resumed.partitions
    assert resumed.counts.written + resumed.counts.unchanged < full.counts.written
    assert rest.window.start == now and rest.window.end == later and rest.counts.written == 0
    rows = [{"customer_id": c} for c in range(20_000)]
    assert client.online_features(rows, ["cust_stats:amount"]).found["cust_stats"].sum() == full.counts.written


def test_refused_keys_are_retried_once_fixed_and_a_changed_view_is_reloaded(history, redis_proc):
    root, now = history
    client = _client(root, redis_proc.url, "refused")
    server = redis.Redis.from_url(redis_proc.url)
    key = b"refused:{customer_id=8}:cust_profile"
    server.set(key, b"somebody else's value")
    with pytest.raises(OnlineStoreError, match=r"1 key\(s\).*customer_id=8"):
        client.materialize(now - timedelta(days=60), now, views=["cust_profile"], progress=False)
    assert server.get(key) == b"somebody else's value"  # refused, not overwritten
    server.delete(key)
    again = client.materialize(now - timedelta(days=60), now, views=["cust_profile"], progress=False)[0]
    assert again.resumed_partitions == again.partitions - 1  # only the one with the refused key
    assert again.counts.written == 1 and server.get(key).startswith(b"TM")

    client.materialize_incremental(now, progress=False)
    customer, stats, profile = definitions(root)
    profile.schema.pop()  # drop `income`: another definition
    profile.features.pop()
    client.store.apply([customer, stats, profile])  # drops cust_profile's values
    assert not server.exists(key)
    reloaded = client.materialize_incremental(now + pd.Timedelta(seconds=1), views=["cust_profile"],
                                              progress=False)[0]
    assert reloaded.window.full and reloaded.counts.written == 150  # every profile, again
    assert server.exists(key)


def test_redis_down_or_hung_is_a_fast_typed_error_and_the_client_recovers(history, redis_proc):
    root, now = history
    client = _client(root, redis_proc.url, "faults", timeout_ms=50)
    client.materialize(now - timedelta(days=60), now, progress=False)
    rows = [{"customer_id": c} for c in range(50)]
    assert client.online_features(rows, ["cust_profile:income"]).found["cust_profile"].any()

    redis_proc.pause()  # a hung server: connections open, no answers
    try:
        started = time.perf_counter()
        with pytest.raises(OnlineStoreUnavailable, match="50 ms"):
            client.online_features(rows, ["cust_profile:income"])
        assert time.perf_counter() - started < 0.5
    finally:
        redis_proc.resume()
    assert client.online_features(rows, ["cust_profile:income"]).found["cust_profile"].any()

    redis_proc.stop()
    started = time.perf_counter()
    with pytest.raises(OnlineStoreUnavailable):
        client.online_features(rows, ["cust_profile:income"])
    assert time.perf_counter() - started < 0.5
    redis_proc.restart()  # no persistence in this throwaway server: it comes back empty
    assert not client.online_features(rows, ["cust_profile:income"]).found["cust_profile"].any()
