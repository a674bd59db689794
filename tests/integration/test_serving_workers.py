"""``tidemark serve --workers 2`` as a user starts it (issue 18): two worker processes on one port
under uvicorn's supervisor, a real redis-server and MLflow registry (test_serving's world).

Bounded: one server start, three bursts of a few hundred one-row requests on loopback, each burst
from 8 client threads on keep-alive connections. A request whose connection closes before any
answer is sent again on a new connection, as a load balancer retries: a worker that goes away
never answered it. Killing a worker with SIGKILL loses the rows it had not yet written to the
prediction log (at most its flush interval's: ``serving.prediction_log``), so the log is checked
for every answered row of the bursts it can be asked of: before the kill and after a graceful stop.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.metric_names import missing_from
from serving.prediction_log_schema import model_log_root
from tests.integration.redis_servers import free_port

# the module-scoped world of test_serving (offline tables, Redis, a champion): this module gets its own
from tests.integration.test_serving import CUSTOMERS, TOKEN, _rows, settings  # noqa: F401
from tidemark.settings import Settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLIENTS = 8
WITHOUT = ("airflow", "pyspark", "evidently", "psycopg")  # what a serving node does not install


class Fleet:
    """A ``tidemark serve --workers 2`` process tree on ``127.0.0.1:port``."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.port, self.proc, self.log_path = port, proc, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> set[int]:
        """The supervisor's worker processes (uvicorn spawns them; multiprocessing's resource
        tracker is not one)."""
        pids = set()
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in map(int, children):
            with contextlib.suppress(FileNotFoundError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"spawn_main" in cmdline:
                    pids.add(pid)
        return pids

    def scrape(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(self.scrape()) for s in family.samples}

    def metric_pids(self, name: str) -> set[int]:
        """The workers whose ``name`` is set: a worker's gauges exist, at 0, from the moment it starts
        loading its models; its start time and CPU are set once it has built its server."""
        return {int(dict(labels)["pid"]) for (n, labels), value in self.metrics().items() if n == name and value > 0}

    def wait_for(self, check, what: str, timeout_s: float = 150.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"tidemark serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
            with contextlib.suppress(OSError, http.client.HTTPException):
                if check():
                    return
            time.sleep(0.25)
        pytest.fail(f"{what} not within {timeout_s:.0f} s:\n{self.log()[-3000:]}")

    def burst(self, prefix: str, requests: int, during: threading.Event | None = None) -> dict[str, int]:
        """``requests`` one-row predicts from ``CLIENTS`` threads; the status of each, by request id.
        ``during`` is set once a third of them are answered."""
        answers: dict[str, int] = {}
        lock = threading.Lock()
        body = [json.dumps({"rows": _rows(CUSTOMERS[i % len(CUSTOMERS):][:1])}).encode() for i in range(requests)]

        def client(j: int) -> None:
            conn: http.client.HTTPConnection | None = None
            for i in range(j, requests, CLIENTS):
                request_id = f"{prefix}-{i}"
                for _attempt in range(5):
                    conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                    try:
                        conn.request("POST", "/v1/predict", body=body[i], headers={
                            "content-type": "application/json", "x-request-id": request_id})
                        answer = conn.getresponse()
                        answer.read()
                        status = answer.status
                        break
                    except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                        conn.close()  # closed before any answer: not served; send it again
                        conn = None
                else:
                    status = 0
                with lock:
                    answers[request_id] = status
                    if during is not None and len(answers) == requests // 3:
                        during.set()
            if conn is not None:
                conn.close()

        threads = [threading.Thread(target=client, args=(j,)) for j in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        return answers


@pytest.fixture(scope="module")
def fleet(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:  # noqa: F811
    port = free_port()
    log_path = tmp_path_factory.mktemp("fleet") / "serve.log"
    env = {**os.environ, "TIDEMARK_HOME": str(settings.home), "TIDEMARK_REDIS_URL": str(settings.redis_url),
           "MLFLOW_TRACKING_URI": settings.tracking_uri, "TIDEMARK_ADMIN_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1",
           # as installed with `tidemark[serving]` alone: none of these can be imported (issue 19 §5)
           "TIDEMARK_TEST_BLOCKED_IMPORTS": ",".join(WITHOUT),
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "integration" / "without_extras"), str(REPO)])}
    for module in WITHOUT:  # the environment really hides them, so the tests below prove something
        check = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True,
                               check=False)
        assert check.returncode == 1 and "ModuleNotFoundError" in check.stderr, (module, check.stderr[-500:])
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port), "--workers", "2",
                                 "--refresh-s", "1"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Fleet(port, proc, log_path)
    try:
        server.wait_for(lambda: len(server.metric_pids("tidemark_worker_start_time_seconds")) == 2,
                        "both workers serving")
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _logged_request_ids(settings: Settings) -> set[str]:  # noqa: F811
    root = model_log_root(settings.offline_dir, settings.model_name)
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table(columns=["request_id"])
    return set(table.column("request_id").to_pylist())


def test_two_workers_answer_a_burst_and_one_scrape_counts_them_all(fleet: Fleet) -> None:
    before = fleet.metrics().get(("tidemark_scored_rows_total", (("model", "fraud-detector"),
                                                                 ("variant", "champion"))), 0.0)
    answers = fleet.burst("a", 400)
    assert sorted(set(answers.values())) == [200], {s: list(answers.values()).count(s) for s in set(answers.values())}
    pids = fleet.workers()
    assert len(pids) == 2 and fleet.metric_pids("tidemark_worker_cpu_seconds") == pids
    for _ in range(4):  # whichever worker answers the scrape, it counts both workers' rows
        rows = fleet.metrics()[("tidemark_scored_rows_total", (("model", "fraud-detector"), ("variant", "champion")))]
        assert rows - before == 400
    assert not missing_from(fleet.scrape()), missing_from(fleet.scrape())
    gauges = fleet.metrics()
    assert gauges[("tidemark_model_loaded", (("alias", "champion"), ("model", "fraud-detector")))] == 1
    assert gauges[("tidemark_online_store_up", ())] == 1
    assert gauges[("tidemark_canary_mode", (("mode", "off"), ("model", "fraud-detector")))] == 1


def test_a_worker_stopped_or_killed_mid_burst_loses_no_request_and_is_replaced(fleet: Fleet,
                                                                              settings: Settings) -> None:  # noqa: F811
    # SIGTERM: the worker finishes its requests and flushes its log; the other takes the rest
    victim = min(fleet.workers())
    third = threading.Event()
    threading.Thread(target=lambda: third.wait(60) and os.kill(victim, signal.SIGTERM), daemon=True).start()
    stopped = fleet.burst("b", 600, during=third)
    assert sorted(set(stopped.values())) == [200]
    fleet.wait_for(lambda: len(fleet.workers() - {victim}) == 2
                   and len(fleet.metric_pids("tidemark_worker_start_time_seconds")) == 2, "a replacement worker")

    # SIGKILL: requests on its connections get no answer, are sent again and answered by the other
    victim = min(fleet.workers())
    third.clear()
    threading.Thread(target=lambda: third.wait(60) and os.kill(victim, signal.SIGKILL), daemon=True).start()
    killed = fleet.burst("c", 600, during=third)
    assert sorted(set(killed.values())) == [200]
    fleet.wait_for(lambda: victim not in fleet.workers() and len(fleet.workers()) == 2
                   and len(fleet.metric_pids("tidemark_worker_start_time_seconds")) == 2, "a replacement worker")
    answers = fleet.burst("d", 200)
    assert sorted(set(answers.values())) == [200]

    # stopping the server stops every worker, each flushing its log: every answered row is there,
    # but for those the SIGKILLed worker had not written yet (burst c)
    fleet.proc.send_signal(signal.SIGTERM)
    assert fleet.proc.wait(timeout=60) == 0, fleet.log()[-3000:]
    logged = _logged_request_ids(settings)
    for burst in (stopped, answers):
        assert not set(burst) - logged, sorted(set(burst) - logged)[:5]
    assert "Traceback" not in fleet.log(), fleet.log()[-3000:]

