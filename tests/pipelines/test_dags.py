"""The four DAGs as Airflow parses them: no import errors, ids, schedules, tasks and retries as
the README documents them. Parsing only: no metadata DB, no task runs (tests/integration/test_dag_runs.py)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import DAGS_FOLDER

EXPECTED = {
    "feature_pipeline": ("0 1 * * *", ["build_features", "materialize", "check_online"]),
    "drift_monitor": ("15 * * * *", ["models", "compare", "request_retrain"]),
    "retrain": ("tidemark://retrain-request", ["check_no_canary", "train_and_gate", "start_canary"]),
    "canary_rollout": ("tidemark://canary-started", ["step", "rollout_goes_on", "look_again"]),
}


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path):
    from airflow.dag_processing.dagbag import DagBag

    started = time.perf_counter()
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    bag.parse_seconds = time.perf_counter() - started
    return bag


def test_the_dags_parse_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == sorted(EXPECTED)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_schedule_and_tasks_are_as_documented(dagbag, dag_id: str):
    from airflow.sdk import Asset

    dag = dagbag.dags[dag_id]
    schedule, tasks = EXPECTED[dag_id]
    assert dag.task_ids == tasks
    if schedule.startswith("tidemark://"):
        assert dag.schedule == [Asset(schedule)]
    else:  # cron with a data interval: each run gets [previous tick, this tick)
        assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
        assert dag.timetable.expression == schedule and str(dag.timetable.timezone) == "UTC"
    assert dag.catchup is False and dag.max_active_runs == 1


def test_tasks_run_in_the_documented_order(dagbag):
    """Each task waits for the one before it; in retrain, nothing is trained while a canary runs."""
    for dag_id, (_, tasks) in EXPECTED.items():
        dag = dagbag.dags[dag_id]
        for before, after in itertools.pairwise(tasks):
            assert dag.get_task(after).upstream_task_ids == {before}, (dag_id, after)


def test_tasks_that_call_redis_or_mlflow_retry(dagbag):
    network = {("feature_pipeline", "materialize"), ("feature_pipeline", "check_online"),
               ("drift_monitor", "compare"), ("retrain", "check_no_canary"), ("retrain", "train_and_gate"),
               ("retrain", "start_canary"), ("canary_rollout", "step")}
    for dag_id, task_id in network:
        task = dagbag.dags[dag_id].get_task(task_id)
        assert task.retries >= 2 and task.retry_delay >= timedelta(minutes=1), (dag_id, task_id)
        assert task.retry_exponential_backoff >= 2, (dag_id, task_id)  # a multiplier in Airflow 3.3: True is 1


def test_no_task_retries_an_error_that_a_retry_cannot_heal(dagbag):
    """Every task's retry policy fails at once on a deterministic tidemark error and leaves a
    transient one (Redis down, an OSError, data not there yet) to the task's retries
    (tests/integration/test_dag_manual_runs.py shows a run that fails without a retry)."""
    from airflow.sdk import RetryAction

    from features.errors import (
        CorruptValueError,
        DataCheckError,
        DataNotFoundError,
        OnlineStoreError,
        OnlineStoreUnavailable,
        UnknownFeatureError,
    )
    from monitoring.errors import DriftInputError
    from pipelines.errors import GateError, NoLabelsError, ProjectError, RegistryError
    from serving.errors import CanaryConflictError, ContractMissingError
    from tidemark.errors import ConfigError

    deterministic = [ConfigError("x"), DataCheckError("x"), UnknownFeatureError("v:f", ["v:g"]),
                     CorruptValueError(b"k", "x"), DriftInputError("x"), ProjectError("x"), NoLabelsError("x"),
                     GateError("x"), ContractMissingError("x")]
    transient = [OnlineStoreUnavailable("x"), OnlineStoreError("x"), DataNotFoundError("x"), RegistryError("x"),
                 CanaryConflictError("m", 1, 2), OSError("x"), ConnectionError("x"), RuntimeError("x")]
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            policy = task.retry_policy
            assert policy is not None, (dag.dag_id, task.task_id)
            for error in deterministic:
                decision = policy.evaluate(error, try_number=1, max_tries=3)
                assert decision.action == RetryAction.FAIL, (dag.dag_id, task.task_id, error)
                assert "cannot heal" in (decision.reason or "")
            for error in transient:
                decision = policy.evaluate(error, try_number=1, max_tries=3)
                assert decision.action == RetryAction.DEFAULT, (dag.dag_id, task.task_id, error)


def test_a_run_without_a_data_interval_covers_the_period_up_to_its_run_after(airflow_home: Path):
    """Airflow 3 gives a run triggered without a logical date no data interval."""
    from datetime import UTC, datetime

    from pipelines.dags.common import run_interval

    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
    after = datetime(2026, 3, 5, 14, 40, tzinfo=UTC)
    assert run_interval(start, end, after, timedelta(days=1)) == (start, end)  # scheduled, or given a logical date
    assert run_interval(None, None, after, timedelta(hours=1)) == (datetime(2026, 3, 5, 13, 40, tzinfo=UTC), after)
    assert run_interval(None, None, after, timedelta(days=1)) == (datetime(2026, 3, 4, 14, 40, tzinfo=UTC), after)


def test_drift_emits_the_asset_retrain_is_scheduled_on(dagbag):
    outlets = dagbag.dags["drift_monitor"].get_task("request_retrain").outlets
    assert [a.uri for a in outlets] == [a.uri for a in dagbag.dags["retrain"].schedule]


def test_a_started_canary_starts_the_rollout_dag_which_queues_its_own_next_look(dagbag):
    """No run every 5 minutes of the day: retrain's canary start is the rollout DAG's schedule, and
    each look queues the next (tests/integration/test_canary_controller.py runs the chain)."""
    from airflow.sdk import Asset

    outlets = dagbag.dags["retrain"].get_task("start_canary").outlets
    rollout = dagbag.dags["canary_rollout"]
    assert [a.uri for a in outlets] == [a.uri for a in rollout.schedule] == [Asset("tidemark://canary-started").uri]
    again = rollout.get_task("look_again")
    assert type(again).__mro__[1].__name__ == "TriggerDagRunOperator" and again.trigger_dag_id == "canary_rollout"
    assert "run_after" in again.template_fields and again.skip_when_already_exists


def test_feature_pipeline_announces_its_views_once_checked(dagbag):
    """One event of tidemark://features/<view> per view, known at run time: through an AssetAlias
    (the events themselves: tests/integration/test_dag_connections.py)."""
    from airflow.sdk import AssetAlias

    assert dagbag.dags["feature_pipeline"].get_task("check_online").outlets == [AssetAlias("tidemark-features")]


def test_only_pipelines_imports_airflow():
    """The serving and SDK import paths stay free of Airflow (~6 s to import): checked by import-linter
    in `make test`; here, that importing them does not pull it in."""
    code = ("import sys, features.sdk, serving.server, monitoring.drift, pipelines.drift_job, pipelines.retrain_job, "
            "pipelines.feature_pipeline; print('airflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_airflow_env_points_at_the_home_and_the_dags(tmp_path: Path):
    """`tidemark airflow standalone` runs Airflow with this environment (`tidemark airflow env` prints it)."""
    import os
    import shlex

    out = subprocess.run([str(Path(sys.executable).parent / "tidemark"), "airflow", "env", "--port", "8099"],
                         capture_output=True, text=True, check=True, env={**os.environ, "TIDEMARK_HOME": str(tmp_path)})
    env = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.stdout.splitlines())
    assert env["AIRFLOW_HOME"] == str(tmp_path.resolve() / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(DAGS_FOLDER)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path.resolve() / 'airflow' / 'airflow.db'}"
    assert env["AIRFLOW__API__BASE_URL"] == "http://localhost:8099" and env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"  # loopback unless asked: Airflow's own default is 0.0.0.0


@pytest.mark.parametrize(("args", "host", "base_url"), [
    ([], "127.0.0.1", "http://localhost:8080"),
    (["--host", "0.0.0.0"], "0.0.0.0", "http://localhost:8080"),
    (["--host", "10.1.2.3", "--port", "9000"], "10.1.2.3", "http://10.1.2.3:9000"),
])
def test_the_api_server_airflow_standalone_starts_listens_where_asked(tmp_path: Path, args: list[str], host: str,
                                                                      base_url: str):
    """What `airflow api-server` (started by `airflow standalone`) reads for its --host, and the URL
    tasks and browsers use, asked of Airflow itself under the environment `tidemark airflow env` gives."""
    import os
    import shlex

    bin_dir = Path(sys.executable).parent
    out = subprocess.run([str(bin_dir / "tidemark"), "airflow", "env", *args], capture_output=True, text=True,
                         check=True, env={**os.environ, "TIDEMARK_HOME": str(tmp_path)})
    env = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.stdout.splitlines())
    code = "from airflow.configuration import conf; print(conf.get('api', 'host'), conf.get('api', 'base_url'))"
    read = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})
    assert read.stdout.split() == [host, base_url]
