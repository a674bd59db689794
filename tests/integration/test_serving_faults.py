"""The scoring server under hostile input and faults (issue 15), on the real system: ``tidemark
serve`` as its own process on loopback (uvicorn, the CLI's settings), a real redis-server that the
tests stop, freeze (SIGSTOP) and corrupt, a real SQLite MLflow registry, and loads sent from
another process. Each test failed before the fix it is named for.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from features.online_keys import entity_ids, key_prefix, view_keys
from pipelines import model_registry
from serving.model_slots import ModelSlots
from serving.server import build_server
from tests.integration.redis_servers import RedisProc, free_port, start_redis

# the module-scoped world of test_serving (offline tables, Redis, a champion): this module gets its own
from tests.integration.test_serving import CUSTOMERS, TOKEN, _rows, settings  # noqa: F401
from tidemark.settings import Settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 2.0       # the live server's --body-timeout-s (head and body deadlines)
MAX_CONNECTIONS = 32   # its --max-connections
HUNTER2 = "hunter2"


@dataclass
class Live:
    """A ``tidemark serve`` process on ``127.0.0.1:port``, its output in ``log_path``."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             timeout_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
        finally:
            conn.close()

    def predict(self, rows: list[dict], headers: dict[str, str] | None = None) -> tuple[int, dict]:
        status, headers_, body = self.call("POST", "/v1/predict", json.dumps({"rows": rows}).encode(),
                                           {"content-type": "application/json", **(headers or {})})
        is_json = headers_.get("content-type", "").startswith("application/json")
        return status, json.loads(body) if is_json else {"text": body.decode(errors="replace")}

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.call("GET", "/metrics")[2].decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def live(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:  # noqa: F811
    """``tidemark serve`` on the module's world, started as a user starts it (the CLI, its own process),
    with one worker: the guards tested here are each worker's (test_serving_workers runs several)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("live") / "serve.log"
    env = {**os.environ, "TIDEMARK_HOME": str(settings.home), "TIDEMARK_REDIS_URL": str(settings.redis_url),
           "MLFLOW_TRACKING_URI": settings.tracking_uri, "TIDEMARK_ADMIN_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port),
                                 "--workers", "1", "--refresh-s", "1", "--body-timeout-s", str(DEADLINE_S),
                                 "--max-connections", str(MAX_CONNECTIONS)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Live(port, proc, log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"tidemark serve exited with {proc.returncode}:\n{server.log()[-3000:]}"
        with contextlib.suppress(OSError, http.client.HTTPException):
            if server.call("GET", "/readyz", timeout_s=2.0)[0] == 200:
                break
        time.sleep(0.25)
    else:
        proc.kill()
        pytest.fail(f"tidemark serve not ready in 120 s:\n{server.log()[-3000:]}")
    try:
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# -- 3. a hung Redis ---------------------------------------------------------------------------


def test_a_hung_redis_is_503_at_once_and_the_event_loop_stays_free(live: Live, module_redis: RedisProc) -> None:
    """Was: with Redis frozen, 503s took p50 368 ms (each request held the loop for the 50 ms read
    timeout, and the others queued behind it), throughput fell to 17 req/s, /healthz took 925 ms."""
    body = json.dumps({"rows": _rows(CUSTOMERS[:1])})
    load = subprocess.Popen([sys.executable, "-m", "tests.integration.http_load", "--port", str(live.port),
                             "--rate", "100", "--seconds", "5", "--body", body],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    health: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def poll_health() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=5)
        while not stop.is_set():
            started = time.time()
            conn.request("GET", "/healthz")
            answer = conn.getresponse()
            answer.read()
            health.append((started, time.time() - started, answer.status))
            time.sleep(0.02)
        conn.close()

    poller = threading.Thread(target=poll_health, daemon=True)
    poller.start()
    time.sleep(1.5)
    paused_at = time.time()
    module_redis.pause()
    try:
        time.sleep(2.0)
    finally:
        module_redis.resume()
    resumed_at = time.time()
    out, err = load.communicate(timeout=60)
    stop.set()
    poller.join(timeout=10)
    assert load.returncode == 0, err.decode()[-2000:]
    run = json.loads(out)
    results = [(run["start"] + due, latency, int(status)) for due, latency, status in run["results"]]

    assert {status for _, _, status in results} <= {200, 503}, "every request answered, 200 or 503"
    during = [(latency, status) for at, latency, status in results if paused_at + 0.2 < at < resumed_at - 0.1]
    failed = [latency for latency, status in during if status == 503]
    assert len(failed) >= 0.9 * len(during) > 100, f"{len(failed)} of {len(during)} answered 503 during the stall"
    # medians and 95th percentiles: the property is "not queued behind Redis" (before: p50 822 ms for
    # both), not the worst scheduling hiccup of a shared 2-core host
    assert _percentile(failed, 50) < 0.05 and _percentile(failed, 95) < 0.2, sorted(failed)[-5:]
    stalled_health = [latency for at, latency, _ in health if paused_at < at < resumed_at]
    assert len(stalled_health) > 20 and {s for _, _, s in health} == {200}
    assert _percentile(stalled_health, 50) < 0.01 and _percentile(stalled_health, 95) < 0.1, sorted(stalled_health)[-5:]
    after = [status for at, _, status in results if at > resumed_at + 1.0]
    assert after and set(after) == {200}, "recovered within a second of SIGCONT"
    metrics = live.metrics()
    assert metrics[("tidemark_online_store_breaker_opens_total", ())] >= 1
    assert metrics[("tidemark_online_store_up", ())] == 1


# -- 4. slow and vanishing clients ---------------------------------------------------------------


def _half_request(port: int, body_bytes: int = 100) -> socket.socket:
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 1000\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + b" " * body_bytes)
    return sock


def _closed_within(sock: socket.socket, timeout_s: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``timeout_s`` (EOF), and what it sent before."""
    sock.settimeout(timeout_s)
    got = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                return True, got
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        return True, got
    return False, got


def test_half_sent_requests_are_closed_at_the_deadline(live: Live) -> None:
    """Was: 200 half-sent bodies still open after 45 s (no body deadline). A head that never
    ends (slow loris) is closed too."""
    bodies = [_half_request(live.port) for _ in range(10)]
    heads = []
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
        sock.sendall(b"POST /v1/pre")
        heads.append(sock)
    silent = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    started = time.monotonic()
    try:
        for sock in (*bodies, *heads, silent):
            closed, answer = _closed_within(sock, DEADLINE_S + 3.0)
            assert closed, "still open past the deadline"
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert time.monotonic() - started < DEADLINE_S + 3.0
    finally:
        for sock in (*bodies, *heads, silent):
            sock.close()
    assert live.predict(_rows(CUSTOMERS[:2]))[0] == 200


def test_a_client_leaving_mid_body_is_neither_a_5xx_nor_an_error_log(live: Live) -> None:
    """Was: counted as a 500 in /metrics, with a traceback in the log (211 false 5xx in the probe)."""
    before = live.metrics()
    for _ in range(10):
        _half_request(live.port).close()
    gone = ("tidemark_client_disconnects_total", (("model", Settings.model_name),))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = live.metrics()
        if after[gone] - before[gone] >= 10:
            break
        time.sleep(0.1)
    five = ("tidemark_predict_request_seconds_count", (("model", Settings.model_name), ("status", "5xx")))
    assert after[gone] - before[gone] == 10
    assert after[five] == before[five]
    assert "Traceback" not in live.log() and "ClientDisconnect" not in live.log()


def test_connections_past_the_limit_get_a_503_or_are_closed(live: Live) -> None:
    """Was: no connection cap. Past --max-connections requests get a 503 at once; past 64 more the
    connections are closed unanswered; idle ones go at the head deadline, and service resumes."""
    idle = [socket.create_connection(("127.0.0.1", live.port), timeout=10) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        time.sleep(0.2)
        assert live.predict(_rows(CUSTOMERS[:1]))[0] == 503
        idle += [socket.create_connection(("127.0.0.1", live.port), timeout=10) for _ in range(60)]
        beyond = [_closed_within(sock, 0.5) for sock in idle[-6:]]  # 102 open: the last 6 past 32 + 64
        assert beyond == [(True, b"")] * 6, "connections past the limit and its headroom are closed unanswered"
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + DEADLINE_S + 5
    while live.predict(_rows(CUSTOMERS[:1]))[0] != 200:
        assert time.monotonic() < deadline, "service did not resume"
        time.sleep(0.1)


# -- 1, 6. input that can't be stored; bounded headers --------------------------------------------


def test_a_lone_surrogate_is_refused_and_every_good_row_is_logged(live: Live, settings: Settings) -> None:  # noqa: F811
    """Was: answered 200, then the log writer dropped the whole flush round (1,025 rows of other
    clients for one request)."""
    import pyarrow.dataset as ds

    good_ids = []
    for i in range(30):
        status, body = live.predict(_rows(CUSTOMERS[:3]), headers={"x-request-id": f"good-{i}"})
        assert status == 200
        good_ids.append(body["request_id"])
        if i % 10 == 5:
            raw = json.dumps({"rows": _rows(CUSTOMERS[:1])}).replace('"ecom"', '"\\ud800"').encode()
            status, _, answer = live.call("POST", "/v1/predict", raw, {"content-type": "application/json"})
            assert status == 422, answer
            assert json.loads(answer)["detail"][0]["loc"] == ["rows", 0, "channel"]
    time.sleep(1.5)  # the writer flushes every second
    logged = ds.dataset(settings.offline_dir / "prediction_log", format="parquet", partitioning="hive").to_table(
        columns=["request_id"]).column("request_id").to_pylist()
    assert {r: logged.count(r) for r in good_ids} == dict.fromkeys(good_ids, 3)


def test_request_ids_and_content_types_are_bounded(live: Live) -> None:
    status, body = live.predict(_rows(CUSTOMERS[:1]), headers={"x-request-id": "x" * 10_000})
    assert status == 422 and body["detail"][0]["loc"] == ["header", "x-request-id"]
    status, body = live.predict(_rows(CUSTOMERS[:1]), headers={"x-request-id": "trace-7f3a"})
    assert status == 200 and body["request_id"] == "trace-7f3a"
    status, _, answer = live.call("POST", "/v1/predict", json.dumps({"rows": _rows(CUSTOMERS[:1])}).encode(),
                                  {"content-type": "text/plain"})
    assert status == 415 and json.loads(answer)["detail"][0]["loc"] == ["header", "content-type"]


# -- 5. a corrupt value is that entity's missing value --------------------------------------------


def test_a_corrupt_or_wrong_type_value_is_missing_for_its_entity_only(live: Live, settings: Settings,  # noqa: F811
                                                                    module_redis: RedisProc) -> None:
    """Was: one corrupt value turned the whole batch into a 503 naming the internal key, until
    someone deleted it; a key of the wrong Redis type silently read as missing."""
    rows = _rows(CUSTOMERS[:10])
    status, healthy = live.predict(rows)
    assert status == 200 and all(p["features_found"] for p in healthy["predictions"])
    ids = entity_ids(["customer_id"], ["int"], [CUSTOMERS[:2]])
    garbage, wrong = view_keys(key_prefix(settings.project), "customer_profile", ids)
    client = redis.Redis.from_url(module_redis.url)
    saved = {key: client.get(key) for key in (garbage, wrong)}
    before = live.metrics()[("tidemark_online_corrupt_values_total", ())]
    try:
        client.set(garbage, b"\x00garbage that is no packed value")
        client.delete(wrong)
        client.hset(wrong, "income", "12.5")
        status, answer = live.predict(rows)
    finally:
        client.delete(garbage, wrong)
        for key, value in saved.items():
            client.set(key, value)
    assert status == 200, answer
    predictions = answer["predictions"]
    assert [p["features_found"] for p in predictions] == [False, False] + [True] * 8
    assert [p["score"] for p in predictions[2:]] == [p["score"] for p in healthy["predictions"][2:]]
    assert "tidemark:{" not in json.dumps(answer)
    assert live.metrics()[("tidemark_online_corrupt_values_total", ())] - before == 2
    log = live.log()
    assert log.count("customer_id=1}:customer_profile") == 1 and "Redis hash" in log  # the key, once


# -- 2. no secret in a response or a log line ----------------------------------------------------


def test_no_response_or_log_line_holds_the_redis_password(settings: Settings, tmp_path: Path,  # noqa: F811
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Was: OnlineStoreUnavailable's message held the full URL, and the 503 returned it as its body."""
    guarded = start_redis(tmp_path / "redis-pw", password=HUNTER2)
    try:
        assert HUNTER2 in guarded.url
        srv = build_server(replace(settings, redis_url=guarded.url), refresh_s=3600, prediction_log=False)
        with TestClient(srv.app) as client, caplog.at_level(logging.DEBUG):
            assert client.post("/v1/predict", json={"rows": _rows(CUSTOMERS[:2])}).status_code == 200
            guarded.stop()
            answers = [client.post("/v1/predict", json={"rows": _rows(CUSTOMERS[:2])}) for _ in range(3)]
            answers += [client.get("/readyz"), client.get("/metrics")]
            breaker = srv.scorer.reader.redis.breaker
            assert breaker is not None and not breaker.wait_closed(0.3)  # its probe keeps failing meanwhile
        srv.close()
        breaker.close()  # this test's Redis is gone for good: stop probing it
    finally:
        guarded.stop()
    assert [a.status_code for a in answers[:3]] == [503] * 3
    first = answers[0].json()
    assert first["request_id"] and first["detail"][0]["msg"].startswith("the online feature store is unavailable")
    assert answers[3].status_code == 503 and "online store unreachable" in answers[3].text
    for answer in answers:
        assert HUNTER2 not in answer.text and HUNTER2 not in str(answer.headers)
    lines = [record.getMessage() + (caplog.handler.format(record) if record.exc_info else "") for record in caplog.records]
    assert any("unavailable" in line for line in lines)
    assert not [line for line in lines if HUNTER2 in line]


# -- 6. the champion alias disappears; a model that fails to load --------------------------------


def test_a_deleted_champion_alias_keeps_the_last_champion_serving(live: Live, settings: Settings) -> None:  # noqa: F811
    """Was: the server dropped its champion and answered 503 to everything."""
    ml = model_registry.connect(settings)
    champion = ml.get_model_version_by_alias(settings.model_name, "champion").version
    missing = ("tidemark_model_alias_missing", (("alias", "champion"), ("model", settings.model_name)))
    ml.delete_registered_model_alias(settings.model_name, "champion")
    try:
        deadline = time.monotonic() + 15
        while live.metrics()[missing] != 1:
            assert time.monotonic() < deadline, "the server never noticed the alias was gone"
            time.sleep(0.2)
        status, answer = live.predict(_rows(CUSTOMERS[:2]))
        assert status == 200 and {p["model_version"] for p in answer["predictions"]} == {str(champion)}
        ready = json.loads(live.call("GET", "/readyz")[2])
        assert ready["ready"] is True and any("gone from the registry" in r for r in ready["reasons"])
    finally:
        ml.set_registered_model_alias(settings.model_name, "champion", champion)
    deadline = time.monotonic() + 15
    while live.metrics()[missing] != 0:
        assert time.monotonic() < deadline, "the alias came back unnoticed"
        time.sleep(0.2)


def test_a_version_that_fails_to_load_is_retried_with_backoff(settings: Settings,  # noqa: F811
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Was: a broken version was downloaded and tried again at every refresh (10 s), for ever."""
    ml = model_registry.connect(settings)
    with mlflow.start_run(experiment_id=model_registry.experiment_id(ml, settings, settings.model_name)) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=_Echo(), pip_requirements=["mlflow"])
    broken = model_registry.register(ml, settings.model_name, info.model_uri, run_id=run.info.run_id, tags={},
                                     description="no model contract: can't be served")
    ml.set_registered_model_alias(settings.model_name, "challenger", broken.version)
    slots = ModelSlots(ml, settings.model_name, aliases=("challenger",), base_backoff_s=0.4, max_backoff_s=10)
    try:
        with caplog.at_level(logging.ERROR, logger="serving.model_slots"):
            started = time.monotonic()
            while time.monotonic() - started < 2.0:  # a refresh every 50 ms: 40 polls
                slots.refresh()
                time.sleep(0.05)
    finally:
        ml.delete_registered_model_alias(settings.model_name, "challenger")
    attempts = [r for r in caplog.records if "failed to load" in r.getMessage()]
    assert 3 <= len(attempts) <= 4, [r.getMessage() for r in attempts]  # at 0, 0.4, 1.2 s (and 2.8 s: not yet)
    assert [m.getMessage().rsplit("next try in ", 1)[1] for m in attempts[:3]] == ["0.4 s", "0.8 s", "1.6 s"]
    assert slots.get("challenger") is None
    assert "no model contract" in slots.errors["challenger"]


class _Echo(mlflow.pyfunc.PythonModel):
    """A pyfunc model registered without tidemark's ``features`` param: serving must refuse it."""

    def predict(self, context, model_input, params=None):
        return model_input


# -- 6. what the server writes is private ----------------------------------------------------------


def test_what_the_server_writes_under_home_is_private(live: Live, settings: Settings) -> None:  # noqa: F811
    """Was: the prediction log, mlflow.db and the artifacts were world-readable while raw/ was 0700."""
    assert live.predict(_rows(CUSTOMERS[:2]))[0] == 200
    time.sleep(1.5)
    assert settings.home.stat().st_mode & 0o077 == 0
    logged = list((settings.offline_dir / "prediction_log").rglob("*"))
    assert logged and all(p.stat().st_mode & 0o077 == 0 for p in logged), \
        {str(p): oct(p.stat().st_mode & 0o777) for p in logged if p.stat().st_mode & 0o077}
