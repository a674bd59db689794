"""What an ML engineer sees in ``tidemark airflow standalone``, read by headless Chromium from the
rendered React UI: the four DAGs, and runs as the scheduler recorded them.

The runs are made the way ``tidemark demo`` makes its own (:class:`pipelines.local_airflow.LocalAirflow`):
``airflow standalone`` on the home's metadata DB, each DAG triggered by hand and run by the
scheduler, its tasks by the LocalExecutor (start and end times, a log per task). Each is as cheap as
the DAG allows on a fresh home: the drift DAG without a champion (skipped), the canary DAG without a
canary (skipped), the retrain DAG for a model the project does not have (failed at once: that
error cannot heal). Not ``feature_pipeline``: without data its build waits out its retries (data
may still arrive), minutes; ``tidemark demo`` runs it through the scheduler.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.headless_browser import (
    chromium_or_skip,
    dump_dom,
    free_port,
    visible_text,
)
from tests.integration.redis_servers import RedisProc

pytestmark = pytest.mark.integration

DAG_IDS = ("feature_pipeline", "drift_monitor", "retrain", "canary_rollout")
RUN = ("drift_monitor", "retrain", "canary_rollout")  # the DAGs the test runs
CONF = {"retrain": {"model": "no-such-model"}}


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def _wait_for_dags(api: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """The API server's DAGs by id once it lists all four (the DAG processor parses them first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            listed = {d["dag_id"]: d for d in _get_json(f"{api}/api/v2/dags?limit=100")["dags"]}
            if set(DAG_IDS) <= set(listed):
                return listed
        except OSError:
            pass
        assert time.monotonic() < deadline, f"the API server did not list {DAG_IDS} in {timeout_s} s"
        time.sleep(2.0)


def test_airflow_standalone_shows_the_four_dags_and_the_schedulers_runs(tmp_path: Path, airflow_db: Path,
                                                                     module_redis: RedisProc,
                                                                     monkeypatch: pytest.MonkeyPatch):
    from pipelines.local_airflow import LocalAirflow
    from tidemark.settings import Settings

    browser = chromium_or_skip()
    home = tmp_path / "home"
    home.mkdir()
    (home / "airflow").symlink_to(airflow_db)  # standalone's $TIDEMARK_HOME/airflow: this process's Airflow DB
    env = {"TIDEMARK_HOME": str(home), "TIDEMARK_REDIS_URL": module_redis.url,
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
           # the simple auth manager's all-admins mode: the browser needs no login
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
    for key, value in env.items():  # tasks read their settings from the environment, as on a worker
        monkeypatch.setenv(key, value)
    port = free_port()
    started = time.monotonic()
    with LocalAirflow(Settings.from_env(env), port) as airflow:
        airflow.wait_ready(list(DAG_IDS))
        ready_s = time.monotonic() - started
        since = datetime.now(UTC)
        triggered = {dag_id: airflow.trigger(dag_id, note="test", conf=CONF.get(dag_id)) for dag_id in RUN}
        for dag_id in RUN:
            airflow.set_paused(dag_id, False)
        runs = {dag_id: airflow.wait(dag_id, run_id, timeout_s=300) for dag_id, run_id in triggered.items()}
        airflow.pause_all()
        ran_s = time.monotonic() - started
        api = f"http://127.0.0.1:{port}"
        listed = _wait_for_dags(api)
        scheduled = {dag_id: airflow.runs(dag_id, since, "scheduled") for dag_id in RUN}
        dags_page = visible_text(dump_dom(browser, f"{api}/dags", until=f"{len(DAG_IDS)} Dags"))
        runs_page = visible_text(dump_dom(browser, f"{api}/dag_runs", until="canary_rollout"))
    print(f"Airflow ready after {ready_s:.0f} s, DAG runs done after {ran_s:.0f} s, pages read after "
          f"{time.monotonic() - started:.0f} s")

    assert all(listed[d]["is_paused"] for d in DAG_IDS)  # paused again: nothing more runs by itself
    assert {d: r.state for d, r in runs.items()} == {"drift_monitor": "success", "retrain": "failed",
                                                     "canary_rollout": "success"}, \
        {d: r.states for d, r in runs.items()}
    # a model the project lacks cannot heal: failed on its first try, not after minutes of retries
    assert runs["retrain"].tries["check_no_canary"] == 1 and runs["retrain"].states["check_no_canary"] == "failed", \
        (runs["retrain"].states, runs["retrain"].tries)
    # run by the scheduler's executor, not in this process: each task that ran wrote its log
    for dag_id, ran in runs.items():
        folder = airflow_db / "logs" / f"dag_id={dag_id}" / f"run_id={ran.run_id}"
        assert list(folder.rglob("*.log")), (dag_id, ran.states)
        for task_id, state in ran.states.items():
            if state in ("success", "failed"):
                logs = list(folder.glob(f"task_id={task_id.split('[')[0]}/**/*.log"))
                assert logs and all(log.stat().st_size > 0 for log in logs), (dag_id, task_id, logs)
    assert f"{len(DAG_IDS)} Dags" in dags_page and all(d in dags_page for d in DAG_IDS), dags_page[:3000]
    for dag_id, ran in runs.items():
        # the runs list: that run, by id, with its state, triggered by hand
        assert re.search(rf"{dag_id} {re.escape(ran.run_id)} \S+ \S+ {ran.state.capitalize()} Manual", runs_page), \
            (dag_id, runs_page[:3000])
    assert scheduled["retrain"] == scheduled["canary_rollout"] == []  # Asset-scheduled: no run of their own
