"""What an ML engineer sees in ``tidemark airflow standalone``, read by headless Chromium from the
rendered React UI: the four DAGs, each with its last run.

The runs are real ``dag.test()`` runs on a fresh home, each as cheap as the DAG allows: the drift
DAG without a champion (skipped), the canary DAG without a canary (skipped), the retrain and the
feature DAGs without any data (failed, and said so). They are recorded in the metadata DB that
``tidemark airflow standalone`` then serves: ``$TIDEMARK_HOME/airflow`` is the test's Airflow home.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.headless_browser import (
    chromium_or_skip,
    cli_server,
    dump_dom,
    free_port,
    visible_text,
    wait_for_line,
)
from tests.integration.redis_servers import RedisProc

pytestmark = pytest.mark.integration

DAG_IDS = ("feature_pipeline", "drift_monitor", "retrain", "canary_rollout")


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


def test_airflow_standalone_shows_the_four_dags_with_their_last_runs(tmp_path: Path, airflow_db: Path,
                                                                     module_redis: RedisProc,
                                                                     monkeypatch: pytest.MonkeyPatch):
    browser = chromium_or_skip()
    home = tmp_path / "home"
    home.mkdir()
    (home / "airflow").symlink_to(airflow_db)  # standalone's $TIDEMARK_HOME/airflow: the DB dag.test() writes
    env = {"TIDEMARK_HOME": str(home), "TIDEMARK_REDIS_URL": module_redis.url,
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    for key, value in env.items():  # tasks read their settings from the environment, as on a worker
        monkeypatch.setenv(key, value)
    port = free_port()
    log = tmp_path / "airflow.log"
    # the simple auth manager's all-admins mode: the browser needs no login
    ui_env = {**env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
    started = time.monotonic()
    with cli_server(["airflow", "standalone", "--port", str(port)], ui_env, log) as server:
        # the DAG runs while Airflow starts (a minute or two on 2 cores): DAGs start paused, so its
        # scheduler adds no run of its own
        from pipelines.dag_runs import load_dags, run_dag

        dags = load_dags(retries=0)
        runs = {dag_id: run_dag(dags[dag_id]) for dag_id in DAG_IDS}
        ran_s = time.monotonic() - started
        wait_for_line(server, log, r"Airflow is ready")
        api = f"http://127.0.0.1:{port}"
        listed = _wait_for_dags(api)
        ready_s = time.monotonic() - started
        dags_page = visible_text(dump_dom(browser, f"{api}/dags", until=f"{len(DAG_IDS)} Dags"))
        runs_page = visible_text(dump_dom(browser, f"{api}/dag_runs", until="canary_rollout"))
    print(f"DAG runs done after {ran_s:.0f} s, Airflow ready after {ready_s:.0f} s, pages read after "
          f"{time.monotonic() - started:.0f} s")

    assert all(listed[d]["is_paused"] for d in DAG_IDS)  # no run but ours
    assert {d: r.state for d, r in runs.items()} == {"feature_pipeline": "failed", "drift_monitor": "success",
                                                     "retrain": "failed", "canary_rollout": "success"}
    # the DAGs list: each DAG with its schedule and its last run's time (UTC, as the UI shows it)
    assert f"{len(DAG_IDS)} Dags" in dags_page, dags_page[:3000]
    for dag_id, ran in runs.items():
        at = datetime.fromisoformat(ran.run_id.split("__", 1)[1].rsplit("_", 1)[0])
        assert re.search(rf"{dag_id} (?:(?!Latest Run).)*Latest Run {at:%Y-%m-%d %H:%M:%S}", dags_page), (dag_id, dags_page[:3000])
        # the runs list: that run, by id, with its state
        assert re.search(rf"{dag_id} {re.escape(ran.run_id)} \S+ \S+ {ran.state.capitalize()} Manual", runs_page), \
            (dag_id, runs_page[:3000])
