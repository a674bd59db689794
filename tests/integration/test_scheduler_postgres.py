"""The real Airflow scheduler (not ``dag.test()``) on a PostgreSQL metadata DB, as the README's
production set-up describes it: ``TIDEMARK_AIRFLOW_DB`` through ``tidemark airflow env``'s
:func:`~pipelines.cli_airflow.airflow_env`, ``airflow db migrate``, then the scheduler
(LocalExecutor), the DAG processor and the API server (tasks run through its Execution API) as
processes. On them, the driver example's loop as production runs it:

1. Unpausing ``feature_pipeline`` makes the scheduler create its latest daily run, which builds,
   loads and checks the features and publishes their Assets.
2. ``driver-completion`` trained by its entry point and promoted, served in this process on trips
   five times as long as the example's (its prediction log); ``airflow dags trigger
   drift_monitor`` then judges the hour up to the trigger, finds drift, and ``request_retrain``
   emits ``tidemark://retrain-request``; the scheduler starts ``retrain`` from that event (no
   conf: the path the ``dag.test()`` tests replace with one), which trains a challenger on the
   labels known at the drift interval's end and gates it.

The tasks and this process share one ``TIDEMARK_HOME``, Redis and MLflow store (SQLite under the
home, named by ``MLFLOW_TRACKING_URI`` for both). Unpausing the hourly ``drift_monitor`` makes the
scheduler run its latest hour too, before any traffic; the test serves the drifted trips only when
the next hourly run is not due before it pauses the DAG again, so that the triggered run is the
only one to judge them and the retrain request is exactly one.

PostgreSQL: ``TIDEMARK_TEST_POSTGRES`` (a server URL, default ``postgresql://postgres@127.0.0.1:5432``);
the test creates a database of its own there and drops it afterwards, and skips where no server answers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pyarrow.dataset as ds
import pytest
import redis
from starlette.testclient import TestClient

from examples.driver.datagen import generate
from pipelines import model_registry
from pipelines.cli_airflow import airflow_env
from pipelines.project import load_project
from pipelines.project_training import train_project_model
from serving.server import build_server
from tests.integration.redis_servers import RedisProc, free_port
from tidemark.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2] / "examples" / "driver" / "feature_repo"
VIEWS = {"customer_daily_profile", "driver_hourly_stats"}
SERVER = os.environ.get("TIDEMARK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
AIRFLOW = str(Path(sys.executable).parent / "airflow")
T = TypeVar("T")
MODEL = "driver-completion"
RETRAIN_REQUEST = "tidemark://retrain-request"
#: The drift the test controls: requested trips this many times as long as the example's.
LONGER = 5
#: Requests served with them: drift_monitor judges an hour's inputs from 500 rows on (DriftPolicy.min_rows).
SERVED = 600
#: From serving them to pausing drift_monitor again, at most (s): no hourly run may fall due in
#: between, since it would judge the same trips and ask for a second retrain.
DRIFT_PHASE_S = 240
PAUSE_S = 20  # what `airflow dags pause` takes, at most (s)


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
    settings: Settings  # the platform's, as the tasks read them from env: one home, Redis and MLflow store

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db) as conn:
            return list(conn.execute(sql, args).fetchall())  # type: ignore[arg-type]  # a test's literal SQL

    def cli(self, *args: str) -> str:
        out = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, f"airflow {' '.join(args)}: {out.stderr[-3000:]}"
        return out.stdout

    def runs(self, dag_id: str) -> list[tuple[Any, ...]]:
        """``dag_id``'s runs, oldest first: (run_id, run_type, state, data_interval_end)."""
        return self.query("SELECT run_id, run_type, state, data_interval_end FROM dag_run WHERE dag_id = %s "
                          "ORDER BY id", dag_id)

    def tasks(self, dag_id: str, run_id: str) -> dict[str, str]:
        """The run's task states, a mapped task's by ``task[index]``."""
        rows = self.query("SELECT task_id, map_index, state FROM task_instance WHERE dag_id = %s AND run_id = %s",
                          dag_id, run_id)
        return {task if index < 0 else f"{task}[{index}]": state for task, index, state in rows}

    def returned(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        """What a task returned (its ``return_value`` XCom)."""
        rows = self.query("SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s "
                          "AND map_index = %s AND key = 'return_value'", dag_id, run_id, task_id, map_index)
        assert len(rows) == 1, f"{dag_id} {run_id} {task_id}[{map_index}] returned nothing: {rows}"
        return rows[0][0]

    def events(self, dag_id: str, run_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        """The Asset events a run emitted: (event id, Asset URI, extra)."""
        return [tuple(row) for row in self.query(  # type: ignore[misc]  # three columns
            "SELECT e.id, a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE e.source_dag_id = %s AND e.source_run_id = %s ORDER BY e.id", dag_id, run_id)]

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
                "TIDEMARK_SPARK_SHUFFLE_PARTITIONS": "4", "TIDEMARK_SPARK_DRIVER_MEMORY": "1g",
                # named for the tasks and the test alike, whatever MLFLOW_TRACKING_URI this process has
                "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    settings = Settings.from_env(tidemark)
    env = {**os.environ, **tidemark, **airflow_env(settings, port=free_port())}
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
    world = Airflow(env, database, home / "components", settings)
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


def _wait_parsed(world: Airflow, *dag_ids: str) -> None:
    def parsed() -> bool | None:
        stored = {row[0] for row in world.query("SELECT dag_id FROM dag WHERE dag_id = ANY(%s)", list(dag_ids))}
        return True if stored == set(dag_ids) else None

    _wait(f"the DAG processor did not store {', '.join(dag_ids)}", world, parsed, 120)


def _finished(world: Airflow, dag_id: str, run_type: str) -> Callable[[], tuple[Any, ...] | None]:
    """A probe for ``dag_id``'s first run of ``run_type`` once it has finished."""
    def probe() -> tuple[Any, ...] | None:
        found = [run for run in world.runs(dag_id) if run[1] == run_type]
        return found[0] if found and found[0][2] in ("success", "failed") else None

    return probe


def _until_quiet(world: Airflow, dag_id: str, seconds: float) -> list[tuple[Any, ...]]:
    """``dag_id``'s runs once it has some, all finished, and its next scheduled run is due no sooner
    than ``seconds`` from now (one due sooner is waited for, and run)."""
    def quiet() -> list[tuple[Any, ...]] | None:
        runs = world.runs(dag_id)
        [(due,)] = world.query("SELECT next_dagrun_create_after FROM dag WHERE dag_id = %s", dag_id)
        if not runs or any(state not in ("success", "failed") for _, _, state, _ in runs):
            return None
        return runs if due is not None and (due - datetime.now(UTC)).total_seconds() >= seconds else None

    return _wait(f"{dag_id} did not finish its runs and fall quiet for {seconds:.0f} s", world, quiet, seconds + 300)


def _longer_trips(settings: Settings, n: int, factor: float) -> list[dict[str, Any]]:
    """Requests for the example's drivers and riders, drawn from its trips, ``factor`` times as long
    (km), under new trip ids (no label is known for them)."""
    trips = ds.dataset(settings.home / "driver_example" / "data" / "trips", partitioning="hive").to_table(
        columns=["driver_id", "customer_id", "trip_distance_km"]).to_pandas().sample(n, replace=True, random_state=0)
    return [{"driver_id": int(d), "customer_id": int(c), "trip_distance_km": float(k) * factor, "trip_id": 8_000_000 + i}
            for i, (d, c, k) in enumerate(trips.itertuples(index=False))]


def _serve(settings: Settings, rows: list[dict[str, Any]]) -> None:
    """``rows`` scored by the champion as ``tidemark serve`` scores them, 100 a request, and logged."""
    server = build_server(settings, refresh_s=3600)
    try:
        with TestClient(server.app) as http:
            for i in range(0, len(rows), 100):
                _predict(http, rows[i:i + 100])
            server.scorer.log_sink.flush()
    finally:
        server.close()


def _predict(http: TestClient, rows: list[dict[str, Any]]) -> None:
    """``rows`` scored, as a client asks: a 503 (a Redis read past its budget on a host busy with
    Airflow opens the breaker, which probes every 50 ms; nothing was scored) is asked again shortly."""
    for _ in range(50):
        answer = http.post("/v1/predict", json={"rows": rows})
        if answer.status_code != 503:
            assert answer.status_code == 200, answer.text
            return
        time.sleep(0.1)
    raise AssertionError(f"still 503 after 5 s: {answer.text}")


def _task_seconds(world: Airflow, dag_id: str, run_id: str) -> str:
    rows = world.query("SELECT task_id, map_index, extract(epoch FROM end_date - start_date) FROM task_instance "
                       "WHERE dag_id = %s AND run_id = %s ORDER BY start_date", dag_id, run_id)
    return ", ".join(f"{task}{'' if index < 0 else f'[{index}]'} {float(secs or 0):.0f}" for task, index, secs in rows)


@dataclass(frozen=True)
class FeatureRun:
    """The scheduler's ``feature_pipeline`` run, and when it was parsed and finished (s after the start)."""

    run_id: str
    run_type: str
    state: str
    parsed_s: float
    finished_s: float


@pytest.fixture(scope="module")
def feature_run(airflow: Airflow) -> FeatureRun:
    """``feature_pipeline`` unpaused: the scheduler's latest daily run, finished. The drift loop
    serves from the features it applied and loaded into Redis."""
    started = time.monotonic()
    _wait_parsed(airflow, "feature_pipeline")
    parsed_s = time.monotonic() - started
    airflow.cli("dags", "unpause", "feature_pipeline")

    def finished() -> tuple[Any, ...] | None:
        rows = airflow.runs("feature_pipeline")
        return rows[0] if rows and rows[0][2] in ("success", "failed") else None

    run_id, run_type, state, _ = _wait("the scheduler did not finish a feature_pipeline run", airflow, finished, 360)
    return FeatureRun(run_id, run_type, state, parsed_s, time.monotonic() - started)


def test_the_scheduler_runs_feature_pipeline_on_postgresql(airflow: Airflow, feature_run: FeatureRun,
                                                           module_redis: RedisProc) -> None:
    run_id = feature_run.run_id
    tasks = airflow.tasks("feature_pipeline", run_id)
    print(f"parsed after {feature_run.parsed_s:.0f} s, run finished after {feature_run.finished_s:.0f} s; "
          f"task seconds: {_task_seconds(airflow, 'feature_pipeline', run_id)}")
    assert (feature_run.run_type, feature_run.state) == ("scheduled", "success"), (tasks, airflow.tails())
    assert tasks == dict.fromkeys(["build_features", "materialize", "check_online"], "success")
    events = airflow.events("feature_pipeline", run_id)
    assert {uri for _, uri, _ in events} == {f"tidemark://features/{view}" for view in VIEWS}
    assert all(extra["rows_written"] > 0 for _, _, extra in events), events
    assert redis.Redis.from_url(module_redis.url).dbsize() > 0  # the online store got the features


@pytest.mark.timeout(1200)  # its waits' own limits: a wait past the next hourly run can add one phase and that run
def test_drift_found_by_the_scheduler_starts_retrain_through_the_asset(
        airflow: Airflow, feature_run: FeatureRun, spark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop the whole-loop test (``dag.test()``) closes by hand with a conf: drift_monitor's
    drift decision emits ``tidemark://retrain-request``, and the scheduler starts ``retrain`` from
    that event, which trains on labels known at the drift interval's end and gates a challenger."""
    assert feature_run.state == "success", "the drift loop serves the features that feature_pipeline loaded"
    settings = dataclasses.replace(airflow.settings, model_name=MODEL)
    for name in ("TIDEMARK_HOME", "TIDEMARK_REDIS_URL"):  # what the project file and feature_store.yaml read
        monkeypatch.setenv(name, airflow.env[name])
    started, laps = time.monotonic(), []

    def lap(what: str) -> None:
        laps.append(f"{what} {time.monotonic() - started:.0f} s")

    version = train_project_model(settings, load_project(REPO).model(MODEL))
    model_registry.promote(model_registry.connect(settings), MODEL, version.version, first=True)
    lap("champion trained")
    _wait_parsed(airflow, "drift_monitor", "retrain")
    airflow.cli("dags", "unpause", "retrain")
    # after the champion: two processes creating the SQLite MLflow store at once collide in its
    # migrations. The scheduler runs drift_monitor's latest hour now, before any traffic.
    airflow.cli("dags", "unpause", "drift_monitor")
    _until_quiet(airflow, "drift_monitor", DRIFT_PHASE_S)
    lap("hourly drift run")

    served_from = datetime.now(UTC)
    deadline = time.monotonic() + DRIFT_PHASE_S
    _serve(settings, _longer_trips(settings, SERVED, LONGER))
    lap("served")
    airflow.cli("dags", "trigger", "drift_monitor")
    run_id, _, state, _ = _wait("the scheduler did not finish the triggered drift_monitor run", airflow,
                                _finished(airflow, "drift_monitor", "manual"), deadline - time.monotonic() - PAUSE_S)
    airflow.cli("dags", "pause", "drift_monitor")  # its next hourly run would judge the same trips again
    lap(f"drift run ({_task_seconds(airflow, 'drift_monitor', run_id)})")

    tasks = airflow.tasks("drift_monitor", run_id)
    # driver-duration has no champion: nothing to monitor, its check skips, and only the summary
    # that driver-completion's returned is mapped to a request
    assert (state, tasks) == ("success", {"models": "success", "compare[0]": "success", "compare[1]": "skipped",
                                          "request_retrain[0]": "success"}), (state, tasks, airflow.tails())
    summary = airflow.returned("drift_monitor", run_id, "compare", 0)
    assert (summary["model"], summary["decision"], summary["rows"]) == (MODEL, "drift", SERVED), summary["reasons"]
    assert {"trip_distance_km", "score"} <= set(summary["drifted_columns"]), summary["reasons"]
    [(run_after,)] = airflow.query("SELECT run_after FROM dag_run WHERE dag_id = 'drift_monitor' AND run_id = %s",
                                   run_id)
    judged = (datetime.fromisoformat(summary["interval_start"]), datetime.fromisoformat(summary["interval_end"]))
    assert judged == (run_after - timedelta(hours=1), run_after) and judged[0] < served_from, (judged, run_after)
    requests = airflow.query("SELECT e.id, e.source_run_id, e.source_task_id, e.extra FROM asset_event e "
                             "JOIN asset a ON a.id = e.asset_id WHERE a.name = %s", RETRAIN_REQUEST)
    # one request, this run's: the hourly runs judged hours before the traffic
    assert [row[1:] for row in requests] == [(run_id, "request_retrain", summary)], requests
    hourly = [run for run in airflow.runs("drift_monitor") if run[0] != run_id]
    assert hourly and all(kind == "scheduled" and end <= served_from for _, kind, _, end in hourly), hourly

    retrain_id, _, state, _ = _wait("the scheduler did not finish a retrain run from the drift event", airflow,
                                    _finished(airflow, "retrain", "asset_triggered"), 360)
    lap(f"retrain run ({_task_seconds(airflow, 'retrain', retrain_id)})")
    print("drift loop: " + "; ".join(laps) + f"\ndrift: {'; '.join(summary['reasons'])}")
    assert [run[:2] for run in airflow.runs("retrain")] == [(retrain_id, "asset_triggered")]
    consumed = airflow.query("SELECT d.event_id FROM dagrun_asset_event d JOIN dag_run r ON r.id = d.dag_run_id "
                             "WHERE r.dag_id = 'retrain' AND r.run_id = %s", retrain_id)
    assert consumed == [(requests[0][0],)]  # started by the drift event, not by a hand-made conf
    outcome = airflow.returned("retrain", retrain_id, "train_and_gate")
    print(f"gate: {outcome['gate_reason']}")
    tasks = airflow.tasks("retrain", retrain_id)
    # a challenger that failed the gate starts no canary; either verdict is the product's to give
    assert (state, tasks) == ("success", {"check_no_canary": "success", "train_and_gate": "success",
                                          "start_canary": "success" if outcome["gate_passed"] else "skipped"}), \
        (state, tasks, outcome, airflow.tails())
    ml = model_registry.connect(settings)
    challenger = ml.get_model_version_by_alias(MODEL, "challenger")
    assert (outcome["model"], str(challenger.version), outcome["version"]) == (MODEL, "2", "2"), outcome
    assert challenger.tags["gate.verdict"] == ("pass" if outcome["gate_passed"] else "fail"), challenger.tags
    assert str(ml.get_model_version_by_alias(MODEL, "champion").version) == str(version.version) == "1"
    trigger = json.loads(challenger.tags["retrain.trigger"])
    assert {k: trigger[k] for k in ("model", "decision", "interval_end")} == \
        {k: summary[k] for k in ("model", "decision", "interval_end")}, trigger
    # trained on the labels known at the drift interval's end, which the event carried
    cutoff = ml.get_run(outcome["run_id"]).data.params["label_cutoff"]
    assert datetime.fromisoformat(cutoff) == datetime.fromisoformat(summary["interval_end"]), (cutoff, summary)
