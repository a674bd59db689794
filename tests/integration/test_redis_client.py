"""RedisOnline against real servers: resharding and hung servers."""

from __future__ import annotations

import time

import pytest
import redis
from redis.crc import key_slot

from features.errors import OnlineStoreUnavailable
from features.redis_client import RedisOnline, WrongType
from tests.integration.redis_servers import start_cluster

pytestmark = pytest.mark.integration


def test_reads_and_writes_follow_a_slot_being_migrated(tmp_path):
    cluster = start_cluster(tmp_path / "cluster")  # its own: the test leaves a slot mid-migration
    try:
        online = RedisOnline(cluster.url, cluster=True, timeout_ms=1000)
        key, other = b"t:{customer_id=7}:v", b"t:{customer_id=7}:w"
        direct = redis.cluster.RedisCluster.from_url(cluster.url)
        direct.set(key, b"x")
        slot = key_slot(key)
        source = direct.nodes_manager.get_node_from_slot(slot)
        target = next(n for n in direct.get_primaries() if n.name != source.name)
        s, t = source.redis_connection, target.redis_connection
        t.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", s.execute_command("CLUSTER MYID"))
        s.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", t.execute_command("CLUSTER MYID"))
        s.execute_command("MIGRATE", target.host, target.port, key, 0, 5000)  # key now on target: ASK
        assert online.get_many([key, other]) == [b"x", None]
    finally:
        cluster.stop()


def test_a_hung_server_fails_within_the_timeout_even_before_the_first_call(redis_proc):
    online = RedisOnline(redis_proc.url, timeout_ms=50)  # cluster or not is still unknown
    redis_proc.pause()
    try:
        started = time.perf_counter()
        with pytest.raises(OnlineStoreUnavailable):
            online.get_many([b"k"])
        assert time.perf_counter() - started < 0.5
    finally:
        redis_proc.resume()
    assert online.get_many([b"k"]) == [None]



@pytest.mark.parametrize("target", ["single", "cluster"])
def test_a_key_of_another_type_reads_as_wrong_type_not_absent(target, redis_url, redis_cluster):
    """MGET answers nil for a hash as for a missing key: the read tells the two apart (issue 15),
    in the same round trip on a single server, with a second one for absent keys on a cluster."""
    url = redis_url if target == "single" else redis_cluster.url
    online = RedisOnline(url, timeout_ms=1000)
    direct = redis.Redis.from_url(url) if target == "single" else redis.cluster.RedisCluster.from_url(url)
    keys = [f"wt-{target}:{{customer_id={i}}}:v".encode() for i in range(6)]
    direct.set(keys[0], b"packed")
    direct.hset(keys[2], "f", "1")
    direct.rpush(keys[4], "x")
    try:
        values = online.get_many(keys)
    finally:
        for key in keys[0:5:2]:  # one key per command: they are in different cluster slots
            direct.delete(key)
    assert values[0] == b"packed" and values[1] is None and values[3] is None and values[5] is None
    assert isinstance(values[2], WrongType) and values[2].type == "hash"
    assert isinstance(values[4], WrongType) and values[4].type == "list"
