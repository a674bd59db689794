"""Run tidemark's DAGs in this process with ``dag.test()``: for ``tidemark demo`` and the tests.

Each run is a real Airflow DAG run, recorded in the metadata DB under ``$TIDEMARK_HOME/airflow``
(the one ``tidemark airflow standalone`` shows), with its tasks executed here, one after the other.
Airflow reads its configuration once, at its first import: :func:`use_airflow_home` must come first.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tidemark.extras import require

if TYPE_CHECKING:
    from tidemark.settings import Settings

__all__ = ["Ran", "load_dags", "read_run", "run_dag", "use_airflow_home"]


@dataclass
class Ran:
    """One ``dag.test()`` run, read at once (a later run of the same logical date replaces it)."""

    dag_id: str
    run_id: str
    state: str
    states: dict[str, str]  # task id -> state
    values: dict[str, Any]  # task id -> return value (XCom)
    tries: dict[str, int] = field(default_factory=dict)  # task id -> tries it took (0: never ran)


def use_airflow_home(settings: Settings) -> None:
    """Point Airflow at ``$TIDEMARK_HOME/airflow`` (SQLite) and create its metadata DB if needed."""
    from pipelines.cli_airflow import airflow_env

    require("airflow", "airflow", "running tidemark's DAGs")
    env = airflow_env(settings)
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
        raise RuntimeError(f"airflow was imported with AIRFLOW_HOME={os.environ.get('AIRFLOW_HOME')!r} before "
                           f"it could be pointed at {env['AIRFLOW_HOME']}; call use_airflow_home first")
    os.makedirs(env["AIRFLOW_HOME"], exist_ok=True)
    os.environ.update(env)
    from airflow.utils.db import initdb

    initdb()


def load_dags(*, retries: int | None = 0) -> dict[str, Any]:
    """The DAGs of ``pipelines/dags`` by id; ``retries`` replaces every task's (None: keep them:
    ``dag.test()`` really waits out a retry's delay)."""
    from airflow.dag_processing.dagbag import DagBag

    from pipelines.cli_airflow import DAGS_FOLDER

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RuntimeError(f"DAGs failed to import: {bag.import_errors}")
    if retries is not None:
        for dag in bag.dags.values():
            for task in dag.tasks:
                task.retries = retries
    return dict(bag.dags)


def run_dag(dag: Any, logical_date: datetime | None = None, conf: dict[str, Any] | None = None) -> Ran:
    """One run of ``dag`` (None: a manual run now), tasks in this process; failures are in the result."""
    context = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CTX_")}
    try:
        run = dag.test(logical_date=logical_date, run_conf=conf)
    finally:
        # A task run in this process exports AIRFLOW_CTX_* (its DAG, run and task) and dag.test()
        # leaves them set: what this process does next would pass for that task's work (the
        # alias history names the Airflow task that moved an alias from them).
        for key in [k for k in os.environ if k.startswith("AIRFLOW_CTX_")]:
            os.environ.pop(key)
        os.environ.update(context)
    return read_run(run)


def read_run(run: Any, session: Any = None) -> Ran:
    """A DAG run's task states and return values, read from the metadata DB (``run``: a DagRun)."""
    tis = run.get_task_instances(session=session) if session is not None else run.get_task_instances()
    return Ran(run.dag_id, run.run_id, str(run.state), {_key(ti): str(ti.state) for ti in tis},
               {_key(ti): ti.xcom_pull(task_ids=ti.task_id, map_indexes=ti.map_index) for ti in tis},
               {_key(ti): int(ti.try_number or 0) for ti in tis})


def _key(ti: Any) -> str:
    """A task instance's name in :class:`Ran`: the task id, with ``[i]`` for the i-th of a mapped task."""
    return ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
