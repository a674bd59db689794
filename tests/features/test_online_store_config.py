"""The packed online store's config takes Feast's Redis keys as they are, beside its own ``url``."""

from __future__ import annotations

import numpy as np
import pytest
from feast.repo_config import RepoConfig

from features.errors import ConfigError
from features.online_store import PackedRedisOnlineStoreConfig, _resolve_url
from features.online_views import expiry_ms
from features.redis_connection_string import redis_url_from_connection_string

SECRET = "hunter2"
TYPE = "features.online_store.PackedRedisOnlineStore"


@pytest.mark.parametrize(("connection_string", "url"), [
    ("localhost:6379", "redis://localhost:6379/0"),
    ("redis-master:6379,db=0", "redis://redis-master:6379/0"),
    ("10.0.0.5:6380,db=3,ssl=true,password=hunter2", "rediss://:hunter2@10.0.0.5:6380/3"),
    ("h:1,username=svc,password=p@ss:w/rd", "redis://svc:p%40ss%3Aw%2Frd@h:1/0"),
    ('h:1,password="hunter2",ssl=false', "redis://:hunter2@h:1/0"),
    ("n1:7000,n2:7001,n3:7002,skip_full_coverage_check=true", "redis://n1:7000/0"),
    ("h:1,ssl=true,ssl_cert_reqs=none", "rediss://h:1/0?ssl_cert_reqs=none"),
])
def test_feast_connection_strings_become_the_same_server_as_a_url(connection_string: str, url: str) -> None:
    assert redis_url_from_connection_string(connection_string) == url


@pytest.mark.parametrize(("connection_string", "says"), [
    ("db=0,password=hunter2", "names no server"),
    ("hunter2,db=0", "is not 'host:port'"),
    ("h:1,db=zero", "not a database number"),
    ("h:1,ssl=maybe", "neither true nor false"),
    ("h:1,socket_timeout=5", "timeout_ms"),
    ("h:1,colour=blue,password=hunter2", "unknown option 'colour'; known: db, ssl"),
])
def test_a_string_that_cannot_be_carried_is_a_config_error_without_its_password(
        connection_string: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as raised:
        PackedRedisOnlineStoreConfig(connection_string=connection_string)
    assert SECRET not in str(raised.value)


def test_url_and_connection_string_together_is_a_config_error_naming_both() -> None:
    with pytest.raises(ConfigError, match="both url and connection_string: keep one"):
        RepoConfig(project="p", provider="local", registry="registry.db", entity_key_serialization_version=3,
                   online_store={"type": TYPE, "url": "redis://h:1/0", "connection_string": "h:1"})


def test_feasts_redis_keys_load_unchanged_under_tidemarks_type() -> None:
    feast_keys = {"connection_string": f"h:6379,db=2,password={SECRET}", "redis_type": "redis_cluster",
                  "key_ttl_seconds": 3600}
    config = RepoConfig(project="p", provider="local", registry="registry.db", entity_key_serialization_version=3,
                        online_store={"type": TYPE, **feast_keys}).online_store
    assert isinstance(config, PackedRedisOnlineStoreConfig)
    assert (config.redis_type, config.key_ttl_ms) == ("redis_cluster", 3_600_000)
    assert _resolve_url(config) == f"redis://:{SECRET}@h:6379/2"
    assert SECRET not in repr(config) and SECRET not in str(config)


def test_redis_sentinel_is_refused_with_what_to_do() -> None:
    with pytest.raises(ConfigError, match="point url .* at the current master"):
        PackedRedisOnlineStoreConfig(connection_string="s:26379", redis_type="redis_sentinel")


def test_a_url_keeps_working_and_stays_out_of_the_repr() -> None:
    config = PackedRedisOnlineStoreConfig(url=f"redis://:{SECRET}@h:1/0")
    assert _resolve_url(config) == f"redis://:{SECRET}@h:1/0"
    assert SECRET not in repr(config)


def test_key_ttl_caps_the_expiry_of_every_key_and_never_revives_a_stale_row() -> None:
    now, hour_us = 10**15, 3_600 * 10**6
    events = np.array([now, now - hour_us // 2, now - 2 * hour_us], dtype=np.int64)
    # view TTL 1 h, margin 1 h: a fresh row lives 2 h, the half-hour-old one 1.5 h, the 2 h-old one is stale
    assert expiry_ms(events, hour_us, hour_us, now).tolist() == [7_200_000, 5_400_000, -1]
    assert expiry_ms(events, hour_us, hour_us, now, cap_ms=600_000).tolist() == [600_000, 600_000, -1]
    assert expiry_ms(events, hour_us, hour_us, now, cap_ms=86_400_000).tolist() == [7_200_000, 5_400_000, -1]
    # no view TTL: no expiry, unless key_ttl_seconds gives one
    assert expiry_ms(events, 0, hour_us, now).tolist() == [0, 0, 0]
    assert expiry_ms(events, 0, hour_us, now, cap_ms=600_000).tolist() == [600_000] * 3
