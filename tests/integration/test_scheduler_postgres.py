"""The real Airflow scheduler (not ``dag.test()``) on a PostgreSQL metadata DB, as the README's
production set-up describes it: ``TIDEMARK_AIRFLOW_DB`` through ``tidemark airflow env``'s
:func:`~pipelines.cli_airflow.airflow_env`, ``airflow db migrate``, then the scheduler
(LocalExecutor), the DAG processor and the API server (tasks run through its Execution API) as
processes. Unpausing ``feature_pipeline`` makes the scheduler create its latest daily run, which
builds, loads and checks the driver example's features and publishes their Assets.

PostgreSQL: ``TIDEMARK_TEST_POSTGRES`` (a server URL, default ``postgresql://postgres@127.0.0.1:5432``);
the test creates a database of its own there and drops it afterwards, and skips where no server answers.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import redis

from examples.driver.datagen import generate
from pipelines.cli_airflow import airflow_env
from tests.integration.redis_servers import RedisProc, free_port
from tidemark.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2] / "examples" / "driver" / "feature_repo"
VIEWS = {"customer_daily_profile", "driver_hourly_stats"}
SERVER = os.environ.get("TIDEMARK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
AIRFLOW = str(Path(sys.executable).parent / "airflow")
T = TypeVar("T")


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for Airflow's metadata, dropped afterwards (its URL)."""
    try:
        admin = psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {SERVER} ({exc}); set TIDEMARK_TEST_POSTGRES to a server URL "
                    "whose user may CREATE DATABASE")
    name = f"tidemark_sched_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{SERVER}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Airflow:
    """The running components, their environment, and the metadata DB they share."""

    env: dict[str, str]
    db: str
    logs: Path

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db) as conn:
            return list(conn.execute(sql, args).fetchall())  # type: ignore[arg-type]  # a test's literal SQL

    def cli(self, *args: str) -> str:
        out = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, f"airflow {' '.join(args)}: {out.stderr[-3000:]}"
        return out.stdout

    def tails(self) -> str:
        """The end of each component's log and of every task log: what a failed wait shows."""
        files = sorted(self.logs.glob("*.log")) + sorted(Path(self.env["AIRFLOW_HOME"], "logs").rglob("*.log"))
        return "\n".join(f"--- {f}\n{f.read_text(errors='replace')[-2500:]}" for f in files)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, database: str, module_redis: RedisProc) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("sched-home")
    generate(home / "driver_example" / "data", end=datetime.now(UTC).replace(minute=0, second=0, microsecond=0),
             days=3, drivers=10, customers=20, trips_per_day=50)
    tidemark = {"TIDEMARK_HOME": str(home), "TIDEMARK_AIRFLOW_DB": database, "TIDEMARK_FEAST_REPO": str(REPO),
                "TIDEMARK_REDIS_URL": module_redis.url, "TIDEMARK_SPARK_MASTER": "local[2]",
                "TIDEMARK_SPARK_SHUFFLE_PARTITIONS": "4", "TIDEMARK_SPARK_DRIVER_MEMORY": "1g"}
    env = {**os.environ, **tidemark, **airflow_env(Settings.from_env(tidemark), port=free_port())}
    env.update({
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),  # the scheduler signs, the API server checks
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
    })
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
    world = Airflow(env, database, home / "components")
    world.logs.mkdir()
    world.cli("db", "migrate")
    procs = [_start(world, *component) for component in (["scheduler"], ["dag-processor"], ["api-server"])]
    try:
        yield world
    finally:
        for proc in procs:
            _stop(proc)


def _start(world: Airflow, *component: str) -> subprocess.Popen[bytes]:
    with open(world.logs / f"{component[0]}.log", "wb") as log:
        return subprocess.Popen([AIRFLOW, *component], env=world.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: its workers stop with it


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _wait(what: str, world: Airflow, probe: Callable[[], T | None], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(2)
    raise AssertionError(f"{what} within {timeout_s:.0f} s\n{world.tails()}")


def test_the_scheduler_runs_feature_pipeline_on_postgresql(airflow: Airflow, module_redis: RedisProc) -> None:
    def parsed() -> bool | None:
        return True if airflow.query("SELECT 1 FROM dag WHERE dag_id = 'feature_pipeline'") else None

    def finished() -> tuple[Any, ...] | None:
        rows = airflow.query("SELECT run_id, run_type, state FROM dag_run WHERE dag_id = 'feature_pipeline'")
        return rows[0] if rows and rows[0][2] in ("success", "failed") else None

    started = time.monotonic()
    _wait("the DAG processor did not store feature_pipeline", airflow, parsed, 120)
    parsed_s = time.monotonic() - started
    airflow.cli("dags", "unpause", "feature_pipeline")
    run_id, run_type, state = _wait("the scheduler did not finish a feature_pipeline run", airflow, finished, 360)
    rows = airflow.query("SELECT task_id, state, extract(epoch FROM end_date - start_date) FROM task_instance "
                         "WHERE dag_id = 'feature_pipeline' AND run_id = %s", run_id)
    tasks = {task: state for task, state, _ in rows}
    print(f"parsed after {parsed_s:.0f} s, run finished after {time.monotonic() - started:.0f} s; task seconds: "
          + ", ".join(f"{task} {float(secs or 0):.0f}" for task, _, secs in rows))
    assert (run_type, state) == ("scheduled", "success"), (tasks, airflow.tails())
    assert tasks == dict.fromkeys(["build_features", "materialize", "check_online"], "success")
    events = airflow.query("SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                           "WHERE e.source_dag_id = 'feature_pipeline' AND e.source_run_id = %s", run_id)
    assert {uri for uri, _ in events} == {f"tidemark://features/{view}" for view in VIEWS}
    assert all(extra["rows_written"] > 0 for _, extra in events), events
    assert redis.Redis.from_url(module_redis.url).dbsize() > 0  # the online store got the features
