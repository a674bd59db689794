"""A task whose error a retry cannot heal fails on its first try, whatever its ``retries``, and the
team's notification carries that error's own type and message: ``feature_pipeline`` run by hand
with ``dag.test()`` (real Airflow, SQLite metadata DB) on a worker whose settings are wrong. Which
errors heal and which do not: ``pipelines.dags.common.DETERMINISTIC_ERRORS``
(tests/pipelines/test_dags.py checks every task's policy)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pipelines.dag_runs import Ran, load_dags, run_dag
from tests.integration.webhook_receiver import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def _task_instance(run: Ran, task_id: str) -> Any:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        found = session.scalars(select(TaskInstance).where(TaskInstance.run_id == run.run_id,
                                                           TaskInstance.task_id == task_id)).one()
        session.expunge(found)
        return found


def test_an_error_a_retry_cannot_heal_fails_the_task_at_once_and_is_reported(
        tmp_path: Path, airflow_db: Path, webhook: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad setting on the worker: ``build_features`` (retries=1) fails on its first try with the
    ConfigError's own message in the notification; nothing downstream runs."""
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.setenv("TIDEMARK_SPARK_SHUFFLE_PARTITIONS", "many")
    monkeypatch.setenv("AIRFLOW_CONN_TIDEMARK_WEBHOOK", json.dumps({"conn_type": "http", "host": webhook.url}))
    dag = load_dags(retries=None)["feature_pipeline"]  # the DAG's own retries
    for task in dag.tasks:
        task.retry_delay = timedelta(0)  # were it retried, the test would see try 2, not wait for it
    ran = run_dag(dag)
    assert ran.state == "failed", ran.states
    # the task's Airflow context does not outlive the run: later work here is nobody's task
    assert not [k for k in os.environ if k.startswith("AIRFLOW_CTX_")], sorted(os.environ)
    assert ran.states == {"build_features": "failed", "materialize": "upstream_failed",
                          "check_online": "upstream_failed"}
    ti = _task_instance(ran, "build_features")
    assert ti.max_tries == 1 and ti.try_number == 1, (ti.max_tries, ti.try_number)
    told = webhook.texts()
    assert len(told) == 1 and told[0].startswith(
        "tidemark: feature_pipeline.build_features failed (try 1): ConfigError: "
        "TIDEMARK_SPARK_SHUFFLE_PARTITIONS='many' is not a positive integer"), told
