"""PackedRedisOnlineStore through Feast's own API (materialize, get_online_features), on real Redis."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import redis
from redis.crc import key_slot

from features.corrupt_values import CORRUPT_VALUES
from features.errors import OnlineStoreError, UnresolvedEntityError
from features.online_views import OnlineView
from tests.integration.online_repo import definitions, make_history, offline_now, open_repo

pytestmark = pytest.mark.integration

FEATURES = ["cust_stats:amount", "cust_stats:count", "cust_profile:country", "cust_profile:vip",
            "cust_profile:income"]


@pytest.fixture(scope="module")
def history(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("online")
    return root, make_history(root)


def _online(store, customers) -> pd.DataFrame:
    rows = [{"customer_id": int(c)} for c in customers]
    return store.get_online_features(features=FEATURES, entity_rows=rows).to_df()


def _assert_same(online: pd.DataFrame, offline: pd.DataFrame) -> None:
    online = online.set_index("customer_id").sort_index()
    offline = offline.set_index("customer_id").sort_index()[online.columns]
    for column in online.columns:
        got = online[column].astype(object).where(online[column].notna(), None)
        want = offline[column].astype(object).where(offline[column].notna(), None)
        assert got.tolist() == want.tolist(), column


def _materialized(root, now, url, **kwargs):
    store = open_repo(root, url, **kwargs)
    store.apply(definitions(root))
    store.materialize(start_date=(now - timedelta(days=60)).to_pydatetime(), end_date=now.to_pydatetime())
    return store


@pytest.mark.parametrize("target", ["single", "cluster"])
def test_feast_materialize_then_online_equals_offline_at_now(history, redis_url, redis_cluster, target):
    root, now = history
    url = redis_url if target == "single" else redis_cluster.url
    store = _materialized(root, now, url)
    customers = np.arange(-5, 310)  # includes unknown customers
    online = _online(store, customers)
    offline = offline_now(store, customers, FEATURES, now)
    assert online["amount"].notna().sum() > 50 and online["amount"].isna().sum() > 20  # TTL bites
    _assert_same(online, offline)


def test_an_older_materialization_never_rolls_values_back(history, redis_url):
    root, now = history
    store = _materialized(root, now, redis_url)
    before = _online(store, range(300))
    store.materialize(start_date=(now - timedelta(days=60)).to_pydatetime(),
                      end_date=(now - timedelta(hours=12)).to_pydatetime())
    pd.testing.assert_frame_equal(_online(store, range(300)), before)


def test_one_entitys_views_share_a_cluster_slot(history, redis_cluster):
    root, now = history
    store = _materialized(root, now, redis_cluster.url)
    cluster = redis.cluster.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(h, p)
                                                        for h, p in redis_cluster.startup_nodes])
    prefix = store.config.project.encode()
    keys = [k for k in cluster.scan_iter(match=prefix + b":{customer_id=7}:*", target_nodes=cluster.ALL_NODES)]
    assert len(keys) == 2 and len({key_slot(k) for k in keys}) == 1
    assert len({cluster.get_node_from_key(k).name for k in cluster.scan_iter(
        match=prefix + b":*", target_nodes=cluster.ALL_NODES)}) == 3  # spread over all masters


def test_ttl_is_applied_at_read_time_and_keys_expire(history, redis_url):
    root, _now = history
    store = open_repo(root, redis_url, online={"expiry_margin_s": 0})
    store.apply(definitions(root, stats_ttl=timedelta(seconds=2)))
    fresh = pd.DataFrame({"customer_id": [1], "event_timestamp": [pd.Timestamp.now(tz="UTC")],
                          "created": [pd.Timestamp.now(tz="UTC")], "amount": [1.5], "count": [3]})
    store.write_to_online_store("cust_stats", fresh)
    read = lambda: store.get_online_features(["cust_stats:amount"], [{"customer_id": 1}]).to_dict()["amount"]
    assert read() == [1.5]
    client = redis.Redis.from_url(redis_url)
    key = store.config.project.encode() + b":{customer_id=1}:cust_stats"
    assert 0 < client.pttl(key) <= 2_000
    time.sleep(2.1)
    assert read() == [None]  # stale by the TTL even if Redis has not dropped the key yet
    time.sleep(0.5)
    assert client.exists(key) == 0


def test_a_corrupt_value_reads_as_missing_for_its_entity_and_is_reported(history, redis_url, caplog):
    root, now = history
    store = _materialized(root, now, redis_url)
    client = redis.Redis.from_url(redis_url)
    key = store.config.project.encode() + b":{customer_id=8}:cust_profile"
    healthy = _online(store, [7, 8, 9])
    value = bytearray(client.get(key))
    value[-3] ^= 0x40  # flip one bit of the income
    client.set(key, bytes(value))
    before = CORRUPT_VALUES.count
    with caplog.at_level(logging.ERROR, logger="features.corrupt_values"):
        online = _online(store, [7, 8, 9])
    assert CORRUPT_VALUES.count - before == 1
    assert [r.getMessage() for r in caplog.records if "customer_id=8}:cust_profile" in r.getMessage()
            and "checksum" in r.getMessage()]
    profile, stats = ["country", "vip", "income"], ["amount", "count"]
    assert healthy.loc[1, profile].notna().any() and online.loc[1, profile].isna().all()  # that view: missing
    # its other view, and the other customers, as before (dtypes may widen: a column now holds a null)
    pd.testing.assert_series_equal(online.loc[1, stats], healthy.loc[1, stats], check_dtype=False)
    pd.testing.assert_frame_equal(online.loc[[0, 2]], healthy.loc[[0, 2]], check_dtype=False)
    client.set(key, b"not ours")
    with pytest.raises(OnlineStoreError, match="not tidemark packed values"):
        store.materialize(start_date=(now - timedelta(days=60)).to_pydatetime(), end_date=now.to_pydatetime())
    assert client.get(key) == b"not ours"  # refused, not overwritten


def test_changing_a_view_definition_drops_its_stale_values(history, redis_url):
    from feast import Field
    from feast.types import Float64

    root, now = history
    store = _materialized(root, now, redis_url)
    client = redis.Redis.from_url(redis_url)
    pattern = store.config.project.encode() + b":{*}:cust_stats"
    assert len(list(client.scan_iter(match=pattern))) > 0
    customer, stats, profile = definitions(root)
    stats.schema.append(Field(name="extra", dtype=Float64))
    stats.features.append(Field(name="extra", dtype=Float64))
    store.apply([customer, stats, profile])
    assert list(client.scan_iter(match=pattern)) == []
    assert len(list(client.scan_iter(match=pattern.replace(b"cust_stats", b"cust_profile")))) > 0


def test_a_read_mixing_live_and_stale_values_returns_each_correctly(history, redis_url):
    from features.online_reader import OnlineReader
    from features.online_store import connect
    from features.online_views import OnlineView

    root, _now = history
    store = open_repo(root, redis_url)
    store.apply(definitions(root, stats_ttl=timedelta(minutes=10)))
    now = pd.Timestamp.now(tz="UTC")
    rows = pd.DataFrame({"customer_id": [1, 2, 3], "amount": [1.5, 2.5, 3.5], "count": [1, 2, 3],
                         "event_timestamp": [now, now - pd.Timedelta(minutes=11), now - pd.Timedelta(minutes=1)],
                         "created": [now, now, now]})
    store.write_to_online_store("cust_stats", rows)  # customer 2 is already stale: not written
    client = redis.Redis.from_url(redis_url)
    store.write_to_online_store("cust_stats", rows.iloc[[1]].assign(  # a value that goes stale
        event_timestamp=[now - pd.Timedelta(minutes=9, seconds=59)]))
    views = {fv.name: OnlineView.from_feast(fv) for fv in store.list_feature_views()}
    reader = OnlineReader(connect(store.config.online_store), store.config.project, views)
    plan = reader.plan(["cust_stats:amount", "cust_stats:count"])
    time.sleep(1.2)  # customer 2's value is now older than the TTL, but still in Redis
    assert client.exists(store.config.project.encode() + b":{customer_id=2}:cust_stats")
    matrix = reader.read_matrix(plan, {"customer_id": [1, 2, 3, 4]})
    np.testing.assert_array_equal(matrix.values[[0, 2]], np.array([[1.5, 1], [3.5, 3]], dtype=np.float32))
    assert np.isnan(matrix.values[[1, 3]]).all() and matrix.found[:, 0].tolist() == [True, False, True, False]
    frame, found = reader.read_frame(plan, {"customer_id": [2, 3]})
    assert frame["amount"].isna().tolist() == [True, False] and frame["amount"][1] == 3.5
    assert found["cust_stats"].tolist() == [False, True]


@pytest.mark.parametrize("target", ["single", "cluster"])
def test_async_read_returns_what_the_sync_read_returns(history, redis_url, redis_cluster, target):
    import asyncio

    root, now = history
    store = _materialized(root, now, redis_url if target == "single" else redis_cluster.url)
    rows = [{"customer_id": int(c)} for c in range(-3, 310)]  # unknown customers among them
    sync = store.get_online_features(features=FEATURES, entity_rows=rows).to_dict()

    async def read_then_close() -> dict:
        await store.initialize()
        try:
            return (await store.get_online_features_async(features=FEATURES, entity_rows=rows)).to_dict()
        finally:
            await store.close()

    first, second = asyncio.run(read_then_close()), asyncio.run(read_then_close())  # a new loop each
    assert first == sync and second == sync
    amounts = sync["amount"]
    assert sum(a is not None for a in amounts) > 50 and amounts.count(None) > 20  # the TTL bites alike
    assert sync["country"][3 + 7] is not None and sync["customer_id"][:3] == [-3, -2, -1]


def test_async_read_hides_stale_values_and_keeps_the_newest(history, redis_url):
    import asyncio

    root, _now = history
    store = open_repo(root, redis_url)
    store.apply(definitions(root, stats_ttl=timedelta(seconds=1)))
    t = pd.Timestamp.now(tz="UTC")
    rows = pd.DataFrame({"customer_id": [1, 1, 2], "event_timestamp": [t, t - pd.Timedelta("0.5s"), t],
                         "created": [t, t, t], "amount": [1.5, 9.9, 2.5], "count": [1, 9, 2]})
    store.write_to_online_store("cust_stats", rows)  # customer 1's older row never wins

    def read() -> list:
        job = store.get_online_features_async(["cust_stats:amount"], [{"customer_id": 1}, {"customer_id": 2}])
        return asyncio.run(job).to_dict()["amount"]

    assert read() == [1.5, 2.5]
    time.sleep(1.1)
    assert read() == [None, None]  # past the TTL, still in Redis
    assert redis.Redis.from_url(redis_url).exists(store.config.project.encode() + b":{customer_id=1}:cust_stats")


def test_update_takes_a_views_join_key_from_an_entity_applied_earlier(history, redis_url,
                                                                     caplog: pytest.LogCaptureFixture):
    from feast import Entity, FeatureView

    from features.online_store import PackedRedisOnlineStore

    root, _now = history
    store = open_repo(root, redis_url)
    customer, stats, _profile = definitions(root)
    store.apply([customer])  # an earlier apply call; the view below comes as defined, unresolved
    view = FeatureView(name="late_stats", entities=[Entity(name="customer", join_keys=["customer_id"])],
                       ttl=stats.ttl, schema=list(stats.schema), source=stats.batch_source)
    assert view.entity_columns == []
    client = redis.Redis.from_url(redis_url)
    schemas = store.config.project.encode() + b":__tidemark_schemas__"
    online = PackedRedisOnlineStore()
    online.update(store.config, [], [view], [], [], partial=True)  # from the registry
    from_registry = client.hget(schemas, "late_stats")
    client.hdel(schemas, "late_stats")
    other = open_repo(root, redis_url)  # an empty registry: only this call's entities can tell
    online.update(other.config, [], [view], [], [customer], partial=True)
    assert from_registry is not None and client.hget(other.config.project.encode() + b":__tidemark_schemas__",
                                                     "late_stats") == from_registry
    # known nowhere (Feast's universal test_odfv_projection applies such a view): the apply goes on
    # for the rest of the repo, the view is not registered, and a write under it says why
    nowhere = open_repo(root, redis_url).config
    client.hdel(nowhere.project.encode() + b":__tidemark_schemas__", "late_stats")
    with caplog.at_level(logging.WARNING, logger="features.online_store"):
        online.update(nowhere, [], [view], [], [], partial=True)
    assert "has no resolved join keys" in caplog.text
    assert client.hget(nowhere.project.encode() + b":__tidemark_schemas__", "late_stats") is None
    with pytest.raises(UnresolvedEntityError, match="are not registered"):
        OnlineView.from_feast(view)
